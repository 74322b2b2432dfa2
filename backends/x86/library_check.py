"""Checks on a shared library before the dynamic loader maps it.

``dlopen`` trusts the file: a library cut short (a partial copy, a full disk, an interrupted
download) is mapped anyway and the process dies with SIGBUS when the loader or the code touches a
page past the end of the file. That cannot be caught from Python, so ``nnc.load`` reads the ELF
headers first and refuses, with a ``ModelError``, a file that is not an x86-64 shared object or
whose headers, segments or sections point past its end. When the JSON manifest written beside the
library (``model.json`` next to ``model.so``) records the library's size and SHA-256, those must
match too: this catches any change to the bytes, not only truncation. It is an integrity check, not
authentication: whoever can rewrite the library can rewrite its manifest (see docs/security.md).
"""

from __future__ import annotations

import hashlib
import os
import struct

from nnc.ir import ModelError

from ..artifact import read_manifest

_EHDR = struct.Struct("<16sHHIQQQIHHHHHH")  # Elf64_Ehdr
_PHDR = struct.Struct("<IIQQQQQQ")  # Elf64_Phdr
_SHDR = struct.Struct("<IIQQQQIIQQ")  # Elf64_Shdr
_EM_X86_64 = 62
_ET_DYN = 3
_SHT_NOBITS = 8


def check_library(path: str, manifest_path: str | None) -> None:
    """Raise ``ModelError`` unless ``path`` is a whole x86-64 ELF shared object (and, when
    ``manifest_path`` is given and records them, has the size and SHA-256 it records)."""
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(_EHDR.size)
            _check_elf(path, f, size, head)
    except OSError as e:
        raise ModelError(f"{path}: cannot read the library ({e.strerror or e})") from None
    if manifest_path is not None:
        _check_manifest(path, manifest_path, size)


def _check_elf(path: str, f, size: int, head: bytes) -> None:
    def bad(why: str) -> ModelError:
        return ModelError(f"{path}: not a loadable x86-64 shared library: {why}")

    if len(head) < 4 or head[:4] != b"\x7fELF":
        raise bad("no ELF magic number" if len(head) >= 4 else f"only {size} bytes")
    if len(head) < _EHDR.size:
        raise bad(f"truncated ELF header ({size} bytes)")
    ident, e_type, e_machine, _, _, e_phoff, e_shoff, _, _, e_phentsize, e_phnum, e_shentsize, e_shnum, _ = \
        _EHDR.unpack(head)
    if ident[4] != 2 or ident[5] != 1:
        raise bad("not a little-endian 64-bit ELF file")
    if e_machine != _EM_X86_64:
        raise bad(f"built for ELF machine {e_machine}, not x86-64 ({_EM_X86_64})")
    if e_type != _ET_DYN:
        raise bad(f"ELF type {e_type} is not a shared object ({_ET_DYN})")
    if e_phnum == 0 or e_phentsize < _PHDR.size:
        raise bad("no program headers")
    if e_phoff + e_phnum * e_phentsize > size:
        raise bad(f"program headers end at byte {e_phoff + e_phnum * e_phentsize}, past the end of the "
                  f"{size}-byte file (truncated?)")
    if e_shnum and e_shentsize < _SHDR.size:
        raise bad("malformed section header size")
    if e_shoff + e_shnum * e_shentsize > size:
        raise bad(f"section headers end at byte {e_shoff + e_shnum * e_shentsize}, past the end of the "
                  f"{size}-byte file (truncated?)")
    f.seek(e_phoff)
    table = f.read(e_phnum * e_phentsize)
    for i in range(e_phnum):
        _, _, p_offset, _, _, p_filesz, _, _ = _PHDR.unpack_from(table, i * e_phentsize)
        if p_offset + p_filesz > size:  # what dlopen maps: a page past the end is the SIGBUS
            raise bad(f"segment {i} ends at byte {p_offset + p_filesz}, past the end of the {size}-byte file "
                      f"(truncated?)")
    if e_shnum:
        f.seek(e_shoff)
        table = f.read(e_shnum * e_shentsize)
        for i in range(e_shnum):
            _, sh_type, _, _, sh_offset, sh_size, *_ = _SHDR.unpack_from(table, i * e_shentsize)
            if sh_type != _SHT_NOBITS and sh_offset + sh_size > size:
                raise bad(f"section {i} ends at byte {sh_offset + sh_size}, past the end of the {size}-byte file")


def _check_manifest(path: str, manifest_path: str, size: int) -> None:
    manifest = read_manifest(manifest_path) or {}
    want_size, want_sha = manifest.get("library_bytes"), manifest.get("library_sha256")
    if want_size is None and want_sha is None:
        return  # written before nnc recorded them: the ELF checks above are all there is
    if want_size is not None and int(want_size) != size:
        raise ModelError(f"{path}: {size} bytes, but {os.path.basename(manifest_path)} records {want_size} "
                         f"(truncated or replaced since it was built?)")
    if want_sha is not None:
        try:
            _, sha = file_digest(path)
        except OSError as e:
            raise ModelError(f"{path}: cannot read the library ({e.strerror or e})") from None
        if sha != str(want_sha):
            raise ModelError(f"{path}: SHA-256 {sha[:16]}... differs from the "
                             f"{str(want_sha)[:16]}... recorded in {os.path.basename(manifest_path)} "
                             f"(modified since it was built?)")


def file_digest(path: str) -> tuple[int, str]:
    """(size, SHA-256 hex) of a file, read in blocks: what ``compile_aot`` records in the manifest."""
    h = hashlib.sha256()
    n = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
            n += len(block)
    return n, h.hexdigest()

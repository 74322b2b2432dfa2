"""The x86 compilation cache: optimised object code plus what the executable needs, on disk.

An entry is keyed by a hash of everything the machine code depends on: the graph text, the weights,
the target description (CPU name + feature list), the options, and a fingerprint of nnc's own
source (the IR, the passes and this backend), llvmlite and LLVM, so a change to a kernel never
loads stale code. A hit skips preparation, code generation and LLVM entirely: the object file is
linked into an MCJIT engine in this process (see ``executable.load_object``).

One entry is one file ``<dir>/x86/<key>.nncx``::

    b"NNCX86\\0\\1"  u32 header length  header (JSON)  object bytes  weights bytes  meta (JSON)

The header names the key, the section sizes and the SHA-256 of the sections. A file that is short,
garbled, for another key or fails its checksum is deleted and rebuilt, never loaded: the object is
machine code we are about to execute. Files are written to a temporary name and renamed, so a
reader never sees a half-written entry. The directory is ``~/.cache/nnc`` (``$XDG_CACHE_HOME/nnc``
when set); ``NNC_CACHE_DIR`` moves it; ``NNC_CACHE_MAX_MB`` (default 5120, as ccache) bounds its size, oldest
entries going first.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import struct
import tempfile
from dataclasses import dataclass
from typing import Any, Mapping

import numpy as np

from nnc.ir import Module, print_module

from .target import TargetInfo

MAGIC = b"NNCX86\x00\x01"
_HEADER_LEN = struct.Struct("<I")
SUFFIX = ".nncx"
# options that change what the driver does around compilation, not the code it produces
DRIVER_OPTIONS = frozenset({"cache", "quiet", "cache_dir"})


def cache_dir() -> str:
    """Where entries live: ``$NNC_CACHE_DIR``, else ``$XDG_CACHE_HOME/nnc``, else ``~/.cache/nnc``."""
    if os.environ.get("NNC_CACHE_DIR"):
        return os.path.join(os.environ["NNC_CACHE_DIR"], "x86")
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "nnc", "x86")


@functools.lru_cache(maxsize=1)
def code_fingerprint() -> str:
    """A hash of the source that decides the generated code: nnc.ir, nnc.passes, this backend."""
    import llvmlite
    import llvmlite.binding as llvm

    import nnc.ir
    import nnc.passes

    h = hashlib.sha256(f"llvmlite {llvmlite.__version__} llvm {llvm.llvm_version_info}".encode())
    here = os.path.dirname(os.path.abspath(__file__))
    roots = [here, os.path.dirname(os.path.abspath(nnc.ir.__file__)),
             os.path.dirname(os.path.abspath(nnc.passes.__file__))]
    for root in roots:
        for folder, dirs, files in os.walk(root):
            dirs.sort()
            for name in sorted(files):
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    h.update(os.path.relpath(path, root).encode())
                    with open(path, "rb") as f:
                        h.update(f.read())
    return h.hexdigest()


def cache_key(module: Module, info: TargetInfo, options: Mapping[str, Any]) -> str:
    """The hex key of compiling ``module`` for ``info`` with ``options``."""
    h = hashlib.sha256()
    h.update(code_fingerprint().encode())
    h.update(b"\0target\0" + info.key().encode())
    opts = {k: v for k, v in options.items() if k not in DRIVER_OPTIONS and k not in ("cpu", "target_features")}
    h.update(b"\0options\0" + json.dumps(opts, sort_keys=True, default=repr).encode())
    h.update(b"\0graph\0" + print_module(module).encode())
    for name in sorted(module.constants):
        a = np.ascontiguousarray(module.constants[name])
        h.update(f"\0weight\0{name}\0{a.dtype.str}\0{a.shape}\0".encode())
        h.update(a.reshape(-1).view(np.uint8).data)
    return h.hexdigest()


@dataclass
class Entry:
    """What a hit gives back: the object code, the weights blob and the executable's metadata."""

    object_code: bytes
    weights: bytes
    meta: dict[str, Any]


class CorruptEntry(Exception):
    """An entry that must not be loaded (the message says why)."""


def encode(key: str, entry: Entry) -> bytes:
    meta = json.dumps(entry.meta, sort_keys=True).encode()
    sections = [entry.object_code, entry.weights, meta]
    digest = hashlib.sha256()
    for s in sections:
        digest.update(s)
    header = json.dumps({"key": key, "sizes": [len(s) for s in sections], "sha256": digest.hexdigest()}).encode()
    return b"".join([MAGIC, _HEADER_LEN.pack(len(header)), header, *sections])


def decode(key: str, data: bytes) -> Entry:
    """Parse and verify an entry; raises ``CorruptEntry`` for anything but a whole, intact entry."""
    if not data.startswith(MAGIC):
        raise CorruptEntry("bad magic")
    pos = len(MAGIC)
    if len(data) < pos + _HEADER_LEN.size:
        raise CorruptEntry("truncated header")
    (n,) = _HEADER_LEN.unpack_from(data, pos)
    pos += _HEADER_LEN.size
    try:
        header = json.loads(data[pos:pos + n])
        sizes = [int(s) for s in header["sizes"]]
        want_key, want_sum = str(header["key"]), str(header["sha256"])
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptEntry(f"unreadable header ({e})") from None
    pos += n
    if want_key != key:
        raise CorruptEntry("entry for another key")
    if len(sizes) != 3 or any(s < 0 for s in sizes) or pos + sum(sizes) != len(data):
        raise CorruptEntry(f"size mismatch ({len(data)} bytes, header says {pos + sum(max(s, 0) for s in sizes)})")
    view = memoryview(data)
    sections = []
    digest = hashlib.sha256()
    for s in sizes:
        sections.append(view[pos:pos + s])
        digest.update(sections[-1])
        pos += s
    if digest.hexdigest() != want_sum:
        raise CorruptEntry("checksum mismatch")
    try:
        meta = json.loads(bytes(sections[2]))
    except ValueError as e:
        raise CorruptEntry(f"unreadable metadata ({e})") from None
    return Entry(bytes(sections[0]), bytes(sections[1]), meta)


class CompileCache:
    """Entries in one directory. Every failure to read or write is a miss, never an error."""

    def __init__(self, directory: str | None = None, max_bytes: int | None = None):
        self.dir = directory or cache_dir()
        if max_bytes is None:
            try:
                max_bytes = int(float(os.environ.get("NNC_CACHE_MAX_MB", "5120")) * 2**20)
            except ValueError:
                max_bytes = 5120 * 2**20
        self.max_bytes = max_bytes

    def path(self, key: str) -> str:
        return os.path.join(self.dir, key + SUFFIX)

    def get(self, key: str) -> tuple[Entry | None, str]:
        """(entry, status): status is "hit", "miss", or "corrupt: <why>" (the file was deleted)."""
        path = self.path(key)
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            return None, "miss"
        try:
            entry = decode(key, data)
        except CorruptEntry as e:
            self._discard(path)
            return None, f"corrupt: {e}"
        try:
            os.utime(path)  # recently used entries survive pruning
        except OSError:
            pass
        return entry, "hit"

    def put(self, key: str, entry: Entry) -> bool:
        data = encode(key, entry)
        tmp = None
        try:
            os.makedirs(self.dir, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{key[:16]}.", suffix=".tmp", dir=self.dir)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, self.path(key))
            tmp = None
        except OSError:
            return False
        finally:
            if tmp is not None:
                self._discard(tmp)
        self.prune()
        return True

    def prune(self) -> None:
        """Delete the least recently used entries while the directory holds more than ``max_bytes``."""
        try:
            entries = []
            with os.scandir(self.dir) as it:
                for e in it:
                    if e.name.endswith(SUFFIX):
                        st = e.stat()
                        entries.append((st.st_mtime, st.st_size, e.path))
        except OSError:
            return
        total = sum(s for _, s, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.max_bytes:
                break
            self._discard(path)
            total -= size

    @staticmethod
    def _discard(path: str) -> None:
        try:
            os.unlink(path)
        except OSError:
            pass

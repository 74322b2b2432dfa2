"""Compiled code that holds wherever the JIT maps it.

A long process (a server, a test run that has loaded hundreds of models) has a fragmented address
space. MCJIT, which nnc used before, mapped an object's code, constants and data one by one
wherever each fitted, and several objects (a split compile's parts, the kernel cache's kernels)
anywhere. A 32-bit PC-relative reference between two of those mappings overflowed once they were
more than 2 GiB apart, and LLVM aborted the process (``isInt<32>(RealOffset)`` in
``resolveX86_64Relocation``), as it did in CI. Two things now hold, and are checked here:

- the JIT is ORC's JITLink, which lays out each object's sections in one allocation: the loaded
  code of a multi-object archive runs (its parts link), and the library is ORC's;
- the parts reach each other only through GOT entries they own (calls too: the declarations are
  ``nonlazybind``): no object of the archive has a 32-bit PC-relative relocation, nor a PLT32 call
  (direct once a JIT resolves it to code it has loaded, as MCJIT did), against a symbol another
  object defines.
"""

from __future__ import annotations

import struct

import numpy as np
import pytest

import nnc
from nnc.backends.x86 import executable, split_compile
from nnc.backends.x86.split_compile import members

R_X86_64_PC32, R_X86_64_PLT32 = 2, 4


def _relocations(obj: bytes) -> list[tuple[int, str, bool]]:
    """(type, symbol, defined here) of every relocation of an ELF64 relocatable object."""
    sections = executable.elf_sections(obj)
    out = []
    for sh in sections:
        if sh[1] != 4:  # SHT_RELA
            continue
        symtab = sections[sh[6]]
        strtab = sections[symtab[6]][4]
        for k in range(sh[5] // 24):
            _, info, _ = struct.unpack_from("<QQq", obj, sh[4] + 24 * k)
            st_name, _, _, shndx = struct.unpack_from("<IBBH", obj, symtab[4] + 24 * (info >> 32))
            name = obj[strtab + st_name:obj.index(b"\0", strtab + st_name)].decode()
            out.append((info & 0xFFFFFFFF, name, shndx != 0))
    return out


def _feeds(cm):
    rng = np.random.default_rng(0)
    return {n: rng.standard_normal(t.shape).astype(np.float32) for n, t in cm.input_types.items()}


def test_relocation_reader_sees_a_call_to_another_object():
    """The reader this test relies on, on an object whose call to an outside function it knows."""
    from llvmlite import binding as llvm

    from nnc.backends.x86.target import host, target_machine
    text = ('declare void @"other"()\n'
            'define void @"f"() {\n  call void @"other"()\n  ret void\n}\n')
    mod = llvm.parse_assembly(text)
    obj = target_machine(host()).emit_object(mod)
    assert (R_X86_64_PLT32, "other", False) in _relocations(obj)


@pytest.mark.parametrize("how", ["kernel cache", "split"])
def test_parts_reach_each_other_only_through_their_own_got(tmp_path, monkeypatch, how):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    if how == "split":  # a small module split all the same, into two parts, without the kernel cache
        monkeypatch.setattr(split_compile, "SPLIT_MIN_BYTES", 0)
        monkeypatch.setenv("NNC_COMPILE_JOBS", "2")
    cm = nnc.compile("examples/cnn.onnx", target="x86", quiet=True, cache=how == "kernel cache")
    objects = members(cm.emit("obj"))
    assert len(objects) >= 2, "the test needs an archive of several objects"
    defined = [executable.defined_symbols(o) for o in objects]
    for i, obj in enumerate(objects):
        elsewhere = set().union(*(d for j, d in enumerate(defined) if j != i))
        direct = [(t, s) for t, s, here in _relocations(obj)
                  if not here and s in elsewhere and t in (R_X86_64_PC32, R_X86_64_PLT32)]
        assert direct == [], f"part {i} reaches another part's symbols directly: {direct[:5]}"
    # and the archive links and runs: the same outputs as the reference interpreter
    ref = nnc.compile("examples/cnn.onnx", target="reference")
    feeds = _feeds(cm)
    got, want = cm.run(feeds), ref.run(feeds)
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=1e-4, atol=1e-5)


def test_the_jit_is_jitlink():
    """Each loaded model is a JIT library of ORC's JITLink (one allocation per object), not MCJIT."""
    from llvmlite import binding as llvm

    cm = nnc.compile("examples/cnn.onnx", target="x86", quiet=True, cache=False)
    code = cm.executable._keepalive
    assert isinstance(code, executable.LoadedCode)
    assert isinstance(code._library, llvm.ResourceTracker)
    assert not hasattr(code, "engine")

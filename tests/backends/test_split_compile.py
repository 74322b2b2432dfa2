"""A module compiled in parts on several processes (backends/x86/split_compile.py) is the same
model as the one-module compile: outputs equal bit for bit, through the JIT, a cache hit and a
saved library; the parts' text keeps one copy of every piece of state."""

from __future__ import annotations

import re
import shutil
import subprocess

import numpy as np
import pytest

import nnc
from nnc.backends.x86 import split_compile
from nnc.ir import Builder, Graph, Module, tensor


def _model() -> Module:
    """Enough kernels of several kinds (GEMM with epilogue, reductions, vector math, an index
    check) to give every part something, with weights the kernels pack."""
    rng = np.random.default_rng(0)
    m = Module("split")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [8, 32]))
    h = x
    for i in range(4):
        w = b.const(rng.standard_normal((32, 32)).astype(np.float32) / 6, name=f"w{i}")
        bias = b.const(rng.standard_normal((32,)).astype(np.float32), name=f"b{i}")
        h = b.op("tanh", b.op("add", b.op("matmul", h, w, name=f"mm{i}"), bias, name=f"add{i}"), name=f"t{i}")
        h = b.op("softmax", h, name=f"sm{i}", axis=-1)
    s = b.op("reduce_sum", h, name="sum", axes=[1], keepdims=1)
    g.set_outputs([h, b.op("exp", s, name="e")], ["h", "e"])
    return m


@pytest.fixture
def split_always(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(split_compile, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setenv(split_compile.JOBS_ENV, "3")


def _compile(**options) -> nnc.CompiledModel:
    return nnc.compile(_model(), target="x86", quiet=True, **options)


@pytest.mark.parametrize("threads", [1, 2])
def test_split_compile_gives_the_same_outputs(split_always: None, monkeypatch: pytest.MonkeyPatch,
                                              threads: int, tmp_path) -> None:
    x = np.random.default_rng(1).standard_normal((8, 32)).astype(np.float32)
    split = _compile(threads=threads, cache=False)
    assert split.emit("obj").startswith(b"!<arch>\n") and len(split_compile.members(split.emit("obj"))) == 3
    # with the cache: one part per kernel (kernel_cache.py), 1 + the kernels' objects
    per_kernel = _compile(threads=threads, cache_dir=str(tmp_path / "cache"))
    obj = per_kernel.emit("obj")
    kernels = per_kernel.report["x86"]["kernels"]
    assert len(split_compile.members(obj)) == 1 + kernels["compiled"] + kernels["from_cache"]
    hit = _compile(threads=threads, cache_dir=str(tmp_path / "cache"))
    assert hit.executable.cache_status == "hit" and hit.emit("obj") == obj
    monkeypatch.setenv(split_compile.JOBS_ENV, "1")
    whole = _compile(threads=threads, cache=False)
    assert whole.emit("obj")[:4] == b"\x7fELF"
    want = whole.run({"x": x})
    for got in (split.run({"x": x}), per_kernel.run({"x": x}), hit.run({"x": x})):
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    for name, cm in (("split", split), ("per_kernel", per_kernel)):
        lib = tmp_path / f"{name}.so"
        cm.save(str(lib))
        loaded = nnc.load(str(lib)).run({"x": x})
        for k in want:
            np.testing.assert_array_equal(loaded[k], want[k])


def test_profiling_a_split_compile(split_always: None) -> None:
    cm = _compile(threads=2, cache=False, profile=True)
    x = np.random.default_rng(1).standard_normal((8, 32)).astype(np.float32)
    _, stamps, per_thread = cm.executable.run_profiled({"x": x})
    assert stamps.shape[0] == len(cm.executable.interface.kernels) + 1 and (stamps[:, 1] >= stamps[:, 0]).all()
    assert per_thread is not None


def test_parts_define_state_once() -> None:
    text = (
        'target triple = "x86_64-unknown-linux-gnu"\n'
        '@"state" = internal global [2 x i64] zeroinitializer, align 64\n'
        '@"table" = internal constant [2 x i64] [i64 1, i64 2]\n'
        'declare float @"expf"(float %".1")\n'
        'define internal void @"helper"(ptr %".1")\n{\nentry:\n'
        '  %".2" = load i64, ptr @"table"\n  store i64 %".2", ptr @"state"\n  ret void\n}\n'
        'define internal void @"k0_a"(ptr %".1")\n{\nentry:\n  call void @"helper"(ptr %".1")\n  ret void\n}\n'
        'define internal void @"k1_b"(ptr %".1")\n{\nentry:\n  call void @"helper"(ptr %".1")\n'
        '  %".3" = call float @"expf"(float 0.0)\n  ret void\n}\n'
        'define i32 @"entry"(ptr %".1")\n{\nentry:\n  call void @"k0_a"(ptr %".1")\n'
        '  call void @"k1_b"(ptr %".1")\n  ret i32 0\n}\n'
        '!0 = !{ !"x" }\n'
    )
    parts = split_compile.split(text, 2, "entry")
    assert parts is not None and len(parts) == 2
    defines = [[it.name for it in split_compile.parse(p) if it.kind == "define"] for p in parts]
    # the entry point with one kernel, the other kernel elsewhere; the helper copied into both
    assert sorted(defines[0] + defines[1]) == ["entry", "helper", "helper", "k0_a", "k1_b"]
    assert all("helper" in d for d in defines)
    # the mutable global is defined once (hidden) and declared in the other part, preemptible (so the
    # part reaches it through its GOT wherever the JIT maps the other part); the constant is copied
    assert sum('@"state" = hidden global' in p for p in parts) == 1
    assert sum('@"state" = external global [2 x i64], align 64' in p for p in parts) == 1
    assert not any("external hidden" in p or "declare hidden" in p for p in parts)
    assert all('@"table" = internal constant' in p for p in parts)
    # the kernel in the other part is exported hidden and declared next to the entry point
    other = 1 if "k1_b" in defines[1] else 0
    assert 'define hidden void @"k1_b"' in parts[other] or 'define hidden void @"k0_a"' in parts[other]
    assert re.search(r'declare void @"k[01]_[ab]"\(ptr %".1"\) nonlazybind', parts[0])  # a call through the GOT
    assert all("!0 = " in p for p in parts)


def _object(symbol: str) -> bytes:
    from llvmlite import binding as llvm

    from nnc.backends.x86.target import host, target_machine

    mod = llvm.parse_assembly(f'define i32 @"{symbol}"() {{\n  ret i32 7\n}}\n')
    return target_machine(host()).emit_object(mod)


def test_archive_round_trip() -> None:
    objs = [_object("first"), _object("second")]
    packed = split_compile.pack(objs)
    assert packed.startswith(b"!<arch>\n") and split_compile.members(packed) == objs
    assert split_compile.pack(objs[:1]) == objs[0] and split_compile.members(objs[0]) == objs[:1]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="needs gcc")
def test_the_archive_links_as_it_is(split_always: None, tmp_path) -> None:
    """``--emit obj`` of a split compile is an archive with a symbol index: a C program that calls
    the entry point links against it, pulling the kernels' members through their hidden symbols."""
    archive = tmp_path / "model.o"
    archive.write_bytes(_compile(threads=2, cache=False).emit("obj"))
    main = tmp_path / "main.c"
    main.write_text("int nnc_entry(void *const *, void *const *, void *, const void *);\n"
                    "int main(void) { return nnc_entry(0, 0, 0, 0); }\n")  # linked, never run
    proc = subprocess.run(["gcc", str(main), str(archive), "-o", str(tmp_path / "prog"), "-lm", "-lpthread"],
                          capture_output=True, text=True, check=False)
    assert proc.returncode == 0, proc.stderr

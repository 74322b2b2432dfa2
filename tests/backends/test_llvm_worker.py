"""LLVM in a worker process (backends/x86/llvm_worker.py): the same machine code as in this process,
LLVM's errors and a dead worker as typed errors, and recycling."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.backends.x86 import llvm_worker
from nnc.backends.x86.target import host
from nnc.ir import Builder, Graph, Module, TargetError, tensor


def _model() -> Module:
    m = Module("w")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [4, 16]))
    w = b.const(np.random.default_rng(0).standard_normal((16, 8)).astype(np.float32), name="w")
    g.set_outputs([b.op("tanh", b.op("matmul", x, w, name="h"), name="y")], ["y"])
    return m


def test_worker_and_in_process_give_the_same_object_code(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(llvm_worker.ENV, "never")
    here = nnc.compile(_model(), target="x86", cache=False, quiet=True, threads=1)
    monkeypatch.setenv(llvm_worker.ENV, "always")
    there = nnc.compile(_model(), target="x86", cache=False, quiet=True, threads=1)
    assert here.emit("obj") == there.emit("obj")
    x = np.random.default_rng(1).standard_normal((4, 16)).astype(np.float32)
    np.testing.assert_array_equal(here(x), there(x))


def test_llvm_errors_and_a_dead_worker_are_target_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(llvm_worker.ENV, "always")
    with pytest.raises(TargetError, match="LLVM failed"):
        llvm_worker.object_code("this is not LLVM IR", host())
    llvm_worker.object_code("", host())  # the worker survived the bad module
    worker = llvm_worker._worker
    assert worker is not None
    worker.proc.kill()
    worker.proc.wait()
    # the dead worker is noticed before the next compile and replaced
    obj, _, _ = llvm_worker.object_code("", host())
    assert obj[:4] == b"\x7fELF" and llvm_worker._worker is not worker


def test_the_worker_is_replaced_after_recycle_compiles(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(llvm_worker.ENV, "always")
    monkeypatch.setattr(llvm_worker, "RECYCLE", 2)
    llvm_worker._close()  # start from a fresh worker
    llvm_worker.object_code("", host())
    first = llvm_worker._worker
    llvm_worker.object_code("", host())
    assert llvm_worker._worker is first
    llvm_worker.object_code("", host())
    assert llvm_worker._worker is not first and first.proc.poll() is not None  # closed, not leaked

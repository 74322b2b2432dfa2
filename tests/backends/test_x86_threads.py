"""The x86 thread-pool runtime: correct results at every thread count, a pool that persists across
runs and is joined when its model is collected, and safe concurrent use.

Model results are checked against the reference interpreter; the runtime itself is also driven
directly (``nnc_parallel_for`` / ``nnc_parallel_range`` in a small JIT-ed module) to check that every
index runs exactly once, on more than one thread, including when two threads call it at once.
"""

from __future__ import annotations

import ctypes
import gc
import os
import signal
import threading
import time

import numpy as np
import pytest
from llvmlite import ir

import nnc
from nnc.backends import x86
from nnc.backends.x86 import runtime
from nnc.backends.x86.executable import load_object
from nnc.backends.x86.jit import optimize
from nnc.backends.x86.llvm_types import F64, I64, PTR, VOID, const_int, for_range
from nnc.backends.x86.target import TRIPLE, host
from nnc.ir import Builder, Graph, Module, TargetError, interpret, tensor


def live_threads() -> int:
    return len(os.listdir("/proc/self/task"))


def settle(expected: int, timeout: float = 5.0) -> int:
    """The process's thread count once it reaches ``expected`` (threads exit asynchronously)."""
    end = time.monotonic() + timeout
    while live_threads() != expected and time.monotonic() < end:
        time.sleep(0.01)
    return live_threads()


def parallel_graph() -> Module:
    """Several kernels that use parallel_for when threads > 1: broadcasting elementwise ops over
    262k elements, a matmul, a transpose."""
    rng = np.random.default_rng(0)
    m = Module("par")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [256, 1024]))
    row = g.add_param("row", tensor("f32", [1024]))
    w = b.const(rng.standard_normal((1024, 192)).astype(np.float32) / 32, name="w")
    s = b.op("mul", b.op("add", x, row, name="s"), x, name="sq")
    h = b.op("relu", b.op("matmul", s, w, name="h"), name="r")
    t = b.op("transpose", h, perm=[1, 0], name="t")
    g.set_outputs([s, t, b.op("sub", x, row, name="d")], ["s", "t", "d"])
    return m


def feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((256, 1024)).astype(np.float32),
            "row": rng.standard_normal(1024).astype(np.float32)}


def check(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    # s and d are single f32 operations, rounded once like numpy: exact. t is a length-1024 f32 dot
    # product summed in a different order: a few ulps of the sum of |terms| (|terms| ~ 1/32 each)
    np.testing.assert_array_equal(got["s"], want["s"])
    np.testing.assert_array_equal(got["d"], want["d"])
    np.testing.assert_allclose(got["t"], want["t"], rtol=1e-4, atol=1e-4)


# -- options -------------------------------------------------------------------------------------------
def test_thread_count_option_environment_and_default(monkeypatch):
    monkeypatch.delenv("NNC_NUM_THREADS", raising=False)
    assert runtime.num_threads({}) == os.cpu_count()
    monkeypatch.setenv("NNC_NUM_THREADS", "3")
    assert runtime.num_threads({}) == 3
    assert runtime.num_threads({"threads": 2}) == 2  # the option wins over the environment
    for bad in ({"threads": 0}, {"threads": "many"}):
        with pytest.raises(TargetError, match="threads"):
            runtime.num_threads(bad)
    monkeypatch.setenv("NNC_NUM_THREADS", "-1")
    with pytest.raises(TargetError, match="NNC_NUM_THREADS"):
        runtime.num_threads({})


def test_one_thread_emits_no_pool_and_starts_no_thread():
    _, _, _, serial = x86.generate(parallel_graph(), {"threads": 1})
    _, _, _, pooled = x86.generate(parallel_graph(), {"threads": 2})
    assert "pthread_create" not in serial and "nnc_pool" not in serial
    assert "pthread_create" in pooled and runtime.PARALLEL_RANGE in pooled
    gc.collect()  # join the pools of earlier tests' executables now, not in the middle of the count
    before = live_threads()
    exe = nnc.compile(parallel_graph(), target="x86", threads=1, cache=False)
    check(exe.run(feeds()), interpret(parallel_graph(), feeds()))
    assert live_threads() == before


# -- models ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("threads", [1, 2, 4])
def test_parallel_kernels_match_interpreter(threads):
    m = parallel_graph()
    want = interpret(m, feeds())
    exe = nnc.compile(m, target="x86", threads=threads, cache=False)
    first = exe.run(feeds())
    check(first, want)
    for _ in range(5):  # repeated runs on the persistent pool give the same bits
        again = exe.run(feeds())
        for k in first:
            np.testing.assert_array_equal(again[k], first[k])


def test_pool_persists_across_runs_and_is_joined_on_collection():
    gc.collect()
    base = live_threads()
    exe = nnc.compile(parallel_graph(), target="x86", threads=4, cache=False)
    assert live_threads() == base  # started lazily, by the first parallel call
    exe.run(feeds())
    assert live_threads() == base + 3  # the caller is the fourth thread
    for _ in range(5):
        exe.run(feeds())
    assert live_threads() == base + 3  # not one set of threads per call
    del exe
    gc.collect()
    assert settle(base) == base


def test_idle_workers_sleep():
    exe = nnc.compile(parallel_graph(), target="x86", threads=2, cache=False)
    exe.run(feeds())
    time.sleep(0.05)  # past the spin phase (well under a millisecond)
    t0 = time.process_time()  # CPU time of every thread of the process
    time.sleep(0.3)
    assert time.process_time() - t0 < 0.05


def test_two_models_at_once_and_repeated_compiles():
    m = parallel_graph()
    want = interpret(m, feeds())
    gc.collect()
    base = live_threads()
    a = nnc.compile(m, target="x86", threads=2, cache=False)
    b = nnc.compile(m, target="x86", threads=3, cache=False)
    for _ in range(3):  # interleaved: each model has its own pool
        check(a.run(feeds()), want)
        check(b.run(feeds()), want)
    assert live_threads() == base + 1 + 2
    for _ in range(4):  # compile, run, drop: the pools do not accumulate
        c = nnc.compile(m, target="x86", threads=2)
        check(c.run(feeds()), want)
        del c
        gc.collect()
    assert settle(base + 3) == base + 3
    del a, b
    gc.collect()
    assert settle(base) == base


def test_two_python_threads_share_one_model():
    """Runs of one executable are serialised by its lock (they share one arena); each is correct."""
    m = parallel_graph()
    exe = nnc.compile(m, target="x86", threads=2, cache=False)
    rng = np.random.default_rng(5)
    inputs = [{"x": rng.standard_normal((256, 1024)).astype(np.float32),
               "row": rng.standard_normal(1024).astype(np.float32)} for _ in range(2)]
    wants = [interpret(m, f) for f in inputs]
    errors: list[BaseException] = []

    def worker(j: int) -> None:
        try:
            for _ in range(6):
                check(exe.run(inputs[j]), wants[j])
        except BaseException as e:  # noqa: B036 - reported by the main thread
            errors.append(e)

    ts = [threading.Thread(target=worker, args=(j,)) for j in range(2)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(60)
    assert not errors, errors[0]


def test_shutdown_then_restart_and_fork_child():
    m = parallel_graph()
    want = interpret(m, feeds())
    exe = nnc.compile(m, target="x86", threads=2, cache=False)
    check(exe.run(feeds()), want)
    ctypes.CFUNCTYPE(None)(exe.executable._keepalive.address(runtime.SHUTDOWN))()  # joins; the next run restarts
    check(exe.run(feeds()), want)
    pid = os.fork()
    if pid == 0:  # the child has no workers but inherits a started pool: it must notice and restart
        signal.alarm(20)
        try:
            got = exe.run(feeds())
            ok = np.array_equal(got["s"], want["s"]) and np.allclose(got["t"], want["t"], rtol=1e-4, atol=1e-4)
        except BaseException:
            ok = False
        os._exit(0 if ok else 1)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status


# -- the runtime itself -----------------------------------------------------------------------------------
class Harness:
    """A JIT-ed module whose ``run(out, count)`` calls ``task(ctx, i)`` for i < count through the
    runtime (``per_index``: ``nnc_parallel_for``; else the range form the code generator uses).
    The task spins ``work`` iterations, then writes pthread_self() to out[i] and adds 1 to
    out[count + i] (so a missed or repeated index shows)."""

    def __init__(self, threads: int, work: int, per_index: bool):
        ll = ir.Module("harness")
        ll.triple = TRIPLE
        task = ir.Function(ll, ir.FunctionType(VOID, [PTR, I64]), "task")
        task.linkage = "internal"
        b = ir.IRBuilder(task.append_basic_block())
        ctx, i = task.args
        out = b.load(b.gep(ctx, [const_int(0)], source_etype=PTR), typ=PTR)
        count = b.load(b.gep(ctx, [const_int(1)], source_etype=PTR), typ=I64)
        acc = b.alloca(F64)
        b.store(ir.Constant(F64, 0.0), acc)
        with for_range(b, work, "w") as w:
            b.store(b.fadd(b.fmul(b.load(acc, typ=F64), ir.Constant(F64, 0.5)), b.sitofp(w, F64)), acc)
        self_fn = ir.Function(ll, ir.FunctionType(I64, []), "pthread_self")
        b.store(b.call(self_fn, []), b.gep(out, [i], source_etype=I64))
        slot = b.gep(out, [b.add(count, i)], source_etype=I64)
        b.store(b.add(b.load(slot, typ=I64), const_int(1)), slot)
        # keep the spin loop alive: its result goes to a shared sink word
        sink = b.gep(out, [b.add(count, count)], source_etype=I64)
        b.atomic_rmw("xchg", sink, b.bitcast(b.load(acc, typ=F64), I64), "monotonic")
        b.ret_void()
        fn = ir.Function(ll, ir.FunctionType(VOID, [PTR, I64]), "run")
        fb = ir.IRBuilder(fn.append_basic_block())
        c = fb.alloca(PTR, size=const_int(2))
        fb.store(fn.args[0], c)
        fb.store(fb.inttoptr(fn.args[1], PTR), fb.gep(c, [const_int(1)], source_etype=PTR))
        if per_index:
            runtime.ensure_runtime(ll, threads)
            fb.call(ll.globals[runtime.PARALLEL_FOR], [task, c, fn.args[1]])
        else:
            runtime.parallel_call(ll, threads, fb, task, c, fn.args[1])
        fb.ret_void()
        mod, tm = optimize(str(ll), host(), 2)
        self.code = load_object(tm.emit_object(mod))
        self._run = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(self.code.address("run"))
        self.shutdown = ctypes.CFUNCTYPE(None)(self.code.address(runtime.SHUTDOWN))

    def __call__(self, count: int) -> np.ndarray:
        out = np.zeros(2 * count + 1, np.int64)
        self._run(out.ctypes.data, count)
        return out


@pytest.mark.parametrize("per_index", [True, False])
def test_every_index_runs_exactly_once(per_index):
    h = Harness(threads=3, work=10, per_index=per_index)
    try:
        for count in (0, 1, 2, 7, 1000, 12345):
            out = h(count)
            np.testing.assert_array_equal(out[count:2 * count], np.ones(count, np.int64))
    finally:
        h.shutdown()


def test_work_is_shared_between_threads():
    h = Harness(threads=2, work=200_000, per_index=False)  # ~0.2-1 ms per index
    try:
        out = h(200)
        ids = set(out[:200].tolist())
        np.testing.assert_array_equal(out[200:400], np.ones(200, np.int64))
        assert len(ids) == 2, "the worker never took a chunk"
    finally:
        h.shutdown()


def test_concurrent_callers_of_one_pool_fall_back_to_serial():
    """The runtime itself (no executable lock here): a caller that finds the pool busy runs its
    range on its own thread instead of waiting, so both complete with every index done once."""
    h = Harness(threads=2, work=20_000, per_index=False)
    results: list[np.ndarray] = []

    def call() -> None:
        for _ in range(10):
            results.append(h(300))

    ts = [threading.Thread(target=call) for _ in range(3)]
    try:
        for t in ts:
            t.start()
        for t in ts:
            t.join(60)
    finally:
        h.shutdown()
    assert len(results) == 30
    for out in results:
        np.testing.assert_array_equal(out[300:600], np.ones(300, np.int64))

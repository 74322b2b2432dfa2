"""Thread-pool speedup of the x86 backend: 2 threads against 1 on the same compiled graph.

    python bench/threads.py [--rounds 40] [--threads 2]

Cases: a large broadcasting elementwise op (memory bound), a transcendental elementwise op
(compute bound), a matmul (the GEMM kernel's ``parallel_for`` over tiles), and a pure runtime
probe (``parallel_for`` over a compute-only task, which measures how much of a second core this
machine actually gives us right now). The configurations are measured in alternating blocks, so
load from other processes hits all alike; onnxruntime at the same thread counts is the control.
Prints medians in milliseconds and the speedup (median at 1 thread / median at N).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import time
from typing import Callable

import numpy as np
from llvmlite import ir

import nnc
from nnc.backends.x86 import runtime
from nnc.backends.x86.executable import load_object
from nnc.backends.x86.jit import optimize
from nnc.backends.x86.llvm_types import F64, I64, PTR, VOID, const_int, for_range
from nnc.backends.x86.target import TRIPLE, host
from nnc.ir import Builder, Graph, Module, tensor

Case = tuple[str, Module, dict[str, np.ndarray]]


def _graph(name: str, params: dict[str, tuple[int, ...]], build: Callable) -> Module:
    m = Module(name)
    g = m.add_graph(Graph())
    b = Builder(m, g)
    args = [g.add_param(n, tensor("f32", list(s))) for n, s in params.items()]
    g.set_outputs([build(b, *args)], ["y"])
    return m


def cases() -> list[Case]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2048, 2048)).astype(np.float32)
    row = rng.standard_normal(2048).astype(np.float32)
    a = rng.standard_normal((512, 512)).astype(np.float32)
    w = rng.standard_normal((512, 512)).astype(np.float32)
    return [
        ("add 2048x2048 + row (memory bound)", _graph("add", {"x": x.shape, "row": row.shape},
                                                       lambda b, p, r: b.op("add", p, r)), {"x": x, "row": row}),
        ("tanh 2048x2048 (compute bound)", _graph("tanh", {"x": x.shape}, lambda b, p: b.op("tanh", p)), {"x": x}),
        ("matmul 512x512x512 (gemm tiles)", _graph("mm", {"a": a.shape, "w": w.shape},
                                                    lambda b, p, q: b.op("matmul", p, q)), {"a": a, "w": w}),
    ]


def onnx_model(case: str):
    """The same op as an ONNX model, for onnxruntime (None if unavailable)."""
    try:
        from onnx import TensorProto, helper
    except ImportError:
        return None
    f = TensorProto.FLOAT
    if case.startswith("add"):
        node = helper.make_node("Add", ["x", "row"], ["y"])
        ins = [helper.make_tensor_value_info("x", f, [2048, 2048]), helper.make_tensor_value_info("row", f, [2048])]
        out = [2048, 2048]
    elif case.startswith("tanh"):
        node = helper.make_node("Tanh", ["x"], ["y"])
        ins, out = [helper.make_tensor_value_info("x", f, [2048, 2048])], [2048, 2048]
    else:
        node = helper.make_node("MatMul", ["a", "w"], ["y"])
        ins = [helper.make_tensor_value_info("a", f, [512, 512]), helper.make_tensor_value_info("w", f, [512, 512])]
        out = [512, 512]
    g = helper.make_graph([node], "g", ins, [helper.make_tensor_value_info("y", f, out)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]).SerializeToString()


def ort_session(model: bytes, threads: int):
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


def probe(threads: int) -> Callable[[], None]:
    """A JIT-ed parallel_for over 64 compute-only tasks (~0.3 ms each): the machine's scaling."""
    ll = ir.Module("probe")
    ll.triple = TRIPLE
    task = ir.Function(ll, ir.FunctionType(VOID, [PTR, I64]), "task")
    task.linkage = "internal"
    b = ir.IRBuilder(task.append_basic_block())
    acc = b.alloca(F64)
    b.store(ir.Constant(F64, 0.0), acc)
    with for_range(b, 100_000, "w") as i:
        b.store(b.fadd(b.fmul(b.load(acc, typ=F64), ir.Constant(F64, 0.5)), b.sitofp(i, F64)), acc)
    sink = b.gep(b.load(task.args[0], typ=PTR), [task.args[1]], source_etype=F64)
    b.store(b.load(acc, typ=F64), sink)
    b.ret_void()
    fn = ir.Function(ll, ir.FunctionType(VOID, [PTR]), "run")
    fb = ir.IRBuilder(fn.append_basic_block())
    ctx = fb.alloca(PTR)
    fb.store(fn.args[0], ctx)
    if threads > 1:
        runtime.parallel_call(ll, threads, fb, task, ctx, const_int(64))
    else:
        with for_range(fb, 64) as i:
            fb.call(task, [ctx, i])
    fb.ret_void()
    mod, tm = optimize(str(ll), host(), 3)
    code = load_object(tm.emit_object(mod))
    run = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(code.address("run"))
    out = np.zeros(64)

    def call() -> None:
        run(out.ctypes.data)
    call.code = code  # keep the machine code alive
    return call


def _runner(run: Callable[[dict[str, np.ndarray]], object], feeds: dict[str, np.ndarray]) -> Callable[[], object]:
    return lambda: run(feeds)


def interleaved(fns: dict[str, Callable[[], object]], rounds: int, block: int = 5) -> dict[str, float]:
    """Median seconds of each callable, measured in alternating blocks of ``block`` calls.

    Between blocks we pause, so spinning workers of the previous engine (ours or onnxruntime's)
    have gone to sleep and do not steal the cores of the next; the first call of a block (which
    may wake sleeping workers) is timed too, as a real first call after idling would be.
    """
    times: dict[str, list[float]] = {k: [] for k in fns}
    for f in fns.values():
        f()
    for _ in range(max(rounds // block, 1)):
        for k, f in fns.items():
            time.sleep(0.03)
            for _ in range(block):
                t0 = time.perf_counter()
                f()
                times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=40)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    n = args.threads
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}; medians of {args.rounds} rounds, ms")
    print(f"{'case':38s} {'nnc 1':>8s} {f'nnc {n}':>8s} {'speedup':>8s} {'ort 1':>8s} {f'ort {n}':>8s} {'speedup':>8s}")
    rows = [("runtime probe (64 compute tasks)", {1: probe(1), n: probe(n)}, None)]
    for name, m, feeds in cases():
        fns = {t: _runner(nnc.compile(m, target="x86", threads=t, cache=False).run, feeds) for t in (1, n)}
        model = onnx_model(name)
        sessions = {t: ort_session(model, t) for t in (1, n)} if model else {}
        ort = {t: _runner(lambda f, s=s: s.run(None, f), feeds) for t, s in sessions.items() if s is not None}
        rows.append((name, fns, ort or None))
    for name, fns, ort in rows:
        calls = {f"nnc{t}": f for t, f in fns.items()}
        if ort:
            calls.update({f"ort{t}": f for t, f in ort.items()})
        med = interleaved(calls, args.rounds)
        line = f"{name:38s} {med['nnc1'] * 1e3:8.2f} {med[f'nnc{n}'] * 1e3:8.2f} {med['nnc1'] / med[f'nnc{n}']:7.2f}x"
        if ort:
            line += f" {med['ort1'] * 1e3:8.2f} {med[f'ort{n}'] * 1e3:8.2f} {med['ort1'] / med[f'ort{n}']:7.2f}x"
        print(line, flush=True)
    print(f"load average now {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""ResNet-50's conv shapes at 1 thread: nnc and onnxruntime GFLOP/s against this CPU's FMA peak.

    python bench/conv_peak.py [--rounds 5] [--reps 30] [--shapes 3x3] [--engines nnc,ort] [--threads 1]

The peak: a generated LLVM kernel of ``CHAINS`` independent FMA chains on the widest vectors of the
host (zmm with AVX-512), enough of them to cover the FMA latency at two FMA pipes, run for a fixed
number of iterations. Its GFLOP/s is the ceiling a conv can reach; the clock is measured beside it
with a chain of dependent integer adds (one a cycle), which gives the FMAs retired per cycle.

The shapes: every distinct conv of torchvision's ResNet-50 (v1.5: the stride on the 3x3 conv) at
batch 1, 224x224, each as a one-Conv ONNX model with a bias (the folded BatchNorm) and random
weights. Each engine measures all shapes in its own process; rounds alternate the order of the
engines so that load from other processes hits both alike; a process reports the median of
``--reps`` warm calls per shape and the table shows the median over rounds. On a loaded machine
``--timer cpu`` times calls by the calling thread's CPU time (both engines run a 1-thread conv in
the calling thread), which leaves out the time slices given to other processes.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import time

# (name, C_in, C_out, kernel, stride, input H=W, count in the model)
SHAPES = [
    ("stem 7x7/2 3->64", 3, 64, 7, 2, 224, 1),
    ("3x3 64->64 @56", 64, 64, 3, 1, 56, 3),
    ("3x3/2 128->128 @56", 128, 128, 3, 2, 56, 1),
    ("3x3 128->128 @28", 128, 128, 3, 1, 28, 3),
    ("3x3/2 256->256 @28", 256, 256, 3, 2, 28, 1),
    ("3x3 256->256 @14", 256, 256, 3, 1, 14, 5),
    ("3x3/2 512->512 @14", 512, 512, 3, 2, 14, 1),
    ("3x3 512->512 @7", 512, 512, 3, 1, 7, 2),
    ("1x1 64->64 @56", 64, 64, 1, 1, 56, 1),
    ("1x1 64->256 @56", 64, 256, 1, 1, 56, 4),
    ("1x1 256->64 @56", 256, 64, 1, 1, 56, 2),
    ("1x1 256->128 @56", 256, 128, 1, 1, 56, 1),
    ("1x1/2 256->512 @56", 256, 512, 1, 2, 56, 1),
    ("1x1 128->512 @28", 128, 512, 1, 1, 28, 4),
    ("1x1 512->128 @28", 512, 128, 1, 1, 28, 3),
    ("1x1 512->256 @28", 512, 256, 1, 1, 28, 1),
    ("1x1/2 512->1024 @28", 512, 1024, 1, 2, 28, 1),
    ("1x1 256->1024 @14", 256, 1024, 1, 1, 14, 6),
    ("1x1 1024->256 @14", 1024, 256, 1, 1, 14, 5),
    ("1x1 1024->512 @14", 1024, 512, 1, 1, 14, 1),
    ("1x1/2 1024->2048 @14", 1024, 2048, 1, 2, 14, 1),
    ("1x1 512->2048 @7", 512, 2048, 1, 1, 7, 3),
    ("1x1 2048->512 @7", 2048, 512, 1, 1, 7, 2),
]

CHAINS = 24  # independent accumulators: > FMA latency (4-5 cycles) x 2 pipes, < 32 zmm registers
UNROLL_ADDS = 200


def out_size(h: int, k: int, s: int) -> int:
    return (h + 2 * (k // 2) - k) // s + 1


def flops(shape) -> float:
    _, c, m, k, s, h, _ = shape
    return 2.0 * m * c * k * k * out_size(h, k, s) ** 2


# -- the FMA peak ---------------------------------------------------------------------------------

def _peak_module(lanes: int):
    from llvmlite import ir

    f32 = ir.FloatType()
    i64 = ir.IntType(64)
    vt = ir.VectorType(f32, lanes)
    mod = ir.Module(name="peak")
    fma = ir.Function(mod, ir.FunctionType(vt, [vt, vt, vt]), name=f"llvm.fma.v{lanes}f32")
    # float fma_chains(i64 iters, float x): CHAINS independent chains acc = acc*x + x, 8 steps a trip
    fn = ir.Function(mod, ir.FunctionType(f32, [i64, f32]), name="fma_chains")
    n, x = fn.args
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    xv = b.insert_element(ir.Constant(vt, None), x, ir.Constant(ir.IntType(32), 0))
    xv = b.shuffle_vector(xv, ir.Constant(vt, None), ir.Constant(ir.VectorType(ir.IntType(32), lanes), None))
    entry, loop, done = b.block, fn.append_basic_block("loop"), fn.append_basic_block("done")
    b.branch(loop)
    b.position_at_end(loop)
    i = b.phi(i64)
    i.add_incoming(ir.Constant(i64, 0), entry)
    accs = []
    for c in range(CHAINS):
        p = b.phi(vt)
        p.add_incoming(ir.Constant(vt, [float(c)] * lanes), entry)
        accs.append(p)
    cur = list(accs)
    for _ in range(8):
        cur = [b.call(fma, [a, xv, xv]) for a in cur]
    i1 = b.add(i, ir.Constant(i64, 1))
    i.add_incoming(i1, loop)
    for p, v in zip(accs, cur):
        p.add_incoming(v, loop)
    b.cbranch(b.icmp_signed("<", i1, n), loop, done)
    b.position_at_end(done)
    tot = cur[0]
    for v in cur[1:]:
        tot = b.fadd(tot, v)
    b.ret(b.extract_element(tot, ir.Constant(ir.IntType(32), 0)))
    # i64 add_chain(i64 iters): UNROLL_ADDS dependent adds a trip (inline asm: LLVM cannot fold them)
    fn2 = ir.Function(mod, ir.FunctionType(i64, [i64]), name="add_chain")
    (n2,) = fn2.args
    b = ir.IRBuilder(fn2.append_basic_block("entry"))
    entry, loop, done = b.block, fn2.append_basic_block("loop"), fn2.append_basic_block("done")
    b.branch(loop)
    b.position_at_end(loop)
    j = b.phi(i64)
    j.add_incoming(ir.Constant(i64, 0), entry)
    acc = b.phi(i64)
    acc.add_incoming(ir.Constant(i64, 0), entry)
    asm = ir.InlineAsm(ir.FunctionType(i64, [i64]), "\n".join(["addq $$1, $0"] * UNROLL_ADDS), "=r,0,~{flags}")
    nxt = b.call(asm, [acc])
    j1 = b.add(j, ir.Constant(i64, 1))
    j.add_incoming(j1, loop)
    acc.add_incoming(nxt, loop)
    b.cbranch(b.icmp_signed("<", j1, n2), loop, done)
    b.position_at_end(done)
    b.ret(nxt)
    return mod


def measure_peak(reps: int = 50) -> dict:
    """FP32 FMA GFLOP/s at 1 thread, the clock (GHz) and FMA instructions (vectors) per cycle."""
    import llvmlite.binding as llvm

    from nnc.backends.x86.jit import JitModule, optimize
    from nnc.backends.x86.target import host

    llvm.initialize_native_asmparser()  # the add chain is inline asm
    info = host()
    lanes = info.f32_lanes
    mod, tm = optimize(str(_peak_module(lanes)), info)
    jit = JitModule(mod, tm)
    fma = ctypes.CFUNCTYPE(ctypes.c_float, ctypes.c_int64, ctypes.c_float)(jit.address("fma_chains"))
    adds = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_int64)(jit.address("add_chain"))
    # short runs (2-3 ms), best of many: a run that shares its core with another process for part of
    # its time (a time slice of a loaded machine) counts that time as its own
    iters = 100_000
    fma(1000, 1.0)
    adds(1000)
    gf, ghz = [], []
    for _ in range(reps):  # interleaved, so both see the same clock
        t = time.perf_counter()
        fma(iters, 0.999)
        gf.append(iters * 8 * CHAINS * lanes * 2 / (time.perf_counter() - t) / 1e9)
        t = time.perf_counter()
        adds(iters // 20)
        ghz.append(iters // 20 * UNROLL_ADDS / (time.perf_counter() - t) / 1e9)
    g, h = max(gf), max(ghz)  # best of: the least disturbed run on a shared machine
    return {"gflops": g, "ghz": h, "fma_per_cycle": g / (2 * lanes) / h, "lanes": lanes, "cpu": info.cpu}


# -- single-conv models -----------------------------------------------------------------------------

def conv_model(shape, path: str) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    name, c, m, k, s, h, _ = shape
    rng = np.random.default_rng(0)
    w = (rng.standard_normal((m, c, k, k)) / np.sqrt(c * k * k)).astype(np.float32)
    bias = rng.standard_normal(m).astype(np.float32)
    oh = out_size(h, k, s)
    node = helper.make_node("Conv", ["x", "w", "b"], ["y"], kernel_shape=[k, k], strides=[s, s],
                            pads=[k // 2] * 4)
    g = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, h, h])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, m, oh, oh])],
                          [numpy_helper.from_array(w, "w"), numpy_helper.from_array(bias, "b")])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    onnx.save(model, path)


WORKER = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
import conv_peak
engine, reps, tmp = sys.argv[2], int(sys.argv[3]), sys.argv[4]
names = json.loads(sys.argv[5])
res = {}
for shape in conv_peak.SHAPES:
    if shape[0] not in names:
        continue
    path = f"{tmp}/{shape[0].replace(' ', '_').replace('/', 's').replace('>', '')}.onnx"
    x = np.random.default_rng(1).standard_normal((1, shape[1], shape[5], shape[5])).astype(np.float32)
    if engine == "ort":
        import onnxruntime as ort
        so = ort.SessionOptions()
        so.intra_op_num_threads = int(sys.argv[6])
        so.inter_op_num_threads = 1
        sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        run = lambda: sess.run(None, {"x": x})
    else:
        import nnc
        exe = nnc.compile(path, target="x86", quiet=True, threads=int(sys.argv[6]))
        run = lambda: exe.run({"x": x})
    for _ in range(3):
        run()
    clock = time.thread_time if sys.argv[7] == "cpu" else time.perf_counter
    ts = []
    for _ in range(reps):
        t = clock()
        run()
        ts.append(clock() - t)
    res[shape[0]] = conv_peak.flops(shape) / sorted(ts)[len(ts) // 2] / 1e9
print(json.dumps(res))
"""


def run_engine(engine: str, names: list[str], reps: int, tmp: str, threads: int, timer: str) -> dict[str, float]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NNC_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", WORKER, os.path.dirname(os.path.abspath(__file__)), engine,
                          str(reps), tmp, json.dumps(names), str(threads), timer],
                         env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{engine} worker failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main(argv: list[str] | None = None) -> int:
    import tempfile

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--engines", default="nnc,ort")
    ap.add_argument("--shapes", default="", help="only shapes whose name contains this (e.g. 3x3)")
    ap.add_argument("--timer", choices=["wall", "cpu"], default="wall",
                    help="cpu: the calling thread's CPU time (1 thread only), for a loaded machine")
    ap.add_argument("--json", default="", help="also write the per-round figures here")
    a = ap.parse_args(argv)
    engines = a.engines.split(",")
    shapes = [s for s in SHAPES if a.shapes in s[0]]
    names = [s[0] for s in shapes]
    print(f"uptime before: `{_uptime()}`\n")
    peak = measure_peak()
    print(f"FP32 FMA peak, 1 thread ({peak['cpu']}, {peak['lanes']}-lane vectors, {CHAINS} chains, "
          f"best of 50 runs of ~2 ms): "
          f"{peak['gflops']:.1f} GFLOP/s at a measured {peak['ghz']:.2f} GHz = "
          f"{peak['fma_per_cycle']:.2f} vector FMAs/cycle\n", flush=True)
    res: dict[str, dict[str, list[float]]] = {e: {n: [] for n in names} for e in engines}
    with tempfile.TemporaryDirectory() as tmp:
        for s in shapes:
            conv_model(s, f"{tmp}/{s[0].replace(' ', '_').replace('/', 's').replace('>', '')}.onnx")
        for r in range(a.rounds):
            for e in engines if r % 2 == 0 else engines[::-1]:
                for n, g in run_engine(e, names, a.reps, tmp, a.threads, a.timer).items():
                    res[e][n].append(g)
            print(f"round {r + 1}/{a.rounds} done", file=sys.stderr, flush=True)
    med = {e: {n: statistics.median(v) for n, v in d.items()} for e, d in res.items()}
    cols = " | ".join(f"{e} GFLOP/s | {e} % peak" for e in engines)
    print(f"| conv (batch 1) | x in ResNet-50 | MFLOP | {cols} |" + (" nnc / ort time |" if len(engines) == 2 else ""))
    print("|---|---|---|" + "---|---|" * len(engines) + ("---|" if len(engines) == 2 else ""))
    for s in shapes:
        n = s[0]
        cells = " | ".join(f"{med[e][n]:.1f} | {med[e][n] / peak['gflops']:.0%}" for e in engines)
        ratio = f" {med['ort'][n] / med['nnc'][n]:.2f} |" if engines == ["nnc", "ort"] else ""
        print(f"| {n} | {s[6]} | {flops(s) / 1e6:.0f} | {cells} |{ratio}")
    for e in engines:  # the model's conv time at these rates, each shape counted as often as it occurs
        ms = sum(flops(s) * s[6] / (med[e][s[0]] * 1e9) for s in shapes) * 1e3
        print(f"\n{e}: {ms:.2f} ms for the listed convs, weighted by their count in ResNet-50")
    print(f"\nuptime after: `{_uptime()}`")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"peak": peak, "rounds": res}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

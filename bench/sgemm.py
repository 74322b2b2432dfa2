"""SGEMM GFLOP/s: nnc's packed microkernel GEMM against numpy (OpenBLAS), in the same run.

    python bench/sgemm.py [--size 1024] [--threads 1,2] [--rounds 5] [--reps 7] [--const-b]

Each measurement runs in a fresh subprocess (one engine, one thread count, thread counts fixed by
environment variables before numpy or nnc load: ``OPENBLAS_NUM_THREADS``/``OMP_NUM_THREADS`` for
numpy, ``NNC_NUM_THREADS`` for nnc). Rounds alternate between the engines so that load from other
processes on a shared machine hits both alike; each subprocess reports the median of ``reps``
timed calls after a warm-up, and the table shows the median over rounds. nnc computes ``x @ w``
with both operands run-time inputs (``--const-b`` makes ``w`` a weight, packed at compile time).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys

WORKER = r"""
import json, sys, time
import numpy as np
n, engine, reps, const_b = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
rng = np.random.default_rng(0)
a = rng.standard_normal((n, n)).astype(np.float32)
w = rng.standard_normal((n, n)).astype(np.float32)
if engine == "numpy":
    def run():
        return a @ w
else:
    import nnc
    from nnc.ir import Builder, Graph, Module, tensor
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [n, n]))
    wv = b.const(w, name="w") if const_b else g.add_param("w", tensor("f32", [n, n]))
    g.set_outputs([b.op("matmul", x, wv, name="y")], ["y"])
    exe = nnc.compile(m, target="x86", quiet=True)
    feeds = {"x": a} if const_b else {"x": a, "w": w}
    y = exe.run(feeds)["y"]
    err = float(np.abs(y - a @ w).max())
    assert err < 1e-3 * n ** 0.5, err
    def run():
        return exe.run(feeds)
run()
ts = []
for _ in range(reps):
    t = time.perf_counter()
    run()
    ts.append(time.perf_counter() - t)
print(json.dumps({"gflops": 2 * n ** 3 / sorted(ts)[len(ts) // 2] / 1e9}))
"""


def measure(engine: str, n: int, threads: int, reps: int, const_b: bool) -> float:
    env = dict(os.environ, OPENBLAS_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads),
               MKL_NUM_THREADS=str(threads), NNC_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", WORKER, str(n), engine, str(reps), "1" if const_b else "0"],
                         env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["gflops"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=7)
    ap.add_argument("--const-b", action="store_true")
    args = ap.parse_args(argv)
    n = args.size
    print(f"SGEMM {n}x{n}x{n} ({'weight B, packed at compile time' if args.const_b else 'B a run-time input'})")
    print("| threads | nnc GFLOP/s | numpy GFLOP/s | nnc / numpy |")
    print("|---|---|---|---|")
    for t in [int(v) for v in args.threads.split(",")]:
        res: dict[str, list[float]] = {"nnc": [], "numpy": []}
        for r in range(args.rounds):
            order = ["nnc", "numpy"] if r % 2 == 0 else ["numpy", "nnc"]
            for engine in order:
                res[engine].append(measure(engine, n, t, args.reps, args.const_b))
        a, b = statistics.median(res["nnc"]), statistics.median(res["numpy"])
        print(f"| {t} | {a:.1f} | {b:.1f} | {a / b:.0%} |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

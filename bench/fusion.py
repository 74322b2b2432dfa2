"""The latency gain from the optimisation pipeline (fusion above all) per model on x86: nnc at -O0
against nnc at -O3, each in its own process, rounds alternating (nnc/bench.py), medians.

    python bench/fusion.py [--models resnet18,mobilenet_v2,...] [--threads 1] [--out bench/FUSION.md]

Also prints the kernel counts of both levels (from the compile report).
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys

sys.path.insert(0, os.path.dirname(__file__))

import models  # noqa: E402

import nnc  # noqa: E402
from nnc.bench import benchmark  # noqa: E402
from nnc.ir.specialize import specialize  # noqa: E402
from nnc.pipeline import optimize  # noqa: E402


def kernels(path: str, level: int) -> int:
    m = nnc.from_onnx(path)
    m = specialize(m, {p.name: tuple(1 if isinstance(d, str) else d for d in p.shape) for p in m.main.params})
    opt = optimize(m, "infer", {"opt_level": level})[0]
    return sum(1 for op in opt.main.ops if op.opname != "const")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mlp,cnn_small,resnet18,mobilenet_v2,bert_small,resnet50,squeezenet")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    table = models.all_models()
    rows = ["| model | kernels -O0 | kernels -O3 | -O0 median ms | -O3 median ms | speedup |",
            "|---|---|---|---|---|---|"]
    for name in a.models.split(","):
        path = str(table[name]())
        res = benchmark(path, engines=("nnc-O0", "nnc"), threads=a.threads, rounds=a.rounds,
                        configs={"nnc-O0": {"target": "x86", "opt_level": 0}})
        o0, o3 = res["nnc-O0"], res["nnc"]
        if o0["status"] != "ok" or o3["status"] != "ok":
            rows.append(f"| {name} | | | {o0['status']} | {o3['status']} | |")
        else:
            rows.append(f"| {name} | {kernels(path, 0)} | {kernels(path, 3)} | {o0['median_ms']:.2f} | "
                        f"{o3['median_ms']:.2f} | {o0['median_ms'] / o3['median_ms']:.2f}x |")
        print(rows[-1], flush=True)
    text = (f"## Fusion gain on x86, {datetime.date.today()}, {a.threads} thread(s)\n\n" + "\n".join(rows) + "\n")
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n" + text)
    print(text)


if __name__ == "__main__":
    main()

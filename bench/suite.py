"""The model suite: nnc x86 against onnxruntime and the reference interpreter, as a markdown table.

    python bench/suite.py [--set core|torchvision|all] [--models REGEX] [--threads 1,2] [--rounds 2]
                          [--budget 1.0] [--out FILE.md]

For every model of ``bench/models.py`` (the core set: five PyTorch definitions exported to ONNX,
seven onnx "light" real models; ``--set torchvision``: ResNet-50, EfficientNet-B0, MobileNetV3-small
and -large, DenseNet-121, ConvNeXt-T and a BERT-base encoder as torchvision / transformers define
them, random weights; ``--set all``: both) and every thread count, ``nnc.bench.benchmark`` times three engines, each in
its own subprocess, rounds alternating between them: nnc's x86 backend, onnxruntime
(ORT_ENABLE_ALL, the same intra-op threads) and nnc's reference interpreter ("numpy-only": numpy
with its BLAS limited to the same threads). GFLOP/s counts 2 x multiply-adds of conv/matmul/gemm.

A model an engine cannot run (an op without an x86 lowering, a crash, a timeout) is reported as
``fails: <reason>`` under the table; the rest of the suite still runs, so the script can be run again
as the backend grows. The last column says whether nnc's outputs agree with onnxruntime's (largest
difference scaled by max(|ort|, 1) at most 1e-3).
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import re
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import TORCHVISION_SET, all_models  # noqa: E402

from nnc import bench  # noqa: E402

LABELS = {"nnc": "nnc x86", "ort": "onnxruntime", "reference": "numpy-only"}


def _ms(r: dict) -> str:
    return f"{r['median_ms']:.2f}" if r.get("status") == "ok" else "fails"


def _gflops(r: dict, flops: float | None) -> str:
    return f"{flops / r['median_ms'] / 1e6:.1f}" if r.get("status") == "ok" and flops else "-"


def run_suite(names: list[str], threads: list[int], rounds: int, budget: float, timeout: float,
              engines: list[str]) -> list[dict]:
    rows = []
    models = all_models(torchvision=True)
    for name in names:
        try:
            path = str(models[name]())
        except Exception as e:  # noqa: BLE001 - e.g. torch missing: report the model, go on
            rows.append({"model": name, "error": f"cannot build the model: {type(e).__name__}: {e}"})
            print(f"{name}: cannot build the model: {e}", file=sys.stderr)
            continue
        flops = bench.flops_or_none(path)
        for t in threads:
            t0 = time.time()
            res = bench.benchmark(path, engines, threads=t, target="x86", rounds=rounds, budget_s=budget,
                                  min_runs=3, max_runs=100, timeout=timeout)
            rows.append({"model": name, "threads": t, "flops": flops, "results": res})
            print(bench.format_report(path, res, t, flops) + f"\n  ({time.time() - t0:.0f} s)", file=sys.stderr)
    return rows


def markdown(rows: list[dict], engines: list[str]) -> str:
    cols = ["model", "GFLOP", "threads"]
    for e in engines:
        cols += [f"{LABELS[e]} ms", f"{LABELS[e]} GFLOP/s"]
    cols += ["nnc / ORT", "nnc compile s", "agrees with ORT"]
    out = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    failures: dict[tuple[str, str], list[str]] = {}
    ratios: dict[int, list[float]] = {}
    for row in rows:
        if "error" in row:
            out.append(f"| {row['model']} | " + " | ".join(["-"] * (len(cols) - 1)) + " |")
            failures.setdefault((row["model"], "all"), []).append(row["error"])
            continue
        res, flops = row["results"], row["flops"]
        cells = [row["model"], f"{flops / 1e9:.3g}" if flops else "?", str(row["threads"])]
        for e in engines:
            r = res.get(e, {"status": "not run"})
            cells += [_ms(r), _gflops(r, flops)]
            if r["status"] != "ok":
                failures.setdefault((row["model"], LABELS[e]), []).append(f"{row['threads']}: {r['status']}")
        n, o = res.get("nnc", {}), res.get("ort", {})
        if n.get("status") == "ok" and o.get("status") == "ok":
            ratio = n["median_ms"] / o["median_ms"]
            ratios.setdefault(row["threads"], []).append(ratio)
            cells.append(f"{ratio:.2f}x")
        else:
            cells.append("-")
        cells.append(f"{n['compile_s']:.1f}" if n.get("status") == "ok" else "-")
        agree = res.get("agreement", {}).get("nnc")
        cells.append("-" if agree is None else ("yes" if agree["max_scaled_diff"] <= 1e-3 else
                                                f"NO ({agree['max_scaled_diff']:.1e})"))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    for t, rs in sorted(ratios.items()):
        geo = math.exp(sum(math.log(r) for r in rs) / len(rs))
        out.append(f"Geometric mean nnc / onnxruntime latency, {t} thread(s): {geo:.2f}x over {len(rs)} model(s).")
    if failures:
        out += ["", "Failures (threads: reason):", ""]
        for (model, engine), reasons in failures.items():
            # the same reason at every thread count is said once
            texts = {re.sub(r"^\d+: ", "", r) for r in reasons}
            shown = sorted(texts)[0] if len(texts) == 1 else "; ".join(reasons)
            out.append(f"- {model}, {engine}: {shown}")
    return "\n".join(out) + "\n"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--set", choices=["core", "torchvision", "all"], default="core",
                    help="core: the five PyTorch and seven onnx light models (default); torchvision: the "
                         "torchvision/transformers architectures (TORCHVISION_SET); all: both")
    ap.add_argument("--models", default=None, help="regex selecting model names of the set")
    ap.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    ap.add_argument("--rounds", type=int, default=2, help="alternating rounds per engine (default 2)")
    ap.add_argument("--budget", type=float, default=1.0, help="seconds of timed runs per engine per round")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds before a worker counts as failed")
    ap.add_argument("--engines", default="nnc,ort,reference", help="subset of nnc,ort,reference")
    ap.add_argument("--out", default=None, help="also write the markdown to this file")
    ap.add_argument("--json", default=None, help="write the raw results as JSON")
    a = ap.parse_args()
    core = list(all_models())
    pool = {"core": core, "torchvision": TORCHVISION_SET, "all": core + TORCHVISION_SET}[a.set]
    names = [n for n in pool if a.models is None or re.search(a.models, n)]
    engines = [e for e in a.engines.split(",") if e != "ort" or bench.ort_available()]
    rows = run_suite(names, [int(t) for t in a.threads.split(",")], a.rounds, a.budget, a.timeout, engines)
    text = (f"Run {datetime.date.today().isoformat()} on {platform.node() or 'this machine'} "
            f"({os.cpu_count()} cores), rounds={a.rounds}, budget={a.budget}s per engine per round.\n\n"
            + markdown(rows, engines))
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text)
    if a.json:
        with open(a.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()

"""Per-kernel profile of a model on nnc's x86 backend, next to onnxruntime's per-node profile.

    python bench/profile_ops.py MODEL.onnx [--threads 1] [--top 25] [--runs 20] [--opt-level 3] [--no-ort]

nnc runs the whole graph as one native call, so there is no per-kernel timer inside it. Instead the
model goes through the same pipeline as ``nnc.compile`` (-O3, then the x86 backend's ``prepare``),
and every op of the prepared graph is compiled on its own as a one-op module (its constant operands
stay constants, so weights are pre-packed as in the full model) and timed with random inputs
(median of ``--runs``). The sum over ops approximates the model's latency; the table says which
kernels dominate. onnxruntime's own profiler (``enable_profiling``) gives its per-node times,
grouped by op type, for comparison.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import sys
import tempfile
import time

import numpy as np


def _one_op_module(m, op):
    from nnc.ir import Graph, Module, Op

    g = Graph("main")
    mapping = {}
    body = []
    for v in op.operands:
        if id(v) in mapping:
            continue
        p = v.producer
        if p is not None and p.opname == "const":
            c = Op("const", [], p.attrs, [v.type], [v.name])
            body.append(c)
            mapping[id(v)] = c.results[0]
        else:
            mapping[id(v)] = g.add_param(v.name, v.type)
    for c in body:
        g.insert(c)
    new = Op(op.opname, [mapping[id(v)] for v in op.operands], op.attrs, [r.type for r in op.results],
             [r.name for r in op.results], [r.clone() for r in op.regions], op.loc)
    g.insert(new)
    g.set_outputs(list(new.results), [r.name for r in op.results])
    keys = {c.attrs["ref"] for c in body}
    return Module("one", {"main": g}, {k: m.constants[k] for k in keys},
                  {k: m.constant_types[k] for k in keys if k in m.constant_types})


def _label(op) -> str:
    name = op.opname
    if name == "fused":
        region = op.regions[0]
        name = "fused[" + "+".join(o.opname for o in region.ops) + "]"
    shapes = " ".join("x".join(map(str, v.shape)) for v in op.operands[:2] if v.shape is not None)
    extra = ""
    a = op.attrs if op.opname != "fused" else op.regions[0].ops[0].attrs
    if "strides" in a:
        extra = f" s{tuple(a['strides'])}"
    if a.get("group", 1) != 1:
        extra += f" g{a['group']}"
    return f"{name} {shapes}{extra}"


def nnc_profile(path: str, threads: int, runs: int, opt_level: int | None = None) -> list[tuple[str, float]]:
    import nnc
    from nnc.backends import x86
    from nnc.pipeline import optimize

    m = nnc.load_module(path) if hasattr(nnc, "load_module") else nnc.from_onnx(path)
    m, _, _ = optimize(m, "infer", {} if opt_level is None else {"opt_level": opt_level})
    m = x86.prepare(m)
    rng = np.random.default_rng(0)
    rows = []
    for op in m.main.ops:
        if op.opname == "const":
            continue
        one = _one_op_module(m, op)
        exe = x86.compile(one, {"threads": threads, "cache": False, "quiet": True})
        feeds = {}
        for p in one.main.params:
            dt = p.dtype.numpy
            feeds[p.name] = (rng.standard_normal(p.shape).astype(dt) if np.dtype(dt).kind == "f"
                             else np.zeros(p.shape, dt))
        for _ in range(2):
            exe.run(feeds)
        ts = []
        for _ in range(runs):
            t0 = time.perf_counter()
            exe.run(feeds)
            ts.append(time.perf_counter() - t0)
        rows.append((_label(op), float(np.median(ts)) * 1e3))
    return rows


def ort_profile(path: str, threads: int, runs: int) -> dict[str, float]:
    import onnxruntime as ort

    from nnc.bench import onnx_inputs

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.enable_profiling = True
    so.profile_file_prefix = os.path.join(tempfile.mkdtemp(), "ort")
    s = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = onnx_inputs(path)
    for _ in range(runs + 2):
        s.run(None, feeds)
    prof = s.end_profiling()
    with open(prof) as f:
        events = json.load(f)
    per = collections.defaultdict(list)
    for e in events:
        if e.get("cat") == "Node" and e["name"].endswith("_kernel_time"):
            per[e["args"]["op_name"]].append(e["dur"] / 1e3)
    # the events hold every run: divide the total by the number of runs
    return {k: sum(v) / (runs + 2) for k, v in per.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--opt-level", type=int, default=None, help="pipeline level (default: nnc.compile's)")
    ap.add_argument("--no-ort", action="store_true")
    a = ap.parse_args()
    os.environ.setdefault("NNC_NUM_THREADS", str(a.threads))
    rows = nnc_profile(a.model, a.threads, a.runs, a.opt_level)
    total = sum(t for _, t in rows)
    by_kind = collections.defaultdict(float)
    for label, t in rows:
        by_kind[label.split(" ")[0]] += t
    print(f"nnc x86, {a.threads} thread(s): sum of {len(rows)} one-op kernels = {total:.2f} ms")
    for label, t in sorted(rows, key=lambda r: -r[1])[:a.top]:
        print(f"  {t:8.3f} ms  {label}")
    print("by op:")
    for kind, t in sorted(by_kind.items(), key=lambda r: -r[1]):
        print(f"  {t:8.3f} ms  {kind}")
    if not a.no_ort:
        ort_rows = ort_profile(a.model, a.threads, a.runs)
        print(f"onnxruntime, {a.threads} thread(s): {sum(ort_rows.values()):.2f} ms in nodes")
        for kind, t in sorted(ort_rows.items(), key=lambda r: -r[1]):
            print(f"  {t:8.3f} ms  {kind}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()

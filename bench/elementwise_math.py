"""Elementwise math, reductions and normalizations: nnc x86 against numpy and onnxruntime.

    python bench/math.py [--reps 30] [--threads 1]

One single-op model per case, built as ONNX so onnxruntime runs the same graph; the three engines
are timed alternately (median of ``reps`` calls after a warm-up) so load from other processes on a
shared machine hits them alike. The numpy column is the closest numpy expression (scipy for erf),
a reference point, not the same algorithm. Times are microseconds per call.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numpy as np
import onnx
from onnx import TensorProto, helper

CASES = [
    # name, onnx op, input shapes, attrs, numpy equivalent
    ("exp 1M", "Exp", [(1024, 1024)], {}, lambda x: np.exp(x)),
    ("tanh 1M", "Tanh", [(1024, 1024)], {}, lambda x: np.tanh(x)),
    ("sigmoid 1M", "Sigmoid", [(1024, 1024)], {}, lambda x: 1 / (1 + np.exp(-x))),
    ("erf 1M", "Erf", [(1024, 1024)], {}, None),
    ("gelu 1M", "Gelu", [(1024, 1024)], {}, None),
    ("log 1M", "Log", [(1024, 1024)], {}, lambda x: np.log(np.abs(x))),
    ("softmax 128x1000", "Softmax", [(128, 1000)], {"axis": -1},
     lambda x: (lambda e: e / e.sum(-1, keepdims=True))(np.exp(x - x.max(-1, keepdims=True)))),
    ("layernorm 128x768", "LayerNormalization", [(128, 768), (768,), (768,)], {"axis": -1}, None),
    ("reduce_sum rows 1024x1024", "ReduceSum", [(1024, 1024)], {"keepdims": 0, "axes": [1]}, lambda x: x.sum(1)),
    ("reduce_max cols 1024x1024", "ReduceMax", [(1024, 1024)], {"keepdims": 0, "axes": [0]}, lambda x: x.max(0)),
    ("batchnorm 1x64x56x56", "BatchNormalization", [(1, 64, 56, 56)] + [(64,)] * 4, {}, None),
]


def model(op: str, shapes, attrs) -> onnx.ModelProto:
    names = [f"x{i}" for i in range(len(shapes))]
    inputs = [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in zip(names, shapes)]
    opset = 18
    node_inputs = list(names)
    extra = []
    if op in ("ReduceSum", "ReduceMax") and "axes" in attrs:
        axes = attrs.pop("axes")
        extra.append(helper.make_tensor("axes", TensorProto.INT64, [len(axes)], axes))
        node_inputs.append("axes")
    if op == "Gelu":
        opset = 20
    node = helper.make_node(op, node_inputs, ["y"], **attrs)
    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    g = helper.make_graph([node], "bench", inputs, [out], initializer=extra)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def timeit(fn, reps: int) -> float:
    fn()
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    os.environ.setdefault("NNC_NUM_THREADS", str(args.threads))
    import onnxruntime as ort

    import nnc

    rng = np.random.default_rng(0)
    print(f"{'case':28s} {'nnc us':>10s} {'ort us':>10s} {'numpy us':>10s}  nnc/ort")
    ratios = []
    for name, op, shapes, attrs, ref in CASES:
        mp = model(op, shapes, dict(attrs))
        feeds = {f"x{i}": rng.standard_normal(s).astype(np.float32) for i, s in enumerate(shapes)}
        if op == "BatchNormalization":
            feeds["x4"] = np.abs(feeds["x4"]) + 0.1
        cm = nnc.compile(nnc.from_onnx(mp), target="x86")
        so = ort.SessionOptions()
        so.intra_op_num_threads = args.threads
        sess = ort.InferenceSession(mp.SerializeToString(), so, providers=["CPUExecutionProvider"])
        x = feeds["x0"]
        runs = {"nnc": lambda cm=cm, feeds=feeds: cm.run(feeds),
                "ort": lambda sess=sess, feeds=feeds: sess.run(None, feeds)}
        if ref is not None:
            runs["numpy"] = lambda ref=ref, x=x: ref(x)
        best: dict[str, list[float]] = {k: [] for k in runs}
        for _ in range(3):  # alternate engines
            for k, f in runs.items():
                best[k].append(timeit(f, args.reps))
        t = {k: statistics.median(v) for k, v in best.items()}
        ratios.append(t["nnc"] / t["ort"])
        npy = f"{t['numpy']:10.0f}" if "numpy" in t else f"{'-':>10s}"
        print(f"{name:28s} {t['nnc']:10.0f} {t['ort']:10.0f} {npy}  {t['nnc'] / t['ort']:.2f}")
    print(f"geomean nnc/ort: {float(np.exp(np.mean(np.log(ratios)))):.2f}")


if __name__ == "__main__":
    main()

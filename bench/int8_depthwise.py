"""Depthwise convolution layers of MobileNetV2/V3 and EfficientNet-B0, one at a time: nnc's INT8
depthwise kernel with the requantize (+ ReLU clip) fused into it, against nnc's FP32 depthwise conv
with bias and ReLU fused, in the same process, rounds alternating INT8 / FP32, median microseconds.

    python bench/int8_depthwise.py [--threads 1] [--rounds 5] [--reps 200]

Shapes are (channels, plane size, kernel, stride) at batch 1. Both builds run the same weights
(random int8 values, the FP32 build their float copies). The INT8/FP32 column below 1 means INT8 is
faster. Each layer is compiled once per engine; the cache is used as for any compile.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

LAYERS = [  # (channels, plane, kernel, stride): MobileNetV2 / V3-large / EfficientNet-B0 depthwise layers
    (32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 3, 1), (144, 56, 3, 2), (192, 28, 3, 1), (384, 14, 3, 1),
    (576, 14, 3, 2), (960, 7, 3, 1), (72, 56, 5, 2), (240, 28, 5, 1), (480, 14, 5, 1), (672, 14, 5, 2),
    (1152, 7, 5, 1),
]


def build(c: int, h: int, k: int, s: int, int8: bool):
    import nnc
    from nnc.ir import Builder, Graph, Module, tensor

    rng = np.random.default_rng(0)
    w = rng.integers(-127, 128, size=(c, 1, k, k)).astype(np.int8)
    m = Module("dw")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    pads = [k // 2] * 4
    if int8:
        x = g.add_param("x", tensor("i8", [1, c, h, h]))
        acc = b.op("qconv", x, b.const(w, name="w"), b.const(np.zeros(c, np.int32), name="bias"),
                   strides=[s, s], pads=pads, group=c, x_zero_point=0)
        y = b.op("requantize", acc, b.const(np.full(c, 1 << 30, np.int32), name="m"),
                 b.const(np.full(c, 40, np.int32), name="s"), clip_min=0)
    else:
        x = g.add_param("x", tensor("f32", [1, c, h, h]))
        y = b.op("relu", b.op("conv", x, b.const(w.astype(np.float32), name="w"),
                              b.const(np.zeros(c, np.float32), name="bias"), strides=[s, s], pads=pads, group=c))
    g.set_outputs([y], ["y"])
    cm = nnc.compile(m, target="x86", quiet=True)
    feed = {"x": rng.integers(-128, 128, size=(1, c, h, h)).astype(np.int8 if int8 else np.float32)}
    return cm, feed


def time_us(cm, feed: dict, reps: int) -> float:
    cm.run(feed)
    ts = []
    for _ in range(reps):
        t = time.perf_counter()
        cm.run(feed)
        ts.append(time.perf_counter() - t)
    return statistics.median(ts) * 1e6


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--reps", type=int, default=200)
    a = ap.parse_args()
    import os

    os.environ["NNC_NUM_THREADS"] = str(a.threads)
    print(f"| channels | plane | kernel | stride | INT8 us | FP32 us | INT8/FP32 |  ({a.threads} thread(s))")
    print("|---|---|---|---|---|---|---|")
    for c, h, k, s in LAYERS:
        built = {e: build(c, h, k, s, e == "int8") for e in ("int8", "fp32")}
        times: dict[str, list[float]] = {"int8": [], "fp32": []}
        for _ in range(a.rounds):
            for e, (cm, feed) in built.items():
                times[e].append(time_us(cm, feed, a.reps))
        i8, f32 = (statistics.median(times[e]) for e in ("int8", "fp32"))
        print(f"| {c} | {h}x{h} | {k}x{k} | {s} | {i8:.1f} | {f32:.1f} | {i8 / f32:.2f} |", flush=True)


if __name__ == "__main__":
    main()

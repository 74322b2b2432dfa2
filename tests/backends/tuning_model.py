"""The small CNN the tuning tests use: a 3x3 conv, a depthwise 3x3 conv, a 1x1 conv and a matmul
(every kind of tunable kernel), with small-integer weights and inputs so that every schedule's sums
are exact in f32 and a tuned compile's output must equal the untuned one bit for bit."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from nnc.ir import Builder, DType, Graph, Module, TensorType


def tuning_cnn() -> Module:
    rng = np.random.default_rng(7)

    def w(*shape: int) -> np.ndarray:
        return rng.integers(-2, 3, size=shape).astype(np.float32)

    m = Module(name="tuning_cnn")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", TensorType(DType.f32, (1, 8, 12, 12)))
    h = b.op("conv", x, b.const(w(16, 8, 3, 3), "w1"), b.const(w(16), "b1"), pads=[1, 1, 1, 1], name="c1")
    h = b.op("relu", h)
    h = b.op("conv", h, b.const(w(16, 1, 3, 3), "w2"), pads=[1, 1, 1, 1], group=16, name="dw")
    h = b.op("conv", h, b.const(w(24, 16, 1, 1), "w3"), name="pw")
    h = b.op("reshape", h, shape=[1, 24 * 144])
    y = b.op("matmul", h, b.const(w(24 * 144, 10), "w4"), name="y")
    g.set_outputs([y])
    return m


def write_tuning_cnn(folder: Path) -> Path:
    """The model as nnc text IR (and its weights beside it) for the CLI; returns the .nnc path."""
    from nnc.ir import print_module

    src = folder / "m.nnc"
    m = tuning_cnn()
    src.write_text(print_module(m))
    np.savez(folder / "m.npz", **m.constants)
    return src


def feeds() -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(3).integers(-2, 3, size=(1, 8, 12, 12)).astype(np.float32)}

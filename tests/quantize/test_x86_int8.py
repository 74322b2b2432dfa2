"""x86 kernels of the integer ops (VNNI qconv/qmatmul, requantize, qadd): bit-exact against the
reference interpreter, op by op over the shapes that take the kernels' edge paths (pixel and
channel tails, K not a multiple of 4, padding reading the zero point, depthwise), and on a whole
quantized CNN."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, DType, Graph, Module, interpret, tensor
from nnc.passes.quantize import quantize_module

sys.path.insert(0, os.path.dirname(__file__))
from quant_models import feeds, small_cnn  # noqa: E402

RNG = np.random.default_rng(3)


def i8(*shape: int) -> np.ndarray:
    return RNG.integers(-128, 128, size=shape).astype(np.int8)


def i32(n: int, lim: int = 5000) -> np.ndarray:
    return RNG.integers(-lim, lim, size=n).astype(np.int32)


def x86_equals_interpreter(opname: str, x: np.ndarray, consts: list[np.ndarray], **attrs) -> None:
    m = Module("t")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    xv = g.add_param("x", tensor(str(DType.from_numpy(x.dtype)), list(x.shape)))
    y = b.op(opname, xv, *[b.const(c, name=f"c{i}") for i, c in enumerate(consts)], **attrs)
    g.set_outputs([y], ["y"])
    want = interpret(m, {"x": x})["y"]
    got = nnc.compile(m, target="x86", quiet=True).run({"x": x})["y"]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("M,C,H,k,s,p,zp,g", [
    (20, 16, 9, 3, 2, 1, -5, 1),   # channel tail (20 = 12 + 8), pixel tail, stride 2
    (33, 3, 17, 7, 2, 3, 7, 1),    # 3 input channels: a partial group of four
    (64, 64, 7, 1, 1, 0, 0, 1),    # 1x1
    (16, 16, 8, 3, 1, 1, 3, 16),   # depthwise: the direct loop nest
    (12, 8, 10, 3, 1, 1, -128, 2),  # grouped, zero point at the bottom of the range
    # stride 1 packs 16 pixels per step, the rest under a lane mask
    (24, 6, 37, 1, 1, 0, 9, 1),    # 1x1: rows of 37 = 2 x 16 + 5, a partial group of two channels
    (16, 5, 21, 3, 1, 1, -7, 1),   # 3x3 padded: runs clipped by the border, one channel past a group
    (20, 32, 16, 3, 1, 2, 100, 1),  # padding 2: a run of exactly 16 and runs of 14
    # planes of >= 1024 pixels take the 6-channel x 64-pixel tile (_qconv_tile)
    (20, 16, 39, 1, 1, 0, 3, 1),   # 1521 pixels = 23 x 64 + 49, channels 20 = 3 x 6 + 2
    (13, 3, 64, 3, 2, 1, -5, 1),   # stem-like, 32 x 32 outputs
    (12, 8, 32, 3, 1, 1, 0, 2),    # grouped, 6 channels per group
])
def test_qconv(M, C, H, k, s, p, zp, g):
    x86_equals_interpreter("qconv", i8(2, C, H, H), [i8(M, C // g, k, k), i32(M)], strides=[s, s], pads=[p] * 4,
                           x_zero_point=zp, group=g)


@pytest.mark.parametrize("batch,M,K,N,zp", [((), 1, 512, 1000, 0), ((2,), 13, 37, 50, -3)])
def test_qmatmul(batch, M, K, N, zp):
    x86_equals_interpreter("qmatmul", i8(*batch, M, K), [i8(K, N), i32(N)], a_zero_point=zp)


def test_requantize_per_channel_and_qadd_broadcast():
    x = RNG.integers(-2**31, 2**31, size=(2, 5, 3, 4), dtype=np.int64).astype(np.int32)
    mult = np.array([1, 1 << 30, 2**31 - 1, 12345, 0], np.int32)
    shift = np.array([2, 40, 62, 0, 5], np.int32)
    x86_equals_interpreter("requantize", x, [mult, shift], zero_point=3, clip_min=-100)
    x86_equals_interpreter("qadd", i8(3, 4, 5), [i8(4, 1)], a_zero_point=2, b_zero_point=-1, a_multiplier=1 << 20,
                           b_multiplier=3 << 19, shift=21, zero_point=-4, clip_min=-4)


def test_quantized_cnn_on_x86_is_bit_exact():
    q = quantize_module(nnc.from_onnx(small_cnn()), feeds(8, 1))
    cm = nnc.compile(q, target="x86", quiet=True)
    for f in feeds(2, 5):
        np.testing.assert_array_equal(cm.run(f)["y"], interpret(q, f)["y"])

"""The vectorised INT8 depthwise kernel (backends/x86/kernels/qconv_depthwise.py) against the
reference interpreter, bit for bit: 3x3 and 5x5, stride 1 and 2, asymmetric padding, zero points at
both ends of the range, channel counts and output widths that are not multiples of 16, small planes
(whose blocks span rows) and wider ones, batch 1 and 2; alone (i32 result) and with the requantize
that follows it fused into its epilogue."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.backends.x86 import prepare
from nnc.ir import Builder, DType, Graph, Module, interpret, tensor

RNG = np.random.default_rng(11)


def _graph(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, requant: dict | None, **attrs) -> Module:
    m = Module("dw")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    xv = g.add_param("x", tensor(str(DType.from_numpy(x.dtype)), list(x.shape)))
    ops = [xv, b.const(w, name="w")] + ([b.const(bias, name="bias")] if bias is not None else [])
    y = b.op("qconv", *ops, **attrs)
    if requant is not None:
        y = b.op("requantize", y, b.const(requant.pop("multiplier"), name="mult"),
                 b.const(requant.pop("shift"), name="shift"), **requant)
    g.set_outputs([y], ["y"])
    return m


def _check(m: Module, x: np.ndarray) -> None:
    want = interpret(m, {"x": x})["y"]
    got = nnc.compile(m, target="x86", quiet=True).run({"x": x})["y"]
    assert got.dtype == want.dtype
    np.testing.assert_array_equal(got, want)


CASES = [  # N, C, H, W, k, stride, pads (t, l, b, r), zp
    (1, 16, 12, 12, 3, 1, (1, 1, 1, 1), 0),
    (2, 19, 9, 13, 3, 2, (1, 1, 1, 1), -7),      # channels and widths off the vector width
    (1, 5, 20, 35, 5, 1, (2, 2, 2, 2), 100),     # 5x5: an odd last tap in each row
    (2, 3, 17, 17, 5, 2, (2, 2, 2, 2), -128),
    (1, 7, 8, 40, 3, 2, (0, 1, 1, 0), 127),      # asymmetric padding (TF "same" at stride 2)
    (1, 4, 6, 6, 3, 1, (0, 0, 0, 0), 3),         # no padding
    (1, 2, 3, 3, 5, 1, (2, 2, 2, 2), 1),         # kernel larger than the plane
    (2, 6, 7, 9, 3, 1, (0, 1, 1, 0), 5),         # a small stride-1 plane (flat blocks), asymmetric padding
    (1, 9, 14, 14, 5, 1, (2, 2, 2, 2), -1),      # 14x14 5x5: flat blocks spanning rows
    (1, 3, 17, 17, 3, 1, (1, 1, 1, 1), 0),       # just past the flat width: row blocks
]


@pytest.mark.parametrize("n,c,h,w,k,s,pads,zp", CASES)
@pytest.mark.parametrize("bias", [True, False])
def test_depthwise_i32(n, c, h, w, k, s, pads, zp, bias):
    x = RNG.integers(-128, 128, size=(n, c, h, w)).astype(np.int8)
    wt = RNG.integers(-128, 128, size=(c, 1, k, k)).astype(np.int8)
    bv = RNG.integers(-50000, 50000, size=c).astype(np.int32) if bias else None
    _check(_graph(x, wt, bv, None, strides=[s, s], pads=list(pads), x_zero_point=zp, group=c), x)


@pytest.mark.parametrize("n,c,h,w,k,s,pads,zp", CASES)
def test_depthwise_requantize_fused(n, c, h, w, k, s, pads, zp):
    x = RNG.integers(-128, 128, size=(n, c, h, w)).astype(np.int8)
    wt = RNG.integers(-127, 128, size=(c, 1, k, k)).astype(np.int8)
    bv = RNG.integers(-50000, 50000, size=c).astype(np.int32)
    mult = RNG.integers(1 << 30, 1 << 31, size=c).astype(np.int32)
    shift = RNG.integers(36, 44, size=c).astype(np.int32)
    shift[0] = 0 if c > 2 else shift[0]  # shift 0 takes its own path in the rounding
    mult[0] = 1 if c > 2 else mult[0]
    rq = {"multiplier": mult, "shift": shift, "zero_point": -3, "clip_min": 0, "clip_max": 100}
    m = _graph(x, wt, bv, rq, strides=[s, s], pads=list(pads), x_zero_point=zp, group=c)
    _check(m, x)


def test_fused_group_replaces_the_requantize_kernel():
    x = RNG.integers(-128, 128, size=(1, 8, 10, 10)).astype(np.int8)
    wt = RNG.integers(-127, 128, size=(8, 1, 3, 3)).astype(np.int8)
    rq = {"multiplier": np.int32(1 << 30), "shift": np.int32(40), "zero_point": 0}
    m = _graph(x, wt, None, rq, strides=[1, 1], pads=[1] * 4, x_zero_point=0, group=8)
    ops = [op.opname for op in prepare(m).main.ops if op.opname != "const"]
    assert ops == ["fused"]
    assert nnc.compile(m, target="x86", quiet=True).report["x86"]["kernels"]["calls"] == 1
    _check(m, x)


@pytest.mark.parametrize("s", [1, 2])
def test_depthwise_without_vnni(s):
    """skylake-avx512 has AVX-512 but no VNNI: the emulated vpdpwssd must give the same integers."""
    x = RNG.integers(-128, 128, size=(1, 20, 11, 11)).astype(np.int8)
    wt = RNG.integers(-128, 128, size=(20, 1, 3, 3)).astype(np.int8)
    rq = {"multiplier": np.int32(1 << 30), "shift": np.int32(38), "zero_point": 2, "clip_min": 2}
    m = _graph(x, wt, None, rq, strides=[s, s], pads=[1] * 4, x_zero_point=-9, group=20)
    got = nnc.compile(m, target="x86", quiet=True, cpu="skylake-avx512").run({"x": x})["y"]
    np.testing.assert_array_equal(got, interpret(m, {"x": x})["y"])

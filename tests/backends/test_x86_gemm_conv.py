"""x86 matrix products and convolutions against the interpreter (numpy references).

Shapes are chosen ragged (not multiples of the 12 x 32 microkernel tile, nor of the KC block) so
every masked edge path runs; constant weights exercise compile-time packing, graph inputs the
run-time packing. Tolerances: f32 sums of up to a few thousand products in another order differ by
a few ulps of the magnitude of the sum (rtol/atol 1e-4 on unit-variance data); f64 1e-10; integer
results must be exact (both wrap identically).
"""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, Graph, Module, interpret, tensor

NAMES = {np.float32: "f32", np.float64: "f64", np.int32: "i32", np.int64: "i64", np.float16: "f16"}
TOL = {np.float32: 1e-4, np.float64: 1e-10, np.int32: 0, np.int64: 0, np.float16: 1e-2}


def _data(rng, shape, dt):
    if np.issubdtype(dt, np.integer):
        return rng.integers(-5, 6, size=shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def _check(opname, inputs, consts, dt, **attrs):
    """Build ``opname(*inputs, *consts)`` (inputs become graph params), compare x86 with interpret."""
    rng = np.random.default_rng(len(str(attrs)) + sum(len(s) for s in inputs))
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    operands, feeds = [], {}
    for i, spec in enumerate(inputs + consts):
        kind, shape = spec
        arr = _data(rng, shape, dt)
        if kind == "in":
            operands.append(g.add_param(f"p{i}", tensor(NAMES[dt], list(shape))))
            feeds[f"p{i}"] = arr
        else:
            operands.append(b.const(arr, name=f"c{i}"))
    g.set_outputs([b.op(opname, *operands, name="y", **attrs)], ["y"])
    got = nnc.compile(m, target="x86", quiet=True, cache=False).run(feeds)["y"]
    want = interpret(m, feeds)["y"]
    assert got.shape == want.shape and got.dtype == want.dtype
    tol = TOL[dt]
    if tol == 0:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol,
                                   atol=tol * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (5, 7, 3), (13, 33, 35), (37, 300, 70), (1, 513, 100)])
@pytest.mark.parametrize("const_b", [True, False])
def test_matmul_2d_ragged(M, K, N, const_b):
    _check("matmul", [("in", (M, K))] + ([] if const_b else [("in", (K, N))]),
           [("c", (K, N))] if const_b else [], np.float32)


@pytest.mark.parametrize("sa,sb", [((3, 5, 17), (17, 9)), ((2, 1, 6, 8), (3, 8, 40)), ((8,), (8, 5)),
                                   ((4, 6, 8), (8,)), ((7,), (7,)), ((2, 3, 4, 5), (2, 3, 5, 6))])
def test_matmul_batched_broadcast_and_vectors(sa, sb):
    _check("matmul", [("in", sa), ("in", sb)], [], np.float32)


def test_matmul_const_batched_b():
    _check("matmul", [("in", (3, 20, 30))], [("c", (3, 30, 17))], np.float32)


@pytest.mark.parametrize("dt", [np.float64, np.int32, np.int64, np.float16])
def test_matmul_other_dtypes(dt):
    _check("matmul", [("in", (2, 9, 13)), ("in", (13, 11))], [], dt)


@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, (23,), (19, 1), (19, 23), ()])
def test_gemm_transposes_bias_broadcast(ta, tb, c_shape):
    M, K, N = 19, 41, 23
    a = ("in", (K, M) if ta else (M, K))
    w = ("c", (N, K) if tb else (K, N))
    consts = [w] + ([("c", c_shape)] if c_shape is not None else [])
    _check("gemm", [a], consts, np.float32, trans_a=ta, trans_b=tb, alpha=0.5, beta=1.5)


def test_gemm_runtime_b_f64_and_int():
    _check("gemm", [("in", (6, 10)), ("in", (10, 7)), ("in", (7,))], [], np.float64, alpha=2.0)
    _check("gemm", [("in", (6, 10)), ("in", (7, 10))], [("c", (6, 7))], np.int32, trans_b=1)


@pytest.mark.parametrize("eq,shapes", [("ij,jk->ik", [(4, 5), (5, 3)]), ("bij,bjk->bik", [(2, 3, 4), (2, 4, 5)]),
                                       ("ii->i", [(4, 4)]), ("...ij->...ji", [(2, 3, 4)]), ("i,i", [(6,), (6,)]),
                                       ("ij,kj->", [(3, 4), (5, 4)])])
def test_einsum(eq, shapes):
    _check("einsum", [("in", s) for s in shapes], [], np.float32, equation=eq)


CONVS = [  # x shape, w shape, attrs
    ((1, 3, 8, 8), (4, 3, 3, 3), {}),
    ((2, 5, 9, 7), (6, 5, 1, 1), {}),  # 1x1: the image is B directly
    ((2, 5, 9, 7), (6, 5, 1, 1), {"strides": [2, 2]}),
    ((2, 8, 11, 13), (8, 2, 3, 3), {"group": 4, "pads": [1, 1, 1, 1], "strides": [2, 1]}),
    ((2, 8, 11, 13), (8, 1, 3, 3), {"group": 8, "pads": [1, 1, 1, 1]}),  # depthwise
    ((1, 6, 15, 15), (12, 1, 5, 5), {"group": 6, "pads": [2, 1, 2, 1], "strides": [2, 2], "dilations": [1, 2]}),
    ((1, 3, 20, 20), (16, 3, 7, 7), {"pads": [3, 3, 3, 3], "strides": [2, 2]}),
    ((1, 16, 10, 10), (40, 16, 3, 3), {"pads": [1, 1, 1, 1], "dilations": [2, 2]}),
    ((1, 300, 6, 6), (20, 300, 1, 1), {}),  # K > KC: accumulation across K blocks
    ((1, 4, 10), (5, 4, 3), {"pads": [1, 1]}),
    ((1, 4, 5, 6, 7), (5, 4, 3, 2, 3), {"pads": [1, 0, 1, 1, 0, 1]}),
    ((1, 4, 7, 7), (6, 4, 3, 3), {"auto_pad": "SAME_UPPER", "strides": [2, 2]}),
]


@pytest.mark.parametrize("xs,ws,attrs", CONVS)
@pytest.mark.parametrize("bias", [True, False])
def test_conv_f32(xs, ws, attrs, bias):
    _check("conv", [("in", xs)], [("c", ws)] + ([("c", (ws[0],))] if bias else []), np.float32, **attrs)


def test_conv_runtime_weights():
    _check("conv", [("in", (2, 6, 9, 9)), ("in", (8, 3, 3, 3)), ("in", (8,))], [], np.float32, group=2,
           pads=[1, 1, 1, 1])


@pytest.mark.parametrize("dt", [np.float64, np.int32, np.float16])
def test_conv_other_dtypes(dt):
    _check("conv", [("in", (2, 4, 9, 9))], [("c", (6, 2, 3, 3)), ("c", (6,))], dt, pads=[1, 1, 1, 1], group=2)


@pytest.mark.parametrize("xs,ws,attrs", [
    ((1, 4, 5, 5), (4, 3, 3, 3), {}),
    ((2, 4, 5, 6), (4, 2, 3, 2), {"strides": [2, 3], "pads": [1, 0, 1, 1], "output_padding": [1, 1], "group": 2}),
    ((1, 3, 7), (3, 2, 4), {"strides": [2], "dilations": [2]}),
])
def test_conv_transpose(xs, ws, attrs):
    _check("conv_transpose", [("in", xs)], [("c", ws), ("c", (ws[1] * attrs.get("group", 1),))], np.float32,
           **attrs)


def test_col2im():
    # 2 channels x 2x2 blocks over a 5x5 image with stride 1, pad 1: 6x6 = 36 blocks
    _check("col2im", [("in", (2, 8, 36))], [], np.float32, image_shape=[5, 5], block_shape=[2, 2],
           pads=[1, 1, 1, 1])
    _check("col2im", [("in", (1, 4, 16))], [], np.int32, image_shape=[4, 4], block_shape=[2, 2], strides=[1, 1],
           dilations=[2, 2], pads=[1, 1, 1, 1])


@pytest.mark.parametrize("with_mask", [False, True])
def test_deform_conv(with_mask):
    x, w = ("in", (1, 4, 6, 6)), ("c", (6, 2, 3, 3))
    off = ("in", (1, 2 * 2 * 9, 4, 4))  # offset_group 2
    extra = [("c", (6,))] + ([("in", (1, 2 * 9, 4, 4))] if with_mask else [])
    _check_mixed("deform_conv", [x, w, off] + extra, np.float32, group=2, offset_group=2)


def _check_mixed(opname, specs, dt, **attrs):
    """Like _check, but operands keep their given order (constants may precede inputs)."""
    rng = np.random.default_rng(7)
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    operands, feeds = [], {}
    for i, (kind, shape) in enumerate(specs):
        arr = _data(rng, shape, dt)
        if kind == "in":
            operands.append(g.add_param(f"p{i}", tensor(NAMES[dt], list(shape))))
            feeds[f"p{i}"] = arr
        else:
            operands.append(b.const(arr, name=f"c{i}"))
    g.set_outputs([b.op(opname, *operands, name="y", **attrs)], ["y"])
    got = nnc.compile(m, target="x86", quiet=True, cache=False).run(feeds)["y"]
    want = interpret(m, feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))

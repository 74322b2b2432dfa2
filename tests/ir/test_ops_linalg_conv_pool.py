"""The linalg, conv and pool op families: ONNX import plus reference semantics, checked against
onnxruntime (or onnx.reference where onnxruntime lacks the op), and type inference with symbolic
dims checked against the shapes that actually come out.

Each case is one ONNX node built with onnx.helper; inputs are random, tolerances are float32's.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper
from onnx.reference import ReferenceEvaluator

import nnc
from nnc.ir import Builder, Graph, Module, interpret, tensor

RNG = np.random.default_rng(0)
_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
         np.dtype(np.int64): TensorProto.INT64, np.dtype(np.uint8): TensorProto.UINT8,
         np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32}


def _model(op: str, inputs: dict[str, np.ndarray], n_out: int = 1, opset: int = 19, in_shapes=None,
            **attrs) -> onnx.ModelProto:
    in_shapes = in_shapes or {}
    names = [k for k in inputs]
    outs = [f"y{i}" for i in range(n_out)]
    node = helper.make_node(op, [n if inputs[n] is not None else "" for n in names], outs, **attrs)
    vis = [helper.make_tensor_value_info(n, _ELEM[a.dtype], in_shapes.get(n, a.shape))
           for n, a in inputs.items() if a is not None]
    ovis = [onnx.ValueInfoProto(name=o) for o in outs]  # untyped: the oracles infer it
    m = helper.make_model(helper.make_graph([node], "g", vis, ovis),
                          opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 9
    return m


def _run_nnc(m: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = nnc.compile(m).run({k: v for k, v in inputs.items() if v is not None})
    return [out[o.name] for o in m.graph.output]


def _oracle(m: onnx.ModelProto, inputs: dict[str, np.ndarray], oracle: str) -> list[np.ndarray]:
    feeds = {k: v for k, v in inputs.items() if v is not None}
    if oracle == "ort":
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, feeds)
    return list(ReferenceEvaluator(m).run(None, feeds))


def check(op: str, inputs: dict[str, np.ndarray], n_out: int = 1, oracle: str = "ort", opset: int = 19,
          rtol: float = 1e-5, atol: float = 1e-5, **attrs) -> list[np.ndarray]:
    m = _model(op, inputs, n_out, opset, **attrs)
    got = _run_nnc(m, inputs)
    want = _oracle(m, inputs, oracle)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape, (g.dtype, g.shape, w.dtype, w.shape)
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# -- linalg ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("sa, sb", [((3, 4), (4, 5)), ((4,), (4,)), ((4,), (2, 4, 3)), ((2, 1, 3, 4), (5, 4, 2)),
                                    ((2, 3, 4), (4,))])
def test_matmul_matches_numpy(sa, sb):
    a, b = f32(*sa), f32(*sb)
    (y,) = _run_nnc(_model("MatMul", {"a": a, "b": b}), {"a": a, "b": b})
    np.testing.assert_allclose(y, np.matmul(a.astype(np.float64), b.astype(np.float64)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("c_shape", [None, (), (5,), (3, 1), (3, 5)])
@pytest.mark.parametrize("ta, tb", [(0, 0), (1, 0), (0, 1), (1, 1)])
def test_gemm(c_shape, ta, tb):
    a = f32(4, 3) if ta else f32(3, 4)
    b = f32(5, 4) if tb else f32(4, 5)
    inputs = {"a": a, "b": b}
    if c_shape is not None:
        inputs["c"] = f32(*c_shape)
    check("Gemm", inputs, alpha=0.5, beta=2.0, transA=ta, transB=tb)


def test_gemm_opset6_broadcast_attr():
    inputs = {"a": f32(3, 4), "b": f32(4, 5), "c": f32(5)}
    m = _model("Gemm", inputs, opset=6, broadcast=1, alpha=1.5)
    (y,) = _run_nnc(m, inputs)
    np.testing.assert_allclose(y, 1.5 * inputs["a"] @ inputs["b"] + inputs["c"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("eq, shapes", [("ij,jk->ik", [(2, 3), (3, 4)]), ("bij,bjk->bik", [(2, 2, 3), (2, 3, 4)]),
                                        ("ii->i", [(3, 3)]), ("...ij->...ji", [(2, 3, 4)]), ("i,i", [(5,), (5,)]),
                                        ("ij,jk,kl->il", [(2, 3), (3, 4), (4, 2)]), ("bii->bi", [(2, 3, 3)])])
def test_einsum(eq, shapes):
    check("Einsum", {f"x{i}": f32(*s) for i, s in enumerate(shapes)}, equation=eq)


def test_matmul_integer_scalar_zero_points():
    a = RNG.integers(0, 255, (3, 4)).astype(np.uint8)
    b = RNG.integers(0, 255, (4, 2)).astype(np.uint8)
    check("MatMulInteger", {"a": a, "b": b, "a_zp": np.array(12, np.uint8), "b_zp": np.array(200, np.uint8)})


def test_matmul_integer_per_row_and_column_zero_points():
    # neither oracle takes a per-row zero point for A; the spec's formula is the oracle here
    a = RNG.integers(-128, 127, (3, 4)).astype(np.int8)
    b = RNG.integers(-128, 127, (4, 2)).astype(np.int8)
    a_zp = RNG.integers(-128, 127, (3,)).astype(np.int8)
    b_zp = RNG.integers(-128, 127, (2,)).astype(np.int8)
    inputs = {"a": a, "b": b, "a_zp": a_zp, "b_zp": b_zp}
    (y,) = _run_nnc(_model("MatMulInteger", inputs), inputs)
    want = (a.astype(np.int64) - a_zp[:, None]) @ (b.astype(np.int64) - b_zp[None, :])
    assert y.dtype == np.int32
    np.testing.assert_array_equal(y, want)


# -- conv -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((2, 4, 9, 8), (6, 2, 3, 3), dict(group=2, strides=[2, 1], pads=[1, 0, 2, 1], dilations=[1, 2])),
    ((1, 6, 7, 7), (6, 1, 3, 3), dict(group=6, pads=[1, 1, 1, 1])),  # depthwise
    ((1, 3, 10), (4, 3, 3), dict(strides=[3], dilations=[2])),
    ((1, 2, 5, 6, 4), (3, 2, 2, 3, 2), dict(pads=[1, 0, 1, 0, 1, 1])),
    ((1, 3, 7, 8), (2, 3, 3, 2), dict(auto_pad="SAME_UPPER", strides=[2, 3])),
    ((1, 3, 7, 8), (2, 3, 4, 4), dict(auto_pad="SAME_LOWER", strides=[2, 2])),
    ((1, 3, 7, 8), (2, 3, 3, 3), dict(auto_pad="VALID", strides=[2, 2])),
    ((2, 8, 5, 5), (4, 8, 1, 1), {}),
])
@pytest.mark.parametrize("bias", [False, True])
def test_conv(x_shape, w_shape, attrs, bias):
    inputs = {"x": f32(*x_shape), "w": f32(*w_shape)}
    if bias:
        inputs["b"] = f32(w_shape[0])
    check("Conv", inputs, rtol=1e-4, atol=1e-4, **attrs)


@pytest.mark.parametrize("x_shape, w_shape, attrs", [
    ((1, 2, 3, 3), (2, 3, 3, 3), dict(strides=[2, 2], pads=[1, 0, 0, 1], output_padding=[1, 1])),
    ((2, 4, 3, 4), (4, 2, 2, 3), dict(group=2, dilations=[2, 1], strides=[1, 2])),
    ((1, 1, 3, 3), (1, 2, 3, 3), dict(strides=[3, 2], output_shape=[10, 8])),
    ((1, 1, 3, 3), (1, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_UPPER")),
    ((1, 1, 3, 3), (1, 2, 3, 3), dict(strides=[2, 2], auto_pad="SAME_LOWER")),
    ((1, 2, 5), (2, 3, 3), dict(strides=[2])),
    ((1, 1, 2, 3, 2), (1, 2, 2, 2, 2), {}),
])
@pytest.mark.parametrize("bias", [False, True])
def test_conv_transpose(x_shape, w_shape, attrs, bias):
    inputs = {"x": f32(*x_shape), "w": f32(*w_shape)}
    if bias:
        inputs["b"] = f32(w_shape[1] * attrs.get("group", 1))
    check("ConvTranspose", inputs, rtol=1e-4, atol=1e-4, **attrs)


def test_conv_integer_with_zero_points_and_padding():
    x = RNG.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8)
    w = RNG.integers(0, 255, (3, 2, 3, 3)).astype(np.uint8)
    check("ConvInteger", {"x": x, "w": w, "x_zp": np.array(7, np.uint8), "w_zp": np.array(3, np.uint8)},
          pads=[1, 1, 1, 1], strides=[2, 1])


@pytest.mark.parametrize("with_mask", [False, True])
def test_deform_conv(with_mask):
    x, w = f32(1, 4, 5, 5), f32(2, 2, 2, 2)
    offset = (RNG.standard_normal((1, 2 * 2 * 4, 5, 5)) * 1.5).astype(np.float32)
    inputs = {"x": x, "w": w, "offset": offset, "b": f32(2)}
    if with_mask:
        inputs["mask"] = RNG.random((1, 2 * 4, 5, 5)).astype(np.float32)
    check("DeformConv", inputs, oracle="ref", group=2, offset_group=2, pads=[1, 0, 0, 1], rtol=1e-4, atol=1e-4)


def test_col2im():
    x = f32(2, 2 * 2 * 3, 12)
    inputs = {"x": x, "image_shape": np.array([5, 6], np.int64), "block_shape": np.array([2, 3], np.int64)}
    check("Col2Im", inputs, oracle="ref", strides=[2, 1], pads=[1, 0, 0, 0], dilations=[1, 1])


# -- pool -----------------------------------------------------------------------------------------

POOL_CASES = [
    dict(kernel_shape=[3, 3], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[2, 3], strides=[2, 1], pads=[1, 0, 1, 2], dilations=[2, 1]),
    dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(kernel_shape=[2, 2], auto_pad="SAME_LOWER"),
    dict(kernel_shape=[3, 3], strides=[3, 3], pads=[1, 1, 1, 1], ceil_mode=1),
]


@pytest.mark.parametrize("attrs", POOL_CASES)
def test_max_pool_with_indices(attrs):
    x = f32(2, 3, 8, 7)
    check("MaxPool", {"x": x}, n_out=2, **attrs)


def test_max_pool_column_major_indices_and_uint8():
    x = RNG.integers(0, 255, (1, 2, 5, 6)).astype(np.uint8)
    check("MaxPool", {"x": x}, n_out=2, kernel_shape=[2, 2], strides=[2, 1], storage_order=1, opset=12)


def test_max_pool_3d():
    check("MaxPool", {"x": f32(1, 2, 5, 6, 4)}, kernel_shape=[2, 3, 2], strides=[1, 2, 1], pads=[0, 1, 0, 1, 0, 1])


@pytest.mark.parametrize("attrs", POOL_CASES)
@pytest.mark.parametrize("count_include_pad", [0, 1])
def test_avg_pool(attrs, count_include_pad):
    check("AveragePool", {"x": f32(2, 3, 8, 7)}, count_include_pad=count_include_pad, **attrs)


@pytest.mark.parametrize("p", [1, 2, 3])
def test_lp_pool(p):
    check("LpPool", {"x": f32(1, 2, 6, 5)}, oracle="ort", p=p, kernel_shape=[2, 2], strides=[2, 1],
          pads=[1, 0, 0, 1], opset=18, rtol=1e-4)


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"])
def test_global_pools(op):
    check(op, {"x": f32(2, 3, 4, 5)}, rtol=1e-4)


def test_max_unpool_inverts_max_pool():
    x = f32(1, 2, 6, 6)
    pooled, idx = _oracle(_model("MaxPool", {"x": x}, n_out=2, kernel_shape=[2, 2], strides=[2, 2]), {"x": x}, "ort")
    check("MaxUnpool", {"x": pooled, "i": idx}, kernel_shape=[2, 2], strides=[2, 2])


# -- type inference with symbolic dims ------------------------------------------------------------

def test_symbolic_dims_infer_and_run():
    x = f32(2, 3, 9, 10)
    w = f32(4, 3, 3, 3)
    m = Module("m")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    xv = g.add_param("x", tensor("f32", ["N", 3, "H", "W"]))
    wv = b.const(w, name="w")
    c1 = b.op("conv", xv, wv, pads=(1, 1, 1, 1))
    c2 = b.op("conv", xv, wv, auto_pad="SAME_UPPER", strides=(2, 2))
    p, idx = b.op("max_pool", c2, n_results=2, kernel_shape=(2, 2), with_indices=1)
    flat = b.op("reshape", p, shape=(0, -1), copy_zero=1)
    mm = b.op("matmul", flat, b.const(f32(4 * 4 * 4, 5), name="fc"))
    assert c1.type.shape == ("N", 4, "?", "?") and c2.type.shape == ("N", 4, "?", "?")
    assert idx.type == tensor("i64", ["N", 4, "?", "?"]) and mm.type.shape[-1] == 5
    g.set_outputs([c1, c2, idx], ["c1", "c2", "idx"])
    out = interpret(m, {"x": x})
    sess = ort.InferenceSession(_model("Conv", {"x": x, "w": w}, auto_pad="SAME_UPPER", strides=[2, 2])
                                .SerializeToString(), providers=["CPUExecutionProvider"])
    np.testing.assert_allclose(out["c2"], sess.run(None, {"x": x, "w": w})[0], rtol=1e-4, atol=1e-4)
    assert out["c1"].shape == (2, 4, 9, 10) and out["idx"].shape == (2, 4, 4, 4)


def test_conv_keeps_auto_pad_for_symbolic_spatial_dims():
    x, w = f32(1, 2, 7, 6), f32(3, 2, 3, 3)
    m = _model("Conv", {"x": x, "w": w}, in_shapes={"x": ["N", 2, "H", "W"]}, auto_pad="SAME_LOWER", strides=[2, 2])
    module = nnc.from_onnx(m)
    conv = next(op for op in module.main.ops if op.opname == "conv")
    assert conv.attrs["auto_pad"] == "SAME_LOWER"
    np.testing.assert_allclose(_run_nnc(m, {"x": x, "w": w})[0], _oracle(m, {"x": x, "w": w}, "ort")[0],
                               rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("bias_shape", [[6, 6], [5], []])
def test_conv_bias_must_be_one_value_per_output_channel(bias_shape):
    """A bias of another shape is a type error at inference (it used to be accepted and then failed
    in fold-batchnorm with a ValueError)."""
    from nnc.ir import TypeInferenceError

    m = Module("conv_bias")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [1, 3, 8, 8]))
    w = b.const(np.ones((6, 3, 3, 3), np.float32), name="w")
    bias = b.const(np.ones(bias_shape, np.float32), name="b")
    with pytest.raises(TypeInferenceError, match="one value per output channel"):
        b.op("conv", x, w, bias, name="y")

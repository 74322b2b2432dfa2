"""Reduction, softmax and normalization ops: ONNX import across opset forms, checked against
onnxruntime / onnx.reference (or a numpy formula where neither implements the form), plus the
IR ops' shape inference with symbolic and run-time-only parameters."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import nnc
from nnc.ir import Builder, Graph, Module, tensor
from nnc.ir.types import UNKNOWN

RNG = np.random.default_rng(0)
_ONNX_TYPES = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
               np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
               np.dtype(np.uint64): TensorProto.UINT64}


def make_model(op: str, inputs: dict[str, np.ndarray], n_outputs: int = 1, opset: int = 18,
               consts: dict[str, np.ndarray] | None = None, order: list[str] | None = None,
               **attrs) -> onnx.ModelProto:
    """One-node model: ``inputs`` are graph inputs, ``consts`` initializers; ``order`` lists the
    node's inputs by name ("" for a missing optional one)."""
    consts = consts or {}
    names = order if order is not None else list(inputs) + list(consts)
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, _ONNX_TYPES[v.dtype], v.shape) for k, v in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    ir = 8 if opset <= 18 else 10
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=ir)
    return onnx.shape_inference.infer_shapes(model)  # types the outputs, which onnxruntime requires


def run_nnc(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = nnc.compile(model)(*inputs.values())
    return list(out) if isinstance(out, tuple) else [out]


def run_oracle(model: onnx.ModelProto, inputs: dict[str, np.ndarray], engine: str = "ort") -> list[np.ndarray]:
    if engine == "ort":
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, inputs)
    return ReferenceEvaluator(model).run(None, inputs)


def check(model: onnx.ModelProto, inputs: dict[str, np.ndarray], engine: str = "ort",
          rtol: float = 1e-5, atol: float = 1e-6) -> list[np.ndarray]:
    got, want = run_nnc(model, inputs), run_oracle(model, inputs, engine)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol)
    return got


def ir_ops(model: onnx.ModelProto) -> list[str]:
    return [op.opname for op in nnc.from_onnx(model).main.ops if op.opname != "const"]


# -- reductions ------------------------------------------------------------------------------------

REDUCE_OPS = ["ReduceSum", "ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", "ReduceL1", "ReduceL2",
              "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare"]


def _axes_input_since(op: str) -> int:
    return 13 if op == "ReduceSum" else 18


@pytest.mark.parametrize("op", REDUCE_OPS)
@pytest.mark.parametrize("opset", [11, 13, 18])
@pytest.mark.parametrize("keepdims", [0, 1])
def test_reduce_against_onnxruntime(op, opset, keepdims):
    x = {"x": RNG.uniform(0.5, 2.0, (3, 4, 5)).astype(np.float32)}
    if opset >= _axes_input_since(op):
        m = make_model(op, x, opset=opset, consts={"axes": np.array([0, -1], np.int64)}, keepdims=keepdims)
    else:
        m = make_model(op, x, opset=opset, axes=[0, -1], keepdims=keepdims)
    check(m, x, rtol=1e-5)


@pytest.mark.parametrize("op", ["ReduceSum", "ReduceMax", "ReduceLogSumExp", "ReduceL2"])
def test_reduce_run_time_axes(op):
    feeds = {"x": RNG.standard_normal((2, 3, 4)).astype(np.float32), "axes": np.array([1], np.int64)}
    m = make_model(op, feeds, keepdims=1)
    mod = nnc.from_onnx(m)
    red = next(o for o in mod.main.ops if o.opname.startswith("reduce_"))
    assert len(red.operands) == 2 and red.attrs["axes"] is None  # axes stay a run-time operand
    assert red.results[0].type.shape == (UNKNOWN,) * 3
    check(m, feeds, rtol=1e-5)


def test_reduce_all_axes_and_empty_axes_noop():
    x = {"x": RNG.standard_normal((2, 3)).astype(np.float32)}
    got = check(make_model("ReduceMean", x, keepdims=0), x)  # no axes: every axis
    np.testing.assert_allclose(got[0], x["x"].mean(), rtol=1e-6)
    m = make_model("ReduceSum", x, opset=13, consts={"axes": np.zeros(0, np.int64)}, noop_with_empty_axes=1)
    np.testing.assert_array_equal(run_nnc(m, x)[0], x["x"])


def test_reduce_empty_set_gives_identity_values():
    x = {"x": np.zeros((2, 0, 4), np.float32)}
    for op, want in [("ReduceSum", 0.0), ("ReduceProd", 1.0), ("ReduceMax", -np.inf), ("ReduceMin", np.inf),
                     ("ReduceLogSumExp", -np.inf)]:
        m = make_model(op, x, consts={"axes": np.array([1], np.int64)}, keepdims=0)
        got = run_nnc(m, x)[0]
        assert got.shape == (2, 4)
        np.testing.assert_array_equal(got, np.full((2, 4), want, np.float32))


def test_reduce_log_sum_exp_is_stable_for_large_inputs():
    x = {"x": np.array([[1000.0, 1000.0], [-1000.0, -1001.0]], np.float64)}
    got = run_nnc(make_model("ReduceLogSumExp", x, axes=[1], keepdims=0, opset=13), x)[0]
    np.testing.assert_allclose(got, [1000 + np.log(2), -1000 + np.log1p(np.exp(-1))], rtol=1e-12)


@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
@pytest.mark.parametrize("last", [0, 1])
def test_argmax_argmin_ties(op, last):
    x = {"x": np.array([[2, 2, 1, 1], [0, 3, 3, 0], [5, 5, 5, 5]], np.float32)}
    m = make_model(op, x, opset=13, axis=1, keepdims=0, select_last_index=last)
    got = check(m, x)
    assert ir_ops(m) == [op.lower()]
    assert got[0].dtype == np.int64


def test_argmax_opset11_keepdims():
    x = {"x": RNG.standard_normal((3, 4, 2)).astype(np.float32)}
    check(make_model("ArgMax", x, opset=11, axis=-2), x)


# -- softmax family --------------------------------------------------------------------------------

@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax", "Hardmax"])
@pytest.mark.parametrize("opset,axis", [(11, 1), (11, 0), (11, -1), (13, 1), (13, -1)])
def test_softmax_family_opset_forms(op, opset, axis):
    # opset 11 flattens to 2-D at ``axis``: the softmax runs over every axis from ``axis`` on
    x = RNG.standard_normal((2, 3, 4)).astype(np.float32)
    x[0, 1, :2] = x[0, 1].max() + 1  # a tie, resolved to the first index by Hardmax
    feeds = {"x": x}
    check(make_model(op, feeds, opset=opset, axis=axis), feeds)


def test_softmax_is_one_op_and_stable():
    feeds = {"x": np.array([[1000.0, 1001.0, 999.0]], np.float32)}
    m = make_model("Softmax", feeds, opset=13)
    assert ir_ops(m) == ["softmax"]
    e = np.exp(np.array([-1.0, 0.0, -2.0]))
    np.testing.assert_allclose(run_nnc(m, feeds)[0][0], e / e.sum(), rtol=1e-6)


# -- scans and topk --------------------------------------------------------------------------------

@pytest.mark.parametrize("exclusive", [0, 1])
@pytest.mark.parametrize("reverse", [0, 1])
@pytest.mark.parametrize("axis", [0, -1])
def test_cumsum_cumprod(exclusive, reverse, axis):
    x = np.array([[1, 2, 3], [4, 5, 6]], np.float64)
    feeds = {"x": x}
    consts = {"axis": np.array(axis, np.int32)}
    m = make_model("CumSum", feeds, opset=14, consts=consts, exclusive=exclusive, reverse=reverse)
    check(m, feeds)

    # CumProd (opset 26) is newer than onnxruntime: the numpy formula is the oracle
    m = make_model("CumProd", feeds, opset=26, consts=consts, exclusive=exclusive, reverse=reverse)
    y = np.flip(x, axis) if reverse else x
    want = np.cumprod(y, axis=axis)
    if exclusive:
        want = np.concatenate([np.ones_like(np.take(want, [0], axis)), np.delete(want, -1, axis)], axis)
    want = np.flip(want, axis) if reverse else want
    np.testing.assert_array_equal(run_nnc(m, feeds)[0], want)


def test_cumsum_int32_run_time_axis():
    feeds = {"x": np.arange(12, dtype=np.int32).reshape(3, 4), "axis": np.array(1, np.int64)}
    got = check(make_model("CumSum", feeds, opset=14), feeds)
    assert got[0].dtype == np.int32


@pytest.mark.parametrize("largest", [0, 1])
def test_topk_ties_lower_index_first(largest):
    x = np.array([[3, 1, 3, 2, 1, 3], [0, 0, 0, 0, 0, 0]], np.float32)
    feeds = {"x": x}
    m = make_model("TopK", feeds, n_outputs=2, opset=11, consts={"k": np.array([4], np.int64)}, largest=largest)
    values, indices = check(m, feeds)
    assert ir_ops(m) == ["topk"]
    want_idx = [[0, 2, 5, 3], [0, 1, 2, 3]] if largest else [[1, 4, 3, 0], [0, 1, 2, 3]]
    np.testing.assert_array_equal(indices, want_idx)


def test_topk_opset1_attribute_and_opset10_run_time_k():
    x = RNG.standard_normal((3, 5)).astype(np.float32)
    check(make_model("TopK", {"x": x}, n_outputs=2, opset=1, k=2, axis=0), {"x": x})
    feeds = {"x": x, "k": np.array([3], np.int64)}
    m = make_model("TopK", feeds, n_outputs=2, opset=10)
    assert nnc.from_onnx(m).main.ops[-1].results[0].type.shape == (3, UNKNOWN)
    check(m, feeds)


def test_topk_uint64():
    feeds = {"x": np.array([5, 1, 9, 9, 3], np.uint64)}
    m = make_model("TopK", feeds, n_outputs=2, opset=11, consts={"k": np.array([3], np.int64)})
    check(m, feeds, engine="reference")  # onnxruntime has no uint64 TopK


# -- normalization ---------------------------------------------------------------------------------

@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("with_bias", [True, False])
def test_layer_norm_is_one_op_with_statistics(axis, with_bias):
    x = {"x": RNG.standard_normal((2, 3, 4)).astype(np.float32)}
    norm_shape = (3, 4) if axis == 1 else (4,)
    consts = {"scale": RNG.standard_normal(norm_shape).astype(np.float32)}
    if with_bias:
        consts["bias"] = RNG.standard_normal(norm_shape).astype(np.float32)
    m = make_model("LayerNormalization", x, n_outputs=3, opset=17, consts=consts, axis=axis, epsilon=1e-3)
    assert ir_ops(m) == ["layer_norm"]
    check(m, x, rtol=1e-4, atol=1e-5)


def test_rms_norm():
    x = {"x": RNG.standard_normal((2, 3, 4)).astype(np.float32)}
    scale = RNG.standard_normal((3, 4)).astype(np.float32)
    m = make_model("RMSNormalization", x, opset=23, consts={"scale": scale}, axis=1)
    assert ir_ops(m) == ["rms_norm"]
    v = x["x"].astype(np.float64)
    want = v / np.sqrt((v ** 2).mean(axis=(1, 2), keepdims=True) + 1e-5) * scale
    np.testing.assert_allclose(run_nnc(m, x)[0], want, rtol=1e-5)


def _bn_params(c: int) -> dict[str, np.ndarray]:
    return {"scale": RNG.standard_normal(c).astype(np.float32), "bias": RNG.standard_normal(c).astype(np.float32),
            "mean": RNG.standard_normal(c).astype(np.float32), "var": RNG.uniform(0.5, 2, c).astype(np.float32)}


@pytest.mark.parametrize("opset", [7, 9, 15])
def test_batch_norm_inference(opset):
    x = {"x": RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)}
    m = make_model("BatchNormalization", x, opset=opset, consts=_bn_params(3), epsilon=1e-3)
    assert ir_ops(m) == ["batch_norm"]
    check(m, x, rtol=1e-5, atol=1e-5)


def test_batch_norm_opset7_per_activation():
    x = {"x": RNG.standard_normal((2, 3, 4)).astype(np.float32)}
    p = {k: np.abs(RNG.standard_normal((3, 4))).astype(np.float32) for k in ("scale", "bias", "mean", "var")}
    m = make_model("BatchNormalization", x, opset=7, consts=p, spatial=0)
    want = (x["x"] - p["mean"]) / np.sqrt(p["var"] + 1e-5) * p["scale"] + p["bias"]
    np.testing.assert_allclose(run_nnc(m, x)[0], want, rtol=1e-5, atol=1e-6)


def test_batch_norm_training_mode():
    x = {"x": RNG.standard_normal((4, 3, 2, 2)).astype(np.float32)}
    m = make_model("BatchNormalization", x, n_outputs=3, opset=15, consts=_bn_params(3), training_mode=1,
                   momentum=0.8)
    check(m, x, engine="reference", rtol=1e-5, atol=1e-5)


def test_batch_norm_old_training_form_is_reported():
    x = {"x": RNG.standard_normal((2, 3, 4)).astype(np.float32)}
    m = make_model("BatchNormalization", x, n_outputs=5, opset=9, consts=_bn_params(3))
    with pytest.raises(nnc.UnsupportedOpError, match=r"BatchNormalization .*opset 9.*training-mode"):
        nnc.from_onnx(m)


@pytest.mark.parametrize("opset", [6, 22])
def test_instance_norm(opset):
    x = {"x": RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)}
    p = {"scale": RNG.standard_normal(3).astype(np.float32), "bias": RNG.standard_normal(3).astype(np.float32)}
    m = make_model("InstanceNormalization", x, opset=opset, consts=p, epsilon=1e-2)
    assert ir_ops(m) == ["group_norm"]
    check(m, x, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("opset", [18, 21])
def test_group_norm(opset):
    x = {"x": RNG.standard_normal((2, 6, 3, 2)).astype(np.float32)}
    n = 2 if opset == 18 else 6  # opset 18: one scale per group; 21: one per channel
    p = {"scale": RNG.standard_normal(n).astype(np.float32), "bias": RNG.standard_normal(n).astype(np.float32)}
    m = make_model("GroupNormalization", x, opset=opset, consts=p, num_groups=2, epsilon=1e-3)
    assert ir_ops(m) == ["group_norm"]
    v = x["x"].reshape(2, 2, -1).astype(np.float64)
    norm = ((v - v.mean(-1, keepdims=True)) / np.sqrt(v.var(-1, keepdims=True) + 1e-3)).reshape(2, 6, 3, 2)
    s, b = (np.repeat(p[k], 3) if opset == 18 else p[k] for k in ("scale", "bias"))
    want = norm * s[:, None, None] + b[:, None, None]
    np.testing.assert_allclose(run_nnc(m, x)[0], want, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_lrn(size):
    x = {"x": RNG.standard_normal((2, 6, 3, 3)).astype(np.float32)}
    m = make_model("LRN", x, opset=13, size=size, alpha=0.01, beta=0.6, bias=1.5)
    if size % 2:  # onnxruntime only implements odd sizes
        check(m, x, rtol=1e-5)
    # the ONNX spec's window: floor((size - 1) / 2) channels before, ceil((size - 1) / 2) after
    v = x["x"].astype(np.float64)
    before, after = (size - 1) // 2, -(-(size - 1) // 2)
    sq = np.stack([(v[:, max(0, c - before):c + after + 1] ** 2).sum(1) for c in range(6)], axis=1)
    np.testing.assert_allclose(run_nnc(m, x)[0], v / (1.5 + 0.01 / size * sq) ** 0.6, rtol=1e-5)


@pytest.mark.parametrize("p", [1, 2])
@pytest.mark.parametrize("opset", [1, 22])
def test_lp_norm(p, opset):
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    x[1] = 0  # a zero row stays zero
    feeds = {"x": x}
    m = make_model("LpNormalization", feeds, opset=opset, p=p, axis=1)
    got = run_nnc(m, feeds)[0]
    norm = np.linalg.norm(x, ord=p, axis=1, keepdims=True)
    np.testing.assert_allclose(got, np.where(norm == 0, 0, x / np.where(norm == 0, 1, norm)), rtol=1e-6)


@pytest.mark.parametrize("opset", [9, 13])
def test_mean_variance_norm(opset):
    x = {"x": RNG.standard_normal((2, 3, 4, 4)).astype(np.float32)}
    check(make_model("MeanVarianceNormalization", x, opset=opset), x, rtol=1e-4, atol=1e-5)
    check(make_model("MeanVarianceNormalization", x, opset=opset, axes=[1, 2]), x, rtol=1e-4, atol=1e-5)


# -- losses ----------------------------------------------------------------------------------------

LOSS_CASES = [
    dict(reduction="none"), dict(reduction="sum"), dict(reduction="mean"),
    dict(reduction="mean", ignore_index=1), dict(reduction="mean", weight=True),
    dict(reduction="sum", weight=True, ignore_index=-5), dict(reduction="mean", weight=True, ignore_index=2),
]


@pytest.mark.parametrize("case", LOSS_CASES, ids=lambda c: "-".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("op", ["NegativeLogLikelihoodLoss", "SoftmaxCrossEntropyLoss"])
def test_losses(op, case):
    case = dict(case)
    target = RNG.integers(0, 4, (3, 2, 2)).astype(np.int64)
    if "ignore_index" in case:
        target[0, 0, 0] = case["ignore_index"]
    feeds = {"x": RNG.standard_normal((3, 4, 2, 2)).astype(np.float32), "t": target}
    consts = {"w": RNG.uniform(0.5, 1.5, 4).astype(np.float32)} if case.pop("weight", False) else {}
    n_out = 2 if op == "SoftmaxCrossEntropyLoss" else 1
    m = make_model(op, feeds, n_outputs=n_out, opset=13, consts=consts, **case)
    check(m, feeds, engine="reference", rtol=1e-5, atol=1e-6)


# -- inference on symbolic shapes ------------------------------------------------------------------

def _builder() -> tuple[Module, Graph, Builder]:
    m = Module("m")
    g = m.add_graph(Graph("main"))
    return m, g, Builder(m, g)


def test_infer_with_symbolic_dims():
    m, g, b = _builder()
    x = g.add_param("x", tensor("f32", ["N", "T", 8]))
    assert b.op("reduce_sum", x, axes=(1,), keepdims=0).type.shape == ("N", 8)
    assert b.op("reduce_max", x, keepdims=1).type.shape == (1, 1, 1)
    assert b.op("argmax", x, axis=-1, keepdims=1).type.shape == ("N", "T", 1)
    vals, idx = b.op("topk", x, k=3, axis=-1)
    assert vals.type.shape == ("N", "T", 3) and str(idx.type.dtype) == "i64"
    y, mean, inv = b.op("layer_norm", x, b.const(np.ones(8, np.float32)), axis=-1)
    assert y.type.shape == ("N", "T", 8) and mean.type.shape == ("N", "T", 1) == inv.type.shape


def test_infer_with_run_time_parameters():
    m, g, b = _builder()
    x = g.add_param("x", tensor("f32", ["N", 4]))
    axes = g.add_param("axes", tensor("i64", [1]))
    k = g.add_param("k", tensor("i64", [1]))
    assert b.op("reduce_mean", x, axes, keepdims=0).type.shape is None  # rank depends on axes
    assert b.op("reduce_mean", x, axes, keepdims=1).type.shape == (UNKNOWN, UNKNOWN)
    vals, _ = b.op("topk", x, k, axis=1)
    assert vals.type.shape == ("N", UNKNOWN)


def test_run_time_parameters_verify_and_round_trip():
    from nnc.ir import parse_module, verify_module

    feeds = {"x": RNG.standard_normal((2, 5)).astype(np.float32), "axes": np.array([1], np.int64),
             "k": np.array([2], np.int64)}
    for m in (make_model("ReduceLogSumExp", feeds, order=["x", "axes"], keepdims=0),
              make_model("TopK", feeds, n_outputs=2, opset=11, order=["x", "k"]),
              make_model("Hardmax", feeds, opset=11, order=["x"], axis=0)):
        mod = nnc.from_onnx(m)
        verify_module(mod)
        text = str(mod)
        again = parse_module(text, weights=mod.constants)
        verify_module(again)
        assert str(again) == text

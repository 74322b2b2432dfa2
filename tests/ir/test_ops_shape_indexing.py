"""Shape, indexing and random ops: ONNX import across opset forms (parameters as attributes, as
constant inputs and as run-time inputs, symbolic dims), checked against onnx.reference or a numpy
formula; folding of shape subgraphs; inference with symbolic dims; random ops' seeding and traits."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import nnc
from nnc.frontends.onnx import import_model
from nnc.ir import Builder, Graph, Module, tensor
from nnc.ir.registry import Trait, get_opdef
from nnc.ir.types import UNKNOWN

RNG = np.random.default_rng(0)
_T = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
      np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
      np.dtype(np.bool_): TensorProto.BOOL}


def model(nodes: list[onnx.NodeProto], inputs: dict[str, np.ndarray], outputs: list[str], opset: int = 18,
          consts: dict[str, np.ndarray] | None = None, dims: dict[str, list] | None = None) -> onnx.ModelProto:
    """A model of ``nodes``; ``dims`` overrides an input's declared shape (symbols allowed)."""
    dims = dims or {}
    g = helper.make_graph(
        nodes, "g",
        [helper.make_tensor_value_info(k, _T[v.dtype], dims.get(k, v.shape)) for k, v in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outputs],
        [numpy_helper.from_array(v, k) for k, v in (consts or {}).items()])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8 if opset <= 18 else 10)


def run(m: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = nnc.compile(m)(*inputs.values())
    return list(out) if isinstance(out, tuple) else [out]


def oracle(m: onnx.ModelProto, inputs: dict[str, np.ndarray], engine: str) -> list[np.ndarray]:
    if engine == "ort":  # onnxruntime wants typed outputs
        typed = onnx.shape_inference.infer_shapes(m)
        sess = ort.InferenceSession(typed.SerializeToString(), providers=["CPUExecutionProvider"])
        return sess.run(None, inputs)
    return ReferenceEvaluator(m).run(None, inputs)


def check(m: onnx.ModelProto, inputs: dict[str, np.ndarray], engine: str = "ref") -> list[np.ndarray]:
    got, want = run(m, inputs), oracle(m, inputs, engine)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_array_equal(g, w)
    return got


def one(op: str, inputs: dict[str, np.ndarray], n_out: int = 1, opset: int = 18, consts=None, order=None,
        dims=None, **attrs) -> onnx.ModelProto:
    names = order if order is not None else list(inputs) + list(consts or {})
    outs = [f"y{i}" for i in range(n_out)]
    return model([helper.make_node(op, names, outs, **attrs)], inputs, outs, opset, consts, dims)


def opnames(m: onnx.ModelProto) -> list[str]:
    return [op.opname for op in import_model(m).main.ops]


def x_(*shape: int, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


# -- folding and symbolic dims ------------------------------------------------------------------------

def test_shape_gather_concat_reshape_folds_when_static():
    i64 = np.int64
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Gather", ["s", "i0"], ["d0"], axis=0),
             helper.make_node("Unsqueeze", ["d0", "ax"], ["d0u"]),
             helper.make_node("Concat", ["d0u", "m1"], ["t"], axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"])]
    consts = {"i0": np.array(0, i64), "ax": np.array([0], i64), "m1": np.array([-1], i64)}
    m = model(nodes, {"x": x_(2, 3, 4)}, ["y"], consts=consts)
    assert opnames(m).count("reshape") == 1 and "shape" not in opnames(m) and "gather" not in opnames(m)
    check(m, {"x": x_(2, 3, 4)})


def test_shape_subgraph_runs_with_symbolic_batch():
    i64 = np.int64
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("Slice", ["s", "a", "b"], ["n"]),
             helper.make_node("Concat", ["n", "m1"], ["t"], axis=0),
             helper.make_node("Reshape", ["x", "t"], ["y"])]
    consts = {"a": np.array([0], i64), "b": np.array([1], i64), "m1": np.array([-1], i64)}
    m = model(nodes, {"x": x_(5, 3, 4)}, ["y"], consts=consts, dims={"x": ["N", 3, 4]})
    assert "shape" in opnames(m)  # the batch dim is only known at run time
    x = x_(5, 3, 4)
    np.testing.assert_array_equal(run(m, {"x": x})[0], x.reshape(5, 12))


def test_reshape_infer_keeps_symbols():
    mod = Module("t")
    g = mod.add_graph(Graph("main"))
    b = Builder(mod, g)
    x = g.add_param("x", tensor("f32", ["N", 3, 4]))
    assert b.op("reshape", x, shape=(0, -1), copy_zero=1).type.shape == ("N", 12)
    assert b.op("reshape", x, shape=(-1, 4)).type.shape == (UNKNOWN, 4)
    assert b.op("transpose", x, perm=(2, 0, 1)).type.shape == (4, "N", 3)
    assert b.op("slice", x, starts=(0, 1), ends=(2**62, 3), axes=(0, 1)).type.shape == ("N", 2, 4)
    assert b.op("pad", x, pads=(0, 1, 0, 0, 1, 2)).type.shape == ("N", 5, 6)
    assert b.op("concat", x, x, axis=1).type.shape == ("N", 6, 4)
    parts = b.op("split", x, axis=1, num_outputs=2, n_results=2)
    assert [p.type.shape for p in parts] == [("N", 2, 4), ("N", 1, 4)]
    assert b.op("shape", x, start=1).type.shape == (2,)


def test_flatten_and_depth_to_space_with_symbolic_batch():
    x = x_(2, 8, 2, 3)
    for node, want in [
        (helper.make_node("Flatten", ["x"], ["y0"], axis=1), x.reshape(2, -1)),
        (helper.make_node("DepthToSpace", ["x"], ["y0"], blocksize=2, mode="CRD"),
         x.reshape(2, 2, 2, 2, 2, 3).transpose(0, 1, 4, 2, 5, 3).reshape(2, 2, 4, 6)),
    ]:
        m = model([node], {"x": x}, ["y0"], dims={"x": ["N", 8, 2, 3]})
        np.testing.assert_array_equal(run(m, {"x": x})[0], want)


# -- parameters as run-time inputs ---------------------------------------------------------------------

def test_slice_runtime_parameters_and_negative_steps():
    i64 = np.int64
    inputs = {"x": x_(5, 6), "s": np.array([4, -1], i64), "e": np.array([-100, 1], i64),
              "a": np.array([0, 1], i64), "st": np.array([-2, -2], i64)}
    check(one("Slice", inputs, opset=13), inputs)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_with_negative_pads_and_axes(mode):
    inputs = {"x": x_(3, 4, 5)}
    consts = {"p": np.array([2, -1, 1, 1], np.int64), "v": np.array(1.5, np.float32), "ax": np.array([2, 0], np.int64)}
    m = one("Pad", inputs, consts=consts, order=["x", "p", "v" if mode == "constant" else "", "ax"], mode=mode)
    check(m, inputs, engine="ort")  # onnx.reference rejects negative pads


def test_split_uneven_and_runtime_sizes():
    x = x_(7, 2)
    check(one("Split", {"x": x}, n_out=3, num_outputs=3), {"x": x})
    inputs = {"x": x, "s": np.array([1, 6], np.int64)}
    check(one("Split", inputs, n_out=2, opset=13), inputs)


def test_expand_tile_and_constant_of_shape_runtime_shapes():
    i64 = np.int64
    inputs = {"x": x_(3, 1), "s": np.array([2, 3, 4], i64)}
    check(one("Expand", inputs), inputs)
    inputs = {"x": x_(2, 3), "r": np.array([2, 1], i64)}
    check(one("Tile", inputs), inputs)
    m = one("ConstantOfShape", {"s": np.array([2, 3], i64)}, value=numpy_helper.from_array(np.array([7], np.int32)))
    check(m, {"s": np.array([2, 3], i64)})


def test_center_crop_pad_runtime_target():
    inputs = {"x": x_(5, 4, 3), "s": np.array([3, 7], np.int64)}
    check(one("CenterCropPad", inputs, axes=[0, -2]), inputs)


def test_trilu_range_eyelike_size():
    inputs = {"x": x_(2, 4, 5), "k": np.array(-1, np.int64)}
    check(one("Trilu", inputs, upper=0), inputs)
    inputs = {"a": np.array(10, np.int32), "b": np.array(-3, np.int32), "c": np.array(-4, np.int32)}
    check(one("Range", inputs), inputs)
    m = one("EyeLike", {"x": x_(3, 5)}, k=2, dtype=TensorProto.INT32)
    assert set(opnames(m)) == {"const"}  # static shape: folds to constants
    check(m, {"x": x_(3, 5)})
    m = one("EyeLike", {"x": x_(4, 3)}, k=-1, dims={"x": ["R", "C"]})
    np.testing.assert_array_equal(run(m, {"x": x_(4, 3)})[0], np.eye(4, 3, k=-1, dtype=np.float32))
    m = one("Size", {"x": x_(2, 3)}, dims={"x": ["N", 3]})
    assert run(m, {"x": x_(4, 3)})[0] == 12


# -- indexing -----------------------------------------------------------------------------------------

def test_gathers_with_negative_indices():
    x = x_(3, 4, 5)
    inputs = {"x": x, "i": np.array([[0, -1], [2, 1]], np.int64)}
    check(one("Gather", inputs, axis=1), inputs)
    inputs = {"x": x, "i": RNG.integers(-5, 5, (3, 4, 2)).astype(np.int64)}
    check(one("GatherElements", inputs, axis=2), inputs)
    inputs = {"x": x, "i": np.array([[[1, -2]], [[0, 4]], [[3, 3]]], np.int64)}
    check(one("GatherND", inputs, batch_dims=1), inputs)


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatters_with_reductions(reduction):
    x = x_(4, 3)
    inputs = {"x": x, "i": np.array([[1, 0, 2], [1, -4, 2]], np.int64), "u": x_(2, 3)}
    if reduction != "none":  # duplicate indices: only defined with a reduction
        check(one("ScatterElements", inputs, axis=0, reduction=reduction), inputs)
    inputs = {"x": x, "i": np.array([[1], [3], [1]], np.int64), "u": x_(3, 3)}
    if reduction == "none":
        inputs["i"] = np.array([[1], [3], [0]], np.int64)
    check(one("ScatterND", inputs, reduction=reduction), inputs)


def test_onehot_runtime_depth_and_compress():
    inputs = {"i": np.array([[0, -1], [7, 2]], np.int64), "d": np.array([4], np.int64),
              "v": np.array([-1.0, 3.0], np.float32)}
    check(one("OneHot", inputs, axis=1), inputs, engine="ort")  # onnx.reference rejects a 1-element depth
    inputs = {"x": x_(3, 4), "c": np.array([True, False, True])}
    check(one("Compress", inputs, axis=1), inputs)
    check(one("Compress", inputs), inputs)


@pytest.mark.parametrize("axis,sorted_", [(None, 0), (None, 1), (1, 1), (0, 0)])
def test_unique(axis, sorted_):
    x = np.array([[2, 1, 2, 1], [0, 3, 0, 3], [2, 1, 2, 1]], np.int64)
    attrs = {"sorted": sorted_} if axis is None else {"sorted": sorted_, "axis": axis}
    # onnx.reference mis-orders unsorted unique of a 2-D input, so onnxruntime is the oracle
    check(one("Unique", {"x": x}, n_out=4, **attrs), {"x": x}, engine="ort")


def test_nonzero_reverse_sequence_tensor_scatter():
    x = np.array([[0, 1.5, 0], [2, 0, 3]], np.float32)
    check(one("NonZero", {"x": x}), {"x": x})
    inputs = {"x": x_(4, 3, 2), "l": np.array([4, 1, 3], np.int64)}
    check(one("ReverseSequence", inputs, time_axis=0, batch_axis=1), inputs)
    inputs = {"c": x_(2, 3, 5, 4), "u": x_(2, 3, 2, 4), "w": np.array([4, 1], np.int64)}
    check(one("TensorScatter", inputs, opset=24, mode="circular"), inputs)


# -- random -------------------------------------------------------------------------------------------

def test_training_dropout_matches_seeded_formula():
    x = x_(3, 4, 5)
    inputs = {"x": x, "r": np.array(0.3, np.float32), "t": np.array(True)}
    y, mask = run(one("Dropout", inputs, n_out=2, seed=3), inputs)
    keep = np.random.RandomState(3).uniform(0, 1, x.shape) >= 0.3
    np.testing.assert_array_equal(mask, keep)
    np.testing.assert_allclose(y, x * keep / 0.7, rtol=1e-6)
    m = one("Dropout", {"x": x}, n_out=2, seed=3, consts={"r": inputs["r"], "t": inputs["t"]})
    np.testing.assert_array_equal(run(m, {"x": x})[1], keep)  # constant training_mode
    inputs["t"] = np.array(False)
    y, mask = run(one("Dropout", inputs, n_out=2, seed=3), inputs)
    np.testing.assert_array_equal(y, x)
    assert mask.all()


def test_inference_dropout_is_identity():
    x = x_(2, 3)
    m = one("Dropout", {"x": x}, n_out=2, opset=13)
    assert "dropout" not in opnames(m)
    y, mask = run(m, {"x": x})
    np.testing.assert_array_equal(y, x)
    assert mask.dtype == np.bool_ and mask.all()


def test_random_ops_shape_dtype_seed_and_not_folded():
    m = one("RandomUniformLike", {"x": x_(3, 4)}, low=-2.0, high=-1.0, seed=5.0, dtype=TensorProto.DOUBLE)
    assert "random_uniform" in opnames(m)
    (y,) = run(m, {"x": x_(3, 4)})
    assert y.shape == (3, 4) and y.dtype == np.float64 and (y >= -2).all() and (y < -1).all()
    np.testing.assert_array_equal(y, np.random.RandomState(5).uniform(-2.0, -1.0, (3, 4)))
    outs = ["y"]
    m = model([helper.make_node("RandomNormal", [], outs, shape=[1000], mean=3.0, scale=0.5)], {}, outs)
    (y,) = run(m, {})
    assert y.shape == (1000,) and y.dtype == np.float32 and abs(y.mean() - 3.0) < 0.1
    p = np.array([0.0, 1.0, 0.0, 1.0], np.float32)
    (y,) = run(one("Bernoulli", {"p": p}, seed=1.0), {"p": p})
    np.testing.assert_array_equal(y, p)  # probabilities 0 and 1 are deterministic
    for name in ("random_uniform", "random_normal", "bernoulli", "dropout"):
        d = get_opdef(name)
        assert d.has(Trait.RANDOM) and not d.is_pure


def test_bernoulli_draws_follow_their_probabilities():
    """The official suite cannot check Bernoulli (its expected data is one random draw), so check the
    distribution here: per-element frequencies over many draws, seeded runs repeat, unseeded differ."""
    p = np.array([0.1, 0.3, 0.5, 0.9], np.float32)
    ps = np.broadcast_to(p, (5000, 4)).copy()
    (y,) = run(one("Bernoulli", {"p": ps}, seed=3.0), {"p": ps})
    freq = y.mean(axis=0)
    sigma = np.sqrt(p * (1 - p) / ps.shape[0])
    assert (np.abs(freq - p) < 5 * sigma).all(), (freq, p)
    (again,) = run(one("Bernoulli", {"p": ps}, seed=3.0), {"p": ps})
    np.testing.assert_array_equal(again, y)
    (a,) = run(one("Bernoulli", {"p": ps}), {"p": ps})
    (b,) = run(one("Bernoulli", {"p": ps}), {"p": ps})
    assert not np.array_equal(a, b)  # fresh entropy: 20,000 draws agree with probability < 1e-1000

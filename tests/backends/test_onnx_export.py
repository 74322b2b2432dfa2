"""ONNX export of optimised graphs (backends/onnx_export.py): the -O3 graph of every bench model passes
onnx.checker's full check and, imported again, gives the outputs of the original model; fused groups
are local functions and nnc-only ops live in the ai.nnc domain, which the importer reads back.

Equality: the re-imported graph runs the same ops in the same order as the exported one, so the
reference interpreter gives bit-identical outputs for the two. Against the original (un-optimised)
model the optimiser may reassociate f32 arithmetic (batch-norm folding into conv weights, fused
epilogues), so those are compared at 1e-5 of the output's magnitude: a few f32 ulps through tens of
layers, far below what a wrong attribute or operand order would give.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import pytest

import nnc
from nnc.backends.onnx_export import FUSED_DOMAIN, NNC_DOMAIN, export_onnx
from nnc.frontends.onnx.importer import import_model
from nnc.ir import Builder, Graph, Module, interpret
from nnc.ir.dtypes import DType
from nnc.ir.specialize import specialize
from nnc.ir.types import TensorType
from nnc.pipeline import optimize

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import models  # noqa: E402

SLOW = {"vgg19", "resnet50", "inception_v1", "inception_v2", "densenet121"}  # 3-25 s each


def _param(n: str):
    marks = ([pytest.mark.torch] if n in models.TORCH else []) + ([pytest.mark.slow] if n in SLOW else [])
    return pytest.param(n, marks=marks)


def _path(name: str) -> str:
    if name in models.LIGHT:
        return str(models.light_model(name))
    cached = models.cache_dir() / f"{name}.v{models.EXPORT_VERSION}.onnx"
    if not cached.exists():  # exporting it needs torch
        pytest.importorskip("torch")
    return str(models.torch_model(name))


def _feeds(m: Module) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    out = {}
    for p in m.main.params:
        if p.binding is None:
            shape = tuple(1 if isinstance(d, str) else d for d in p.shape)
            if p.type.dtype.is_int:
                out[p.name] = rng.integers(0, 100, shape).astype(p.type.dtype.numpy)
            else:
                out[p.name] = rng.standard_normal(shape).astype(p.type.dtype.numpy)
    return out


@pytest.mark.parametrize("name", [_param(n) for n in models.TORCH + models.LIGHT])
def test_o3_export_passes_the_checker_and_round_trips(name: str) -> None:
    original = nnc.load_module(_path(name))
    opt = optimize(original, "infer", {"opt_level": 3})[0]
    proto = export_onnx(opt)
    onnx.checker.check_model(proto, full_check=True)
    fused = [op for op in opt.main.ops if op.opname == "fused"]
    assert len(proto.functions) == len(fused) and all(f.domain == FUSED_DOMAIN for f in proto.functions)
    assert sum(n.domain == FUSED_DOMAIN for n in proto.graph.node) == len(fused)
    assert {n.domain for n in proto.graph.node} <= {"", FUSED_DOMAIN, NNC_DOMAIN}
    back = import_model(proto.SerializeToString())
    feeds = _feeds(original)
    want, got, same = interpret(original, feeds), interpret(back, feeds), interpret(opt, feeds)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_array_equal(got[k], same[k], err_msg=k)
        scale = max(float(np.abs(want[k]).max()), 1e-30)
        assert float(np.abs(got[k] - want[k]).max()) <= 1e-5 * scale, k


def test_nnc_only_ops_go_to_the_ai_nnc_domain_and_come_back() -> None:
    m = Module(name="odd")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", TensorType(DType.f32, (2, 3, 8, 8)))
    vals, idx = b.op("max_pool", x, kernel_shape=(2, 2), strides=(2, 2), with_indices=1, n_results=2)
    h = b.op("bitcast", vals, to=DType.i32)  # a dtype attribute, spelled as its name
    s = b.op("hard_swish", b.op("bitcast", h, to=DType.f32))
    g.set_outputs([s, idx], ["y", "where"])
    proto = export_onnx(m)
    onnx.checker.check_model(proto, full_check=True)
    nnc_nodes = {n.op_type for n in proto.graph.node if n.domain == NNC_DOMAIN}
    assert {"max_pool", "bitcast"} <= nnc_nodes
    back = import_model(proto.SerializeToString())
    assert [op.opname for op in back.main.ops] == [op.opname for op in g.ops]
    assert back.main.ops[1].attrs["to"] == DType.i32
    feeds = {"x": np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)}
    want, got = interpret(m, feeds), interpret(back, feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_training_step_round_trips() -> None:
    from nnc.passes.training.step import build_train_step

    mlp = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "mlp.onnx")
    m = import_model(mlp, weights="param")
    m = specialize(m, {p.name: tuple(4 if isinstance(d, str) else d for d in p.shape)
                       for p in m.main.params if p.binding is None})
    step, _ = build_train_step(m)
    opt = optimize(step, "train", {"opt_level": 3})[0]
    proto = export_onnx(opt)
    onnx.checker.check_model(proto, full_check=True)
    assert "sgd_update" in {n.op_type for n in proto.graph.node if n.domain == NNC_DOMAIN}
    back = import_model(proto.SerializeToString(), weights="param")
    feeds = _feeds(opt)
    feeds["labels"] = np.arange(4) % 10  # class indices of the 10 logits
    want, got = interpret(opt, feeds), interpret(back, feeds)
    assert list(got) == list(want)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k], err_msg=k)


def test_unknown_ai_nnc_op_is_one_clear_error() -> None:
    from onnx import helper as oh

    from nnc.ir import UnsupportedOpError

    node = oh.make_node("frobnicate", ["x"], ["y"], domain=NNC_DOMAIN)
    g = oh.make_graph([node], "g", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
                      [oh.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [2])])
    model = oh.make_model(g, opset_imports=[oh.make_opsetid("", 18), oh.make_opsetid(NNC_DOMAIN, 1)])
    with pytest.raises(UnsupportedOpError, match="'frobnicate' is not an op of this nnc version"):
        import_model(model)


@pytest.mark.parametrize("name", [_param(n) for n in models.TORCH + models.LIGHT])
def test_export_without_nnc_ops_runs_in_onnxruntime(name: str) -> None:
    """An independent engine: onnxruntime runs the export (local functions included) and agrees with
    itself on the original model. Tolerance: onnxruntime picks different kernels (and summation orders)
    for the folded/fused graph, a few f32 ulps of the output's magnitude."""
    ort = pytest.importorskip("onnxruntime")
    path = _path(name)
    proto = export_onnx(optimize(nnc.load_module(path), "infer", {"opt_level": 3})[0])
    assert not [n for f in [proto.graph, *proto.functions] for n in f.node if n.domain == NNC_DOMAIN]
    before = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    after = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feeds = _feeds(nnc.load_module(path))
    want, got = before.run(None, feeds), after.run(None, feeds)
    for w, g in zip(want, got):
        assert g.shape == w.shape
        assert float(np.abs(g - w).max()) <= 1e-5 * max(float(np.abs(w).max()), 1e-30)


def test_slice_pad_resize_cast_are_standard_onnx_nodes(tmp_path) -> None:
    """The attribute forms of slice (steps without axes too), pad (constant with a value, reflect),
    resize (scales, sizes) and cast export as ONNX ops; onnxruntime runs the export and the original
    alike, and nnc reads the export back to the same graph."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    def i64(n, v):
        return numpy_helper.from_array(np.array(v, np.int64), n)

    node = helper.make_node
    nodes = [node("Slice", ["x", "st", "en", "ax", "sp"], ["a"]), node("Slice", ["a", "st2", "en2", "", "sp2"], ["a2"]),
             node("Pad", ["a2", "pads", "pv"], ["b"]), node("Pad", ["b", "pads2"], ["b2"], mode="reflect"),
             node("Resize", ["b2", "", "sc"], ["c"], mode="linear"), node("Resize", ["c", "", "", "sz"], ["c2"]),
             node("Cast", ["c2"], ["d"], to=TensorProto.FLOAT16), node("Cast", ["d"], ["y"], to=TensorProto.FLOAT)]
    inits = [i64("st", [0, 1]), i64("en", [100, 7]), i64("ax", [2, 3]), i64("sp", [1, 2]), i64("st2", [0, 0, 5, 0]),
             i64("en2", [1, 3, -100, 3]), i64("sp2", [1, 1, -1, 1]), i64("pads", [0, 0, 1, 2, 0, 0, 1, 0]),
             numpy_helper.from_array(np.array(0.5, np.float32), "pv"), i64("pads2", [0, 0, 1, 1, 0, 0, 1, 1]),
             numpy_helper.from_array(np.array([1, 1, 2, 1.5], np.float32), "sc"), i64("sz", [1, 3, 9, 7])]
    g = helper.make_graph(nodes, "shapes", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 6, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    path = tmp_path / "shapes.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)]), path)
    module = optimize(nnc.load_module(str(path)), "infer", {"opt_level": 3})[0]
    proto = export_onnx(module)
    onnx.checker.check_model(proto, full_check=True)
    kinds = [n.op_type for f in [proto.graph, *proto.functions] for n in f.node]
    assert {"Slice", "Pad", "Resize", "Cast"} <= set(kinds) and not any(
        n.domain == NNC_DOMAIN for f in [proto.graph, *proto.functions] for n in f.node)
    x = np.random.default_rng(0).standard_normal((1, 3, 6, 8)).astype(np.float32)
    (want,) = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    (got,) = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    np.testing.assert_array_equal(got, want)  # the same ops on the same data
    again = import_model(proto)
    (back,) = interpret(again, {"x": x}).values()
    (orig,) = interpret(module, {"x": x}).values()
    np.testing.assert_array_equal(back, orig)

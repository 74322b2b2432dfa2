"""Inference passes on real models: each keeps results equal to the unoptimised interpreter."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.ir import interpret, verify_module
from nnc.passes import PassManager, count_ops

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def conv_bn_model(with_bias: bool) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "scale"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "bias"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "mean"),
             numpy_helper.from_array(rng.uniform(0.5, 2, 8).astype(np.float32), "var")]
    conv_in = ["x", "w"]
    if with_bias:
        inits.append(numpy_helper.from_array(rng.standard_normal(8).astype(np.float32), "b"))
        conv_in.append("b")
    nodes = [helper.make_node("Conv", conv_in, ["c"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c", "scale", "bias", "mean", "var"], ["y"], epsilon=1e-3)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 8, 8, 8])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])


@pytest.mark.parametrize("with_bias", [False, True])
def test_fold_batchnorm_into_conv(with_bias):
    m = nnc.from_onnx(conv_bn_model(with_bias))
    x = np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32)
    want = interpret(m, {"x": x})["y"]
    PassManager("fold-batchnorm,dce", verify_each=True).run(m)
    assert [op.opname for op in m.main.ops if op.opname != "const"] == ["conv"]
    # the fold rounds W*s and (b-mean)*s+bias to f32 once: a few ulps on 27-term dot products
    np.testing.assert_allclose(interpret(m, {"x": x})["y"], want, rtol=1e-4, atol=1e-5)


REAL = sorted(f for f in os.listdir(LIGHT) if f.endswith(".onnx"))


@pytest.mark.parametrize("name", ["light_resnet50.onnx", "light_inception_v2.onnx", "light_squeezenet.onnx"])
def test_cleanup_pipeline_keeps_real_model_results(name):
    m = nnc.from_onnx(os.path.join(LIGHT, name))
    p = m.main.params[0]
    x = np.random.default_rng(0).uniform(0, 1, p.shape).astype(np.float32)
    want = interpret(m, {p.name: x})
    before = count_ops(m)
    PassManager("fold-constants,simplify,cse,fold-batchnorm,dce", verify_each=True).run(m)
    verify_module(m)
    got = interpret(m, {p.name: x})
    assert count_ops(m) <= before
    for k in want:
        # f32 models whose batch norms were folded into conv weights: relative error stays ~1e-5
        np.testing.assert_allclose(got[k], want[k], rtol=1e-3, atol=1e-5)


def repvgg_block() -> onnx.ModelProto:
    """conv3x3+BN + conv1x1+BN + BN(x), summed, then ReLU: a RepVGG training-time block."""
    rng = np.random.default_rng(3)
    c = 4
    inits = []

    def bn(prefix: str) -> list[str]:
        names = [f"{prefix}.{k}" for k in ("scale", "bias", "mean", "var")]
        vals = [rng.uniform(0.5, 1.5, c), rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.5, 1.5, c)]
        inits.extend(numpy_helper.from_array(v.astype(np.float32), n) for n, v in zip(names, vals))
        return names

    inits.append(numpy_helper.from_array(rng.standard_normal((c, c, 3, 3)).astype(np.float32), "w3"))
    inits.append(numpy_helper.from_array(rng.standard_normal((c, c, 1, 1)).astype(np.float32), "w1"))
    nodes = [helper.make_node("Conv", ["x", "w3"], ["c3"], pads=[1, 1, 1, 1]),
             helper.make_node("BatchNormalization", ["c3", *bn("bn3")], ["b3"]),
             helper.make_node("Conv", ["x", "w1"], ["c1"]),
             helper.make_node("BatchNormalization", ["c1", *bn("bn1")], ["b1"]),
             helper.make_node("BatchNormalization", ["x", *bn("bnid")], ["bid"]),
             helper.make_node("Add", ["b3", "b1"], ["s1"]),
             helper.make_node("Add", ["s1", "bid"], ["s2"]),
             helper.make_node("Relu", ["s2"], ["y"])]
    g = helper.make_graph(nodes, "repvgg", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, c, 6, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, c, 6, 6])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])


def test_reparameterize_merges_repvgg_branches_into_one_conv():
    model = repvgg_block()
    m = nnc.from_onnx(model)
    x = np.random.default_rng(4).standard_normal((1, 4, 6, 6)).astype(np.float32)
    want = interpret(m, {"x": x})["y"]
    PassManager("fold-batchnorm,reparameterize,dce", verify_each=True).run(m)
    assert [op.opname for op in m.main.ops if op.opname != "const"] == ["conv", "relu"]
    # the independent oracle: onnxruntime on the original three-branch model
    import onnxruntime as ort

    ref = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = interpret(m, {"x": x})["y"]
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


def test_simplify_keeps_a_reversing_slice():
    """A step -1 slice over a whole axis has its operand's type but is not a no-op."""
    from nnc.ir import Builder, Graph, Module, interpret, tensor
    from nnc.passes import PassManager

    m = Module("rev")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [5]))
    g.set_outputs([b.op("slice", x, starts=[-1], ends=[-6], axes=[0], steps=[-1])])
    PassManager("simplify").run(m)
    a = np.arange(5, dtype=np.float32)
    np.testing.assert_array_equal(list(interpret(m, {"x": a}).values())[0], a[::-1])


def test_fuse_keeps_ops_computed_before_the_anchor_out_of_its_epilogue():
    """add(mul(c, c), matmul(a, w)): the mul does not read the matmul, so it is an input of the
    matmul's epilogue group, not a member placed before the anchor (which x86 cannot run)."""
    from nnc.ir import Builder, Graph, Module, interpret, tensor
    from nnc.passes import PassManager

    m = Module("pre")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    a, w, c = (g.add_param(n, tensor("f32", s)) for n, s in (("a", [4, 6]), ("w", [6, 5]), ("c", [4, 5])))
    g.set_outputs([b.op("relu", b.op("add", b.op("mul", c, c), b.op("matmul", a, w)))])
    rng = np.random.default_rng(0)
    feeds = {"a": rng.standard_normal((4, 6)).astype(np.float32), "w": rng.standard_normal((6, 5)).astype(np.float32),
             "c": rng.standard_normal((4, 5)).astype(np.float32)}
    want = list(interpret(m, feeds).values())[0]
    PassManager("fuse").run(m)
    fused = [op for op in m.main.ops if op.opname == "fused"]
    assert len(fused) == 1 and [o.opname for o in fused[0].regions[0].ops] == ["matmul", "add", "relu"]
    assert [op.opname for op in m.main.ops if op.opname != "fused"] == ["mul"]
    np.testing.assert_allclose(list(interpret(m, feeds).values())[0], want, rtol=1e-6)
    got = nnc.compile(m, target="x86", quiet=True, cache=False).run(feeds)
    np.testing.assert_allclose(list(got.values())[0], want, rtol=1e-5, atol=1e-6)

"""``batchnorm-affine``: a batch norm no conv absorbed becomes per-channel mul/add, fused with the
activation after it; a norm after a conv is still folded; non-constant, non-float norms and the INT8
pipeline are left alone."""

from __future__ import annotations

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.ir import interpret
from nnc.passes import PassManager
from nnc.passes.quantize import quantized_pipeline

RNG = np.random.default_rng(4)
C = 12


def _bn_inits(prefix: str = "") -> list:
    return [numpy_helper.from_array(RNG.uniform(0.5, 2, C).astype(np.float32), prefix + "scale"),
            numpy_helper.from_array(RNG.standard_normal(C).astype(np.float32), prefix + "bias"),
            numpy_helper.from_array(RNG.standard_normal(C).astype(np.float32), prefix + "mean"),
            numpy_helper.from_array(RNG.uniform(0.5, 2, C).astype(np.float32), prefix + "var")]


def preact_model(after_conv: bool = False):
    """x -> [conv ->] batch_norm -> relu -> conv 1x1 (DenseNet's pre-activation layer)."""
    inits = _bn_inits() + [numpy_helper.from_array(RNG.standard_normal((5, C, 1, 1)).astype(np.float32), "w")]
    nodes = [helper.make_node("BatchNormalization", ["h", "scale", "bias", "mean", "var"], ["bn"], epsilon=1e-3),
             helper.make_node("Relu", ["bn"], ["r"]),
             helper.make_node("Conv", ["r", "w"], ["y"], kernel_shape=[1, 1])]
    if after_conv:
        inits.append(numpy_helper.from_array(RNG.standard_normal((C, C, 3, 3)).astype(np.float32), "w0"))
        nodes.insert(0, helper.make_node("Conv", ["x", "w0"], ["h"], pads=[1, 1, 1, 1]))
    else:
        nodes.insert(0, helper.make_node("Identity", ["x"], ["h"]))
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, C, 7, 9])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 5, 7, 9])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])


def _numpy_preact(x: np.ndarray, model) -> np.ndarray:
    p = {i.name: numpy_helper.to_array(i).astype(np.float64) for i in model.graph.initializer}
    ch = (1, -1, 1, 1)
    bn = (x - p["mean"].reshape(ch)) / np.sqrt(p["var"].reshape(ch) + 1e-3) * p["scale"].reshape(ch) \
        + p["bias"].reshape(ch)
    return np.einsum("nchw,oc->nohw", np.maximum(bn, 0), p["w"][:, :, 0, 0])


def _ops(m) -> list[str]:
    return [op.opname for op in m.main.ops if op.opname != "const"]


def test_a_lone_batch_norm_becomes_mul_add_and_fuses_with_its_relu():
    model = preact_model()
    m = nnc.from_onnx(model)
    PassManager("simplify,fold-batchnorm,batchnorm-affine,dce", verify_each=True).run(m)
    assert _ops(m) == ["mul", "add", "relu", "conv"]
    scale = next(op for op in m.main.ops if op.opname == "mul").operands[1]
    assert scale.type.shape == (C, 1, 1)  # broadcasts over axis 1
    PassManager("fuse,dce", verify_each=True).run(m)
    assert _ops(m) == ["fused", "conv"]
    x = RNG.standard_normal((2, C, 7, 9)).astype(np.float32)
    want = _numpy_preact(x.astype(np.float64), model)
    np.testing.assert_allclose(interpret(m, {"x": x})["y"], want, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("target", ["reference", "x86"])
def test_default_pipeline_on_both_targets(target):
    model = preact_model()
    cm = nnc.compile(model, target=target, quiet=True)
    rec = {r["name"]: r for r in cm.report["passes"]}
    assert rec["batchnorm-affine"]["changed"]
    x = RNG.standard_normal((2, C, 7, 9)).astype(np.float32)
    np.testing.assert_allclose(cm.run({"x": x})["y"], _numpy_preact(x.astype(np.float64), model), rtol=1e-5, atol=1e-5)


def test_a_batch_norm_after_a_conv_is_still_folded():
    m = nnc.from_onnx(preact_model(after_conv=True))
    PassManager("simplify,fold-batchnorm,batchnorm-affine,dce", verify_each=True).run(m)
    assert _ops(m) == ["conv", "relu", "conv"]


def test_non_constant_and_half_norms_are_left_alone():
    from nnc.ir import Builder, DType, Graph, Module, TensorType

    for dt, const in ((DType.f32, False), (DType.f16, True)):
        m = Module("t")
        g = m.add_graph(Graph("main"))
        b = Builder(m, g)
        x = g.add_param("x", TensorType(dt, (1, C, 4, 4)))
        params = [b.const(np.ones(C, dt.numpy)) if const else g.add_param(f"p{i}", TensorType(dt, (C,)))
                  for i in range(4)]
        g.set_outputs([b.op("batch_norm", x, *params)])
        PassManager("batchnorm-affine", verify_each=True).run(m)
        assert _ops(m) == ["batch_norm"]


def test_the_int8_pipeline_leaves_batch_norms_to_the_quantizer():
    names = [getattr(p, "name", "") for p in quantized_pipeline("freeze,reparameterize,batchnorm-affine,fuse,dce",
                                                                "int8", calibration=None)]
    assert "batchnorm-affine" not in names and "reparameterize" in names

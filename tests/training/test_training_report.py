"""The report of an x86 training compile carries the backend's section (kernel call sites and
distinct kernels), as an inference compile's does: one route for both. No torch needed."""

from __future__ import annotations

import numpy as np
from onnx import TensorProto, helper, numpy_helper

import nnc


def test_x86_training_report_has_the_backend_section_of_an_inference_compile():
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.3).astype(np.float32), n)
             for n, s in (("w1", (6, 16)), ("w2", (16, 16)), ("w3", (16, 3)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h1"]), helper.make_node("Relu", ["h1"], ["r1"]),
             helper.make_node("MatMul", ["r1", "w2"], ["h2"]), helper.make_node("Relu", ["h2"], ["r2"]),
             helper.make_node("MatMul", ["r2", "w3"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 3])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    sess = nnc.compile(model, target="x86", mode="train", loss="mse", quiet=True, cache=False)
    infer = nnc.compile(model, target="x86", quiet=True, cache=False)
    assert set(infer.report["x86"]) <= set(sess.report["x86"])
    kernels = sess.report["x86"]["kernels"]
    assert 0 < kernels["distinct"] <= kernels["calls"]

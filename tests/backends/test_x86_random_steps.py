"""Ops that draw from numpy's RandomState run on x86 as host steps between compiled segments and give
the reference interpreter's numbers exactly (same seed, same stream), with compiled work on both
sides; dropout's identity form stays one compiled kernel."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnc


def model(random_node: onnx.NodeProto, out_dtype: int = TensorProto.FLOAT) -> onnx.ModelProto:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), random_node,
             helper.make_node("Cast", ["d"], ["dc"], to=TensorProto.FLOAT),
             helper.make_node("Add", ["dc", "r"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [3, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [3, 4])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 15)])


NODES = {
    "uniform": helper.make_node("RandomUniformLike", ["r"], ["d"], low=-1.0, high=2.0, seed=3.0),
    "normal": helper.make_node("RandomNormalLike", ["r"], ["d"], mean=1.0, scale=0.5, seed=4.0),
    "bernoulli": helper.make_node("Bernoulli", ["p"], ["d"], seed=5.0),
}


@pytest.mark.parametrize("kind", sorted(NODES))
def test_seeded_draws_equal_the_reference(kind: str) -> None:
    node = NODES[kind]
    m = model(node)
    if kind == "bernoulli":  # probabilities from the compiled part: sigmoid of the relu
        m.graph.node.insert(1, helper.make_node("Sigmoid", ["r"], ["p"]))
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    want = nnc.compile(m, target="reference").run({"x": x})["y"]
    cm = nnc.compile(m, target="x86", quiet=True, cache=False)
    segments = cm.report["x86"]["segments"]
    assert segments["host_steps"] == 1 and segments["compiled"] >= 1, segments
    np.testing.assert_array_equal(cm.run({"x": x})["y"], want)
    np.testing.assert_array_equal(cm.run({"x": x})["y"], want)  # seeded: every run the same stream


def test_dropout_with_a_run_time_training_flag_is_a_host_step() -> None:
    """The ratio and the training flag are run-time inputs, as in the official training_dropout tests."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Dropout", ["r", "ratio", "mode"], ["y"], seed=7)]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [64]),
                                       helper.make_tensor_value_info("ratio", TensorProto.FLOAT, []),
                                       helper.make_tensor_value_info("mode", TensorProto.BOOL, [])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [64])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    x = np.abs(np.random.default_rng(1).standard_normal(64).astype(np.float32)) + 0.1
    cm = nnc.compile(m, target="x86", quiet=True, cache=False)
    ref = nnc.compile(m, target="reference")
    assert cm.report["x86"]["segments"]["host_steps"] == 1
    for training in (True, False):
        feeds = {"x": x, "ratio": np.array(0.5, np.float32), "mode": np.array(training)}
        got = cm.run(feeds)["y"]
        np.testing.assert_array_equal(got, ref.run(feeds)["y"])
        if training:
            assert 0 < (got == 0).sum() < 64  # some dropped, the rest scaled by 2
        else:
            np.testing.assert_array_equal(got, x)


def test_dropout_in_its_identity_form_stays_a_compiled_kernel() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Dropout", ["r"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [8])])
    cm = nnc.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]), target="x86", quiet=True,
                     cache=False)
    assert "segments" not in cm.report["x86"]
    x = np.arange(8, dtype=np.float32)
    np.testing.assert_array_equal(cm.run({"x": x})["y"], x)

"""ir.shape_eval: concrete shapes of a symbolic graph per input binding, with the shape arithmetic
(Shape -> Gather -> Concat -> Reshape) evaluated on the host, and data-dependent shapes named."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnc
from nnc.ir import InputError
from nnc.ir.shape_eval import ShapeEvaluator


def _reshape_model() -> onnx.ModelProto:
    """x[N,S,8] -> reshape to [N, S*2, 4] with the target computed from Shape(x) at run time."""
    i64 = TensorProto.INT64
    nodes = [
        helper.make_node("Shape", ["x"], ["s"]),
        helper.make_node("Gather", ["s", "i0"], ["n"], axis=0),
        helper.make_node("Gather", ["s", "i1"], ["t"], axis=0),
        helper.make_node("Mul", ["t", "two"], ["t2"]),
        helper.make_node("Concat", ["n", "t2", "four"], ["target"], axis=0),
        helper.make_node("Reshape", ["x", "target"], ["y"]),
        helper.make_node("Relu", ["y"], ["z"]),
    ]
    inits = [helper.make_tensor("i0", i64, [1], [0]), helper.make_tensor("i1", i64, [1], [1]),
             helper.make_tensor("two", i64, [1], [2]), helper.make_tensor("four", i64, [1], [4])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "S", 8])],
                          [helper.make_tensor_value_info("z", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_reshape_target_is_computed_from_the_input_shape() -> None:
    m = nnc.from_onnx(_reshape_model())
    g = m.main
    ev = ShapeEvaluator(m, g)
    assert ev.data_dependence is None and ev.value_inputs() == []
    for n, s in ((1, 1), (3, 5), (2, 64)):
        types = ev.types([np.zeros((n, s, 8), np.float32)])
        assert types[id(g.outputs[0])].shape == (n, 2 * s, 4)


def test_a_shape_from_float_data_is_data_dependent() -> None:
    i64 = TensorProto.INT64
    nodes = [helper.make_node("Cast", ["k"], ["ki"], to=i64), helper.make_node("Reshape", ["x", "ki"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"]),
                                       helper.make_tensor_value_info("k", TensorProto.FLOAT, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = nnc.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    why = ShapeEvaluator(m, m.main).data_dependence
    assert why is not None and "%k" in why


def test_an_integer_input_that_decides_a_shape_is_a_value_input() -> None:
    nodes = [helper.make_node("Reshape", ["x", "shape"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N"]),
                                       helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    m = nnc.from_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]))
    ev = ShapeEvaluator(m, m.main)
    assert ev.value_inputs() == ["shape"]
    types = ev.types([np.zeros(12, np.float32), np.array([3, -1])])
    assert types[id(m.main.outputs[0])].shape == (3, 4)
    with pytest.raises(InputError):
        ev.types([np.zeros(12, np.float32), np.array([5, -1])])

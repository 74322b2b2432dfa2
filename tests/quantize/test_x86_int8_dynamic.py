"""INT8 models with a symbolic batch compile once to shape-generic x86 code (issue 12 item 6): the
quantized CNN (VNNI and depthwise qconv, requantize, qadd, pooling) and a quantized MLP (qmatmul whose
row count is read at run time: full 12-row tiles, then single rows) run at several batch sizes on
one compile and agree bit for bit with the reference interpreter on the same quantized graph."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.ir import interpret
from nnc.passes.quantize import quantize_module

sys.path.insert(0, os.path.dirname(__file__))
from quant_models import small_cnn  # noqa: E402


def symbolic_batch(model: onnx.ModelProto) -> onnx.ModelProto:
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    return model


def mlp(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.2).astype(np.float32), n)
             for n, s in (("w1", (37, 64)), ("b1", (64,)), ("w2", (64, 10)), ("b2", (10,)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["hb"]),
             helper.make_node("Relu", ["hb"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["o"]),
             helper.make_node("Add", ["o", "b2"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 37])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def inputs(shape: tuple[int, ...], seed: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}


@pytest.mark.parametrize("name,model,sample,batches", [
    ("cnn", lambda: symbolic_batch(small_cnn()), (3, 16, 16), (1, 3, 2)),
    ("mlp", mlp, (37,), (1, 5, 12, 25, 3)),
])
def test_int8_model_with_symbolic_batch_compiles_once(name, model, sample, batches):
    q = quantize_module(nnc.from_onnx(model()), [inputs((2, *sample), s) for s in range(4)])
    cm = nnc.compile(q, target="x86", quiet=True, cache=False)
    assert cm.report["shapes"] == {"generic": True, "symbols": ["N"]}, cm.report["shapes"]
    ops = {op.opname for op in q.main.walk()}
    assert {"qconv", "requantize"} <= ops if name == "cnn" else "qmatmul" in ops, ops
    for i, n in enumerate(batches):
        f = inputs((n, *sample), 10 + i)
        got = cm.run(f)["y"]
        np.testing.assert_array_equal(got, interpret(q, f)["y"])
    assert cm.executable.plans_made == len(set(batches))

"""Small ONNX models with control flow, shared by the frontend and x86 tests (built with
onnx.helper; expected values come from onnxruntime)."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h

F = T.FLOAT


def _model(graph: onnx.GraphProto, opset: int = 17) -> onnx.ModelProto:
    m = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def _scalar(name: str, value, dtype=np.float32) -> onnx.NodeProto:
    return h.make_node("Constant", [], [name], value=onnx.numpy_helper.from_array(np.array(value, dtype), name))


def loop_until(limit: float) -> onnx.ModelProto:
    """s = 0; do s += x until sum(s) > limit (no trip count: the condition decides); returns the
    final s and every s as a scan output. Reads x and the limit from the enclosing graph."""
    body = h.make_graph(
        [h.make_node("Add", ["s_in", "x"], ["s_out"]),
         h.make_node("ReduceSum", ["s_out"], ["total"], keepdims=0),
         h.make_node("LessOrEqual", ["total", "limit"], ["cond_out"]),
         h.make_node("Identity", ["s_out"], ["s_scan"])],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("s_in", F, [3])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("s_out", F, [3]),
         h.make_tensor_value_info("s_scan", F, [3])])
    g = h.make_graph(
        [_scalar("limit", limit), _scalar("s0", np.zeros(3)), _scalar("go", True, np.bool_),
         h.make_node("Loop", ["", "go", "s0"], ["s", "ss"], body=body)],
        "loop_until", [h.make_tensor_value_info("x", F, [3])],
        [h.make_tensor_value_info("s", F, [3]), h.make_tensor_value_info("ss", F, ["n", 3])])
    return _model(g)


def nested_if_in_loop() -> onnx.ModelProto:
    """acc = 0; for i < M: acc = (acc + x) if i is even else acc * w; the If inside the loop body
    reads x and w from the outermost graph (two scopes up)."""
    then = h.make_graph([h.make_node("Add", ["acc_in", "x"], ["t"])], "then", [],
                        [h.make_tensor_value_info("t", F, ["d"])])
    other = h.make_graph([h.make_node("Mul", ["acc_in", "w"], ["e"])], "else", [],
                         [h.make_tensor_value_info("e", F, ["d"])])
    body = h.make_graph(
        [_scalar("two", 2, np.int64), _scalar("zero", 0, np.int64),
         h.make_node("Mod", ["i", "two"], ["r"]),
         h.make_node("Equal", ["r", "zero"], ["even"]),
         h.make_node("If", ["even"], ["acc_out"], then_branch=then, else_branch=other),
         h.make_node("Identity", ["cond_in"], ["cond_out"])],
        "body",
        [h.make_tensor_value_info("i", T.INT64, []), h.make_tensor_value_info("cond_in", T.BOOL, []),
         h.make_tensor_value_info("acc_in", F, ["d"])],
        [h.make_tensor_value_info("cond_out", T.BOOL, []), h.make_tensor_value_info("acc_out", F, ["d"])])
    g = h.make_graph(
        [_scalar("go", True, np.bool_),
         h.make_node("Mul", ["x", "zero_f"], ["acc0"]),
         h.make_node("Loop", ["M", "go", "acc0"], ["acc"], body=body)],
        "nested", [h.make_tensor_value_info("x", F, ["d"]), h.make_tensor_value_info("M", T.INT64, [])],
        [h.make_tensor_value_info("acc", F, ["d"])],
        initializer=[onnx.numpy_helper.from_array(np.array(0.5, np.float32), "w"),
                     onnx.numpy_helper.from_array(np.array(0.0, np.float32), "zero_f")])
    return _model(g)


def scan_rnn(hidden: int = 4) -> onnx.ModelProto:
    """An RNN-like cumulative sum over the sequence axis (axis 0 of xs [T, hidden]):
    h_t = tanh(h_{t-1} @ W + x_t), y_t = h_t; W is a weight of the enclosing graph."""
    body = h.make_graph(
        [h.make_node("MatMul", ["h_in", "W"], ["hw"]),
         h.make_node("Add", ["hw", "x_t"], ["pre"]),
         h.make_node("Tanh", ["pre"], ["h_out"]),
         h.make_node("Identity", ["h_out"], ["y_t"])],
        "body",
        [h.make_tensor_value_info("h_in", F, [hidden]), h.make_tensor_value_info("x_t", F, [hidden])],
        [h.make_tensor_value_info("h_out", F, [hidden]), h.make_tensor_value_info("y_t", F, [hidden])])
    w = np.random.default_rng(7).standard_normal((hidden, hidden)).astype(np.float32) * 0.5
    g = h.make_graph(
        [h.make_node("Scan", ["h0", "xs"], ["h_last", "ys"], body=body, num_scan_inputs=1)],
        "rnn", [h.make_tensor_value_info("h0", F, [hidden]), h.make_tensor_value_info("xs", F, ["T", hidden])],
        [h.make_tensor_value_info("h_last", F, [hidden]), h.make_tensor_value_info("ys", F, ["T", hidden])],
        initializer=[onnx.numpy_helper.from_array(w, "W")])
    return _model(g)


def run_onnxruntime(model: onnx.ModelProto, feeds: dict) -> list:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feeds)

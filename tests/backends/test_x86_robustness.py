"""Run-time robustness of the x86 backend and the reference interpreter (issue 14).

Zero-size dims (a batch of 0) run and give empty outputs of the shapes onnxruntime gives; index ops
reject an out-of-range index with an ``InputError`` naming the op, on the interpreter, the JIT and
a library built through the CLI; valid negative indices keep working.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(14)
F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=[numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def vi(name: str, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def onnxruntime_run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


# -- zero-size dims -------------------------------------------------------------------------------

W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
FC = RNG.standard_normal((12, 5)).astype(np.float32)


def _zero_batch_cases():
    x4 = vi("x", [0, 3, 6, 6])
    yield "conv", model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [x4],
                        [vi("y", [0, 4, 6, 6])], [("w", W)]), {"x": (0, 3, 6, 6)}
    yield "maxpool", model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], [x4],
                           [vi("y", [0, 3, 3, 3])]), {"x": (0, 3, 6, 6)}
    yield "avgpool", model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                           [x4], [vi("y", [0, 3, 6, 6])]), {"x": (0, 3, 6, 6)}
    yield "globalpool", model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [x4], [vi("y", [0, 3, 1, 1])]), \
        {"x": (0, 3, 6, 6)}
    yield "gemm", model([helper.make_node("Gemm", ["x", "w"], ["y"])], [vi("x", [0, 12])], [vi("y", [0, 5])],
                        [("w", FC)]), {"x": (0, 12)}
    yield "matmul", model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [0, 7, 12])],
                          [vi("y", [0, 7, 5])], [("w", FC)]), {"x": (0, 7, 12)}
    yield "matmul_dyn", model([helper.make_node("MatMul", ["x", "z"], ["y"])], [vi("x", [0, 12]), vi("z", [12, 5])],
                              [vi("y", [0, 5])]), {"x": (0, 12), "z": (12, 5)}
    # an empty contraction: the product is all zeros, not empty
    yield "matmul_k0", model([helper.make_node("MatMul", ["x", "z"], ["y"])], [vi("x", [3, 0]), vi("z", [0, 5])],
                             [vi("y", [3, 5])]), {"x": (3, 0), "z": (0, 5)}
    yield "gemm_k0", model([helper.make_node("Gemm", ["x", "w", "c"], ["y"])], [vi("x", [3, 0])], [vi("y", [3, 5])],
                           [("w", np.zeros((0, 5), np.float32)), ("c", np.arange(5, dtype=np.float32))]), {"x": (3, 0)}
    yield "reduce_sum_empty_axis", model([helper.make_node("ReduceSum", ["x", "a"], ["y"], keepdims=0)],
                                         [vi("x", [3, 0])], [vi("y", [3])], [("a", np.array([1], np.int64))]), \
        {"x": (3, 0)}
    yield "softmax", model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [vi("x", [0, 10])],
                           [vi("y", [0, 10])]), {"x": (0, 10)}
    yield "reduce", model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0),
                           helper.make_node("ReduceMax", ["x"], ["z"], axes=[2], keepdims=1)],
                          [vi("x", [0, 4, 5])], [vi("y", [0, 5]), vi("z", [0, 4, 1])]), {"x": (0, 4, 5)}
    yield "concat", model([helper.make_node("Concat", ["x", "z"], ["y"], axis=1)],
                          [vi("x", [0, 2]), vi("z", [0, 3])], [vi("y", [0, 5])]), {"x": (0, 2), "z": (0, 3)}
    yield "concat_empty_part", model([helper.make_node("Concat", ["x", "z"], ["y"], axis=0)],
                                     [vi("x", [0, 3]), vi("z", [2, 3])], [vi("y", [2, 3])]), {"x": (0, 3), "z": (2, 3)}
    ind = np.array([2, -1], dtype=np.int64)
    yield "gather", model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], [vi("x", [0, 4])],
                          [vi("y", [0, 2])], [("i", ind)]), {"x": (0, 4)}
    yield "gather_no_indices", model([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)],
                                     [vi("x", [4, 3]), vi("i", [0], TensorProto.INT64)], [vi("y", [0, 3])]), \
        {"x": (4, 3), "i": (0,)}
    yield "elementwise", model([helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
                                helper.make_node("Mul", ["r", "r"], ["y"])],
                               [vi("x", [0, 3, 4])], [vi("y", [0, 3, 4])],
                               [("b", RNG.standard_normal((3, 4)).astype(np.float32))]), {"x": (0, 3, 4)}
    yield "cnn", model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("Relu", ["c"], ["r"]),
                        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                        helper.make_node("Flatten", ["p"], ["f"]),
                        helper.make_node("Gemm", ["f", "fc"], ["l"]),
                        helper.make_node("Softmax", ["l"], ["y"])],
                       [x4], [vi("y", [0, 5])], [("w", W), ("fc", RNG.standard_normal((36, 5)).astype(np.float32))]), \
        {"x": (0, 3, 6, 6)}


ZERO_CASES = {name: (m, shapes) for name, m, shapes in _zero_batch_cases()}


def _feeds(m: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    types = {i.name: i.type.tensor_type.elem_type for i in m.graph.input}
    return {n: (np.arange(int(np.prod(s))) % 4).reshape(s).astype(np.int64) if types[n] == TensorProto.INT64
            else RNG.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


@pytest.mark.parametrize("name", sorted(ZERO_CASES))
@pytest.mark.parametrize("target", ["reference", "x86"])
def test_zero_size_dims_match_onnxruntime(name, target):
    m, shapes = ZERO_CASES[name]
    feeds = _feeds(m, shapes)
    want = onnxruntime_run(m, feeds)
    got = nnc.compile(m, target=target).run(feeds)
    assert set(got) == set(want)
    for key, w in want.items():
        assert got[key].shape == w.shape and got[key].dtype == w.dtype, key
        np.testing.assert_allclose(got[key], w, rtol=1e-5, atol=1e-5)

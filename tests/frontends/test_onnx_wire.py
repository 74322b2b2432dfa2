"""Initializers taken out of the ONNX message as views of the file's bytes (frontends/onnx/wire.py)
equal what onnx's own decoder gives, and whatever is not plain is left to onnx."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.frontends.onnx.loader import load_model, load_model_and_weights
from nnc.frontends.onnx.wire import split_weights


def model(extra: list[TensorProto] | None = None) -> onnx.ModelProto:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((32, 16)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.standard_normal(16).astype(np.float32), "b"),  # 64 bytes: left in
             numpy_helper.from_array(rng.integers(-9, 9, (300,)).astype(np.int64), "i64"),
             numpy_helper.from_array(rng.standard_normal((20, 30)).astype(np.float16), "h"),
             helper.make_tensor("listed", TensorProto.FLOAT, [400], rng.standard_normal(400).tolist())]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]), helper.make_node("Add", ["m", "b"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2, 16])], inits + (extra or []))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_views_equal_onnx_decoding_and_the_rest_is_untouched():
    m = model()
    data = m.SerializeToString()
    skeleton, weights = split_weights(data)
    assert sorted(weights) == ["h", "i64", "w"]  # "b" is small, "listed" has no raw_data
    for t in m.graph.initializer:
        if t.name in weights:
            want = numpy_helper.to_array(t)
            assert weights[t.name].dtype == want.dtype and weights[t.name].shape == want.shape
            np.testing.assert_array_equal(weights[t.name], want)
            assert not weights[t.name].flags.writeable
    rest = onnx.ModelProto()
    rest.ParseFromString(skeleton)
    assert len(skeleton) < len(data) - 32 * 16 * 4
    stripped = {t.name: t for t in rest.graph.initializer}
    assert not stripped["w"].raw_data and list(stripped["w"].dims) == [32, 16]
    np.testing.assert_array_equal(numpy_helper.to_array(stripped["b"]), numpy_helper.to_array(m.graph.initializer[1]))
    # everything but the taken-out bytes is the same message
    for t in m.graph.initializer:
        if t.name in weights:
            t.ClearField("raw_data")
    assert rest == m


def test_duplicate_names_and_garbage_are_left_to_onnx():
    dup = numpy_helper.from_array(np.ones((32, 16), np.float32), "w")
    _, weights = split_weights(model([dup]).SerializeToString())
    assert "w" not in weights and "h" in weights
    assert split_weights(b"\xff\xff\xff") == (b"\xff\xff\xff", {})


def test_loading_a_file_gives_the_same_module(tmp_path):
    path = tmp_path / "m.onnx"
    onnx.save(model(), str(path))
    proto, _, weights = load_model_and_weights(str(path))
    assert "w" in weights and not proto.graph.initializer[0].raw_data
    assert load_model(str(path))[0].graph.initializer[0].raw_data  # load_model still gives the whole message
    x = np.random.default_rng(1).standard_normal((2, 32)).astype(np.float32)
    got = nnc.compile(str(path)).run({"x": x})["y"]
    w, b = (numpy_helper.to_array(t) for t in model().graph.initializer[:2])
    np.testing.assert_allclose(got, x @ w + b, rtol=1e-5, atol=1e-5)

"""ONNX If/Loop/Scan and sequences imported into IR regions, run on the reference interpreter and
checked against onnxruntime."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from onnx_cf_models import loop_until, nested_if_in_loop, run_onnxruntime, scan_rnn

import nnc
from nnc.ir import parse_module, verify_module


def _check_round_trip(m: nnc.Module) -> None:
    verify_module(m)
    text = str(m)
    again = parse_module(text, weights=m.constants)
    verify_module(again)
    assert str(again) == text


@pytest.mark.parametrize("x", [[1.0, 2.0, 3.0], [0.25, 0.0, 0.5], [10.0, 0.0, 0.0]])
def test_loop_with_data_dependent_trip_count(x):
    model = loop_until(limit=20.0)
    feeds = {"x": np.array(x, np.float32)}
    want = run_onnxruntime(model, feeds)
    m = nnc.from_onnx(model)
    _check_round_trip(m)
    loop = next(op for op in m.main.ops if op.opname == "loop")
    # x and the limit come from the enclosing graph: x becomes an operand, the constant is re-read
    assert [v.name for v in loop.operands[3:]] == ["x"]
    got = nnc.compile(model).run(feeds)
    np.testing.assert_array_equal(got["s"], want[0])
    np.testing.assert_array_equal(got["ss"], want[1])
    s, trips = np.zeros(3, np.float32), 0
    while True:  # the trip count, independently: add until the sum exceeds the limit
        s, trips = s + feeds["x"], trips + 1
        if s.sum() > 20.0:
            break
    assert got["ss"].shape == (trips, 3)


@pytest.mark.parametrize("trips", [0, 1, 4, 7])
def test_nested_if_inside_loop(trips):
    model = nested_if_in_loop()
    x = np.random.default_rng(trips).standard_normal(5).astype(np.float32)
    feeds = {"x": x, "M": np.array(trips, np.int64)}
    want = run_onnxruntime(model, feeds)
    m = nnc.from_onnx(model)
    _check_round_trip(m)
    loop = next(op for op in m.main.ops if op.opname == "loop")
    inner = next(op for op in loop.regions[0].ops if op.opname == "if")
    # the If reads x two scopes up: the loop body and both branches take it as a parameter; the
    # constant w is read from the pool in the branch that uses it, captured nowhere
    assert [v.name for v in inner.operands[1:]] == ["acc_in", "x"] and len(inner.regions[0].params) == 2
    assert [op.attrs["ref"] for op in inner.regions[1].ops if op.opname == "const"] == ["w"]
    assert not any(op.opname == "const" and op.attrs["ref"] == "w" for op in loop.regions[0].ops)
    np.testing.assert_allclose(nnc.compile(model).run(feeds)["acc"], want[0], rtol=1e-6)


@pytest.mark.parametrize("length", [1, 5, 12])
def test_scan_rnn_cumulative_sum_against_onnxruntime(length):
    model = scan_rnn(hidden=4)
    rng = np.random.default_rng(length)
    feeds = {"h0": rng.standard_normal(4).astype(np.float32),
             "xs": rng.standard_normal((length, 4)).astype(np.float32)}
    want = run_onnxruntime(model, feeds)
    m = nnc.from_onnx(model)
    _check_round_trip(m)
    got = nnc.compile(model).run(feeds)
    np.testing.assert_allclose(got["h_last"], want[0], rtol=1e-5, atol=1e-6)  # f32 tanh/matmul rounding
    np.testing.assert_allclose(got["ys"], want[1], rtol=1e-5, atol=1e-6)


def test_loop16_sequence_of_optionals_matches_the_expected_values():
    """The official test onnx's runner cannot compare (a sequence holding a 0-d tensor)."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        case = next(t for t in load_model_tests(kind="node") if t.name == "test_loop16_seq_none")
    cm = nnc.compile(case.model)
    for inputs, refs in case.data_sets:
        got = cm(*inputs)
        assert len(got) == len(refs[0])
        for a, b in zip(got, refs[0]):
            np.testing.assert_array_equal(a, b)
            assert a.dtype == b.dtype


def test_a_body_reading_an_enclosing_sequence_in_sequence_map_is_refused():
    from onnx import TensorProto as T
    from onnx import helper as h

    body = h.make_graph([h.make_node("SequenceLength", ["outer"], ["n"])], "body",
                        [h.make_tensor_value_info("e", T.FLOAT, [2])],
                        [h.make_tensor_value_info("n", T.INT64, [])])
    seq = h.make_tensor_sequence_value_info("s", T.FLOAT, [2])
    g = h.make_graph([h.make_node("Identity", ["s"], ["outer"]),
                      h.make_node("SequenceMap", ["s"], ["lens"], body=body)], "g", [seq],
                     [h.make_tensor_sequence_value_info("lens", T.INT64, [])])
    model = h.make_model(g, opset_imports=[h.make_opsetid("", 17)])
    with pytest.raises(nnc.UnsupportedOpError, match="SequenceMap node .*enclosing graph"):
        nnc.from_onnx(model)

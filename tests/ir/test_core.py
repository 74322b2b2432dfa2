"""The IR core: builder, printer/parser round-trip, verifier and interpreter input checks."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir import (
    Builder,
    DType,
    Graph,
    InputError,
    Module,
    ParseError,
    TypeInferenceError,
    VerifyError,
    interpret,
    parse_module,
    tensor,
    verify_module,
)


def small_module() -> Module:
    m = Module("mlp")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", ["N", 4]))
    w = b.const(np.arange(4, dtype=np.float32) / 4, name="w")
    h = b.op("add", x, w, name="h")
    y = b.op("relu", h, name="y")
    z = b.op("clip", y, name="z", min=0.0, max=0.5)
    g.set_outputs([z, h], ["out", "pre"])
    return m


def test_print_parse_round_trip_is_exact():
    m = small_module()
    text = str(m)
    again = parse_module(text, weights=m.constants)
    verify_module(again)
    assert str(again) == text


def test_text_is_readable():
    text = str(small_module())
    assert "graph @main(%x: f32[N,4]) -> (out: f32[N,4], pre: f32[N,4])" in text
    assert "%h = add(%x, %w) : f32[N,4]" in text
    assert "clip(%y) {min=0.0, max=0.5}" in text


def test_interpreter_matches_numpy():
    m = small_module()
    x = np.linspace(-1, 1, 12, dtype=np.float32).reshape(3, 4)
    out = interpret(m, {"x": x})
    w = np.arange(4, dtype=np.float32) / 4
    np.testing.assert_array_equal(out["pre"], x + w)
    np.testing.assert_array_equal(out["out"], np.clip(np.maximum(x + w, 0), 0, 0.5))
    assert out["out"].dtype == np.float32


def test_weights_print_by_reference_and_parse_without_data():
    m = Module("big")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [2, 100]))
    w = b.const(np.ones(100, np.float32), name="fc.w")
    g.set_outputs([b.op("mul", x, w, name="y")])
    text = str(m)
    assert "%fc.w = const @fc.w : f32[100]" in text
    parsed = parse_module(text)  # no weights: the type is known, the data is not
    verify_module(parsed)
    assert str(parsed) == text
    assert not parsed.has_data("fc.w")


def test_special_floats_and_quoted_names_round_trip():
    m = Module("m")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("input:0 with space", tensor("f32", [3]))
    c = b.const(np.array([np.nan, np.inf, -np.inf], np.float32), name="c")
    g.set_outputs([b.op("add", x, c, name="weird/name:1")], ["out put"])
    text = str(m)
    again = parse_module(text)
    assert str(again) == text
    np.testing.assert_array_equal(again.constants["c"], m.constants["c"])


def test_builder_rejects_bad_types():
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    a = g.add_param("a", tensor("f32", [2, 3]))
    c = g.add_param("c", tensor("i64", [2, 3]))
    d = g.add_param("d", tensor("f32", [4, 3]))
    with pytest.raises(TypeInferenceError, match="share a dtype"):
        b.op("add", a, c)
    with pytest.raises(TypeInferenceError, match="do not broadcast"):
        b.op("add", a, d)
    with pytest.raises(TypeInferenceError, match="unknown attribute"):
        b.op("relu", a, alpha=1.0)
    with pytest.raises(TypeInferenceError, match="operands"):
        b.op("relu", a, a)


def test_symbolic_broadcasting():
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    a = g.add_param("a", tensor("f32", ["N", 1, 3]))
    c = g.add_param("c", tensor("f32", [5, 1]))
    assert b.op("add", a, c).type == tensor("f32", ["N", 5, 3])


@pytest.mark.parametrize("bad, message", [
    ("graph @main(%x: f32[2]) -> (y: f32[2]) {\n  %y = relu(%z) : f32[2]\n  return %y\n}", "undefined value %z"),
    ("graph @main(%x: f32[2]) -> (y: f32[2]) {\n  %y = relu(%x) : f32[2]\n  %y = relu(%x) : f32[2]\n"
     "  return %y\n}", "defined twice"),
    ("graph @main(%x: f32[2]) -> (y: f32[2]) {\n  %y = frobnicate(%x) : f32[2]\n  return %y\n}", "unknown op"),
    ("graph @main(%x: f32[2]) -> (y: f32[2]) {\n  %y = relu(%x) {alpha=1.0} : f32[2]\n  return %y\n}",
     "no attribute"),
    ("graph @main(%x: f32[2) -> (y: f32[2]) {\n  return %x\n}", "line 1"),
])
def test_parse_errors_carry_position(bad, message):
    with pytest.raises(ParseError, match=message):
        parse_module(bad)


def test_verifier_catches_wrong_declared_type():
    text = "graph @main(%x: f32[2,3]) -> (y: f32[3,2]) {\n  %y = relu(%x) : f32[3,2]\n  return %y\n}"
    m = parse_module(text)
    with pytest.raises(VerifyError, match="inference gives f32\\[2,3\\]"):
        verify_module(m)


def test_verifier_catches_use_before_definition():
    m = small_module()
    g = m.main
    g.ops.reverse()
    with pytest.raises(VerifyError, match="not defined before use"):
        verify_module(m)


def test_interpreter_checks_inputs():
    m = small_module()
    with pytest.raises(InputError, match="missing input 'x'"):
        interpret(m, {})
    with pytest.raises(InputError, match="dtype f64"):
        interpret(m, {"x": np.zeros((2, 4))})
    with pytest.raises(InputError, match="expected f32\\[N,4\\]"):
        interpret(m, {"x": np.zeros((2, 5), np.float32)})
    with pytest.raises(InputError, match="unexpected input"):
        interpret(m, {"x": np.zeros((2, 4), np.float32), "q": np.zeros(1)})


def test_symbols_bind_consistently_across_inputs():
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    a = g.add_param("a", tensor("f32", ["N"]))
    c = g.add_param("c", tensor("f32", ["N"]))
    g.set_outputs([b.op("add", a, c)])
    with pytest.raises(InputError, match="symbol N is already bound to 2"):
        interpret(m, {"a": np.zeros(2, np.float32), "c": np.zeros(3, np.float32)})


def test_erase_and_replace_keep_uses_consistent():
    m = small_module()
    g = m.main
    relu = next(op for op in g.ops if op.opname == "relu")
    h = relu.operands[0]
    clip = relu.result.uses[0][0]
    g.replace_all_uses(relu.result, h)
    g.erase(relu)
    verify_module(m)
    assert clip.operands[0] is h
    assert (clip, 0) in h.uses


def test_dtype_round_trip_with_numpy():
    for dt in DType:
        assert DType.from_numpy(dt.numpy) is dt


def test_region_ops_print_parse_verify_and_run():
    m = Module("fusion")
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", tensor("f32", [2, 3]))
    body = Graph("group0")
    bx = body.add_param("a", tensor("f32", [2, 3]))
    bb = Builder(m, body)
    body.set_outputs([bb.op("relu", bb.op("neg", bx, name="n"), name="r")])
    y = Builder(m, g).op("fused", x, regions=[body], kind="elementwise", name="y")[0]
    g.set_outputs([y], ["y"])
    verify_module(m)
    text = str(m)
    assert "fused(%x) {kind=\"elementwise\"} : f32[2,3] {" in text
    again = parse_module(text)
    verify_module(again)
    assert str(again) == text
    xv = np.array([[-1, 2, -3], [4, -5, 6]], np.float32)
    np.testing.assert_array_equal(interpret(again, {"x": xv})["y"], np.maximum(-xv, 0))


def test_output_names_that_are_not_identifiers_round_trip():
    m = Module("m")
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", tensor("f32", [2]))
    g.set_outputs([Builder(m, g).op("relu", x, name="gpu_0/softmax_1")], ["gpu_0/softmax_1"])
    text = str(m)
    assert '-> ("gpu_0/softmax_1": f32[2])' in text
    assert str(parse_module(text)) == text


def test_specialize_binds_shapes_and_values():
    from nnc.ir.specialize import specialize

    text = """graph @main(%x: f32[N,6], %s: i64[2]) -> (y: f32[?,?]) {
  %y = reshape(%x, %s) : f32[?,?]
  return %y
}
"""
    m = parse_module(text)
    verify_module(m)
    s = specialize(m, {"x": (2, 6)}, {"s": np.array([3, 4])})
    verify_module(s)
    assert s.main.outputs[0].type == tensor("f32", [3, 4])
    assert [p.name for p in s.main.params] == ["x"]
    x = np.arange(12, dtype=np.float32).reshape(2, 6)
    np.testing.assert_array_equal(interpret(s, {"x": x})["y"], x.reshape(3, 4))
    assert m.main.outputs[0].type == tensor("f32", ["?", "?"])  # the original is untouched
    with pytest.raises(InputError):
        specialize(m, {"x": (2, 5)})


def test_clone_is_independent_and_shares_weights():
    m = small_module()
    c = m.clone()
    assert str(c) == str(m)
    verify_module(c)
    relu = next(op for op in c.main.ops if op.opname == "relu")
    c.main.replace_all_uses(relu.result, relu.operands[0])
    c.main.erase(relu)
    verify_module(c)
    verify_module(m)
    assert any(op.opname == "relu" for op in m.main.ops)
    assert c.constants["w"] is m.constants["w"]


def test_clone_handles_deep_graphs():
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    v = g.add_param("x", tensor("f32", [2]))
    for i in range(5000):  # deeper than Python's default recursion limit
        v = b.op("neg", v, name=f"v{i}")
    g.set_outputs([v])
    c = m.clone()
    assert len(c.main.ops) == 5000
    np.testing.assert_array_equal(interpret(c, {"x": np.ones(2, np.float32)})["v4999"],
                                  np.ones(2, np.float32))

"""The control-flow and sequence ops in the IR: text round trip with regions, interpreter semantics
(checked against plain numpy), and the verifier's checks of region signatures."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir import Builder, Graph, IRError, Module, SequenceType, interpret, parse_module, tensor, verify_module
from nnc.ir.types import OptionalType, join_types

TEXT = ("module @cf\n\ngraph @main(%x: f32[N,3], %n: i64[], %s: seq<f32[?,3]>, %o: opt<f32[3]>) -> "
        "(acc: f32[3], ys: f32[?,3], r: f32[3], parts: seq<f32[3]>, k: i64[], has: bool[]) {\n") + """\
  %t = const dense<true> : bool[]
  %z = const dense<[0.0, 0.0, 0.0]> : f32[3]
  %row = reduce_sum(%x) {axes=[0], keepdims=0} : f32[3]
  %acc, %ys = loop(%n, %t, %z, %row) {n_carried=1} : f32[3], f32[?,3] {
    graph @body(%i: i64[], %c: bool[], %a: f32[3], %r: f32[3]) -> (c: bool[], a: f32[3], y: f32[3]) {
      %a2 = add(%a, %r) : f32[3]
      return %c, %a2, %a
    }
  }
  %two = const dense<2> : i64[]
  %big = greater(%n, %two) : bool[]
  %r = if(%big, %acc) : f32[3] {
    graph @then(%v: f32[3]) -> (out: f32[3]) {
      %nv = neg(%v) : f32[3]
      return %nv
    }
    graph @else(%v: f32[3]) -> (out: f32[3]) {
      return %v
    }
  }
  %parts = split_to_sequence(%ys) {keepdims=0} : seq<f32[3]>
  %k = sequence_length(%s) : i64[]
  %has = optional_has_element(%o) : bool[]
  return %acc, %ys, %r, %parts, %k, %has
}
"""


def test_text_with_regions_and_sequence_types_round_trips():
    m = parse_module(TEXT)
    verify_module(m)
    assert str(m) == TEXT
    again = parse_module(str(m), weights=m.constants)
    assert str(again) == TEXT


@pytest.mark.parametrize("n", [0, 1, 3, 5])
def test_loop_if_and_sequences_run_like_numpy(n):
    m = parse_module(TEXT)
    x = np.random.default_rng(n).standard_normal((2, 3)).astype(np.float32)
    row = x.sum(axis=0)
    seq = [np.ones((k, 3), np.float32) for k in range(4)]
    out = interpret(m, {"x": x, "n": np.array(n), "s": seq, "o": None})
    acc, ys = np.zeros(3, np.float32), []
    for _ in range(n):
        ys.append(acc)
        acc = acc + row
    np.testing.assert_array_equal(out["acc"], acc)
    np.testing.assert_array_equal(out["ys"], np.array(ys, np.float32).reshape(n, 3))
    np.testing.assert_array_equal(out["r"], -acc if n > 2 else acc)
    assert len(out["parts"]) == n and all(p.shape == (3,) for p in out["parts"])
    assert out["k"] == 4 and out["has"] == np.array(False)


def test_scan_reverse_direction_and_output_axis():
    m = Module()
    g = m.add_graph(Graph("main"))
    xs = g.add_param("xs", tensor("f32", [2, "T"]))
    h0 = g.add_param("h0", tensor("f32", [2]))
    body = Graph("body")
    h = body.add_param("h", tensor("f32", [2]))
    xt = body.add_param("xt", tensor("f32", [2]))
    s = Builder(m, body).op("add", h, xt, name="s")
    body.set_outputs([s, s], ["h", "y"])
    res = Builder(m, g).op("scan", h0, xs, n_state=1, n_scan_inputs=1, scan_input_axes=(1,),
                           scan_input_directions=(1,), scan_output_axes=(1,), regions=[body], names=["hT", "ys"])
    assert str(res[1].type) == "f32[2,T]"
    g.set_outputs(list(res), ["hT", "ys"])
    verify_module(m)
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    out = interpret(m, {"xs": x, "h0": np.zeros(2, np.float32)})
    want = np.cumsum(x[:, ::-1], axis=1)  # walked from the end, stacked in walking order
    np.testing.assert_array_equal(out["ys"], want)
    np.testing.assert_array_equal(out["hT"], x.sum(axis=1))


def test_verifier_rejects_a_region_whose_parameters_do_not_match():
    bad = TEXT.replace("graph @else(%v: f32[3]) -> (out: f32[3])", "graph @else(%v: f32[4]) -> (out: f32[4])")
    with pytest.raises(IRError, match="does not cover the captured type f32\\[3\\]"):
        verify_module(parse_module(bad))


def test_verifier_rejects_a_carried_value_the_body_changes_beyond_its_type():
    bad = TEXT.replace("%a2 = add(%a, %r) : f32[3]\n      return %c, %a2, %a",
                       "%a2 = concat(%a, %r) {axis=0} : f32[6]\n      return %c, %a2, %a")
    bad = bad.replace("-> (c: bool[], a: f32[3], y: f32[3])", "-> (c: bool[], a: f32[6], y: f32[3])")
    with pytest.raises(IRError, match="does not cover the body's result type f32\\[6\\]"):
        verify_module(parse_module(bad))


def test_join_types():
    assert join_types(tensor("f32", [3]), tensor("f32", [4])) == tensor("f32", ["?"])
    assert join_types(tensor("f32", [3]), tensor("f32", [3, 1])) == tensor("f32", None)
    assert join_types(tensor("f32", [3]), tensor("i64", [3])) is None
    assert join_types(SequenceType(tensor("f32", [1])), SequenceType(tensor("f32", [2]))) == \
        SequenceType(tensor("f32", ["?"]))
    assert join_types(OptionalType(tensor("f32", [1])), tensor("f32", [1])) is None


def test_sequence_ops_edit_host_lists():
    m = parse_module("""module @s

graph @main(%a: f32[2], %b: f32[2], %p: i64[]) -> (s: seq<f32[2]>, at: f32[2], cat: f32[?]) {
  %s0 = sequence_construct(%a, %b) : seq<f32[2]>
  %s1 = sequence_insert(%s0, %b, %p) : seq<f32[2]>
  %s2 = sequence_erase(%s1) : seq<f32[2]>
  %at = sequence_at(%s2, %p) : f32[2]
  %cat = concat_from_sequence(%s2) {axis=0} : f32[?]
  return %s2, %at, %cat
}
""")
    verify_module(m)
    a, b = np.array([1, 2], np.float32), np.array([3, 4], np.float32)
    out = interpret(m, {"a": a, "b": b, "p": np.array(0)})
    assert [x.tolist() for x in out["s"]] == [[3, 4], [1, 2]]
    np.testing.assert_array_equal(out["at"], b)
    np.testing.assert_array_equal(out["cat"], [3, 4, 1, 2])


def test_autodiff_refuses_control_flow():
    from nnc.ir import GradientError
    from nnc.ir.grads.engine import grad

    m = parse_module(TEXT.replace("f32[N,3]", "f32[2,3]"))  # training needs static shapes
    g = m.main
    loss = Builder(m, g).op("reduce_sum", g.outputs[0], keepdims=0)
    with pytest.raises(GradientError, match="cannot differentiate loop -> .*autodiff through control flow"):
        grad(m, loss, [g.params[0]])

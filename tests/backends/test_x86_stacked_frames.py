"""Frames from formulas without max_dims (backends/x86/stacked_frames.py): from the second input
signature on, a shape-generic model's arena offsets are formulas of the dims (the stacking of one
plan), so a new signature plans nothing; the placement is valid at every shape, outputs equal the
per-signature plan's bit for bit, and the report gives the arena as a formula."""

from __future__ import annotations

import itertools

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_x86_aot_dims import ids_for, reshape_model, shrinking_model, transformer_onnx

import nnc
from nnc.backends.x86 import stacked_frames
from nnc.backends.x86.generic import MAX_FORMULA_SETS
from nnc.ir import InputError
from nnc.ir.sym_dims import guards_hold

SHAPES = [(1, 5), (2, 9), (3, 16), (4, 7), (5, 33), (2, 64)]


def _no_overlap(exe, dims: dict[str, int], frame: np.ndarray) -> None:
    """The frame's offsets at ``dims`` against the planner's liveness there: every two buffers live
    at once are disjoint, and the arena holds the planner's lower bound."""
    from nnc.backends.x86.frame_formulas import input_symbols, shape_only_args

    _, inputs = input_symbols(exe.layout)
    plan = exe.layout.plan(shape_only_args(exe.layout, inputs, dims), keep_memory=True)
    lv = plan.memory.liveness
    at = {}
    for b in lv.buffers:
        slots = [exe.layout.offset_slot[id(v)] for v in b.values if id(v) in exe.layout.offset_slot]
        assert len({int(frame[s]) for s in slots}) <= 1  # values sharing a buffer share its offset
        if slots:
            at[b.id] = (int(frame[slots[0]]), b.size)
    top = max((o + n for o, n in at.values()), default=0)
    assert top <= int(frame[exe.layout.error_slot])  # the error record sits past every buffer
    for a, b in itertools.combinations(lv.buffers, 2):
        if a.id in at and b.id in at and a.overlaps_in_time(b) and at[a.id][1] and at[b.id][1]:
            (oa, na), (ob, nb) = at[a.id], at[b.id]
            assert oa + na <= ob or ob + nb <= oa, f"buffers {a.id} and {b.id} overlap at {dims}"
    assert plan.lower_bound_bytes <= top


def test_transformer_frames_from_the_second_signature_on(tmp_path) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(transformer_onnx(), path)
    cm = nnc.compile(str(path), target="x86", quiet=True, cache=False)
    planned = nnc.compile(str(path), target="x86", quiet=True, cache=False)
    planned.executable.derive_tries = MAX_FORMULA_SETS  # no formulas: every signature planned, for comparison
    exe = cm.executable
    for i, (b, s) in enumerate(SHAPES):
        if i == 2:  # two signatures planned, the formulas derived: the planner must not run again
            assert exe.stacked is not None, exe.stacked_reason
            plan, exe.layout.plan = exe.layout.plan, None
        feeds = {"ids": ids_for(b, s)}
        got, want = cm.run(feeds), planned.run(feeds)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    exe.layout.plan = plan
    assert exe.plans_made == len(SHAPES) and planned.executable.stacked is None
    # batch 1 is a regime of its own (the probe's broadcasting checks saw batch != 1): its first
    # signature is planned and gives a second set of formulas, which serves the next ones
    for b, s in [(1, 3), (1, 12), (1, 40)]:
        feeds = {"ids": ids_for(b, s)}
        for k, want in planned.run(feeds).items():
            np.testing.assert_array_equal(cm.run(feeds)[k], want)
    assert len(exe.formula_sets) == 2 and exe.formula_sets[1].probe == {"batch": 1, "sequence": 3}
    rows = exe.shapes_seen()
    assert [r["frame"] for r in rows] == (["planned"] * 2 + ["formula"] * (len(SHAPES) - 2)
                                          + ["planned", "formula", "formula"])
    formula = cm.report["memory"]["formula"]
    assert formula["derived"] and formula["sets"] == 2 and formula["from_dims"] == {"batch": 1, "sequence": 3}
    for r, frame in zip(rows, (p.frame for p in exe._plans.values())):
        _no_overlap(exe, r["dims"], frame)
        assert r["lower_bound_bytes"] <= r["arena_bytes"]
        # the formula bounds the bytes the buffers reach (sizes like 8*batch*sequence count the 63 bytes
        # of their rounding); the arena adds the 64-byte error record. Its text is Python arithmetic.
        if r["frame"] == "formula":  # the set that served it: the first whose guards hold there
            sf = next(f for f in exe.formula_sets if guards_hold(f.guards, r["dims"]))
            text, exact = sf.used_formula()
            assert not exact and r["arena_bytes"] - 64 <= eval(text, {"max": max, "min": min}, dict(r["dims"]))


def test_constraints_broken_at_run_time_go_to_the_planner(tmp_path) -> None:
    path = tmp_path / "split4.onnx"
    onnx.save(reshape_model(), path)
    cm = nnc.compile(str(path), target="x86", quiet=True, cache=False)
    rng = np.random.default_rng(0)
    for n in (2, 3, 5):
        x = rng.standard_normal((n, 12)).astype(np.float32)
        np.testing.assert_array_equal(cm(x), np.maximum(x.reshape(n, 3, 4), 0))
    stacked = cm.executable.stacked
    assert stacked is not None and stacked.fallbacks == 0
    with pytest.raises(InputError):  # the reshape's element count: the planner refuses, as before
        cm(np.zeros((2, 10), np.float32))
    assert stacked.fallbacks == 1


def test_a_shrinking_intermediate_needs_no_monotone_sizes(tmp_path) -> None:
    path = tmp_path / "shrink.onnx"
    onnx.save(shrinking_model(), path)
    cm = nnc.compile(str(path), target="x86", quiet=True, cache=False)
    rng = np.random.default_rng(1)
    for n, m in [(3, 10), (2, 9), (4, 30), (1, 2), (6, 40)]:
        x = rng.standard_normal((n, m)).astype(np.float32)
        s = x[:, :m - n]
        np.testing.assert_array_equal(cm(x), np.concatenate([s, s], axis=1))
    assert cm.executable.stacked is not None, cm.executable.stacked_reason
    assert [r["frame"] for r in cm.executable.shapes_seen()].count("formula") == 3


def clamped_slice_model() -> onnx.ModelProto:
    """relu(x[:, :8]): the kept width is min(L, 8), a branch a probe sees only one side of."""
    node = helper.make_node
    inits = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("s", 0), ("e", 8), ("a", 1))]
    g = helper.make_graph([node("Slice", ["x", "s", "e", "a"], ["t"]), node("Relu", ["t"], ["y"])], "clamp",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_a_clamp_gets_formulas_on_each_side_of_it(tmp_path) -> None:
    # the slice's width is min(L, 8): at a probe past 8 the formula is the constant 8, guarded by
    # L >= 8 (the comparison the shape evaluation made); a shorter L breaks the guard, is planned,
    # and gives the formulas of the other side (L itself)
    path = tmp_path / "clamp.onnx"
    onnx.save(clamped_slice_model(), path)
    cm = nnc.compile(str(path), target="x86", quiet=True, cache=False)
    rng = np.random.default_rng(2)
    frames = []
    for n, m in [(2, 12), (3, 20), (2, 5), (4, 30), (3, 3), (1, 2), (5, 9), (2, 7)]:
        x = rng.standard_normal((n, m)).astype(np.float32)
        np.testing.assert_array_equal(cm(x), np.maximum(x[:, :8], 0))
        frames.append(cm.executable.shapes_seen()[-1]["frame"])
    assert frames == ["planned", "planned", "planned", "formula", "formula", "formula", "formula", "formula"]
    assert len(cm.executable.formula_sets) == 2


def test_formulas_that_disagree_with_the_planner_are_not_used(tmp_path, monkeypatch) -> None:
    # the safety net behind the guards: a formula the shape evaluation got wrong (here made wrong on
    # purpose: every dim slot the constant 7) is refuted by the check against the planner, and every
    # signature is planned
    real = stacked_frames.formulas_at

    def wrong(*args, **kwargs):
        found = real(*args, **kwargs)
        found.slots = {i: ("const", 7) for i in found.slots}
        return found

    monkeypatch.setattr(stacked_frames, "formulas_at", wrong)
    path = tmp_path / "split4.onnx"
    onnx.save(reshape_model(), path)
    cm = nnc.compile(str(path), target="x86", quiet=True, cache=False)
    rng = np.random.default_rng(4)
    for n in (2, 3, 5, 9):
        x = rng.standard_normal((n, 12)).astype(np.float32)
        np.testing.assert_array_equal(cm(x), np.maximum(x.reshape(n, 3, 4), 0))
    exe = cm.executable
    assert exe.stacked is None and "not a formula of the input dims" in exe.stacked_reason
    assert cm.report["memory"]["formula"]["derived"] is False
    assert all(r["frame"] == "planned" for r in exe.shapes_seen())


def batch_one_model() -> onnx.ModelProto:
    """(mean(x, axis 0) + x) * 2: the sum broadcasts the mean's 1 against N."""
    node = helper.make_node
    inits = [numpy_helper.from_array(np.array([0], np.int64), "ax"), numpy_helper.from_array(np.float32(2), "two")]
    g = helper.make_graph([node("ReduceMean", ["x", "ax"], ["m"], keepdims=1), node("Add", ["m", "x"], ["z"]),
                           node("Mul", ["z", "two"], ["y"])], "inplace1",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", "L"])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 18)])


def test_a_batch_one_probe_is_replaced_by_a_more_generic_one(tmp_path) -> None:
    path = tmp_path / "batch_one.onnx"
    onnx.save(batch_one_model(), path)
    cm = nnc.compile(str(path), target="x86", quiet=True, cache=False)
    exe = cm.executable
    rng = np.random.default_rng(3)
    frames = []
    for n, m in [(1, 4), (1, 6), (3, 6), (2, 5), (1, 7), (4, 9)]:
        x = rng.standard_normal((n, m)).astype(np.float32)
        np.testing.assert_allclose(cm(x), (x.mean(axis=0, keepdims=True) + x) * 2, rtol=1e-6, atol=1e-6)
        frames.append(exe.shapes_seen()[-1]["frame"])
    # at the probe (1, 6) the sum's batch dim is a broadcast of 1 against N=1: the constant 1, guarded
    # by N == 1; (3, 6) breaks the guard, is planned and gives the formulas of N != 1
    assert frames == ["planned", "planned", "planned", "formula", "formula", "formula"]
    assert [f.probe for f in exe.formula_sets] == [{"N": 1, "L": 6}, {"N": 3, "L": 6}]

"""max_dims in the JIT: a shape-generic model whose dims are all bounded takes its frames from formulas
(backends/x86/bounded_frames.py): no shape evaluation or memory plan per input signature, outputs
bit-identical to the per-signature plan, the model's constraints checked, and the compile report
giving the arena used as a formula of the dims."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from test_x86_aot_dims import CASES, MAX, ids_for, reshape_model, shrinking_model, transformer_onnx

import nnc
from nnc.ir import InputError


def test_transformer_frames_from_formulas_match_the_per_signature_plan(tmp_path) -> None:
    path = tmp_path / "tiny.onnx"
    onnx.save(transformer_onnx(), path)
    bounded = nnc.compile(str(path), target="x86", quiet=True, cache=False, max_dims=MAX)
    free = nnc.compile(str(path), target="x86", quiet=True, cache=False)
    exe = bounded.executable
    assert exe.bounded is not None, exe.bounded_reason

    def no_planning(args):  # frames come from the formulas: the planner must not run per shape
        raise AssertionError("layout.plan ran for a bounded model")

    exe.layout.plan = no_planning
    for b, s in CASES + [(2, 9), (4, 16)]:
        feeds = {"ids": ids_for(b, s)}
        got, want = bounded.run(feeds), free.run(feeds)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])
    assert exe.plans_made == len(CASES) + 2
    del exe.layout.plan  # back to the class's method, for the lower bounds below
    mem = bounded.report["memory"]
    assert mem["planned"] is True and mem["at_bounds"] == MAX and mem["arena_bytes"] == exe.bounded.arena_bytes
    for row in exe.shapes_seen():
        assert row["arena_bytes"] == mem["arena_bytes"] and 0 < row["used_bytes"] <= row["arena_bytes"]
        dims = row["dims"]
        lower = exe.memory_at({"ids": ids_for(dims["batch"], dims["sequence"])})["lower_bound_bytes"]
        assert lower <= row["used_bytes"]  # the planner's lower bound holds at every shape seen
        # the report's formula gives the buffers' end at these dims (used_bytes: that end aligned to
        # 64 bytes, where the error record starts); its text is Python integer arithmetic
        end = eval(mem["used_formula"], {"max": max, "min": min}, dict(dims))
        assert -(-end // 64) * 64 == row["used_bytes"]


def test_constraints_are_checked_without_planning(tmp_path) -> None:
    path = tmp_path / "split4.onnx"
    onnx.save(reshape_model(), path)
    cm = nnc.compile(str(path), target="x86", quiet=True, cache=False, max_dims={"N": 3, "L": 64})
    assert cm.executable.bounded is not None
    x = np.random.default_rng(0).standard_normal((2, 12)).astype(np.float32)
    np.testing.assert_array_equal(cm(x), np.maximum(x.reshape(2, 3, 4), 0))
    with pytest.raises(InputError, match="does not hold at these dims"):
        cm(x[:, :10])
    with pytest.raises(InputError, match="above its maximum"):
        cm(np.zeros((4, 12), np.float32))


def test_a_model_the_formulas_cannot_bound_plans_per_shape_and_says_why(tmp_path) -> None:
    path = tmp_path / "shrink.onnx"
    onnx.save(shrinking_model(), path)
    cm = nnc.compile(str(path), target="x86", quiet=True, cache=False, max_dims={"N": 4, "L": 32})
    assert cm.executable.bounded is None
    assert "not monotone" in cm.report["memory"]["reason"]
    x = np.random.default_rng(1).standard_normal((3, 10)).astype(np.float32)
    s = x[:, :7]
    np.testing.assert_array_equal(cm(x), np.concatenate([s, s], axis=1))

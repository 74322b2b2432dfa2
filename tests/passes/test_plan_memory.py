"""Memory planning: liveness, in-place reuse, both greedy strategies, and the overlap checker."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc.ir import Builder, Graph, Module, interpret, tensor
from nnc.passes import PassManager
from nnc.passes.liveness import aligned, analyze_liveness
from nnc.passes.plan_memory import check_plan, greedy_by_breadth, greedy_by_size, plan_graph


def chain(n: int, width: int = 256) -> Module:
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    v = g.add_param("x", tensor("f32", [width]))
    for i in range(n):
        v = b.op("exp" if i % 2 else "neg", v, name=f"v{i}")
    g.set_outputs([v])
    return m


def test_chain_of_in_place_ops_needs_one_buffer():
    m = chain(6)
    lv = analyze_liveness(m.main)
    # v0 is written fresh (its operand is an input), v1..v4 reuse it in place, v5 is the output
    assert len(lv.buffers) == 1 and lv.in_place == 4
    plan = plan_graph(m.main)
    assert plan.arena_bytes == plan.lower_bound_bytes == 1024


def test_without_in_place_a_chain_ping_pongs_between_two_buffers():
    m = chain(6)
    plan = plan_graph(m.main, allow_in_place=False)
    assert len(plan.liveness.buffers) == 5
    assert plan.no_reuse_bytes == 5 * 1024
    assert plan.arena_bytes == plan.lower_bound_bytes == 2 * 1024


def test_plan_memory_pass_attaches_plan_and_stats():
    m = chain(4)
    rec = PassManager("plan-memory").run(m)[0]
    assert rec.stats["arena_bytes"] == 1024 and rec.stats["in_place"] == 2
    assert m.annotations["memory_plan"].arena_bytes == 1024


def test_diamond_keeps_both_branches_alive():
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [64]))
    a = b.op("neg", x, name="a")  # 256 bytes, read twice
    c = b.op("exp", a, name="c")
    d = b.op("sin", a, name="d")
    g.set_outputs([b.op("add", c, d, name="y")])
    plan = plan_graph(g)
    assert plan.lower_bound_bytes == 3 * 256 - 256  # a dies at d, which reuses it; c and d live together
    check_plan(plan)
    np.testing.assert_allclose(interpret(m, {"x": np.ones(64, np.float32)})["y"], np.exp(-1) + np.sin(-1), rtol=1e-6)


@st.composite
def random_dag(draw):
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    values = [g.add_param("x", tensor("f32", [draw(st.sampled_from([4, 16, 64]))]))]
    for i in range(draw(st.integers(1, 25))):
        src = draw(st.sampled_from(values))
        if draw(st.booleans()) and len(values) > 1:
            other = draw(st.sampled_from(values))
            if other.shape == src.shape:
                values.append(b.op("add", src, other, name=f"v{i}"))
                continue
        values.append(b.op("neg", src, name=f"v{i}"))
    g.set_outputs([values[-1]])
    return m


@settings(max_examples=100, deadline=None)
@given(random_dag())
def test_random_plans_never_overlap_and_respect_the_lower_bound(m):
    lv = analyze_liveness(m.main)
    conflicts = lv.time_conflicts()
    for a in lv.buffers:  # the sweep finds exactly the pairs live at a common point
        assert sorted(c.id for c in conflicts[a.id]) == [c.id for c in lv.buffers
                                                         if c.id != a.id and a.overlaps_in_time(c)]
    for strategy in (greedy_by_size, greedy_by_breadth):
        offsets, size = strategy(lv)
        assert size >= lv.lower_bound
        for a in lv.buffers:
            for c in lv.buffers:
                if a.id < c.id and a.overlaps_in_time(c):
                    assert offsets[a.id] + a.size <= offsets[c.id] or offsets[c.id] + c.size <= offsets[a.id]
    plan = plan_graph(m.main)
    assert plan.arena_bytes <= plan.no_reuse_bytes
    assert all(b.size == aligned(b.size) for b in lv.buffers)


def test_empty_tensors_take_no_space_and_overlap_nothing():
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [64]))
    e = g.add_param("e", tensor("f32", [0]))
    a = b.op("neg", x, name="a")
    z = b.op("neg", e, name="z")  # an empty intermediate, live across the others
    c = b.op("exp", a, name="c")
    g.set_outputs([b.op("add", c, a, name="y"), b.op("exp", z, name="w")])
    plan = plan_graph(g)
    check_plan(plan)
    assert plan.arena_bytes == plan.lower_bound_bytes

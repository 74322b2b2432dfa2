"""Rematerialisation: the rewritten step computes the same loss and gradients, its planned arena
shrinks, the FLOPs it adds are reported, budgets are honoured, random ops are never recomputed."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir import Builder, Graph, Module, interpret, tensor, verify_module
from nnc.passes.plan_memory import plan_graph
from nnc.passes.registry import PassError
from nnc.passes.training.autodiff import grad
from nnc.passes.training.remat import Remat, parse_budget


def deep_step(depth: int = 6, n: int = 32, d: int = 64, dropout: bool = False) -> tuple[Module, dict]:
    m = Module("deep")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    rng = np.random.default_rng(0)
    x = g.add_param("x", tensor("f32", [n, d]))
    feeds = {"x": rng.standard_normal((n, d)).astype(np.float32)}
    ws, h = [], x
    for i in range(depth):
        w = g.add_param(f"w{i}", tensor("f32", [d, d]))
        feeds[f"w{i}"] = (rng.standard_normal((d, d)) / np.sqrt(d)).astype(np.float32)
        ws.append(w)
        h = b.op("tanh", b.op("add", b.op("matmul", h, w), b.const(np.full(d, 0.1, np.float32))))
        h = b.op("mul", h, b.const(np.float32(1.5)))
        if dropout:
            h = b.op("dropout", h, ratio=0.25, training=1, seed=float(i), names=[f"drop{i}", f"mask{i}"])[0]
    loss = b.op("reduce_mean", b.op("mul", h, h), keepdims=0, name="loss")
    gr = grad(m, loss, ws)
    g.set_outputs([loss] + [gr[w] for w in ws], ["loss"] + [f"d_w{i}" for i in range(depth)])
    return m, feeds


def test_remat_keeps_results_and_shrinks_the_arena():
    m, feeds = deep_step()
    want = interpret(m, feeds)
    before = plan_graph(m.main).arena_bytes
    p = Remat()
    assert p.run(m)
    verify_module(m)
    got = interpret(m, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=k)
    after = plan_graph(m.main).arena_bytes
    assert after < before
    assert p.stats["arena_before"] == before and p.stats["arena_after"] == after
    assert p.stats["recomputed"] > 0 and p.stats["extra_flops"] > 0
    assert any(op.loc and "remat" in op.loc for op in m.main.ops)


def test_budget_is_met_with_the_least_recomputation():
    m, _ = deep_step()
    loose, tight = m.clone(), m.clone()
    p_loose, p_tight = Remat(budget="0.95"), Remat(budget="0.6")
    p_loose.run(loose)
    p_tight.run(tight)
    assert p_loose.stats["budget_met"] and p_tight.stats["budget_met"]
    assert p_loose.stats["extra_flops"] <= p_tight.stats["extra_flops"]
    assert plan_graph(tight.main).arena_bytes <= 0.6 * p_tight.stats["arena_before"]


def test_random_ops_are_never_recomputed():
    m, feeds = deep_step(dropout=True)
    want = interpret(m, feeds)
    Remat(budget="0.3").run(m)
    assert sum(op.opname == "dropout" for op in m.main.ops) == 6
    got = interpret(m, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-7, err_msg=k)


def test_inference_graph_is_left_alone():
    m = Module("inf")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [4]))
    g.set_outputs([b.op("relu", b.op("exp", x))])
    p = Remat()
    assert not p.run(m)
    assert "skipped" in p.stats


@pytest.mark.parametrize("text,want", [("0.5", 500), ("1", 1000), ("4096", 4096), ("2KiB", 2048),
                                       ("3MB", 3_000_000), ("", None)])
def test_parse_budget(text, want):
    assert parse_budget(text, 1000) == want


def test_parse_budget_rejects_words():
    with pytest.raises(PassError, match="memory budget"):
        parse_budget("lots", 1000)

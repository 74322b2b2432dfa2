"""nnc dump (text, DOT, after a pass) and nnc memory (table and SVG picture)."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

from test_cli import CNN, MLP, error_line, nnc_cli, ok

import nnc
from nnc.passes.plan_memory import plan_graph
from nnc.pipeline import optimize


def test_dump_dot_after_fuse_draws_fused_groups_as_clusters(tmp_path: Path) -> None:
    out = tmp_path / "cnn.dot"
    ok(nnc_cli("dump", CNN, "--format", "dot", "--after", "fuse", "-o", out))
    dot = out.read_text()
    assert dot.startswith('digraph "cnn"')
    assert dot.count("subgraph cluster_") >= 2 and 'label="fused conv' in dot
    before = ok(nnc_cli("dump", CNN, "--format", "dot", "--after", "freeze"))
    assert "subgraph cluster_" not in before


def test_dump_text_after_a_pass_is_valid_ir() -> None:
    text = ok(nnc_cli("dump", MLP, "--after", "fold-batchnorm"))
    assert nnc.parse(text) is not None
    assert "not in the pipeline" in error_line(nnc_cli("dump", MLP, "--after", "reparam"))


def test_memory_table_and_picture_match_the_planner(tmp_path: Path) -> None:
    pic = tmp_path / "m.svg"
    out = ok(nnc_cli("memory", CNN, "--picture", pic))
    m = nnc.from_onnx(str(CNN))
    from nnc.ir.specialize import specialize

    opt = optimize(specialize(m, {"image": (1, 1, 28, 28)}), "infer", {"opt_level": 3})[0]
    plan = plan_graph(opt.main)
    line = out.strip().splitlines()[-2]
    assert re.search(rf"arena {plan.arena_bytes:,} B .*lower bound {plan.lower_bound_bytes:,} B", line)
    svg = ET.parse(pic).getroot()
    title = "{http://www.w3.org/2000/svg}title"
    boxes = [e for e in svg.iter() if e.tag.endswith("rect") and e.find(title) is not None]
    assert len(boxes) == sum(1 for b in plan.liveness.buffers if b.size)


def test_memory_needs_static_shapes() -> None:
    assert "--dim" in error_line(nnc_cli("memory", MLP))  # its batch dim N is symbolic


def test_views_refuse_a_dim_the_model_does_not_have() -> None:
    # an accepted flag takes effect or is an error: --dim N=1 on a model with static shapes changes nothing
    for view in ("dump", "memory"):
        line = error_line(nnc_cli(view, CNN, "--dim", "N=1"))
        assert "no symbolic input dim N" in line, line

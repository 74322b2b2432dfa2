"""The pictures in docs/ (docs/pictures.md) are what nnc draws for ResNet-18 and BERT-mini today: their
numbers match a fresh plan, their clusters a fresh fusion, and each stays small."""

from __future__ import annotations

import os
import re
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

import nnc
from nnc.passes.plan_memory import plan_graph
from nnc.pipeline import optimize

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "bench"))
import models  # noqa: E402

SVG = "{http://www.w3.org/2000/svg}"


def _model(name: str) -> str:
    cached = models.cache_dir() / f"{name}.v{models.EXPORT_VERSION}.onnx"
    if not cached.exists():  # exporting it needs torch
        pytest.importorskip("torch")
    return str(models.torch_model(name))


@pytest.mark.torch
@pytest.mark.parametrize("name, picture", [("resnet18", "resnet18"), ("bert_small", "bert-mini")])
def test_docs_pictures_match_the_model(name: str, picture: str) -> None:
    mem, graph = ROOT / "docs" / "images" / f"{picture}-memory.svg", ROOT / "docs" / "images" / f"{picture}-graph.svg"
    assert f"images/{picture}-memory.svg" in (ROOT / "docs" / "pictures.md").read_text()
    for f in (mem, graph):
        assert os.path.getsize(f) < 300_000
    m = nnc.load_module(_model(name))
    fused = optimize(m, "infer", {"opt_level": 3})[0]
    plan = plan_graph(fused.main)
    title = next(t.text for t in ET.parse(mem).getroot().iter(f"{SVG}text"))
    kib = [int(x.replace(",", "")) for x in re.findall(r"([\d,]+) KiB", title)]
    assert kib == [round(plan.arena_bytes / 1024), round(plan.lower_bound_bytes / 1024),
                   round(plan.no_reuse_bytes / 1024)]
    groups = [e for e in ET.parse(graph).getroot().iter(f"{SVG}g") if e.get("class") == "cluster"]
    assert len(groups) == sum(op.opname == "fused" for op in fused.main.ops) > 0  # no pass after fuse fuses

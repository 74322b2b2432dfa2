"""nnc dump --format onnx (the optimised graph as ONNX) and --format svg (a picture without Graphviz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from test_cli import CNN, error_line, nnc_cli, ok

import nnc
from nnc.ir import interpret
from nnc.ir.specialize import specialize


def test_dump_onnx_after_fuse_reimports_with_the_same_outputs(tmp_path: Path) -> None:
    out = tmp_path / "fused.onnx"
    ok(nnc_cli("dump", CNN, "--format", "onnx", "--after", "fuse", "-o", out))
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert len(proto.functions) >= 2 and all(f.domain == "ai.nnc.fused" for f in proto.functions)
    original = specialize(nnc.from_onnx(str(CNN)), {"image": (1, 1, 28, 28)})
    back = nnc.from_onnx(str(out))
    feeds = {"image": np.random.default_rng(3).standard_normal((1, 1, 28, 28)).astype(np.float32)}
    want, got = interpret(original, feeds), interpret(back, feeds)
    assert list(got) == list(want)
    for k in want:  # fold-batchnorm reassociates f32: a few ulps of the logits' magnitude
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5 * float(np.abs(want[k]).max()))


def test_dump_onnx_needs_an_output_file() -> None:
    assert "-o FILE.onnx" in error_line(nnc_cli("dump", CNN, "--format", "onnx"))


def _fused_cnn():
    from nnc.pipeline import optimize

    return optimize(specialize(nnc.from_onnx(str(CNN)), {"image": (1, 1, 28, 28)}), "infer", {"opt_level": 3})[0]


def test_graph_layout_data() -> None:
    from nnc.graph_views import layout_graph

    m = _fused_cnn()
    g = m.main
    lay = layout_graph(m)
    running = [op for op in g.ops if op.opname != "const"]
    assert len(lay.nodes) == len(g.params) + len(running) + len(g.outputs)
    fused = [op for op in running if op.opname == "fused"]
    clusters = [n for n in lay.nodes if n.kind == "fused"]
    assert len(clusters) == len(fused) >= 2
    assert [[i[0] for i in c.inner] for c in clusters] == [[r.opname for r in op.regions[0].ops] for op in fused]
    # edges counted independently: distinct non-constant operands of each op, plus one per graph output
    want = sum(len({id(v) for v in op.operands if v.producer is None or v.producer.opname != "const"})
               for op in running) + len(g.outputs)
    assert len(lay.edges) == want
    for s, t in lay.edges:  # top-down: every edge points to a lower layer
        assert lay.nodes[t].y >= lay.nodes[s].y + lay.nodes[s].h
    boxes = sorted(((n.y, n.x, n.w) for n in lay.nodes))
    for (y0, x0, w0), (y1, x1, _) in zip(boxes, boxes[1:]):
        assert y1 != y0 or x1 >= x0 + w0  # nodes of one layer do not overlap


def test_dump_svg_without_graphviz(tmp_path: Path, monkeypatch) -> None:
    import xml.etree.ElementTree as ET

    monkeypatch.setenv("PATH", str(tmp_path))  # no 'dot' anywhere
    out = tmp_path / "cnn.svg"
    ok(nnc_cli("dump", CNN, "--format", "svg", "--after", "fuse", "-o", out))
    svg = ET.parse(out).getroot()
    assert svg.tag == "{http://www.w3.org/2000/svg}svg"
    groups = [e.get("class") or "" for e in svg.iter("{http://www.w3.org/2000/svg}g")]
    paths = [e for e in svg.iter("{http://www.w3.org/2000/svg}path") if e.get("class") == "edge"]
    m = _fused_cnn()
    fused = [op for op in m.main.ops if op.opname == "fused"]
    assert groups.count("cluster") == len(fused)
    assert groups.count("node inner") == sum(len(op.regions[0].ops) for op in fused)
    from nnc.graph_views import layout_graph

    assert len(paths) == len(layout_graph(m).edges)

"""nnc memory's picture: its data (not its pixels) is right, with and without matplotlib."""

from __future__ import annotations

import builtins
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import helper as oh
from onnx import numpy_helper as nh
from test_cli import CNN, nnc_cli, ok

import nnc
from nnc.cli import main as cli_main
from nnc.ir.specialize import specialize
from nnc.memory_picture import memory_picture, memory_svg
from nnc.passes.plan_memory import plan_graph
from nnc.pipeline import optimize


def _cnn_plan():
    m = specialize(nnc.from_onnx(str(CNN)), {"image": (1, 1, 28, 28)})
    opt = optimize(m, "infer", {"opt_level": 3})[0]
    return opt.main, plan_graph(opt.main)


def test_live_bytes_maximum_is_the_lower_bound_and_constants_are_not_plotted() -> None:
    g, plan = _cnn_plan()
    pic = memory_picture(plan, g, "cnn")
    running = [i for i, op in enumerate(g.ops) if op.opname != "const"]
    assert pic.op_index == running and len(running) < len(g.ops)  # constants are dropped, indices kept
    assert max(pic.live_bytes) == plan.lower_bound_bytes == pic.live_bytes[pic.peak]
    # live bytes recomputed independently: the sizes of the buffers whose lifetime covers each op
    lv = plan.liveness
    for k, i in enumerate(running):
        assert pic.live_bytes[k] == sum(b.size for b in lv.buffers if b.start <= i <= b.end)
    assert sum(s for _, s in pic.peak_values) == plan.lower_bound_bytes
    assert pic.peak in pic.ticks and pic.backward_start is None and pic.recomputed == []


def test_svg_carries_curve_lines_peak_and_op_ticks() -> None:
    g, plan = _cnn_plan()
    pic = memory_picture(plan, g, "cnn")
    svg = ET.fromstring(memory_svg(pic))
    by_class = {}
    for e in svg.iter():
        by_class.setdefault(e.get("class"), []).append(e)
    assert len(by_class["live"]) == 1 and len(by_class["arena"]) == 1 and len(by_class["lower-bound"]) == 1
    assert len(by_class["peak"]) == 1
    # the curve has one step (two points) per op that runs; its highest point is on the lower-bound line
    points = [tuple(map(float, p.split(","))) for p in by_class["live"][0].get("points").split()]
    assert len(points) == 2 * len(pic.op_index)
    assert min(y for _, y in points) == pytest.approx(float(by_class["lower-bound"][0].get("y1")), abs=0.01)
    ticks = [t.text for t in by_class["tick"]]
    assert f"{pic.op_index[0]} {pic.op_label[0]}" in ticks and any("fused" in t for t in ticks)
    assert len(by_class["peak-value"]) == len(pic.peak_values)


def _deep_onnx(path: Path, depth: int = 6, width: int = 256, batch: int = 64) -> Path:
    """MatMul+Tanh layers: deep enough that remat under a 0.5 budget recomputes activations."""
    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    for i in range(depth):
        inits.append(nh.from_array((rng.standard_normal((width, width)) / 16).astype(np.float32), f"w{i}"))
        nodes += [oh.make_node("MatMul", [x, f"w{i}"], [f"m{i}"]), oh.make_node("Tanh", [f"m{i}"], [f"t{i}"])]
        x = f"t{i}"
    g = oh.make_graph(nodes, "deep", [oh.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [batch, width])],
                      [oh.make_tensor_value_info(x, onnx.TensorProto.FLOAT, [batch, width])], inits)
    onnx.save(oh.make_model(g, opset_imports=[oh.make_opsetid("", 17)]), path)
    return path


def test_train_picture_marks_backward_and_recomputed_ops(tmp_path: Path) -> None:
    from nnc.frontends.onnx.importer import import_model
    from nnc.passes.training.remat import backward_start
    from nnc.passes.training.step import build_train_step

    model = _deep_onnx(tmp_path / "deep.onnx")
    pic_path = tmp_path / "t.svg"
    out = ok(nnc_cli("memory", model, "--mode", "train", "--memory-budget", "0.5", "--picture", pic_path))
    # the same step built here: the boundary and the recomputed ops are where the graph says
    step, _ = build_train_step(import_model(str(model), weights="param"))
    g = optimize(step, "train", {"opt_level": 3, "memory_budget": "0.5"})[0].main
    plan = plan_graph(g)
    pic = memory_picture(plan, g, "deep train")
    assert pic.op_index[pic.backward_start] == backward_start(g)
    remat = [i for i, op in enumerate(g.ops) if (op.loc or "").startswith("grad:remat")]
    assert remat and [pic.op_index[k] for k in pic.recomputed] == remat
    assert max(pic.live_bytes) == plan.lower_bound_bytes
    assert f"backward starts at op {backward_start(g)}, {len(remat)} ops recomputed by remat" in out
    classes = [e.get("class") for e in ET.parse(pic_path).getroot().iter()]
    assert classes.count("backward") == 1 and classes.count("remat") == len(remat)


def test_png_with_matplotlib(tmp_path: Path, capsys) -> None:
    pytest.importorskip("matplotlib", reason="the nnc[plot] extra (matplotlib) is not installed")
    out = tmp_path / "m.png"
    assert cli_main(["memory", str(CNN), "--picture", str(out)]) == 0
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert f"wrote {out}" in capsys.readouterr().out


def test_png_without_matplotlib_says_how_and_falls_back_to_the_table(tmp_path: Path, monkeypatch, capsys) -> None:
    real_import = builtins.__import__

    def no_matplotlib(name, *a, **k):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError("No module named 'matplotlib'")
        return real_import(name, *a, **k)

    monkeypatch.setattr(builtins, "__import__", no_matplotlib)
    for mod in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, mod)
    out = tmp_path / "m.png"
    assert cli_main(["memory", str(CNN), "--picture", str(out)]) == 0
    captured = capsys.readouterr()
    assert not out.exists()
    err = [line for line in captured.err.splitlines() if line.strip()]
    assert len(err) == 1 and "pip install 'nnc[plot]'" in err[0]
    _, plan = _cnn_plan()
    assert "<- peak" in captured.out and f"{plan.lower_bound_bytes:,}  <- peak" in captured.out


def test_train_mode_options_are_checked(tmp_path: Path) -> None:
    from test_cli import error_line

    nnc_file = tmp_path / "cnn.nnc"
    nnc_file.write_text(ok(nnc_cli("dump", CNN)))
    assert "needs an ONNX model" in error_line(nnc_cli("memory", nnc_file, "--mode", "train"))
    assert "--memory-budget applies to --mode train" in error_line(nnc_cli("memory", CNN, "--memory-budget", "0.5"))


def test_a_graph_where_nothing_runs_is_one_error(tmp_path: Path) -> None:
    from test_cli import error_line

    f = tmp_path / "e.nnc"
    f.write_text("module @e {}\n\ngraph @main(%x: f32[2]) -> (y: f32[2]) {\n  return %x\n}\n")
    assert "no op runs in this graph" in error_line(nnc_cli("memory", f))

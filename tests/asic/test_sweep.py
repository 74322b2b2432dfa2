"""ASIC design sweeps (nnc.sweep, nnc.sweep_report, ``nnc asic-sweep``) on the process pool: the grid,
each row equal to a full ``nnc.compile`` of that configuration, the Pareto front against hand-made
points, the CSV/JSON/SVG outputs, a worker killed mid-sweep, and the CLI. The Ray half is
test_sweep_ray.py."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.cli import main
from nnc.ir import TargetError
from nnc.sweep import CRASH_ONCE_ENV, HANG_ONCE_ENV, PoolExecutor, SweepConfig, config_grid, make_tasks, run_sweep
from nnc.sweep_report import overall_rows, pareto_front, sweep_csv, sweep_json, sweep_summary, sweep_svg

ROOT = Path(__file__).resolve().parents[2]
CNN = str(ROOT / "examples" / "cnn.onnx")


def _init(name: str, shape: tuple[int, ...], rng: np.random.Generator) -> onnx.TensorProto:
    return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)


def tiny_mlp(path: Path) -> str:
    rng = np.random.default_rng(1)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])]
    g = helper.make_graph(nodes, "tiny_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          [_init("w1", (16, 32), rng), _init("b1", (32,), rng), _init("w2", (32, 10), rng),
                           _init("b2", (10,), rng)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def tiny_cnn(path: Path) -> str:
    rng = np.random.default_rng(2)
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c2"], ["r2"]),
             helper.make_node("Flatten", ["r2"], ["f"]),
             helper.make_node("Gemm", ["f", "w3", "b3"], ["y"])]
    g = helper.make_graph(nodes, "tiny_cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          [_init("w1", (8, 3, 3, 3), rng), _init("b1", (8,), rng), _init("w2", (8, 8, 3, 3), rng),
                           _init("b2", (8,), rng), _init("w3", (128, 10), rng), _init("b3", (10,), rng)])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def sweep_models(folder: Path) -> list[str]:
    return [CNN, tiny_mlp(folder / "tiny_mlp.onnx"), tiny_cnn(folder / "tiny_cnn.onnx")]


def twelve_configs() -> list[SweepConfig]:
    return config_grid([4, 8, 16], None, [16, 64], [17.0], ["ws", "os"])


def test_grid_is_the_cross_product_with_unique_names():
    grid = config_grid([8, 16], [8, 32], [16, 64], [8.0, 17.0], ["ws", "os"])
    assert len(grid) == 2 * 2 * 2 * 2 * 2
    assert len({c.name for c in grid}) == len(grid)
    assert SweepConfig(16, 32, 64, 8.0, "os").name == "16x32-os-s64k-d8g"
    square = config_grid([4, 8], None, [16], [17.0], ["ws"])
    assert [(c.array_rows, c.array_cols) for c in square] == [(4, 4), (8, 8)]


def test_grid_rejects_an_impossible_machine_before_running():
    with pytest.raises(TargetError, match="dataflow must be one of"):
        config_grid([8], None, [16], [17.0], ["rs"])
    with pytest.raises(TargetError, match="array_rows must be positive"):
        config_grid([0], None, [16], [17.0], ["ws"])


def test_pareto_front_of_hand_made_points():
    pts = [(1.0, 9.0), (2.0, 4.0), (3.0, 5.0), (4.0, 1.0), (2.0, 4.0), (5.0, 1.0), (0.5, 20.0)]
    rows = [{"model": "m", "config": f"c{i}", "latency_ms": x, "energy_mj": y, "error": None}
            for i, (x, y) in enumerate(pts)]
    rows.append({"model": "m", "config": "bad", "error": "boom"})
    # (3,5) is beaten by (2,4); (5,1) by (4,1); the two (2,4) tie and both stay
    assert [r["config"] for r in pareto_front(rows)] == ["c6", "c0", "c1", "c4", "c3"]


def test_overall_is_the_geometric_mean_over_models_of_configs_every_model_ran():
    base = {"array_rows": 8, "array_cols": 8, "spad_kib": 16, "dram_gbps": 17.0, "dataflow": "ws", "sram_kib": 1,
            "area_mm2": 1.0}
    rows = [{**base, "model": "a", "config": "k", "latency_ms": 1.0, "energy_mj": 2.0, "error": None},
            {**base, "model": "b", "config": "k", "latency_ms": 4.0, "energy_mj": 8.0, "error": None},
            {**base, "model": "a", "config": "j", "latency_ms": 1.0, "energy_mj": 1.0, "error": None},
            {**base, "model": "b", "config": "j", "error": "too small"}]
    (only,) = overall_rows(rows)
    assert only["config"] == "k"
    assert only["latency_ms"] == pytest.approx(2.0) and only["energy_mj"] == pytest.approx(4.0)


@pytest.fixture(scope="module")
def pool_rows(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    models = sweep_models(folder)
    tasks = make_tasks(models, twelve_configs())
    seen: list[int] = []
    rows = run_sweep(tasks, PoolExecutor(2), on_row=lambda r: seen.append(r["index"]))
    return models, tasks, rows, seen


def test_pool_sweep_gives_every_row_in_task_order(pool_rows):
    models, tasks, rows, seen = pool_rows
    assert len(tasks) == 36 and len(rows) == 36
    assert sorted(seen) == list(range(36))  # each row streamed once
    assert [r["index"] for r in rows] == list(range(36))
    assert all(r["error"] is None for r in rows), [r["error"] for r in rows if r["error"]]
    assert {(r["model"], r["config"]) for r in rows} == {(m, c.name) for m in models for c in twelve_configs()}


def test_a_row_equals_a_full_compile_of_that_configuration(pool_rows):
    """The sweep quantizes once per model and reuses the integer graph; a fresh nnc.compile (which
    calibrates again) of the same configuration must give the same numbers."""
    models, tasks, rows, _ = pool_rows
    for r in (rows[0], rows[17], rows[35]):
        cfg = next(t.config for t in tasks if t.index == r["index"])
        rep = nnc.compile(r["model"], target="asic", asic_config=cfg.overrides(), functional=False).report["asic"]
        assert r["cycles"] == rep["cycles"] and r["latency_ms"] == rep["latency_ms"]
        assert r["energy_mj"] == rep["energy_mj"]["total"] and r["utilization"] == rep["utilization"]
        assert r["dynamic_mj"] == rep["energy_mj"]["dynamic"] and r["static_mj"] == rep["energy_mj"]["static"]
        # SRAM: both 'spad_kib' scratchpads plus the preset's accumulator (128) and buffer (2048) KiB
        assert r["sram_kib"] == 2 * cfg.spad_kib + 128 + 2048
        # area (edge's coefficients): 0.0012 mm2 a MAC cell, 0.0039 mm2 a KiB of SRAM
        assert r["area_mm2"] == pytest.approx(cfg.array_rows * cfg.array_cols * 0.0012 + r["sram_kib"] * 0.0039)


def test_bigger_arrays_are_faster_on_the_cnn(pool_rows):
    _, _, rows, _ = pool_rows
    lat = {r["array_rows"]: r["latency_ms"] for r in rows
           if r["model"] == CNN and r["spad_kib"] == 64 and r["dataflow"] == "ws"}
    assert lat[4] > lat[8] > lat[16]


def test_outputs_csv_json_svg(pool_rows):
    _, _, rows, _ = pool_rows
    table = list(csv.DictReader(io.StringIO(sweep_csv(rows))))
    assert len(table) == 36 and float(table[5]["latency_ms"]) == rows[5]["latency_ms"]
    doc = json.loads(sweep_json(rows, {"preset": "edge"}))
    assert doc["preset"] == "edge" and len(doc["rows"]) == 36
    assert set(doc["front"]) == {*{r["model"] for r in rows}, "overall"}
    for model, names in doc["front"].items():
        mine = overall_rows(rows) if model == "overall" else [r for r in rows if r["model"] == model]
        assert names == [r["config"] for r in pareto_front(mine)] and names
    on = {(t["model"], t["config"]) for t in table if t["on_front"] == "1"}
    assert on == {(m, c) for m, names in doc["front"].items() if m != "overall" for c in names}
    svg = ET.fromstring(sweep_svg(rows))
    texts = "".join(e.text or "" for e in svg.iter("{http://www.w3.org/2000/svg}text"))
    assert "overall (geometric mean)" in texts and "tiny_cnn.onnx" in texts
    assert doc["front"]["overall"][0] in texts  # the front is labelled
    # every point twice: once on its latency-vs-energy panel, once on its latency-vs-area panel
    assert len(list(svg.iter("{http://www.w3.org/2000/svg}circle"))) == 2 * (36 + 12)
    assert set(doc["front_latency_area"]) == set(doc["front"])
    for model, names in doc["front_latency_area"].items():
        mine = overall_rows(rows) if model == "overall" else [r for r in rows if r["model"] == model]
        assert names == [r["config"] for r in pareto_front(mine, y="area_mm2")] and names
    on_area = {(t["model"], t["config"]) for t in table if t["on_area_front"] == "1"}
    assert on_area == {(m, c) for m, names in doc["front_latency_area"].items() if m != "overall" for c in names}
    summary = sweep_summary(rows)
    assert summary.count("Pareto front (latency vs energy)") == 4 and doc["front"]["overall"][0] in summary
    assert summary.count("Pareto front (latency vs area)") == 4


def test_pool_survives_a_worker_killed_mid_sweep(tmp_path, monkeypatch, pool_rows):
    models, tasks, rows, _ = pool_rows
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))  # the first task to run kills its worker
    ex = PoolExecutor(2)
    again = run_sweep(tasks[:12], ex)
    assert marker.exists(), "no worker was killed"
    assert ex.restarts == 1
    assert again == rows[:12]


def kill_when_claimed(marker: Path) -> threading.Thread:
    """A thread that waits for the hang hook's marker and SIGKILLs the worker whose pid it holds."""
    def run() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            text = marker.read_text() if marker.exists() else ""
            if text.endswith("\n"):
                os.kill(int(text), signal.SIGKILL)
                return
            time.sleep(0.05)
    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_pool_survives_a_worker_killed_from_outside(tmp_path, monkeypatch, pool_rows):
    _, tasks, rows, _ = pool_rows
    marker = tmp_path / "hung"
    monkeypatch.setenv(HANG_ONCE_ENV, str(marker))  # the first task sleeps until the thread kills it
    killer = kill_when_claimed(marker)
    t0 = time.monotonic()
    again = run_sweep(tasks[12:24], PoolExecutor(2))
    killer.join(5)
    assert marker.exists() and not killer.is_alive()
    assert time.monotonic() - t0 < 50  # it did not sit out the 60 s sleep
    assert again == rows[12:24]


def test_a_model_that_fails_is_an_error_row_not_a_crash(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    rows = run_sweep(make_tasks([str(bad)], config_grid([8], None, [16], [17.0], ["ws"])), PoolExecutor(1))
    assert len(rows) == 1 and "bad.onnx" in rows[0]["error"] and "latency_ms" not in rows[0]


def test_cli_asic_sweep(tmp_path, capsys):
    models = [tiny_mlp(tmp_path / "m.onnx"), tiny_cnn(tmp_path / "c.onnx")]
    out = tmp_path / "t.csv"
    status = main(["asic-sweep", *models, "--rows", "4,8", "--dataflow", "ws,os", "--spad-kib", "16",
                   "--workers", "2", "--csv", str(out), "--json", str(tmp_path / "t.json"),
                   "--chart", str(tmp_path / "p.svg")])
    captured = capsys.readouterr()
    assert status == 0
    assert "4 configuration(s) x 2 model(s) = 8 simulations on process pool, 2 worker(s)" in captured.err
    assert "8/8" in captured.err and "best" in captured.err
    assert "Pareto front (latency vs energy), overall" in captured.out
    assert len(list(csv.DictReader(out.open()))) == 8
    assert os.path.getsize(tmp_path / "p.svg") > 1000
    assert main(["asic-sweep", models[0], "--rows", "4", "--dataflow", "rs"]) == 1
    assert "dataflow must be one of" in capsys.readouterr().err


def test_pool_workers_get_one_blas_thread_and_the_parent_keeps_its_environment(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")  # a choice of the user's is kept
    got = list(PoolExecutor(1).map_unordered(os.getenv, ["OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS"]))
    assert sorted(got) == ["1", "3"]
    assert "OMP_NUM_THREADS" not in os.environ and os.environ["OPENBLAS_NUM_THREADS"] == "3"


def test_progress_in_a_log_is_one_line_per_tenth_of_the_work():
    from nnc.sweep import Progress

    out = io.StringIO()
    p = Progress(40, stream=out)
    for i in range(40):
        p.update({"latency_ms": 10.0 - i * 0.1, "config": f"c{i}", "model": "/m/a.onnx", "error": None})
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 11  # the first result, then each tenth
    assert lines[0].startswith("[") and " 1/40 " in lines[0] and " 4/40 " in lines[1] and "ETA" in lines[1]
    assert "40/40" in lines[-1] and "best 6.100 ms c39 (a.onnx)" in lines[-1]

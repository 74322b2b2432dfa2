"""nnc run --profile (kernel table and Chrome trace) and nnc dump --format svg --profile (times on nodes)."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from test_cli import CNN, MLP

import nnc
from nnc import cli
from nnc.backends.x86.profile import kernel_times_from_trace
from nnc.pipeline import optimize


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def _table_rows(out: str) -> list[tuple[str, float]]:
    """(result name, time in us) of each table row, in printed order."""
    rows = []
    for line in out.splitlines():
        m = re.match(r"\s*\d+\s+([0-9.]+)\s+[0-9.]+%\s+(?:[0-9.]+|-)\s.* %(\S+)$", line)
        if m:
            rows.append((m.group(2), float(m.group(1))))
    return rows


def test_run_profile_prints_a_sorted_table_and_writes_the_trace(capsys, tmp_path: Path) -> None:
    trace = tmp_path / "trace.json"
    status, out, err = run_cli(capsys, "run", CNN, "--target", "x86", "--random-inputs", "--profile", trace,
                               "--profile-runs", "3")
    assert status == 0, err
    rows = _table_rows(out)
    times = kernel_times_from_trace(trace)
    assert sorted(name for name, _ in rows) == sorted(times)  # one row per kernel of the trace
    assert [t for _, t in rows] == sorted((t for _, t in rows), reverse=True)
    for name, us in rows:
        assert us == pytest.approx(times[name] * 1e6, abs=0.051)  # printed with one decimal
    events = json.loads(trace.read_text())["traceEvents"]
    assert {e["args"]["name"] for e in events if e["ph"] == "M" and e["name"] == "thread_name"}
    assert "median of 3 runs" in out


def test_run_profile_without_a_path_prints_only(capsys, tmp_path: Path) -> None:
    status, out, _ = run_cli(capsys, "run", CNN, "--target", "x86", "--random-inputs", "--profile",
                             "--profile-runs", "1", "-q")
    assert status == 0 and _table_rows(out) and "kernels:" in out


def test_run_profile_needs_the_x86_target(capsys) -> None:
    status, out, err = run_cli(capsys, "run", CNN, "--random-inputs", "--profile")
    assert status == 1
    assert err.strip() == "nnc: error: target 'reference' has no kernel profiler (x86 has: --target x86)"
    assert out == ""  # refused before the model runs: no outputs printed ahead of the error


def test_run_profile_of_a_symbolic_model_is_refused_before_it_runs(capsys) -> None:
    status, out, err = run_cli(capsys, "run", MLP, "--target", "x86", "--random-inputs", "--dim", "N=2",
                               "--profile")
    assert status == 0, err  # with N bound the entry point is static: profiled
    status, out, err = run_cli(capsys, "run", MLP, "--target", "x86", "--random-inputs", "--profile")
    assert status == 1 and out == ""
    assert "cannot profile this model: its input shapes are symbolic" in err


def test_dump_svg_puts_each_kernel_time_on_its_node(capsys, tmp_path: Path) -> None:
    trace, svg = tmp_path / "trace.json", tmp_path / "cnn.svg"
    assert run_cli(capsys, "run", CNN, "--target", "x86", "--random-inputs", "--profile", trace,
                   "--profile-runs", "2", "-q")[0] == 0
    status, _, err = run_cli(capsys, "dump", CNN, "--format", "svg", "--profile", trace, "-o", svg)
    assert status == 0, err
    root = ET.parse(svg).getroot()
    marked = {}
    for g in root.iter("{http://www.w3.org/2000/svg}g"):
        if "data-kernel-us" in g.attrib:
            title = g.find("{http://www.w3.org/2000/svg}title").text
            name = re.search(r"%(\S+)", title).group(1)
            marked[name] = float(g.attrib["data-kernel-us"])
    times = kernel_times_from_trace(trace)
    assert marked == {k: pytest.approx(v * 1e6, abs=1e-3) for k, v in times.items()}
    # the nodes are the -O3 graph's: every kernel of the profile found its node
    fused = optimize(nnc.load_module(str(CNN)), "infer", {"opt_level": 3})[0]
    assert set(marked) <= {op.results[0].name for op in fused.main.ops if op.opname != "const"}


def test_dump_profile_needs_svg_and_a_trace(capsys, tmp_path: Path) -> None:
    status, _, err = run_cli(capsys, "dump", CNN, "--profile", tmp_path / "t.json")
    assert status == 1 and "use it with --format svg" in err
    bad = tmp_path / "bad.json"
    bad.write_text("{}")
    status, _, err = run_cli(capsys, "dump", CNN, "--format", "svg", "--profile", bad)
    assert status == 1 and "not a profile trace" in err and len(err.strip().splitlines()) == 1

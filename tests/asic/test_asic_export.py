"""The ASIC report's views: short unique row labels, the per-layer chart (one row per chip layer, host
op and transfer in timeline order, bars stacked by the parts of the layer's time, squares coloured by
bound), the roofline plot and the text table's breakdown columns, on the squeeze-excite block of
test_asic_host.py (chip layers, host ops and transfers) and through ``nnc asic-report``."""

from __future__ import annotations

import re

import numpy as np
import pytest
from test_asic_host import HOST, _se_onnx

import nnc
from nnc.backends.asic.export import (
    BOUND_COLOURS,
    PART_COLOURS,
    layer_chart_svg,
    roofline_svg,
    short_name,
    text_table,
    timeline_rows,
)


@pytest.fixture(scope="module")
def se_report(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("se") / "se.onnx")
    _se_onnx(path)
    rng = np.random.default_rng(4)
    calib = [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(3)]
    cm = nnc.compile(path, target="asic", calibration=calib, asic_config=HOST)
    return path, cm.report["asic"]


def test_short_names_keep_the_distinguishing_end():
    assert short_name("/features/features.1/body.1/fc2/Conv_output_0") == "features.1/body.1/fc2/Conv"
    assert short_name("/features/features.1/body.1/fc1/Conv_output_0") == "features.1/body.1/fc1/Conv"
    assert short_name("gpu_0/res2_0_branch2a_1") == "gpu_0/res2_0_branch2a_1"
    assert len(short_name("/a/" + "x" * 50)) == 28


def test_rows_cover_layers_host_ops_and_transfers_in_order(se_report):
    _, r = se_report
    rows = timeline_rows(r)
    assert len(rows) == len(r["layers"]) + len(r["host"]["ops"]) + len(r["transfers"]["list"])
    assert [x["start"] for x in rows] == sorted(x["start"] for x in rows)
    labels = [x["label"] for x in rows]
    assert len(set(labels)) == len(labels)
    for i, x in enumerate(rows):
        assert x["label"].split()[0] == str(i) and x["kind"][:22] in x["label"]
        assert sum(x["parts"].values()) == x["cycles"]
    kinds = {x["kind"] for x in rows}
    assert {"host hard_swish", "transfer to host", "transfer to chip"} <= kinds
    # the table numbers rows the same way
    table = [line for line in text_table(r).splitlines()[2:] if re.match(r"^\s*\d+ ", line)]
    assert [line.split()[0] for line in table] == [str(i) for i in range(len(rows))]


def test_chart_stacks_the_parts_and_colours_by_bound(se_report):
    _, r = se_report
    svg = layer_chart_svg(r)
    rows = timeline_rows(r)
    # one titled bar piece per non-zero part of every row; their cycles add up to the rows' spans
    pieces = re.findall(r"<title>(\w+) (\d+) cycles</title>", svg)
    assert len(pieces) == sum(1 for x in rows for v in x["parts"].values() if v)
    assert sum(int(c) for _, c in pieces) == sum(x["cycles"] for x in rows)
    assert {p for p, _ in pieces} >= {"compute", "dma", "host", "link"}
    squares = re.findall(r'width="7" height="7" fill="(#[0-9a-f]+)"', svg)
    assert len(squares) == len(rows) + len(BOUND_COLOURS)  # + the legend
    assert len(set(squares[len(BOUND_COLOURS):])) >= 2  # not every bar the same colour
    assert all(c in svg for c in PART_COLOURS.values())


def test_roofline_has_a_point_per_array_layer_under_the_compute_roof(se_report):
    _, r = se_report
    svg = roofline_svg(r)
    c = r["config"]
    array = [la for la in r["layers"] if la["macs"]]
    points = re.findall(r"([\d.]+) ops/B, ([\d.]+) Gops/s", svg)
    assert len(points) == len(array) > 0 and svg.count("<polyline") == 1
    peak_gops = 2 * c["array_rows"] * c["array_cols"] * c["clock_ghz"]
    assert all(float(g) <= peak_gops for _, g in points)
    want = [2 * la["macs"] / la["dram_bytes"] for la in array]
    assert [float(x) for x, _ in points] == pytest.approx(want, abs=0.05)


def test_cli_writes_chart_and_roofline(se_report, tmp_path, capsys):
    from nnc.cli import main

    path, _ = se_report
    chart, roof = tmp_path / "c.svg", tmp_path / "r.svg"
    assert main(["asic-report", path, "--chart", str(chart), "--roofline", str(roof), "-q"]) == 0
    out = capsys.readouterr().out
    assert "latency" in out and "stall" in out and "xfers" in out
    assert chart.read_text().startswith("<svg") and "roofline" in roof.read_text()

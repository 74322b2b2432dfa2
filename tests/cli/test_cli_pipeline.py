"""The optimisation pipeline through the CLI and the Python API: -O levels, --passes, the IR
instruments, pass plugins, and the compile report."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from test_cli import CNN, MLP, MLP_INPUT, REPO, error_line, nnc_cli, ok

import nnc
from nnc.ir import interpret, parse_module


def test_report_from_cli_and_api(tmp_path: Path) -> None:
    report = tmp_path / "r.json"
    ok(nnc_cli("compile", CNN, "-O3", "--explain-fusion", "--report", report, "-q"))
    r = json.loads(report.read_text())
    assert "fuse" in r["pipeline"] and "fusion" in r and r["fusion"]["groups"] >= 1
    assert [p["name"] for p in r["passes"]][0] == "freeze"
    assert r["kernels"]["count"] == len(r["kernels"]["list"])
    api = nnc.compile(str(CNN), opt_level=3).report
    assert api["kernels"]["count"] == r["kernels"]["count"]
    o0 = nnc.compile(str(CNN), opt_level=0).report
    assert api["kernels"]["count"] < o0["kernels"]["count"]  # conv+relu (and gemm epilogues) fused
    assert any(k["op"] == "fused" for k in api["kernels"]["list"])


def test_print_ir_after_all_and_dump_dir(tmp_path: Path) -> None:
    r = nnc_cli("compile", CNN, "--print-ir-after-all", "--dump-dir", tmp_path / "dump", "-q")
    assert r.returncode == 0, r.stderr
    for name in ("freeze", "fold-constants", "fuse", "dce"):
        assert f"// ----- IR after {name} -----" in r.stderr
    files = sorted(p.name for p in (tmp_path / "dump").iterdir())
    assert files[0] == "00-input.nnc" and files[-1].endswith("-dce.nnc")
    for f in files:  # every dump is valid IR
        parse_module((tmp_path / "dump" / f).read_text())


def test_explicit_passes_and_plugin(tmp_path: Path) -> None:
    plugin = REPO / "examples" / "passes" / "strength_reduce_pow.py"
    r = nnc_cli("run", MLP, "--input", f"x={MLP_INPUT}", "--passes", "freeze,strength-reduce-pow,dce",
                "--load-pass-plugin", plugin, "--print-ir-after", "strength-reduce-pow", "--time-passes")
    assert r.returncode == 0, r.stderr
    assert "IR after strength-reduce-pow" in r.stderr and "pass timing" in r.stderr
    assert "logits" in r.stdout


def test_pipeline_errors_are_one_line() -> None:
    assert "unknown pass 'nope'" in error_line(nnc_cli("compile", MLP, "--passes", "freeze,nope"))
    assert "no option 'bogus'" in error_line(nnc_cli("compile", MLP, "--passes", "fuse{bogus=1}"))
    assert "no such file" in error_line(nnc_cli("compile", MLP, "--load-pass-plugin", "missing.py"))


def test_every_level_gives_the_same_outputs() -> None:
    m = nnc.from_onnx(str(CNN))
    p = m.main.params[0]
    shape = tuple(d if isinstance(d, int) else 2 for d in p.shape)
    x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    want = interpret(m, {p.name: x})
    for level in range(4):
        got = nnc.compile(str(CNN), opt_level=level).run({p.name: x})
        for k in want:
            np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-6)

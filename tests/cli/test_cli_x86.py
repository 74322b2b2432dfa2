"""The ``nnc`` command line with ``--target x86``: the x86 flags reach the compiler, outputs agree
with the reference target, the compilation cache is used (or bypassed with --no-cache), -q silences
progress, and ``nnc ops`` says which ops run on x86.

The commands run in-process through ``nnc.cli.main`` (a subprocess per command would spend most of
the time importing llvmlite); tests/cli/test_cli.py covers the real-process behaviour.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc import cli, onnx_backend
from nnc.backends import x86

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MLP, MLP_INPUT, CNN = EXAMPLES / "mlp.onnx", EXAMPLES / "mlp_input.npy", EXAMPLES / "cnn.onnx"


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    return tmp_path / "cache" / "x86"


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def test_run_on_x86_matches_reference(capsys, tmp_path):
    status, out, _ = run_cli(capsys, "run", MLP, "--target", "x86", "--input", f"x={MLP_INPUT}",
                             "--output-dir", tmp_path / "x86", "--cpu", "haswell", "--threads", "1")
    assert status == 0 and "on target x86" in out
    assert run_cli(capsys, "run", MLP, "--input", f"x={MLP_INPUT}", "--output-dir", tmp_path / "ref")[0] == 0
    got, want = np.load(tmp_path / "x86" / "logits.npy"), np.load(tmp_path / "ref" / "logits.npy")
    # f32 dot products of length 784 and 128 summed in another order (AVX2 FMA): ~1e-5 relative
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def entries(d) -> list[str]:
    return [n for n in os.listdir(d) if n.endswith(".nncx")]  # beside them: the signing key


def test_compile_uses_the_cache_unless_no_cache(capsys, cache_dir):
    _, out, _ = run_cli(capsys, "compile", CNN, "--target", "x86")
    assert "code:    generated (now cached)" in out and len(entries(cache_dir)) == 1
    _, out, _ = run_cli(capsys, "compile", CNN, "--target", "x86")
    assert "code:    loaded from the compilation cache" in out
    _, out, _ = run_cli(capsys, "compile", CNN, "--target", "x86", "--no-cache", "--threads", "1")
    assert "code:" not in out and len(entries(cache_dir)) == 1


def test_x86_flags_are_compile_options(capsys, monkeypatch):
    seen = {}
    real = nnc.compile

    def spy(model, options=None, **kwargs):
        seen.update(options.given())  # the CLI builds one CompileOptions and passes it whole
        return real(model, options=options, **kwargs)

    monkeypatch.setattr(nnc, "compile", spy)
    status, out, err = run_cli(capsys, "compile", CNN, "--target", "x86", "--cpu", "x86-64", "--target-features",
                               "+sse4.2", "--threads", "1", "--no-cache", "-q")
    assert status == 0 and out == "" and err == ""
    assert seen == {"cpu": "x86-64", "target_features": "+sse4.2", "threads": 1, "cache": False, "quiet": True}


def test_x86_flags_need_the_x86_target(capsys):
    status, _, err = run_cli(capsys, "run", MLP, "--input", f"x={MLP_INPUT}", "--cpu", "haswell")
    assert status == 1 and err.strip() == "nnc: error: option --cpu applies to --target x86 only, not reference"


def test_quiet_silences_progress(capsys, monkeypatch):
    monkeypatch.setattr(x86.Progress, "delay", 0.0)
    monkeypatch.setattr(x86.Progress, "log_delay", 0.0)
    args = ("run", CNN, "--target", "x86", "--random-inputs", "--no-cache")
    _, _, err = run_cli(capsys, *args)
    assert "nnc x86: kernels" in err and "compiled" in err
    _, out, err = run_cli(capsys, *args, "-q")
    assert err == "" and "output logits" in out


def test_quiet_silences_progress_of_a_split_compile_to_a_library(capfd, monkeypatch, tmp_path):
    """``nnc compile -o lib.so`` shows progress (here at once), also while the module is compiled in
    parts on several processes; ``-q`` silences all of it, the workers included (capfd: what any
    process writes to the file descriptors)."""
    from nnc.backends.x86 import split_compile

    monkeypatch.setattr(x86.Progress, "delay", 0.0)
    monkeypatch.setattr(x86.Progress, "log_delay", 0.0)
    monkeypatch.setattr(split_compile, "SPLIT_MIN_BYTES", 0)
    monkeypatch.setenv(split_compile.JOBS_ENV, "2")
    parts = []
    split = split_compile.split
    monkeypatch.setattr(split_compile, "split", lambda *a: parts.append(split(*a)) or parts[-1])
    args = ("compile", CNN, "--target", "x86", "--no-cache", "-o", tmp_path / "cnn.so")
    status, _, err = run_cli(capfd, *args)
    assert status == 0 and "nnc x86: kernels" in err and "optimising" in err
    status, out, err = run_cli(capfd, *args, "-q")
    assert status == 0 and out == "" and err == "" and (tmp_path / "cnn.so").exists()
    assert [len(p) for p in parts] == [2, 2]


def test_ops_table_has_an_x86_column(capsys, monkeypatch):
    monkeypatch.setattr(onnx_backend, "x86_op_coverage", lambda **kw: {"Relu": (3, 3), "Conv": (1, 2)})
    status, out, _ = run_cli(capsys, "ops", "--no-functions")
    rows = {line.split()[0]: line for line in out.splitlines() if line.strip()}
    assert status == 0
    assert rows["Relu"].endswith("reference, x86")
    assert rows["Conv"].endswith("reference, x86 (1 of 2 forms)")
    assert rows["Abs"].endswith("reference")
    assert "1 run on x86 (1 more in some forms)" in out

"""The training side of the command line: ``nnc compile --mode train`` (report, remat budget, the
step as a shared library) and ``nnc train`` (epochs over an .npz with a progress bar, the trained
model written as ONNX). Commands run in-process through ``nnc.cli.main``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest

import nnc
from nnc import cli

MLP = Path(__file__).resolve().parents[2] / "examples" / "mlp.onnx"  # x: [N, 784] -> logits [N, 10]


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))


def run_cli(capsys, *args: object) -> tuple[int, str, str]:
    status = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return status, out, err


def _data(n: int = 64, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, 784)).astype(np.float32)
    return {"x": x, "labels": (x[:, :10].argmax(1)).astype(np.int64)}  # a learnable rule


def test_compile_train_reports_memory_and_remat(capsys, tmp_path):
    report = tmp_path / "r.json"
    status, out, _ = run_cli(capsys, "compile", MLP, "--mode", "train", "--target", "reference", "--loss",
                             "cross_entropy", "--optimizer", "adam", "--lr", "1e-3", "--batch-size", "16",
                             "--memory-budget", "0.9", "--report", report)
    assert status == 0 and "training step" in out
    r = json.loads(report.read_text())
    assert r["mode"] == "train"
    remat = next(p for p in r["passes"] if p["name"] == "remat")
    assert remat["stats"]["arena_before"] >= remat["stats"]["arena_after"]
    mem = r["memory"]
    assert mem["planned"] and mem["inference"]["planned"]
    assert mem["arena_bytes"] > mem["inference"]["arena_bytes"]  # training keeps activations


def test_compile_train_writes_a_step_library_that_trains(capsys, tmp_path):
    lib = tmp_path / "step.so"
    status, _, _ = run_cli(capsys, "compile", MLP, "--mode", "train", "--target", "x86", "--loss", "cross_entropy",
                           "--optimizer", "sgd", "--lr", "0.1", "--batch-size", "8", "-o", lib, "-q")
    assert status == 0
    for suffix in (".so", ".h", ".init.npz"):
        assert lib.with_suffix(suffix).exists() or Path(str(lib)[:-3] + suffix).exists(), suffix
    step = nnc.load(lib)
    init = dict(np.load(str(lib)[:-3] + ".init.npz"))
    d = _data(8)
    feeds = {**init, **{k: v for k, v in d.items()}}
    names = set(step.input_names)
    feeds = {k: v for k, v in feeds.items() if k in names}
    missing = names - set(feeds)
    # the scalar inputs: learning rate and step count
    for n in missing:
        feeds[n] = np.asarray(0.1, np.float32) if "lr" in n else np.asarray(1, np.int64)
    outs = step.run(feeds)
    sess = nnc.compile(str(MLP), target="reference", mode="train", loss="cross_entropy", optimizer="sgd", lr=0.1,
                       batch_size=8)
    want = sess.step({"x": d["x"], "labels": d["labels"]})
    loss = [v for k, v in outs.items() if "loss" in k][0]
    assert float(loss) == pytest.approx(want, rel=1e-4)


def test_train_command_lowers_the_loss_and_writes_onnx(capsys, tmp_path):
    data = tmp_path / "d.npz"
    np.savez(data, **_data(64))
    out_model = tmp_path / "trained.onnx"
    status, _, err = run_cli(capsys, "train", MLP, "--data", data, "--epochs", "3", "--batch-size", "16", "--loss",
                             "cross_entropy", "--optimizer", "adam", "--lr", "1e-2", "-o", out_model)
    assert status == 0
    assert "loss" in err  # the progress bar
    trained = onnx.load(str(out_model))
    d = _data(64)

    def ce(path):
        logits = nnc.compile(str(path), target="reference").run({"x": d["x"]})["logits"]
        z = logits - logits.max(1, keepdims=True)
        return float(np.mean(np.log(np.exp(z).sum(1)) - z[np.arange(64), d["labels"]]))

    assert {i.name for i in trained.graph.initializer} >= {"fc1.weight", "fc2.bias"}
    assert ce(out_model) < ce(MLP)


def test_train_errors_are_one_line(capsys, tmp_path):
    status, _, err = run_cli(capsys, "train", tmp_path / "missing.onnx", "--data", tmp_path / "d.npz")
    assert status != 0 and len(err.strip().splitlines()) == 1


def test_compile_train_with_a_symbolic_batch_is_shape_generic(capsys, tmp_path):
    report = tmp_path / "r.json"
    status, out, _ = run_cli(capsys, "compile", MLP, "--mode", "train", "--target", "reference", "--report", report)
    assert status == 0 and "shape-generic: one compile for every N" in out
    assert json.loads(report.read_text())["shapes"] == {"generic": True, "symbols": ["N"]}


@pytest.mark.slow  # an x86 compile of the step (~20 s on a loaded machine)
def test_symbolic_step_library_runs_at_two_batch_sizes(capsys, tmp_path):
    """--max-dim bounds the batch of the step's library: one .so runs a step at batch 4 and 9 with
    the loss and updated weights of the reference session at each."""
    lib = tmp_path / "step.so"
    status, out, _ = run_cli(capsys, "compile", MLP, "--mode", "train", "--target", "x86", "--loss", "cross_entropy",
                             "--optimizer", "sgd", "--lr", "0.1", "--max-dim", "N=16", "-o", lib, "-q")
    assert status == 0
    step = nnc.load(lib)
    init = dict(np.load(str(lib)[:-3] + ".init.npz"))
    for n in (4, 9):
        d = _data(n, seed=n)
        feeds = {**{k: v for k, v in init.items() if k in step.input_names}, **d,
                 "lr": np.asarray(0.1, np.float32), "step": np.asarray(1, np.int64)}
        outs = step.run(feeds)
        sess = nnc.compile(str(MLP), target="reference", mode="train", loss="cross_entropy", optimizer="sgd", lr=0.1)
        assert float(outs["loss"]) == pytest.approx(sess.step(d), rel=1e-5)
        for name, want in sess.parameters().items():
            np.testing.assert_allclose(outs[f"{name}.new"], want, rtol=1e-5, atol=1e-6, err_msg=name)

"""End to end on real architectures (slow): ResNet-50 (onnx light model), ResNet-18 and MobileNetV2
(PyTorch definitions in bench/models.py) compile for both presets, simulate bit-exactly against the
integer graph on the interpreter, track fp32 with SQNR >= 20 dB, and ResNet-50 simulates in < 60 s."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.ir import interpret

sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", "resnet18", "mobilenet_v2"])
@pytest.mark.parametrize("preset", ["edge", "x1"])
def test_model(name, preset):
    if name != "resnet50":
        pytest.importorskip("torch")
    import models

    path = str(models.all_models()[name]())
    ref = nnc.compile(path, target="reference")
    rng = np.random.default_rng(0)
    feeds = {n: rng.standard_normal([int(d) for d in t.shape]).astype(np.float32) for n, t in ref.input_types.items()}
    cm = nnc.compile(path, target="asic", asic_preset=preset, calibration=[feeds])
    t0 = time.perf_counter()
    got = cm.run(feeds)
    sim_seconds = time.perf_counter() - t0
    want = ref.run(feeds)
    qref = interpret(cm.executable.module, feeds)
    for k in want:
        assert np.array_equal(got[k], qref[k])
        err = ((want[k].astype(np.float64) - got[k]) ** 2).sum()
        assert err == 0 or 10 * np.log10((want[k].astype(np.float64) ** 2).sum() / err) >= 20
    r = cm.report["asic"]
    assert r["latency_ms"] > 0 and r["energy_mj"]["total"] > 0 and 0 < r["utilization"] <= 1
    if name == "resnet50":
        assert sim_seconds < 60

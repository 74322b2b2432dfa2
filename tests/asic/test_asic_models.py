"""End to end on real architectures (slow): ResNet-50 (onnx light model), ResNet-18 and MobileNetV2
(PyTorch definitions), with the realistic weights of ``bench/models.py`` (``realistic_model``),
compile for both presets, simulate bit-exactly against the integer graph on the interpreter, and
ResNet-50 simulates in < 60 s. Calibration uses 4 standard-normal inputs, the run a different one;
the int8 logits must track the fp32 reference at SQNR >= 20 dB (residual branches start scaled down,
``RESIDUAL_SCALE``: plain He-initialised deep networks are chaotic, see bench/INT8.md)."""

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
@pytest.mark.parametrize("name", [
    "resnet50",
    pytest.param("resnet18", marks=pytest.mark.torch),
    pytest.param("mobilenet_v2", marks=pytest.mark.torch),
])
@pytest.mark.parametrize("preset", ["edge", "x1"])
def test_model(name, preset):
    if name != "resnet50":
        pytest.importorskip("torch")
    import models

    path = str(models.realistic_model(name))
    ref = nnc.compile(path, target="reference")
    shapes = {n: [int(d) for d in t.shape] for n, t in ref.input_types.items()}

    def feeds(seed: int) -> dict[str, np.ndarray]:
        rng = np.random.default_rng(seed)
        return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}

    cm = nnc.compile(path, target="asic", asic_preset=preset, calibration=[feeds(s) for s in (1, 2, 3, 4)])
    x = feeds(0)
    t0 = time.perf_counter()
    got = cm.run(x)
    sim_seconds = time.perf_counter() - t0
    want = ref.run(x)
    qref = interpret(cm.executable.module, x)
    r = cm.report["asic"]
    assert r["latency_ms"] > 0 and r["energy_mj"]["total"] > 0 and 0 < r["utilization"] <= 1
    if name == "resnet50":
        assert sim_seconds < 60
    sqnr = []
    for k in want:
        assert np.array_equal(got[k], qref[k])
        w = want[k].astype(np.float64)
        assert float(w.std()) > 0.1  # the logits carry signal: the SQNR below means something
        sqnr.append(10 * np.log10((w ** 2).sum() / max(((w - got[k]) ** 2).sum(), 1e-300)))
    assert min(sqnr) >= 20, f"{name}/{preset}: {min(sqnr):.1f} dB"

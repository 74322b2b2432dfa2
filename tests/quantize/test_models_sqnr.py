"""INT8 tracks FP32 on the real CNNs (slow): ResNet-18 and MobileNetV2 defined in PyTorch
(bench/models.py, seeded untrained weights) and ResNet-50 from the onnx package (ConstantOfShape
weights), calibrated on standard-normal inputs, SQNR >= 20 dB on held-out inputs. The float oracle
is onnxruntime for the outputs and the reference interpreter for the features (the input of the last
global pooling, which stays informative where the outputs degenerate: MobileNetV2's logits are its
classifier bias, ResNet-50-light's are one value repeated)."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnxruntime as ort
import pytest

import nnc
from nnc.ir import interpret
from nnc.passes.quantize import prepare, quantize_module

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
sys.path.insert(0, os.path.join(REPO, "bench"))
sys.path.insert(0, os.path.dirname(__file__))
from quant_models import sqnr_db  # noqa: E402


def normal_feeds(count: int, seed: int) -> list[dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    return [{"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(count)]


def _path(name: str) -> str:
    models = pytest.importorskip("models")
    if name in models.TORCH:
        pytest.importorskip("torch")
    return str(models.all_models()[name]())


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "resnet50"])
def test_int8_features_track_fp32(name):
    m = prepare(nnc.from_onnx(_path(name)))
    inp = m.main.params[0].name
    pool = [op for op in m.main.ops if op.opname in ("avg_pool", "reduce_mean")][-1]
    m.main.set_outputs([pool.operands[0]], ["features"])
    cal = [{inp: f["input"]} for f in normal_feeds(4, 1)]
    q = quantize_module(m, cal)
    for f in normal_feeds(2, 0):
        f = {inp: f["input"]}
        assert sqnr_db(interpret(m, f)["features"], interpret(q, f)["features"]) >= 20


@pytest.mark.slow
def test_int8_resnet18_outputs_track_onnxruntime_fp32():
    path = _path("resnet18")
    cal = normal_feeds(4, 1)
    q = quantize_module(nnc.from_onnx(path), cal)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for f in normal_feeds(2, 0):
        assert sqnr_db(sess.run(None, f)[0], interpret(q, f)["output"]) >= 20

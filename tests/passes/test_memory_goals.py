"""Memory planning on real architectures: the arena is within 5% of the lower bound (the most bytes
live at once), and far below planning without reuse. ResNet-50 ships with onnx; MobileNetV2 and the
BERT encoder are the benchmark suite's PyTorch definitions (bench/models.py), exported with torch."""

from __future__ import annotations

import os
import sys

import numpy as np
import onnx
import pytest

import nnc
from nnc.ir import interpret
from nnc.ir.specialize import specialize
from nnc.passes.plan_memory import check_plan, plan_graph
from nnc.pipeline import optimize

REPO = os.path.join(os.path.dirname(__file__), "..", "..")
LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def model_path(name: str) -> str:
    if name == "resnet50":
        return os.path.join(LIGHT, "light_resnet50.onnx")
    pytest.importorskip("torch", reason="MobileNetV2 and BERT are exported from their PyTorch definitions")
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import models  # bench/models.py

    return str(models.torch_model(name))


@pytest.mark.parametrize("name", [
    "resnet50",
    pytest.param("mobilenet_v2", marks=pytest.mark.torch),
    pytest.param("bert_small", marks=pytest.mark.torch),
])
def test_arena_within_5_percent_of_the_lower_bound(name):
    m = nnc.from_onnx(model_path(name))
    m = specialize(m, {p.name: tuple(1 if isinstance(d, str) else d for d in p.shape) for p in m.main.params})
    for level in (0, 3):
        opt = optimize(m, "infer", {"opt_level": level})[0]
        plan = plan_graph(opt.main)
        check_plan(plan)
        assert plan.arena_bytes <= 1.05 * plan.lower_bound_bytes, (level, plan.summary())
        assert plan.arena_bytes < plan.no_reuse_bytes / 2, (level, plan.summary())


@pytest.mark.torch  # every one of these is exported from its PyTorch definition
@pytest.mark.parametrize("name", ["mlp", "cnn_small", "resnet18", "mobilenet_v2", "bert_small"])
def test_every_level_keeps_bench_model_results(name):
    m = nnc.from_onnx(model_path(name))
    m = specialize(m, {p.name: tuple(1 if isinstance(d, str) else d for d in p.shape) for p in m.main.params})
    rng = np.random.default_rng(0)
    feeds = {p.name: (rng.standard_normal(p.shape).astype(p.dtype.numpy) if p.dtype.is_float
                      else rng.integers(0, 100, p.shape).astype(p.dtype.numpy)) for p in m.main.params}
    want = interpret(m, feeds)
    for level in (1, 2, 3):
        got = interpret(optimize(m, "infer", {"opt_level": level})[0], feeds)
        for k in want:
            # batch norm folded into f32 conv weights (rounded once): ~1e-5 relative on activations
            np.testing.assert_allclose(got[k], want[k], rtol=1e-4, atol=1e-4, err_msg=f"-O{level} {k}")

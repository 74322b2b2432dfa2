"""Every -O level keeps results: on the official ONNX node tests (against their expected outputs, with
the suite's own tolerances), on real models (against the unoptimised interpreter), and on random
graphs (hypothesis)."""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from onnx import numpy_helper
from onnx.backend.test.runner import Runner

import nnc
from nnc.ir import interpret, verify_module
from nnc.passes import PassManager, count_ops
from nnc.passes.presets import preset

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "conformance"))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "property"))
from categories import numeric_node_tests  # noqa: E402
from expected_failures import load_expected_failures  # noqa: E402
from test_random_graphs import random_graph  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


def _norm(x):
    return numpy_helper.to_array(x) if isinstance(x, onnx.TensorProto) else x


@pytest.mark.parametrize("level", [1, 2, 3])
def test_every_level_on_the_onnx_node_suite(level):
    from onnx.backend.test.loader import load_model_tests

    skip = set(load_expected_failures("reference"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = numeric_node_tests()
        cases = [t for t in load_model_tests(kind="node") if t.name in names and t.name not in skip]
    failures = []
    for case in cases:
        m = nnc.from_onnx(case.model)
        try:
            PassManager(preset("infer", level), verify_each=True).run(m)
            for inputs, outputs in case.data_sets:
                feeds = dict(zip([p.name for p in m.main.params], [_norm(x) for x in inputs]))
                got = interpret(m, feeds)
                Runner.assert_similar_outputs([_norm(o) for o in outputs], [got[n] for n in m.main.output_names],
                                              rtol=case.rtol, atol=case.atol)
        except Exception as e:  # noqa: BLE001 - collect all, report at once
            failures.append(f"{case.name}: {type(e).__name__}: {str(e).strip().splitlines()[0][:160]}")
    assert not failures, f"-O{level}: {len(failures)} failures:\n" + "\n".join(failures[:30])


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(LIGHT) if f.endswith(".onnx")))
def test_O3_keeps_real_model_results_and_fuses(name):
    m = nnc.from_onnx(os.path.join(LIGHT, name))
    p = m.main.params[0]
    x = np.random.default_rng(0).uniform(0, 1, p.shape).astype(np.float32)
    want = interpret(m, {p.name: x})
    o0 = nnc.from_onnx(os.path.join(LIGHT, name))
    PassManager(preset("infer", 0)).run(o0)
    PassManager(preset("infer", 3), verify_each=True).run(m)
    verify_module(m)
    got = interpret(m, {p.name: x})
    for k in want:
        # batch norms folded into f32 conv weights: relative error ~1e-5 on these activations
        np.testing.assert_allclose(got[k], want[k], rtol=1e-3, atol=1e-5)
    if name == "light_resnet50.onnx":
        assert count_ops(m) * 2 <= count_ops(o0)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph())
def test_O3_on_random_graphs(case):
    m, _, _, seed = case
    rng = np.random.default_rng(seed)
    feeds = {p.name: rng.uniform(-2, 2, p.shape).astype(np.float32) for p in m.main.params}
    want = interpret(m, feeds)["out"]
    PassManager(preset("infer", 3), verify_each=True).run(m)
    got = interpret(m, feeds)["out"]
    # the same float32 ops in the same order; folding and fusion do not reassociate
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6, equal_nan=True)

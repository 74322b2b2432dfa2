"""Every bench model (bench/models.py) compiled for x86 gives the outputs of an independent engine,
and saved as a library (``CompiledModel.save``) and loaded back it is the same model: same kernels,
same memory report, outputs equal bit for bit.

The small PyTorch models (mlp, cnn_small) run in the ordinary test step against the reference
interpreter (``nnc.ir.interpret``, numpy) and onnxruntime. The big ones (ResNet-18, MobileNetV2,
BERT, DenseNet-121 and ConvNeXt-T of bench/models_torchvision.py) and the seven onnx "light" models
take 5-180 s each to compile, so they are marked slow; their oracle is onnxruntime (the interpreter
would take seconds per model too, and onnxruntime shares no code with nnc). The PyTorch models need
torch to be exported the first time (skipped without it); the light models ship with the onnx package.

Tolerance: the compiled kernels sum f32 dot products in another order (blocked GEMM, vector
lanes) than numpy or onnxruntime, and vecmath's exp/erf/tanh differ by a few ulps; through
tens of layers that stays below ~1e-4 of the output's magnitude. The check allows 1e-3 of
max(|reference|, 1) per element: far tighter than any real mistake (a wrong index, a lost
epilogue, a missed tail) produces on these random-weight models.
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

import nnc
from nnc.bench import onnx_inputs
from nnc.cli import main

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
import models  # noqa: E402
import models_torchvision  # noqa: E402

TOL = 1e-3


def names(*ns: str) -> list:
    """Model names as parameters; those built from PyTorch definitions carry the torch marker."""
    return [pytest.param(n, marks=pytest.mark.torch) if n in models.TORCH + models.TORCHVISION_SET else n
            for n in ns]


def _path(name: str) -> str:
    if name in models.TORCH + models.TORCHVISION_SET:
        pytest.importorskip("torch")
    path = models.all_models(torchvision=True)[name]()
    if not os.path.exists(path):
        pytest.skip(f"{path} is not available")
    return str(path)


def _check(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for k, w in want.items():
        g = np.asarray(got[k])
        assert g.shape == w.shape and g.dtype == w.dtype, k
        scale = max(1.0, float(np.abs(w).max())) if w.size else 1.0
        err = float(np.abs(g.astype(np.float64) - w.astype(np.float64)).max()) if w.size else 0.0
        assert err <= TOL * scale, f"{k}: max |diff| {err:.3g} > {TOL} x {scale:.3g}"


def _dims(path: str) -> dict[str, int] | None:
    """The library fixes symbolic input dims to 1 (the CLI says so); the JIT gets the same dims."""
    from nnc.ir.specialize import input_symbols

    return {s: 1 for s in input_symbols(nnc.from_onnx(path))} or None


def _ort(path: str, feeds: dict) -> dict:
    ort = pytest.importorskip("onnxruntime")
    s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def _compiled(path: str, feeds: dict, lib: str, threads: int = 1) -> dict:
    """Build the library from the shell (``nnc compile -t x86 -O3 -o lib --report``), compile the
    same model with the API (the JIT), and check they are the same model: the same kernels and
    memory plan in the report and the library's manifest, and outputs equal bit for bit. Returns
    the JIT's outputs."""
    report = lib[:-3] + ".report.json"
    assert main(["compile", path, "-t", "x86", "-O3", "--threads", str(threads), "-o", lib, "--report", report,
                 "-q"]) == 0
    cm = nnc.compile(path, target="x86", threads=threads, quiet=True, opt_level=3, dims=_dims(path))
    got = cm.run(feeds)
    written = json.loads(open(report).read())
    assert {"arena_bytes", "lower_bound_bytes", "no_reuse_bytes"} <= set(written["memory"])
    assert written["kernels"]["count"] == cm.report["kernels"]["count"] > 0
    loaded = nnc.load(lib)
    assert loaded.report["kernels"] == cm.report["kernels"] and loaded.report["memory"] == cm.report["memory"]
    assert loaded.report["memory"]["arena_bytes"] >= loaded.report["memory"]["lower_bound_bytes"] > 0
    again = loaded.run(feeds)
    assert set(again) == set(got)
    for k in got:
        np.testing.assert_array_equal(again[k], got[k], err_msg=f"library vs JIT output {k}")
    return got


@pytest.mark.parametrize("name", names("mlp", "cnn_small"))
def test_small_models_match_interpreter_and_ort(name: str, tmp_path):
    path = _path(name)
    feeds = onnx_inputs(path)
    got = _compiled(path, feeds, str(tmp_path / f"{name}.so"), threads=2)
    _check(got, nnc.ir.interpret(nnc.from_onnx(path), feeds))
    _check(got, _ort(path, feeds))


@pytest.mark.slow
@pytest.mark.parametrize("name", names("resnet18", "mobilenet_v2", "bert_small", *models.LIGHT,
                                      *models_torchvision.TORCHVISION))
def test_big_models_match_onnxruntime(name: str, tmp_path):
    path = _path(name)
    feeds = onnx_inputs(path)
    _check(_compiled(path, feeds, str(tmp_path / f"{name}.so")), _ort(path, feeds))

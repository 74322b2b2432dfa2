"""Real CNNs with a symbolic batch: the model-zoo models inside the onnx package, their batch dim
renamed to ``N``, compile once for x86 (shape-generic code) and match onnxruntime at several
batch sizes. The light models' weights are ConstantOfShape fills, so every image gives nearly the
same logits; the check is still exact to f32 accumulation order (rtol 1e-4 with a floor of 1e-5 of
the output's magnitude), at each batch, against onnxruntime on the same renamed file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import nnc

LIGHT = Path(onnx.__file__).parent / "backend" / "test" / "data" / "light"


def with_symbolic_batch(name: str, tmp_path: Path) -> str:
    model = onnx.load(str(LIGHT / f"light_{name}.onnx"))
    for v in list(model.graph.input) + list(model.graph.output):
        v.type.tensor_type.shape.dim[0].dim_param = "N"
    del model.graph.value_info[:]  # intermediate shapes were written for batch 1
    path = tmp_path / f"{name}-dynamic.onnx"
    onnx.save(model, str(path))
    return str(path)


# (resnet50, shufflenet, inception_v1/v2 flatten with a Reshape to batch 1: no other batch runs anywhere)
@pytest.mark.parametrize("name", ["squeezenet", pytest.param("densenet121", marks=pytest.mark.slow)])
def test_symbolic_batch_cnn_compiles_once(name: str, tmp_path: Path) -> None:
    path = with_symbolic_batch(name, tmp_path)
    cm = nnc.compile(path, target="x86", quiet=True, cache=False)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = cm.input_types
    rng = np.random.default_rng(0)
    for n in (1, 3, 2):
        x = rng.standard_normal((n, *cm.input_types[inp].shape[1:])).astype(np.float32)
        (want,) = sess.run(None, {inp: x})
        (got,) = cm.run({inp: x}).values()
        assert got.shape == want.shape
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * float(np.abs(want).max()) + 1e-7)
    assert cm.executable.plans_made == 3

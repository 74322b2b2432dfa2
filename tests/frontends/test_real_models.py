"""The nine real-model tests of the ONNX backend suite (ResNet-50, DenseNet-121, Inception v1/v2,
ShuffleNet, SqueezeNet, VGG-19, AlexNet, ZFNet-512) on the reference interpreter.

onnx ships "light" copies of these models (full architecture, weights made by ConstantOfShape) with
their expected outputs. The input is what ``onnx.backend.test.runner`` generates for them
(``generate_dummy_data(random=False)``: ``arange(n) / n`` in the input's shape) and the tolerances
are the suite's own, from ``data/real/<test>/data.json``. Each runs in a couple of seconds because
the conv and pool references are im2col matmuls and strided-window reductions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from nnc.onnx_backend import ReferenceBackend

DATA = Path(onnx.__file__).parent / "backend" / "test" / "data"
MODELS = ["resnet50", "densenet121", "inception_v1", "inception_v2", "shufflenet", "squeezenet", "vgg19",
          "bvlc_alexnet", "zfnet512"]


def dummy_input(vi: onnx.ValueInfoProto) -> np.ndarray:
    """The backend runner's ``generate_dummy_data(random=False)``."""
    shape = tuple(d.dim_value if d.HasField("dim_value") else 1 for d in vi.type.tensor_type.shape.dim)
    n = int(np.prod(shape))
    return (np.arange(n).reshape(shape) / n).astype(np.float32)


@pytest.mark.parametrize("name", MODELS)
def test_real_model(name: str) -> None:
    model = onnx.load(str(DATA / "light" / f"light_{name}.onnx"))
    tol = json.loads((DATA / "real" / f"test_{name}" / "data.json").read_text())
    weights = {t.name for t in model.graph.initializer}
    inputs = [dummy_input(vi) for vi in model.graph.input if vi.name not in weights]
    expected = numpy_helper.to_array(onnx.load_tensor(str(DATA / "light" / f"light_{name}_output_0.pb")))
    (got,) = ReferenceBackend.prepare(model).run(inputs)
    assert got.dtype == expected.dtype and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=tol["rtol"], atol=tol["atol"])

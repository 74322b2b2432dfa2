"""Whole models through the PyTorch frontend: the bench's ResNet-18, MobileNetV2 and BERT-style
transformer encoder with embeddings (``bench.models.torch_module``) match eager PyTorch within
rtol 1e-4 on the reference interpreter and on x86; the same models imported through ONNX and
through PyTorch give the same outputs.

With default initialisation MobileNetV2's activations shrink to ~1e-7 by the classifier, which
would make any comparison vacuous; the CNNs' batch norms are therefore calibrated once on the
example batch (running statistics := batch statistics), so every layer carries signal.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch  # before the skip, so that -m torch selects the module
torch = pytest.importorskip("torch", reason="the PyTorch frontend tests need torch (pip install 'nnc[torch]')")

from torch import nn  # noqa: E402
from torch_cases import assert_close, eager  # noqa: E402

import nnc  # noqa: E402
from bench.models import torch_module  # noqa: E402


def calibrated(name: str) -> tuple[nn.Module, tuple]:
    m, args = torch_module(name)
    bns = [b for b in m.modules() if isinstance(b, nn.BatchNorm2d)]
    if bns:
        for b in bns:
            b.momentum = 1.0
        m.train()
        with torch.no_grad():
            m(torch.randn(2, *args[0].shape[1:]))
        m.eval()
    return m, args


def _spread(want: list[np.ndarray]) -> float:
    return float(np.std(want[0]))


@pytest.mark.parametrize("name", ["bert_small", pytest.param("resnet18", marks=pytest.mark.slow),
                                  pytest.param("mobilenet_v2", marks=pytest.mark.slow)])
def test_model_reference(name: str) -> None:
    m, args = calibrated(name)
    want = eager(m, args)
    assert _spread(want) > 1e-2  # the output carries signal
    assert_close(nnc.compile(m, example_args=args)(*[a.numpy() for a in args]), want)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet18", "mobilenet_v2", "bert_small"])
def test_model_x86(name: str) -> None:
    m, args = calibrated(name)
    want = eager(m, args)
    cm = nnc.compile(m, example_args=args, target="x86", quiet=True)
    assert_close(cm(*[a.numpy() for a in args]), want)


@pytest.mark.parametrize("name", ["cnn_small", pytest.param("resnet18", marks=pytest.mark.slow),
                                  pytest.param("bert_small", marks=pytest.mark.slow)])
def test_onnx_and_torch_imports_agree(name: str) -> None:
    """The bench's ONNX export (TorchScript exporter, same seed) and the torch.export import of the
    same eval-mode module compute the same function."""
    from bench.models import torch_model

    m, args = torch_module(name)
    feeds = [a.numpy() for a in args]
    via_torch = nnc.compile(m, example_args=args)
    via_onnx = nnc.compile(str(torch_model(name)))
    a, b = via_torch(*feeds), via_onnx(*feeds)
    assert_close(a, [b])
    assert_close(a, eager(m, args))

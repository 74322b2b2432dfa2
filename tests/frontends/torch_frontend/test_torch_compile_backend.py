"""``torch.compile(model, backend="nnc")``: registered by entry point, compiled graphs match eager,
and a graph nnc cannot compile falls back to eager with one warning naming the reason."""

from __future__ import annotations

import warnings

import pytest

pytestmark = pytest.mark.torch  # before the skip, so that -m torch selects the module
torch = pytest.importorskip("torch", reason="the PyTorch frontend tests need torch (pip install 'nnc[torch]')")

from torch import nn  # noqa: E402
from torch_cases import assert_close, eager  # noqa: E402

import nnc.torch_backend as backend  # noqa: E402


def _nnc_warnings(record) -> list[str]:
    return [str(w.message) for w in record if str(w.message).startswith("nnc ")]


def test_backend_is_registered() -> None:
    assert "nnc" in torch._dynamo.list_backends()


def test_compiled_model_matches_eager_and_uses_nnc(monkeypatch) -> None:
    torch._dynamo.reset()
    calls = []
    real = backend._compile
    monkeypatch.setattr(backend, "_compile", lambda *a: calls.append(1) or real(*a))
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(64, 5)).eval()
    x = torch.randn(2, 3, 6, 6)
    compiled = torch.compile(m, backend="nnc")
    with torch.no_grad(), warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        y = compiled(x)
    assert calls and not _nnc_warnings(rec)
    assert_close(y.numpy(), eager(m, (x,)))


class WithFft(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.fft.rfft(self.fc(x)).abs()


def test_unsupported_graph_falls_back_with_one_warning() -> None:
    torch._dynamo.reset()
    m = WithFft().eval()
    x = torch.randn(2, 8)
    with torch.no_grad(), warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        y = torch.compile(m, backend="nnc")(x)
    msgs = _nnc_warnings(rec)
    assert len(msgs) == 1 and "aten._fft_r2c.default" in msgs[0] and "eagerly" in msgs[0]
    assert_close(y.numpy(), eager(m, (x,)))


def test_call_needing_gradients_runs_eagerly() -> None:
    torch._dynamo.reset()
    m = nn.Linear(4, 2)
    x = torch.randn(3, 4)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        y = torch.compile(m, backend="nnc")(x)
    y.sum().backward()  # autograd still works: the call ran eagerly
    assert m.weight.grad is not None

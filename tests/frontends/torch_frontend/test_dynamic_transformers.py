"""Transformers with a symbolic batch AND sequence length compile once for x86 (shape-generic
code, docs/dynamic-shapes.md) and match eager PyTorch at every size, including sizes the export
never saw. Models and tolerance as in test_transformers.py (small configs, random weights,
``assert_close``: rtol 1e-4, atol 1e-5 of the largest magnitude)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason="the PyTorch frontend tests need torch (pip install 'nnc[torch]')")

from test_transformers import build, expected, numpy_args  # noqa: E402
from torch_cases import assert_close  # noqa: E402

import nnc  # noqa: E402
from nnc.backends.x86.generic import GenericExecutable  # noqa: E402


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("transformers", reason="the transformers model tests need transformers "
                                                      "(pip install 'nnc[hf]' next to torch)")


def cut(args: tuple, n: int, s: int) -> tuple:
    """The first ``n`` sequences' first ``s`` tokens (batch 3 is made by repeating sequences)."""
    reps = -(-n // args[0].shape[0])
    return tuple(a.repeat(reps, 1)[:n, :s].contiguous() for a in args)


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_symbolic_batch_and_sequence_compile_once(tf, kind: str) -> None:
    m, args = build(tf, kind, "sdpa")
    batch, seq = torch.export.Dim("batch", min=1, max=8), torch.export.Dim("seq", min=2, max=64)
    module = nnc.from_torch(m, args, dynamic_shapes=(tuple({0: batch, 1: seq} for _ in args),))
    cm = nnc.compile(module, target="x86", quiet=True, cache=False)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    assert isinstance(cm.executable, GenericExecutable)
    for n, s in ((2, 16), (1, 9), (3, 5), (2, 33)):
        part = cut(args, n, s)
        assert_close(cm(*numpy_args(part)), expected(m, part))
    assert cm.executable.plans_made == 4


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_onnx_export_with_dynamic_axes_compiles_once(tf, kind: str, tmp_path) -> None:
    """The exporter's ``dynamic_axes`` become dim_params; the attention reshapes then compute their
    targets with Shape -> Gather -> Concat at run time, which the host evaluates per signature."""
    m, args = build(tf, kind, "eager")
    path = str(tmp_path / f"{kind}.onnx")
    names = ["input_ids", "attention_mask"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    torch.onnx.export(m, args, path, dynamo=False, opset_version=17, input_names=names, dynamic_axes=axes)
    cm = nnc.compile(path, target="x86", quiet=True, cache=False)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    for n, s in ((2, 16), (1, 7), (3, 12)):
        part = cut(args, n, s)
        assert_close(cm(*numpy_args(part)), expected(m, part))

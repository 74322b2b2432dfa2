"""PyTorch frontend on x86: every module case of ``torch_cases.CASES`` compiled for x86 matches
eager PyTorch (rtol 1e-4). A handful run by default; the full set is marked slow (each case is
one LLVM compile of a couple of seconds)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch  # before the skip, so that -m torch selects the module
torch = pytest.importorskip("torch", reason="the PyTorch frontend tests need torch (pip install 'nnc[torch]')")

from torch_cases import CASES, assert_close, eager, make  # noqa: E402

import nnc  # noqa: E402

FAST = {"conv2d", "transformer_layer", "views", "reductions"}


@pytest.mark.parametrize("name", [n if n in FAST else pytest.param(n, marks=pytest.mark.slow) for n in sorted(CASES)])
def test_module_x86(name: str) -> None:
    m, args = make(name)
    want = eager(m, args)
    cm = nnc.compile(m, example_args=args, target="x86", quiet=True)
    assert_close(cm(*[a.numpy() for a in args]), want)

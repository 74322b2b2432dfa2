"""PyTorch frontend, module level: each case of ``torch_cases.CASES`` imported through
``nnc.from_torch`` and run on the reference interpreter matches eager PyTorch (rtol 1e-4)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch  # before the skip, so that -m torch selects the module
torch = pytest.importorskip("torch", reason="the PyTorch frontend tests need torch (pip install 'nnc[torch]')")

from torch_cases import CASES, assert_close, eager, make  # noqa: E402

import nnc  # noqa: E402


@pytest.mark.parametrize("name", sorted(CASES))
def test_module_reference(name: str) -> None:
    m, args = make(name)
    want = eager(m, args)
    cm = nnc.compile(m, example_args=args, target="reference")
    assert_close(cm(*[a.numpy() for a in args]), want)

"""Fixtures of the generation tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tf():
    """The ``transformers`` package (skips the test without it)."""
    return pytest.importorskip("transformers", reason="the generation tests need transformers "
                                                      "(pip install 'nnc[hf]' next to torch)")

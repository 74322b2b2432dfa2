"""Marks the official ONNX backend tests that nnc is known to fail as strict xfails, each with the
reason recorded in ``expected_failures_<target>.txt`` (a list that only shrinks: a test that starts
passing fails the run until it is removed from the list)."""

from __future__ import annotations

import os
import re

import pytest

HERE = os.path.dirname(__file__)
_LINE = re.compile(r"^(test_\w+)\s*:\s*(.+)$")


def load_expected_failures(target: str) -> dict[str, str]:
    path = os.path.join(HERE, f"expected_failures_{target}.txt")
    out: dict[str, str] = {}
    if not os.path.exists(path):
        return out
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            m = _LINE.match(line)
            if not m:
                raise ValueError(f"{path}: bad line {line!r} (expected 'test_name: reason')")
            out[m.group(1)] = m.group(2)
    return out


def pytest_collection_modifyitems(config, items):
    """Deselect the suite's tests outside nnc's scope (other categories, CUDA devices) so they are not
    reported as skips, and mark the known failures."""
    lists: dict[str, dict[str, str]] = {}
    keep, drop = [], []
    for item in items:
        included = getattr(item.module, "NNC_INCLUDED", None)
        if included is not None and not (item.name.endswith("_cpu") and item.name[:-4] in included):
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    for item in items:
        target = getattr(item.module, "NNC_TARGET", None)
        if target is None:
            continue
        expected = lists.setdefault(target, load_expected_failures(target))
        name = item.name[: -len("_cpu")] if item.name.endswith("_cpu") else item.name
        if name in expected:
            item.add_marker(pytest.mark.xfail(reason=expected[name], strict=True))

"""The checked-in lists of official ONNX backend tests nnc is known to fail, per target
(``expected_failures_<target>.txt``: ``test_name: reason`` per line). A module of its own rather
than part of ``conftest.py``: a test importing ``conftest`` by name would get the repository's root
conftest instead."""

from __future__ import annotations

import os
import re

HERE = os.path.dirname(__file__)
# A reason starting with this marks a test whose expected data is a random draw: see conftest.py.
RANDOM_OUTPUT = "random output"
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

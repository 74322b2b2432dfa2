"""Golden IR tests: each file in golden/ holds a pipeline, an input module and the expected module.

    // RUN: fold-constants,dce
    // ----- input
    graph @main(...) ...
    // ----- expected
    graph @main(...) ...

The expected text is written by hand (what the pass should do), then normalised by parse+print
so that only meaning, not spacing, is compared. Both sides are verified.
"""

from __future__ import annotations

import os

import pytest

from nnc.ir import parse_module, verify_module
from nnc.passes import PassManager

HERE = os.path.join(os.path.dirname(__file__), "golden")
FILES = sorted(f for f in os.listdir(HERE) if f.endswith(".nnc"))


def split_case(text: str) -> tuple[str, str, str]:
    lines = text.splitlines()
    assert lines[0].startswith("// RUN:"), "first line must be '// RUN: <pipeline>'"
    pipeline = lines[0].split(":", 1)[1].strip()
    body = "\n".join(lines[1:])
    _, rest = body.split("// ----- input", 1)
    before, after = rest.split("// ----- expected", 1)
    return pipeline, before, after


@pytest.mark.parametrize("name", FILES)
def test_golden(name):
    with open(os.path.join(HERE, name)) as f:
        pipeline, before, after = split_case(f.read())
    m = parse_module(before)
    verify_module(m)
    PassManager(pipeline, verify_each=True).run(m)
    expected = parse_module(after)
    verify_module(expected)
    assert str(m) == str(expected)

"""The example pass of docs/writing-a-pass.md loads as a plugin and passes its golden test, so the
tutorial stays true."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_golden import split_case

from nnc.ir import interpret, parse_module, verify_module
from nnc.passes import PassError, PassManager
from nnc.passes.plugins import load_pass_plugin

EXAMPLE = os.path.join(os.path.dirname(__file__), "..", "..", "examples", "passes")


def test_tutorial_pass_golden_and_numerics():
    load_pass_plugin(os.path.join(EXAMPLE, "strength_reduce_pow.py"))
    with open(os.path.join(EXAMPLE, "strength_reduce_pow.nnc")) as f:
        pipeline, before, after = split_case(f.read())
    m = parse_module(before)
    x = np.array([0.25, 1.0, 2.0, 9.0], np.float32)
    want = interpret(m, {"x": x})
    PassManager(pipeline, verify_each=True).run(m)
    expected = parse_module(after)
    verify_module(expected)
    assert str(m) == str(expected)
    got = interpret(m, {"x": x})
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6)


def test_missing_plugin_is_a_clear_error(tmp_path):
    with pytest.raises(PassError, match="no such file"):
        load_pass_plugin(str(tmp_path / "nope.py"))
    bad = tmp_path / "bad.py"
    bad.write_text("raise RuntimeError('boom')\n")
    with pytest.raises(PassError, match="failed to load: RuntimeError: boom"):
        load_pass_plugin(str(bad))

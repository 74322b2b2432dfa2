"""What the conformance suite must show: the expected-failure lists stay within the goals."""

from __future__ import annotations

from categories import category_node_tests, numeric_node_tests
from expected_failures import load_expected_failures
from test_onnx_backend_reference import REAL_MODELS
from test_onnx_backend_x86 import GOAL as X86_GOAL

_CF = category_node_tests("cf")
_SEQ = category_node_tests("seq")


def test_cf_and_seq_categories_have_the_official_sizes():
    assert (len(_CF), len(_SEQ)) == (33, 29)


def test_control_flow_and_sequence_goals():
    """Issue 12: at least 28 of the 33 cf tests and 20 of the 29 seq tests pass, on every target."""
    for target in ("reference", "x86"):
        expected = set(load_expected_failures(target))
        assert len(_CF - expected) >= 28, target
        assert len(_SEQ - expected) >= 20, target


def test_numeric_category_has_the_official_size():
    assert len(numeric_node_tests()) == 1615


def test_reference_backend_passes_at_least_1605_numeric_tests():
    expected = load_expected_failures("reference")
    numeric = numeric_node_tests()
    unknown = set(expected) - numeric - _CF - _SEQ - set(REAL_MODELS)
    assert not unknown, f"expected-failure entries that are not node tests of the run: {sorted(unknown)}"
    assert len(numeric) - len(set(expected) & numeric) >= 1605


def test_reference_backend_expects_every_real_model_to_pass():
    assert not set(REAL_MODELS) & set(load_expected_failures("reference"))


def test_x86_backend_passes_the_goal_and_every_real_model():
    expected = load_expected_failures("x86")
    numeric = numeric_node_tests()
    unknown = set(expected) - numeric - _CF - _SEQ - set(REAL_MODELS)
    assert not unknown, f"expected-failure entries that are not numeric node tests: {sorted(unknown)}"
    assert len(numeric) - len(set(expected) & numeric) >= X86_GOAL
    assert not set(REAL_MODELS) & set(expected)

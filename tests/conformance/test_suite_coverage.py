"""What the conformance suite must show: the expected-failure lists stay within the goals."""

from __future__ import annotations

from categories import numeric_node_tests
from expected_failures import load_expected_failures
from test_onnx_backend_reference import REAL_MODELS
from test_onnx_backend_x86 import GOAL as X86_GOAL


def test_numeric_category_has_the_official_size():
    assert len(numeric_node_tests()) == 1615


def test_reference_backend_passes_at_least_1605_numeric_tests():
    expected = load_expected_failures("reference")
    numeric = numeric_node_tests()
    unknown = set(expected) - numeric - set(REAL_MODELS)
    assert not unknown, f"expected-failure entries that are not numeric node tests: {sorted(unknown)}"
    assert len(numeric) - len(set(expected) & numeric) >= 1605


def test_reference_backend_expects_every_real_model_to_pass():
    assert not set(REAL_MODELS) & set(load_expected_failures("reference"))


def test_x86_backend_passes_the_goal_and_every_real_model():
    expected = load_expected_failures("x86")
    numeric = numeric_node_tests()
    unknown = set(expected) - numeric - set(REAL_MODELS)
    assert not unknown, f"expected-failure entries that are not numeric node tests: {sorted(unknown)}"
    assert len(numeric) - len(set(expected) & numeric) >= X86_GOAL
    assert not set(REAL_MODELS) & set(expected)

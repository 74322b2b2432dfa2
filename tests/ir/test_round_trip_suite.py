"""Every model of the official ONNX suite that nnc imports prints, parses back to identical text,
and passes the verifier (both the imported and the re-parsed module)."""

from __future__ import annotations

import functools
import os
import sys
import warnings

import onnx
import pytest

import nnc
from nnc.ir import parse_module, verify_module

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "conformance"))
from categories import category_node_tests, numeric_node_tests  # noqa: E402

LIGHT = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")


@functools.lru_cache(maxsize=1)
def _node_cases():
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        names = numeric_node_tests() | category_node_tests("cf") | category_node_tests("seq")
        return [t for t in load_model_tests(kind="node") if t.name in names]


def check_round_trip(model) -> bool:
    """True if the model imported and round-tripped; False if nnc does not import it."""
    try:
        m = nnc.from_onnx(model)
    except (nnc.UnsupportedOpError, nnc.ModelError):
        return False
    verify_module(m)
    text = str(m)
    again = parse_module(text, weights=m.constants)
    verify_module(again)
    assert str(again) == text
    return True


def test_every_importable_node_test_round_trips():
    imported = 0
    failures = []
    for case in _node_cases():
        try:
            imported += check_round_trip(case.model)
        except Exception as e:  # noqa: BLE001 - collect them all, report at once
            failures.append(f"{case.name}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
    assert not failures, f"{len(failures)} round-trip failures:\n" + "\n".join(failures[:40])
    assert imported >= 1000  # the suite is not trivially empty


def test_every_control_flow_and_sequence_node_test_imports_and_round_trips():
    """Regions print inside their ops and parse back; sequence and optional types print as seq<...>
    and opt<...> (the round trip itself is checked with the others above)."""
    names = category_node_tests("cf") | category_node_tests("seq")
    cases = [c for c in _node_cases() if c.name in names]
    assert len(cases) == 62 and all(check_round_trip(c.model) for c in cases)


@pytest.mark.parametrize("name", sorted(f for f in os.listdir(LIGHT) if f.endswith(".onnx")))
def test_real_model_round_trips(name):
    assert check_round_trip(os.path.join(LIGHT, name))

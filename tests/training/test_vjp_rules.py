"""Every op of the registry either has a gradient rule or says it is not differentiable, and every
rule matches central finite differences in float64 along random directions (JAX-style
``check_grads``), on the sample operands of ``vjp_cases.CASES``."""

from __future__ import annotations

import numpy as np
import pytest
from vjp_cases import CASES

from nnc.ir import NOT_DIFFERENTIABLE, all_opdefs, get_opdef
from nnc.passes.training.gradcheck import check_op_grad

# Ops whose gradient rule is not written yet. The set must only shrink: a new rule is removed
# from it (test_pending_is_exact fails otherwise) and gets a case in vjp_cases.CASES.
PENDING: set[str] = set()


def _rules() -> list[str]:
    return sorted(d.name for d in all_opdefs() if d.vjp is not None and d.vjp is not NOT_DIFFERENTIABLE)


def test_every_op_is_differentiable_or_says_not():
    missing = sorted(d.name for d in all_opdefs() if d.vjp is None)
    assert set(missing) == PENDING, f"ops without a rule or NOT_DIFFERENTIABLE: {missing}"


def test_every_rule_has_a_case():
    assert [n for n in _rules() if n not in CASES] == []


def test_cases_name_real_rules():
    for name in CASES:
        assert get_opdef(name).vjp not in (None, NOT_DIFFERENTIABLE), name


_PARAMS = [pytest.param(name, i, id=f"{name}-{i}") for name in sorted(CASES) for i in range(len(CASES[name]))]


@pytest.mark.parametrize("name,i", _PARAMS)
def test_rule_matches_finite_differences(name: str, i: int):
    case = CASES[name][i]
    operands, attrs = case[0], case[1]
    options = case[2] if len(case) > 2 else {}
    check_op_grad(name, [np.asarray(o) for o in operands], attrs, **options)

"""Gradient (VJP) rules, attached to the ops of the registry.

A rule is ``rule(b: Builder, op: Op, cts: list[Value | None]) -> list[Value | None]``: given the
cotangents of the op's results (None where a result receives none), it emits IR with ``b`` and
returns one cotangent per operand (None for operands with no gradient: integer operands, shapes,
indices). Rules may compute cotangents for operands that do not need one; autodiff deletes what is
left unused. Rules run on static shapes (autodiff checks that first), so they may read
``v.shape`` as a tuple of ints.

The rules live here rather than in ``ir/ops`` so each family file stays readable; ``register_vjp``
sets ``OpDef.vjp``, so the registry is still the one place to ask whether an op is differentiable.
"""

from __future__ import annotations

from typing import Any, Callable

from ..registry import _REGISTRY, NOT_DIFFERENTIABLE

VjpRule = Callable[..., Any]


def register_vjp(*names: str) -> Callable[[VjpRule], VjpRule]:
    """Attach the decorated rule to each named op (which must exist and have no rule yet)."""
    def deco(fn: VjpRule) -> VjpRule:
        for n in names:
            d = _REGISTRY[n]
            if d.vjp is not None and d.vjp is not NOT_DIFFERENTIABLE:
                raise ValueError(f"op {n!r} already has a gradient rule")
            d.vjp = fn
        return fn
    return deco


def not_differentiable(*names: str) -> None:
    """Declare ops whose gradient is zero or undefined."""
    for n in names:
        _REGISTRY[n].vjp = NOT_DIFFERENTIABLE


from . import (  # noqa: E402,F401  (register the rules)
    attention,
    conv,
    elementwise,
    image,
    indexing,
    linalg,
    misc,
    normalization,
    pool,
    reduce,
    sampling,
    sequence,
    sequence_rnn,
    shape,
    signal,
)

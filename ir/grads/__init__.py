"""Gradient (VJP) rules, attached to the ops of the registry.

A rule is ``rule(b: Builder, op: Op, cts: list[Value | None]) -> list[Value | None]``: given the
cotangents of the op's results (None where a result receives none), it emits IR with ``b`` and
returns one cotangent per operand (None for operands with no gradient: integer operands, shapes,
indices). Rules may compute cotangents for operands that do not need one; autodiff deletes what is
left unused. A rule sees symbolic dims (``N``, ``seq``, ``?``) only when it is declared
shape-generic with ``shape_generic`` (autodiff refuses the others with a ``GradientError`` naming
the op); such a rule takes every size it needs from ``util``'s helpers, which read it at run time
when it is not a compile-time int. Other rules may read ``v.shape`` as a tuple of ints.

The rules live here rather than in ``ir/ops`` so each family file stays readable; ``register_vjp``
sets ``OpDef.vjp``, so the registry is still the one place to ask whether an op is differentiable.
"""

from __future__ import annotations

from typing import Any, Callable

from ..registry import _REGISTRY, NOT_DIFFERENTIABLE

VjpRule = Callable[..., Any]
# op name -> True, or a check(op) giving why this instance's rule needs static shapes (None: it does not)
_SHAPE_GENERIC: dict[str, Any] = {}


def shape_generic(*names: str, check: Callable[[Any], str | None] | None = None) -> None:
    """Declare that the rules of ``names`` work on symbolic dims (optionally only for the
    instances ``check(op)`` returns None for; otherwise it says why not)."""
    for n in names:
        _REGISTRY[n]  # noqa: B018  (the op must exist)
        _SHAPE_GENERIC[n] = check or True


def why_not_shape_generic(op: Any) -> str | None:
    """Why the gradient rule of ``op`` cannot run with symbolic dims, or None when it can."""
    c = _SHAPE_GENERIC.get(op.opname)
    if op.opdef.vjp is None or op.opdef.vjp is NOT_DIFFERENTIABLE:
        return None  # nothing to run (a missing rule is reported as such)
    if c is None:
        return "its gradient rule needs static shapes"
    return None if c is True else c(op)


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

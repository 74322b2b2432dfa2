"""The table of x86 lowerings, keyed by IR op name.

    @lowering("relu", "neg")
    def lower_unary(k: KernelBuilder, op: Op) -> None: ...

A lowering fills in the body of one kernel function whose arguments are pointers to the op's
results then its operands (``k.out(i)``, ``k.arg(i)``), positioned at the entry block; the kernel
builder adds the ``ret``.
"""

from __future__ import annotations

from typing import Callable

_LOWERINGS: dict[str, Callable] = {}
# shape-generic lowerings (dims read at run time through ``k.shape``): True, or a function of the op
# that returns why this instance cannot be generic (None when it can)
_GENERIC: dict[str, bool | Callable] = {}


def lowering(*opnames: str, generic: bool | Callable = False):
    """Register a lowering. ``generic``: it handles symbolic dims (reads them with ``k.shape``); a
    function ``op -> reason | None`` when that holds only for some instances."""
    def register(fn: Callable) -> Callable:
        for name in opnames:
            if name in _LOWERINGS:
                raise ValueError(f"x86 lowering for {name!r} registered twice")
            _LOWERINGS[name] = fn
            if generic:
                _GENERIC[name] = generic
        return fn
    return register


def why_not_generic(op) -> str | None:
    """Why ``op`` cannot be lowered to shape-generic code, or None when it can."""
    _ensure_loaded()
    g = _GENERIC.get(op.opname)
    if g is None:
        return "no shape-generic kernel" if op.opname in _LOWERINGS else "no x86 lowering"
    return g(op) if callable(g) else None


def batch_only(op) -> str | None:
    """A ``generic=`` predicate: the lowering reads the batch (first) dim of its first operand at run
    time and needs every other dim of every operand static (channels, spatial dims, weights)."""
    x = op.operands[0]
    if x.shape is None or not all(isinstance(d, int) for d in x.shape[1:]):
        return f"{op.opname}: only the batch dim may be symbolic, not the channels or spatial dims ({x.type})"
    if not all(v.type.is_static for v in op.operands[1:]):
        return f"{op.opname}: the operands after the first must have static shapes"
    return None


def static_shapes(op) -> str | None:
    """A ``generic=`` predicate for kernels written for static shapes: fine in shape-generic code
    when none of the op's values has a symbolic dim (an optimizer update of a weight)."""
    for v in list(op.operands) + list(op.results):
        if not v.type.is_static:
            return f"{op.opname}: {v.name} has the symbolic type {v.type}; this kernel needs static shapes"
    return None


def get_lowering(opname: str) -> Callable | None:
    _ensure_loaded()
    return _LOWERINGS.get(opname)


def lowered_ops() -> set[str]:
    _ensure_loaded()
    return set(_LOWERINGS)


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import catalog  # noqa: F401

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


def lowering(*opnames: str):
    def register(fn: Callable) -> Callable:
        for name in opnames:
            if name in _LOWERINGS:
                raise ValueError(f"x86 lowering for {name!r} registered twice")
            _LOWERINGS[name] = fn
        return fn
    return register


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

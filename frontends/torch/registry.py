"""The table of ATen op converters, keyed by the op overload's name.

    @aten("aten.relu.default")
    @aten("aten.add.Tensor", "aten.add.Scalar")
    def convert(ctx: TorchContext, node: AtenNode) -> Value | list[Value | None]: ...

A name without an overload (``"aten.clone"``) matches every overload of that op that has no
converter of its own. A converter returns the node's outputs in order (a list for ops returning
tuples, read by the graph's ``getitem`` nodes; None for an output it does not produce).
"""

from __future__ import annotations

from typing import Callable

_TABLE: dict[str, Callable] = {}


def aten(*names: str):
    def register(fn: Callable) -> Callable:
        for name in names:
            if name in _TABLE:
                raise ValueError(f"converter for {name} registered twice")
            _TABLE[name] = fn
        return fn
    return register


def lookup(name: str) -> Callable | None:
    """The converter for an overload name such as ``aten.add.Tensor`` (or its packet ``aten.add``)."""
    _ensure_loaded()
    fn = _TABLE.get(name)
    if fn is None and name.count(".") == 2:
        fn = _TABLE.get(name.rsplit(".", 1)[0])
    return fn


def supported() -> list[str]:
    _ensure_loaded()
    return sorted(_TABLE)


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import (  # noqa: F401  (each module registers its converters)
            aten_attention,
            aten_create,
            aten_elementwise,
            aten_linalg,
            aten_norm,
            aten_pool,
            aten_reduce,
            aten_shape,
        )

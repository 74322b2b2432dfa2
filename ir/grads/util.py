"""Building blocks for gradient rules: constants, un-broadcasting, static shapes."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..builder import Builder, const_value
from ..graph import Module, Op, Value
from ..types import TensorType


def shape_of(v: Value) -> tuple[int, ...]:
    """The static shape of ``v`` (autodiff has already checked every shape on the path is static)."""
    return tuple(v.type.shape)  # type: ignore[arg-type]


def scalar(b: Builder, x: float, like: Value) -> Value:
    """A 0-d constant with ``like``'s dtype."""
    return b.const(np.array(x, dtype=like.dtype.numpy), name="c")


def full(b: Builder, x: float, like: Value | TensorType) -> Value:
    t = like.type if isinstance(like, Value) else like
    return b.const(np.full(t.shape, x, dtype=t.dtype.numpy), name="c")


def zeros_like(b: Builder, v: Value) -> Value:
    return full(b, 0.0, v)


def reshape(b: Builder, x: Value, shape: Sequence[int]) -> Value:
    if shape_of(x) == tuple(shape):
        return x
    return b.op("reshape", x, shape=list(shape))


def sum_to(b: Builder, g: Value, target: Value | TensorType) -> Value:
    """Sum ``g`` over the dims that broadcasting added or stretched to reach ``target``'s shape
    (the adjoint of numpy broadcasting)."""
    t = target.type if isinstance(target, Value) else target
    want, have = tuple(t.shape), shape_of(g)
    if want == have:
        return g
    lead = len(have) - len(want)
    axes = list(range(lead)) + [lead + i for i, d in enumerate(want) if d == 1 and have[lead + i] != 1]
    if axes:
        g = b.op("reduce_sum", g, axes=axes, keepdims=1)
    return reshape(b, g, want)


def broadcast_to(b: Builder, g: Value, shape: Sequence[int]) -> Value:
    if shape_of(g) == tuple(shape):
        return g
    return b.op("expand", g, shape=list(shape))


def cast_to(b: Builder, g: Value, like: Value) -> Value:
    return g if g.dtype == like.dtype else b.op("cast", g, to=like.dtype)


def is_float(v: Value) -> bool:
    return v.dtype.is_float


def scalar_attr(module: Module, op: Op, name: str, index: int) -> tuple[Any, Value | None]:
    """(compile-time value or None, run-time operand or None) of a scalar dynamic attribute: the
    attribute when set, else operand ``index`` when it is a constant, else that operand."""
    v = op.attrs.get(name)
    if v is not None:
        return v, None
    if index < len(op.operands):
        c = const_value(module, op.operands[index])
        if c is None:
            return None, op.operands[index]
        return c.reshape(-1)[0].item(), None
    return None, None

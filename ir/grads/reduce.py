"""Gradient rules: reductions (sum, mean, max, min).

The cotangent of a reduction is broadcast back over the reduced axes; max/min share it evenly
among the elements that attain the extreme (PyTorch's ``amax``/``amin`` convention).
"""

from __future__ import annotations

from ..builder import Builder, const_value
from ..graph import Op, Value
from . import register_vjp
from .util import broadcast_to, reshape, scalar, shape_of


def reduced_axes(b: Builder, op: Op) -> list[int]:
    """The axes a reduce op reduces (from its attribute or its constant axes operand)."""
    rank = len(shape_of(op.operands[0]))
    axes = op.attrs.get("axes")
    if axes is None and len(op.operands) > 1:
        c = const_value(b.module, op.operands[1])
        axes = None if c is None else [int(a) for a in c.reshape(-1)]
    if not axes:
        if op.attrs.get("noop_with_empty_axes"):
            return []
        return list(range(rank))
    return sorted(a % rank for a in axes)


def _kept_shape(x: Value, axes: list[int]) -> list[int]:
    return [1 if i in axes else d for i, d in enumerate(shape_of(x))]


def _spread(b: Builder, op: Op, g: Value) -> tuple[Value, list[int]]:
    """The cotangent broadcast back to the operand's shape, and the reduced axes."""
    x = op.operands[0]
    axes = reduced_axes(b, op)
    g = reshape(b, g, _kept_shape(x, axes))
    return broadcast_to(b, g, shape_of(x)), axes


def _none_rest(op: Op, first: Value) -> list[Value | None]:
    return [first] + [None] * (len(op.operands) - 1)


@register_vjp("reduce_sum")
def _sum(b, op, cts):
    return _none_rest(op, _spread(b, op, cts[0])[0])


@register_vjp("reduce_mean")
def _mean(b, op, cts):
    g, axes = _spread(b, op, cts[0])
    n = 1
    for a in axes:
        n *= shape_of(op.operands[0])[a]
    return _none_rest(op, b.op("mul", g, scalar(b, 1.0 / n, g)) if n != 1 else g)


def _extreme(b, op, cts):
    x, y = op.operands[0], op.results[0]
    axes = reduced_axes(b, op)
    yk = broadcast_to(b, reshape(b, y, _kept_shape(x, axes)), shape_of(x))
    hit = b.op("cast", b.op("equal", x, yk), to=x.dtype)
    count = b.op("reduce_sum", hit, axes=axes, keepdims=1)
    g = reshape(b, cts[0], _kept_shape(x, axes))
    share = broadcast_to(b, b.op("div", g, count), shape_of(x))
    return _none_rest(op, b.op("mul", share, hit))


register_vjp("reduce_max", "reduce_min")(_extreme)

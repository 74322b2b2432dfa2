"""Gradient rules: reductions (sum, mean, max, min).

The cotangent of a reduction is broadcast back over the reduced axes; max/min share it evenly
among the elements that attain the extreme (PyTorch's ``amax``/``amin`` convention).
"""

from __future__ import annotations

from ..builder import Builder, const_value
from ..graph import Op, Value
from . import register_vjp, shape_generic
from .util import broadcast_to, count, reshape, scale_by_inverse, shape_of


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


def _kept_shape(x: Value, axes: list[int]) -> list:
    return [1 if i in axes else d for i, d in enumerate(shape_of(x))]


def _kept(b: Builder, g: Value, x: Value, axes: list[int]) -> Value:
    """``g`` (a reduction of ``x`` over ``axes``, kept or not) with the reduced axes as 1s."""
    if len(shape_of(g)) == len(shape_of(x)):
        return g
    return b.op("unsqueeze", g, axes=axes) if axes else g


def _spread(b: Builder, op: Op, g: Value) -> tuple[Value, list[int]]:
    """The cotangent broadcast back to the operand's shape, and the reduced axes."""
    x = op.operands[0]
    axes = reduced_axes(b, op)
    g = reshape(b, g, _kept_shape(x, axes)) if x.type.is_static else _kept(b, g, x, axes)
    return broadcast_to(b, g, shape_of(x), like=x), axes


def _none_rest(op: Op, first: Value) -> list[Value | None]:
    return [first] + [None] * (len(op.operands) - 1)


@register_vjp("reduce_sum")
def _sum(b, op, cts):
    return _none_rest(op, _spread(b, op, cts[0])[0])


@register_vjp("reduce_mean")
def _mean(b, op, cts):
    g, axes = _spread(b, op, cts[0])
    return _none_rest(op, scale_by_inverse(b, g, count(b, op.operands[0], axes, g)))


def _extreme(b, op, cts):
    x, y = op.operands[0], op.results[0]
    axes = reduced_axes(b, op)
    static = x.type.is_static
    yk = reshape(b, y, _kept_shape(x, axes)) if static else _kept(b, y, x, axes)
    hit = b.op("cast", b.op("equal", x, yk), to=x.dtype)  # broadcasts yk over the reduced axes
    ties = b.op("reduce_sum", hit, axes=axes, keepdims=1)
    g = reshape(b, cts[0], _kept_shape(x, axes)) if static else _kept(b, cts[0], x, axes)
    share = b.op("div", g, ties)
    return _none_rest(op, b.op("mul", share, hit))  # broadcasts share back to x's shape


register_vjp("reduce_max", "reduce_min")(_extreme)
shape_generic("reduce_sum", "reduce_mean", "reduce_max", "reduce_min")

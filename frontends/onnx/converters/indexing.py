"""Converters for ONNX indexing ops: Gather(Elements/ND), Scatter(Elements/ND), NonZero, Unique,
and the rare ones decomposed into those: Scatter (old name of ScatterElements), Compress (gather
of nonzero), OneHot (compare with a range), ReverseSequence (gather_elements of computed indices)
and TensorScatter (scatter_elements of computed write positions).
"""

from __future__ import annotations

import numpy as np

from nnc.ir import DType, Value

from ..context import ConvertContext, Node
from ..registry import converter
from .shape import dim_of, shape_of

_I64 = np.int64


def _axis(node: Node, x: Value, default: int = 0) -> int:
    a = node.attr("axis", default)
    if x.shape is None:
        if a < 0:
            raise node.unsupported("a negative axis needs the input's rank")
        return a
    return a + len(x.shape) if a < 0 else a


def _along(ctx: ConvertContext, v: Value, axis: int, rank: int) -> Value:
    """Reshape 1-D ``v`` to rank ``rank`` with its length at ``axis`` (1 elsewhere) for broadcasting."""
    return ctx.op("reshape", v, shape=tuple(-1 if i == axis else 1 for i in range(rank)))


@converter("Gather")
def gather(ctx: ConvertContext, node: Node):
    return ctx.op("gather", node.inputs[0], node.inputs[1], axis=node.attr("axis", 0))


@converter("GatherElements")
def gather_elements(ctx: ConvertContext, node: Node):
    return ctx.op("gather_elements", node.inputs[0], node.inputs[1], axis=node.attr("axis", 0))


@converter("GatherND")
def gather_nd(ctx: ConvertContext, node: Node):
    return ctx.op("gather_nd", node.inputs[0], node.inputs[1], batch_dims=node.attr("batch_dims", 0))


@converter("Scatter", "ScatterElements")
def scatter_elements(ctx: ConvertContext, node: Node):
    x, ind, upd = node.inputs
    return ctx.op("scatter_elements", x, ind, upd, axis=node.attr("axis", 0),
                  reduction=node.attr("reduction", "none"))


@converter("ScatterND")
def scatter_nd(ctx: ConvertContext, node: Node):
    x, ind, upd = node.inputs
    return ctx.op("scatter_nd", x, ind, upd, reduction=node.attr("reduction", "none"))


@converter("NonZero")
def nonzero(ctx: ConvertContext, node: Node):
    return ctx.op("nonzero", node.inputs[0])


@converter("Unique")
def unique(ctx: ConvertContext, node: Node):
    return list(ctx.op("unique", node.inputs[0], axis=node.attr("axis", None), sorted=node.attr("sorted", 1)))


@converter("Compress")
def compress(ctx: ConvertContext, node: Node):
    x, cond = node.inputs
    picked = ctx.op("reshape", ctx.op("nonzero", cond), shape=(-1,))
    if node.attr("axis", None) is None:
        return ctx.op("gather", ctx.op("reshape", x, shape=(-1,)), picked, axis=0)
    return ctx.op("gather", x, picked, axis=node.attr("axis"))


@converter("OneHot")
def one_hot(ctx: ConvertContext, node: Node):
    """out[..., j, ...] = on if j == index (negative indices count from depth) else off."""
    ind, depth, values = node.inputs
    if ind.shape is None:
        raise node.unsupported("needs the rank of indices")
    rank = len(ind.shape) + 1
    axis = node.attr("axis", -1)
    axis = axis + rank if axis < 0 else axis
    d = ctx.op("reshape", ctx.cast(depth, DType.i64), shape=())
    idx = ctx.cast(ind, DType.i64)
    idx = ctx.op("where", ctx.op("less", idx, ctx.const(np.array(0, _I64))), ctx.op("add", idx, d), idx)
    classes = _along(ctx, ctx.op("range", ctx.const(np.array(0, _I64)), d, ctx.const(np.array(1, _I64))),
                     axis, rank)
    hit = ctx.op("equal", ctx.op("unsqueeze", idx, axes=(axis,)), classes)
    off = ctx.op("gather", values, ctx.const(np.array(0, _I64)))
    on = ctx.op("gather", values, ctx.const(np.array(1, _I64)))
    return ctx.op("where", hit, on, off)


def _positions(ctx: ConvertContext, length: Value) -> Value:
    return ctx.op("range", ctx.const(np.array(0, _I64)), length, ctx.const(np.array(1, _I64)))


@converter("ReverseSequence")
def reverse_sequence(ctx: ConvertContext, node: Node):
    """Reverse the first lens[b] steps of each batch entry: gather_elements along time with
    index lens[b]-1-t where t < lens[b], else t."""
    x, lens = node.inputs
    if x.shape is None:
        raise node.unsupported("needs the input's rank")
    r = len(x.shape)
    t_axis, b_axis = node.attr("time_axis", 0), node.attr("batch_axis", 1)
    t = _along(ctx, _positions(ctx, dim_of(ctx, x, t_axis)), t_axis, r)
    n = _along(ctx, ctx.cast(lens, DType.i64), b_axis, r)
    rev = ctx.op("sub", ctx.op("sub", n, ctx.const(np.array(1, _I64))), t)
    idx = ctx.op("where", ctx.op("less", t, n), rev, t)
    idx = ctx.op_dynamic("expand", [idx], {"shape": shape_of(ctx, x)})
    return ctx.op("gather_elements", x, idx, axis=t_axis)


@converter("TensorScatter")
def tensor_scatter(ctx: ConvertContext, node: Node):
    """Write ``update`` into the cache along ``axis`` from write_indices[batch] on (modulo the cache
    length in circular mode): a scatter_elements with computed positions."""
    cache, update, where = node.inputs[0], node.inputs[1], node.input(2)
    if cache.shape is None:
        raise node.unsupported("needs the cache's rank")
    r = len(cache.shape)
    axis = _axis(node, cache, -2)
    pos = _along(ctx, _positions(ctx, dim_of(ctx, update, axis)), axis, r)
    if where is not None:
        pos = ctx.op("add", pos, _along(ctx, ctx.cast(where, DType.i64), 0, r))
    if node.attr("mode", "linear") == "circular":
        pos = ctx.op("mod", pos, dim_of(ctx, cache, axis))
    pos = ctx.op_dynamic("expand", [pos], {"shape": shape_of(ctx, update)})
    return ctx.op("scatter_elements", cache, pos, update, axis=axis)

"""Converters for ONNX pooling: MaxPool (with its optional indices output), AveragePool, LpPool,
MaxUnpool, and the global pools.

Global pools become reductions over the spatial axes (``reduce_mean``/``reduce_max``, and
``reduce_sum`` of ``|x|^p`` for GlobalLpPool): they are reductions, and backends already fuse those.
"""

from __future__ import annotations

from typing import Any

from ..context import ConvertContext, Node
from ..registry import converter
from .conv import spatial_rank, window_attrs


def _pool_attrs(node: Node, x) -> dict[str, Any]:
    k = tuple(node.attr("kernel_shape"))
    spatial_rank(node, x, k)
    attrs = window_attrs(node, x, k)
    attrs.update(kernel_shape=k, ceil_mode=node.attr("ceil_mode", 0))
    return attrs


@converter("MaxPool")
def max_pool(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    want_indices = len(node.outputs) > 1 and bool(node.outputs[1])
    outs = ctx.op("max_pool", x, n_results=2 if want_indices else 1, with_indices=int(want_indices),
                  storage_order=node.attr("storage_order", 0), **_pool_attrs(node, x))
    return outs


@converter("AveragePool")
def avg_pool(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return ctx.op("avg_pool", x, count_include_pad=node.attr("count_include_pad", 0), **_pool_attrs(node, x))


@converter("LpPool")
def lp_pool(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    p = node.attr("p", 2)
    if p != int(p):
        raise node.unsupported(f"only integral p is supported, got {p}")
    return ctx.op("lp_pool", x, p=int(p), **_pool_attrs(node, x))


@converter("MaxUnpool")
def max_unpool(ctx: ConvertContext, node: Node):
    x, indices = node.inputs[0], node.inputs[1]
    k = tuple(node.attr("kernel_shape"))
    n = len(k)
    strides = node.attr("strides", ()) or (1,) * n
    pads = node.attr("pads", ()) or (0,) * (2 * n)
    return ctx.op_dynamic("max_unpool", [x, indices], {"output_shape": node.input(2)}, kernel_shape=k,
                          strides=strides, pads=pads)


def _spatial_axes(node: Node, x) -> tuple[int, ...]:
    if x.shape is None:
        raise node.unsupported("the input rank must be known")
    return tuple(range(2, len(x.shape)))


@converter("GlobalAveragePool")
def global_avg_pool(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return ctx.op("reduce_mean", x, axes=_spatial_axes(node, x), keepdims=1)


@converter("GlobalMaxPool")
def global_max_pool(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return ctx.op("reduce_max", x, axes=_spatial_axes(node, x), keepdims=1)


@converter("GlobalLpPool")
def global_lp_pool(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    p = float(node.attr("p", 2))
    powered = ctx.op("pow", ctx.op("abs", x), ctx.scalar(p, x.dtype))
    total = ctx.op("reduce_sum", powered, axes=_spatial_axes(node, x), keepdims=1)
    return ctx.op("pow", total, ctx.scalar(1.0 / p, x.dtype))

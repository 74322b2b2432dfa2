"""Converters for ATen pooling: max pool (values only; torch's per-plane indices differ from the
IR's), average pool (count_include_pad, ceil_mode), adaptive average and max pools.

An adaptive pool whose output size divides the input is an ordinary pool (kernel = stride =
in/out); output 1 is a reduction; any other size is decomposed into one reduction per output cell
over torch's windows [floor(i*in/out), ceil((i+1)*in/out)), concatenated.
"""

from __future__ import annotations

import math

from nnc.ir import Value

from .context import AtenNode, TorchContext
from .registry import aten


def _pool_args(ctx: TorchContext, node: AtenNode, n: int) -> dict:
    k = ctx.ints(node.arg("kernel_size"))
    k = k * n if len(k) == 1 else k
    stride = ctx.ints(node.arg("stride", [])) or k
    stride = stride * n if len(stride) == 1 else stride
    pad = ctx.ints(node.arg("padding", 0))
    pad = pad * n if len(pad) == 1 else pad
    return dict(kernel_shape=tuple(k), strides=tuple(stride), pads=tuple(pad) * 2,
                ceil_mode=int(bool(node.arg("ceil_mode", False))))


def _spatial(node: AtenNode, x: Value, name: str) -> int:
    n = int(name[-2]) if name[-2].isdigit() else 2
    if x.type.rank == n + 1:
        raise node.unsupported("unbatched input (no batch dim): add one with unsqueeze(0)")
    return n


@aten("aten.max_pool2d_with_indices.default", "aten.max_pool1d_with_indices.default",
      "aten.max_pool3d_with_indices.default", "aten.max_pool2d.default", "aten.max_pool1d.default",
      "aten.max_pool3d.default")
def max_pool(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    n = _spatial(node, x, node.target.split(".")[1].replace("_with_indices", ""))
    dil = ctx.ints(node.arg("dilation", 1))
    attrs = _pool_args(ctx, node, n)
    y = ctx.op1("max_pool", x, dilations=tuple(dil * n if len(dil) == 1 else dil), **attrs)
    return [y, None] if "with_indices" in node.target else y


@aten("aten.avg_pool2d.default", "aten.avg_pool1d.default", "aten.avg_pool3d.default")
def avg_pool(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    n = _spatial(node, x, node.target.split(".")[1])
    if node.arg("divisor_override") is not None:
        raise node.unsupported("divisor_override is not supported")
    attrs = _pool_args(ctx, node, n)
    include = int(bool(node.arg("count_include_pad", True)))
    if include and attrs["ceil_mode"] and any(attrs["pads"]):
        # torch divides windows that overhang the padded input by the in-bounds (padded) size,
        # which no IR attribute says; only the common exact cases are taken
        raise node.unsupported("ceil_mode with padding and count_include_pad=True")
    return ctx.op("avg_pool", x, count_include_pad=include, **attrs)


@aten("aten._adaptive_avg_pool2d.default", "aten.adaptive_avg_pool2d.default", "aten._adaptive_avg_pool1d.default",
      "aten.adaptive_avg_pool1d.default", "aten._adaptive_avg_pool3d.default", "aten.adaptive_max_pool2d.default",
      "aten.adaptive_max_pool1d.default", "aten.adaptive_max_pool3d.default")
def adaptive_pool(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    is_max = "max" in node.target
    out = ctx.ints(node.positional[1])
    rank = x.type.rank
    n = len(out)
    spatial = x.shape[rank - n:]
    if not all(isinstance(d, int) for d in spatial):
        raise node.unsupported("adaptive pooling needs static spatial dims")
    y = _adaptive(ctx, node, x, list(spatial), out, is_max)
    return [y, None] if is_max else y


def _adaptive(ctx: TorchContext, node: AtenNode, x: Value, spatial: list[int], out: list[int], is_max: bool) -> Value:
    rank, n = x.type.rank, len(out)
    axes = tuple(range(rank - n, rank))
    reduce = "reduce_max" if is_max else "reduce_mean"
    if all(o == 1 for o in out):
        return ctx.op(reduce, x, axes=axes, keepdims=1)
    if all(i % o == 0 for i, o in zip(spatial, out)):
        k = tuple(i // o for i, o in zip(spatial, out))
        if is_max:
            return ctx.op1("max_pool", x, kernel_shape=k, strides=k)
        return ctx.op("avg_pool", x, kernel_shape=k, strides=k)
    # general case: pool axis by axis (the windows are separable for both mean and max)
    for ax, i, o in zip(axes, spatial, out):
        cells = []
        for j in range(o):
            lo, hi = (j * i) // o, math.ceil((j + 1) * i / o)
            part = ctx.op("slice", x, starts=(lo,), ends=(hi,), axes=(ax,), steps=(1,))
            cells.append(ctx.op(reduce, part, axes=(ax,), keepdims=1))
        x = ctx.op("concat", *cells, axis=ax) if len(cells) > 1 else cells[0]
    return x

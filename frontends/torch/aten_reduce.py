"""Converters for ATen reductions: sum, mean, prod, amax/amin, max/min (with indices), argmax/argmin,
var/std (with Bessel's correction), any/all, logsumexp, cumsum; plus topk.

An empty or absent ``dim`` list means every axis, as in torch.
"""

from __future__ import annotations

from nnc.ir import DType, Value

from .context import AtenNode, TorchContext
from .registry import aten


def _axes(ctx: TorchContext, node: AtenNode, x: Value, dim) -> tuple[int, ...]:
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return tuple(range(x.type.rank))
    return tuple(sorted(ctx.axis(d, x.type.rank) for d in ctx.ints(dim)))


_SIMPLE = {"sum": "reduce_sum", "mean": "reduce_mean", "prod": "reduce_prod", "amax": "reduce_max",
           "amin": "reduce_min"}


@aten("aten.sum.dim_IntList", "aten.sum.default", "aten.mean.dim", "aten.mean.default", "aten.prod.dim_int",
      "aten.prod.default", "aten.amax.default", "aten.amin.default", "aten.max.default", "aten.min.default")
def reduce(ctx: TorchContext, node: AtenNode):
    packet = node.target.split(".")[1]
    packet = {"max": "amax", "min": "amin"}.get(packet, packet)
    x = node.positional[0]
    out = node.out_dtype()
    x = ctx.cast(x, out)
    dim = node.args.get("dim")
    if x.type.rank == 0:
        return ctx.op("identity", x)
    return ctx.op(_SIMPLE[packet], x, axes=_axes(ctx, node, x, dim), keepdims=int(bool(node.arg("keepdim", False))))


@aten("aten.max.dim", "aten.min.dim")
def max_dim(ctx: TorchContext, node: AtenNode):
    x, dim = node.positional[:2]
    keep = int(bool(node.arg("keepdim", False)))
    axis = ctx.axis(int(dim), x.type.rank)
    is_max = node.target.startswith("aten.max")
    values = ctx.op("reduce_max" if is_max else "reduce_min", x, axes=(axis,), keepdims=keep)
    # torch returns the first index of the extreme value, as arg_max does by default
    idx = ctx.op("argmax" if is_max else "argmin", x, axis=axis, keepdims=keep)
    return [values, idx]


@aten("aten.argmax.default", "aten.argmin.default")
def argmax(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    dim = node.args.get("dim")
    keep = int(bool(node.arg("keepdim", False)))
    opname = "argmax" if "argmax" in node.target else "argmin"
    if dim is None:
        flat = ctx.op("reshape", x, shape=(-1,))
        y = ctx.op(opname, flat, axis=0, keepdims=0)
        return ctx.op("reshape", y, shape=(1,) * x.type.rank) if keep else y
    return ctx.op(opname, x, axis=ctx.axis(int(dim), x.type.rank), keepdims=keep)


@aten("aten.var.correction", "aten.var.dim", "aten.var.default", "aten.std.correction", "aten.std.dim",
      "aten.std.default", "aten.var_mean.correction")
def var(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    axes = _axes(ctx, node, x, node.args.get("dim"))
    keep = int(bool(node.arg("keepdim", False)))
    if "correction" in node.args:
        correction = node.args.get("correction")
        correction = 1 if correction is None else float(correction)
    else:
        correction = 1.0 if node.arg("unbiased", True) else 0.0
    mean = ctx.op("reduce_mean", x, axes=axes, keepdims=1)
    d = ctx.op("sub", x, mean)
    ss = ctx.op("reduce_sum", ctx.op("mul", d, d), axes=axes, keepdims=keep)
    if any(not isinstance(x.shape[a], int) for a in axes):
        raise node.unsupported("variance over a symbolic dim")
    count = 1
    for a in axes:
        count *= x.shape[a]
    v = ctx.op("div", ss, ctx.scalar(max(count - correction, 0), x.dtype))
    if node.target.startswith("aten.std"):
        return ctx.op("sqrt", v)
    if node.target.startswith("aten.var_mean"):
        return [v, mean if keep else ctx.op("reduce_mean", x, axes=axes, keepdims=0)]
    return v


@aten("aten.any.dim", "aten.any.dims", "aten.any.default", "aten.all.dim", "aten.all.dims", "aten.all.default")
def any_all(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    axes = _axes(ctx, node, x, node.args.get("dim"))
    keep = int(bool(node.arg("keepdim", False)))
    as_int = ctx.cast(ctx.cast(x, DType.bool), DType.i32)
    r = ctx.op("reduce_max" if node.target.startswith("aten.any") else "reduce_min", as_int, axes=axes, keepdims=keep)
    return ctx.cast(r, DType.bool)


@aten("aten.logsumexp.default")
def logsumexp(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    axes = _axes(ctx, node, x, node.args.get("dim"))
    keep = int(bool(node.arg("keepdim", False)))
    m = ctx.op("reduce_max", x, axes=axes, keepdims=1)
    s = ctx.op("reduce_sum", ctx.op("exp", ctx.op("sub", x, m)), axes=axes, keepdims=keep)
    m2 = m if keep else ctx.op("reduce_max", x, axes=axes, keepdims=0)
    return ctx.op("add", ctx.op("log", s), m2)


@aten("aten.cumsum.default", "aten.cumprod.default")
def cumsum(ctx: TorchContext, node: AtenNode):
    x = ctx.cast(node.positional[0], node.out_dtype())
    dim = ctx.axis(int(node.positional[1]), max(x.type.rank, 1))
    return ctx.op(node.target.split(".")[1], x, axis=dim)


@aten("aten.topk.default")
def topk(ctx: TorchContext, node: AtenNode):
    x, k = node.positional[:2]
    dim = ctx.axis(int(node.arg("dim", -1)), x.type.rank)
    return ctx.op_dynamic("topk", [x], {"k": k}, axis=dim, largest=int(bool(node.arg("largest", True))),
                          sorted=1)

"""Converters for ONNX softmax-like and normalization ops: Softmax, LogSoftmax, Hardmax,
LayerNormalization, RMSNormalization, BatchNormalization, InstanceNormalization,
GroupNormalization, LRN, LpNormalization, MeanVarianceNormalization.

The important ones become one IR op each (softmax, layer_norm, batch_norm, batch_norm_train for
training mode, group_norm, ...); Hardmax, LpNormalization and MeanVarianceNormalization are
composed from reductions and elementwise ops. Before opset 13, Softmax/LogSoftmax/Hardmax work on
the input flattened to 2-D at ``axis`` (default 1), i.e. over every axis from ``axis`` on.
"""

from __future__ import annotations

import math

import numpy as np

from nnc.ir import DType, Value

from ..context import ConvertContext, Node, dtype_from_onnx
from ..registry import converter
from .reduce import reduce


def _axis(node: Node, x: Value, default: int) -> int:
    axis = node.attr("axis", default)
    rank = x.type.rank
    if rank is None:
        if axis < 0:
            raise node.unsupported("a negative axis needs an input of known rank")
        return axis
    if not -rank <= axis < max(rank, 1):
        raise node.unsupported(f"axis {axis} is out of range for rank {rank}")
    return axis % rank if rank else 0


def _trailing_axes(node: Node, x: Value) -> tuple[int, tuple[int, ...]]:
    """Pre-13 form: (axis, the axes [axis, rank) that the 2-D flattening puts in one row)."""
    axis = _axis(node, x, 1)
    if x.type.rank is None:
        raise node.unsupported("the pre-opset-13 form needs an input of known rank")
    return axis, tuple(range(axis, x.type.rank))


# -- softmax family --------------------------------------------------------------------------------

@converter("Softmax", "LogSoftmax")
def softmax_v1(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    axis, axes = _trailing_axes(node, x)
    log = node.op_type == "LogSoftmax"
    if len(axes) <= 1:
        return ctx.op("log_softmax" if log else "softmax", x, axis=axis)
    # softmax over several trailing axes at once, written with multi-axis reductions
    m = reduce(ctx, "max", x, axes, 1)
    shifted = ctx.op("sub", x, ctx.op("where", ctx.op("isinf", m), ctx.scalar(0, x.dtype), m))
    total = reduce(ctx, "sum", ctx.op("exp", shifted), axes, 1)
    if log:
        return ctx.op("sub", shifted, ctx.op("log", total))
    return ctx.op("div", ctx.op("exp", shifted), total)


@converter("Softmax", "LogSoftmax", since=13)
def softmax(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return ctx.op("log_softmax" if node.op_type == "LogSoftmax" else "softmax", x, axis=_axis(node, x, -1))


def _hardmax(ctx: ConvertContext, x: Value, axis: int) -> Value:
    """1 at the first maximum along ``axis``, 0 elsewhere: the positions equal to the max whose
    running count of maxima is 1."""
    is_max = ctx.op("equal", x, reduce(ctx, "max", x, (axis,), 1))
    count = ctx.op_dynamic("cumsum", [ctx.op("cast", is_max, to=DType.i32)], {"axis": axis})
    first = ctx.op("and", is_max, ctx.op("equal", count, ctx.scalar(1, DType.i32)))
    return ctx.op("cast", first, to=x.dtype)


@converter("Hardmax")
def hardmax_v1(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    axis, axes = _trailing_axes(node, x)
    if len(axes) <= 1:
        return _hardmax(ctx, x, axis)
    shape = x.shape
    tail = shape[axis:]
    if not all(isinstance(d, int) for d in tail):
        raise node.unsupported(f"flattening {x.type} to 2-D at axis {axis} needs static trailing dims")
    flat = ctx.op("reshape", x, shape=(-1, math.prod(tail)))
    y = _hardmax(ctx, flat, 1)
    back = ctx.op("shape", x) if not x.type.is_static else tuple(shape)
    return ctx.op_dynamic("reshape", [y], {"shape": back})


@converter("Hardmax", since=13)
def hardmax(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return _hardmax(ctx, x, _axis(node, x, -1))


# -- layer / rms norm ------------------------------------------------------------------------------

def _stash(node: Node) -> DType:
    return dtype_from_onnx(node.attr("stash_type", 1), f"{node.describe()}: stash_type: ")


@converter("LayerNormalization")
def layer_norm(ctx: ConvertContext, node: Node):
    x, scale, bias = node.inputs[0], node.inputs[1], node.input(2)
    operands = [x, scale] + ([bias] if bias is not None else [])
    return ctx.op("layer_norm", *operands, axis=node.attr("axis", -1), epsilon=node.attr("epsilon", 1e-5),
                  stash_type=_stash(node))


@converter("RMSNormalization")
def rms_norm(ctx: ConvertContext, node: Node):
    x, scale = node.inputs[0], node.inputs[1]
    return ctx.op("rms_norm", x, scale, axis=node.attr("axis", -1), epsilon=node.attr("epsilon", 1e-5),
                  stash_type=_stash(node))


# -- batch norm ------------------------------------------------------------------------------------

@converter("BatchNormalization")
def batch_norm(ctx: ConvertContext, node: Node):
    x, scale, bias, mean, var = node.inputs[:5]
    eps = node.attr("epsilon", 1e-5)
    training = node.attr("training_mode", 0) if node.opset >= 14 else int(len([o for o in node.outputs if o]) > 1)
    if node.opset < 6 and not node.attr("is_test", 0):
        training = 1
    if training:
        if node.opset < 14:
            raise node.unsupported("training-mode BatchNormalization is supported from opset 14 (before, "
                                   "its saved mean/variance outputs have no single meaning)")
        return _batch_norm_training(ctx, node, x, scale, bias, mean, var, eps)
    if node.opset < 9 and not node.attr("spatial", 1):
        # per-activation statistics: parameters are shaped [C, D1, ...] and broadcast over N
        p = [ctx.cast(v, x.dtype) for v in (scale, bias, mean, var)]
        std = ctx.op("sqrt", ctx.op("add", p[3], ctx.scalar(eps, x.dtype)))
        return ctx.op("add", ctx.op("mul", ctx.op("div", ctx.op("sub", x, p[2]), std), p[0]), p[1])
    return ctx.op("batch_norm", x, scale, bias, mean, var, epsilon=eps)


def _batch_norm_training(ctx: ConvertContext, node: Node, x: Value, scale: Value, bias: Value,
                         mean: Value, var: Value, eps: float) -> list[Value]:
    """One ``batch_norm_train`` op: batch statistics, and the running statistics updated as
    running * momentum + batch * (1 - momentum) (ONNX's momentum is 1 - torch's). ONNX specifies
    the population variance for the update; a model exported by PyTorch means torch's unbiased one."""
    if x.type.rank is None:
        raise node.unsupported("training-mode BatchNormalization needs an input of known rank")
    unbiased = int(ctx.module.metadata.get("producer") == "pytorch")
    y, run_mean, run_var, _, _ = ctx.op("batch_norm_train", x, scale, bias, mean, var, epsilon=eps,
                                        momentum=1 - node.attr("momentum", 0.9), unbiased=unbiased)
    return [y, run_mean, run_var]


# -- instance / group norm -------------------------------------------------------------------------

def _channels(node: Node, x: Value, scale: Value) -> int:
    for d in (scale.shape[0] if scale.type.rank == 1 else None, x.shape[1] if x.type.rank else None):
        if isinstance(d, int):
            return d
    raise node.unsupported("the number of channels must be static")


@converter("InstanceNormalization")
def instance_norm(ctx: ConvertContext, node: Node):
    x, scale, bias = node.inputs[:3]
    return ctx.op("group_norm", x, scale, bias, num_groups=_channels(node, x, scale),
                  epsilon=node.attr("epsilon", 1e-5), stash_type=DType.f64 if x.dtype == DType.f64 else DType.f32)


@converter("GroupNormalization")
def group_norm_18(ctx: ConvertContext, node: Node):
    """Opset 18: scale and bias hold one value per group; repeat them per channel."""
    x, scale, bias = node.inputs[:3]
    groups = node.attr("num_groups")
    if x.type.rank is None or not isinstance(x.shape[1], int):
        raise node.unsupported("the number of channels must be static")
    per = x.shape[1] // groups
    params = []
    for v in (scale, bias):
        a = ctx.const_value(v)
        if a is None:
            raise node.unsupported("opset-18 per-group scale and bias must be constants")
        params.append(ctx.const(np.repeat(a, per)))
    return ctx.op("group_norm", x, *params, num_groups=groups, epsilon=node.attr("epsilon", 1e-5))


@converter("GroupNormalization", since=21)
def group_norm(ctx: ConvertContext, node: Node):
    x, scale, bias = node.inputs[:3]
    return ctx.op("group_norm", x, scale, bias, num_groups=node.attr("num_groups"),
                  epsilon=node.attr("epsilon", 1e-5), stash_type=_stash(node))


# -- LRN, Lp, MVN ----------------------------------------------------------------------------------

@converter("LRN")
def lrn(ctx: ConvertContext, node: Node):
    return ctx.op("lrn", node.inputs[0], size=node.attr("size"), alpha=node.attr("alpha", 1e-4),
                  beta=node.attr("beta", 0.75), bias=node.attr("bias", 1.0))


@converter("LpNormalization")
def lp_norm(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    axis, p = _axis(node, x, -1), node.attr("p", 2)
    if p == 1:
        norm = reduce(ctx, "sum", ctx.op("abs", x), (axis,), 1)
    elif p == 2:
        norm = ctx.op("sqrt", reduce(ctx, "sum", ctx.op("mul", x, x), (axis,), 1))
    else:
        raise node.unsupported(f"p = {p} (ONNX allows 1 or 2)")
    # a zero norm means a zero row, which stays zero (dividing by 1 instead of 0)
    zero = ctx.scalar(0, x.dtype)
    safe = ctx.op("where", ctx.op("equal", norm, zero), ctx.scalar(1, x.dtype), norm)
    return ctx.op("div", x, safe)


@converter("MeanVarianceNormalization")
def mean_variance_norm(ctx: ConvertContext, node: Node):
    """(x - E[x]) / (sqrt(E[x^2] - E[x]^2) + 1e-9), as the ONNX function body computes it."""
    x = node.inputs[0]
    axes = tuple(node.attr("axes", (0, 2, 3)))
    mean = reduce(ctx, "mean", x, axes, 1)
    var = ctx.op("sub", reduce(ctx, "mean", ctx.op("mul", x, x), axes, 1), ctx.op("mul", mean, mean))
    std = ctx.op("add", ctx.op("sqrt", var), ctx.scalar(1e-9, x.dtype))
    return ctx.op("div", ctx.op("sub", x, mean), std)


# -- losses ----------------------------------------------------------------------------------------

def _nll_loss(ctx: ConvertContext, node: Node, logp: Value, target: Value, weight: Value | None) -> Value:
    """-logp[n, target[n, d...], d...] * weight[target], with ignored targets weighing 0, then
    reduced: none, sum, or mean (sum of losses / sum of weights)."""
    reduction = node.attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise node.unsupported(f"reduction {reduction!r} (expected none, sum or mean)")
    ii = node.attr("ignore_index", None)
    valid = None
    if ii is not None:
        valid = ctx.op("not", ctx.op("equal", target, ctx.scalar(ii, target.dtype)))
        # an ignored target may lie outside [0, C): point it at class 0 so the gathers stay in range
        target = ctx.op("where", valid, target, ctx.scalar(0, target.dtype))
    picked = ctx.op("gather_elements", logp, ctx.op("unsqueeze", target, axes=(1,)), axis=1)
    loss = ctx.op("neg", ctx.op("squeeze", picked, axes=(1,)))
    w = None
    if weight is not None:
        w = ctx.op("gather", ctx.cast(weight, logp.dtype), target, axis=0)
        if valid is not None:
            w = ctx.op("where", valid, w, ctx.scalar(0, logp.dtype))
    elif valid is not None:
        w = ctx.op("cast", valid, to=logp.dtype)
    if w is not None:
        loss = ctx.op("mul", loss, w)
    if reduction == "none":
        return loss
    total = reduce(ctx, "sum", loss, None, 0)
    if reduction == "sum":
        return total
    if w is None:
        return reduce(ctx, "mean", loss, None, 0)
    return ctx.op("div", total, reduce(ctx, "sum", w, None, 0))


@converter("NegativeLogLikelihoodLoss")
def nll_loss(ctx: ConvertContext, node: Node):
    return _nll_loss(ctx, node, node.inputs[0], node.inputs[1], node.input(2))


@converter("SoftmaxCrossEntropyLoss")
def softmax_cross_entropy(ctx: ConvertContext, node: Node):
    scores, labels, weight = node.inputs[0], node.inputs[1], node.input(2)
    logp = ctx.op("log_softmax", scores, axis=1)
    return [_nll_loss(ctx, node, logp, labels, weight), logp]

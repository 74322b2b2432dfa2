"""Converters for ATen normalizations: batch norm (inference form), layer norm, group norm.

Each becomes one IR op (``batch_norm``, ``layer_norm``, ``group_norm``); an absent affine weight or
bias becomes a constant of ones or zeros. A module exported in training mode gives the functional
training form (``_native_batch_norm_legit_functional``, training=True): that becomes
``batch_norm_train`` (batch statistics, and the updated running statistics as results, which the
training step writes back to the buffers; torch's outputs are (out, mean, rstd, new running mean,
new running var), the IR's (out, new running mean, new running var, mean, inv std)).
"""

from __future__ import annotations

import numpy as np

from nnc.ir import Value

from .context import AtenNode, TorchContext
from .registry import aten


def _param(ctx: TorchContext, v: Value | None, shape: tuple, fill: float, like: Value, what: str) -> Value:
    if v is not None:
        return v
    return ctx.const(np.full(shape, fill, like.dtype.numpy), name=ctx._name(what))


def _channels(node: AtenNode, x: Value) -> int:
    c = x.shape[1] if x.shape is not None and len(x.shape) > 1 else None
    if not isinstance(c, int):
        raise node.unsupported("the channel dim must be static")
    return c


def _train_form(ctx: TorchContext, node: AtenNode, x: Value, w: Value, b: Value, mean: Value | None,
                var: Value | None) -> list:
    if mean is None or var is None:
        raise node.unsupported("batch norm with batch statistics and no running statistics "
                               "(track_running_stats=False)")
    momentum = node.arg("momentum", 0.1)
    if momentum is None:
        raise node.unsupported("cumulative moving average (momentum=None)")
    y, rm, rv, bm, inv = ctx.op("batch_norm_train", x, w, b, mean, var, epsilon=float(node.arg("eps", 1e-5)),
                                momentum=float(momentum), unbiased=1)
    if node.target == "aten.batch_norm.default":
        return y
    outs = [y, bm, inv]
    return outs + [rm, rv] if node.target.endswith("functional.default") else outs


@aten("aten._native_batch_norm_legit_no_training.default", "aten._native_batch_norm_legit.default",
      "aten.native_batch_norm.default", "aten._native_batch_norm_legit_functional.default",
      "aten.batch_norm.default")
def batch_norm(ctx: TorchContext, node: AtenNode):
    x, w, b, mean, var = node.positional[:5]
    c = _channels(node, x)
    w = _param(ctx, w, (c,), 1.0, x, "weight")
    b = _param(ctx, b, (c,), 0.0, x, "bias")
    if node.target != "aten._native_batch_norm_legit_no_training.default" and node.arg("training", False):
        return _train_form(ctx, node, x, w, b, mean, var)
    y = ctx.op("batch_norm", x, w, b, mean, var, epsilon=float(node.arg("eps", 1e-5)))
    if node.target == "aten.batch_norm.default":
        return y
    return [y, None, None] + ([None, None] if node.target.endswith("functional.default") else [])


@aten("aten.native_layer_norm.default", "aten.layer_norm.default")
def layer_norm(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    shape = tuple(ctx.ints(node.arg("normalized_shape")))
    w, b = node.args.get("weight"), node.args.get("bias")
    w = _param(ctx, w, shape, 1.0, x, "weight")
    y = ctx.op1("layer_norm", x, w, *([b] if b is not None else []), axis=-len(shape),
               epsilon=float(node.arg("eps", 1e-5)))
    return y if node.target == "aten.layer_norm.default" else [y, None, None]


@aten("aten.group_norm.default", "aten.native_group_norm.default")
def group_norm(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    c = _channels(node, x)
    if node.target == "aten.group_norm.default":
        groups = int(node.arg("num_groups"))
    else:
        groups = int(node.arg("group"))
    w = _param(ctx, node.args.get("weight"), (c,), 1.0, x, "weight")
    b = _param(ctx, node.args.get("bias"), (c,), 0.0, x, "bias")
    y = ctx.op("group_norm", x, w, b, num_groups=groups, epsilon=float(node.arg("eps", 1e-5)))
    return y if node.target == "aten.group_norm.default" else [y, None, None]

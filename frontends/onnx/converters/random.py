"""Converters for ONNX random ops: RandomUniform/Normal(Like), Bernoulli and Dropout.

Inference Dropout (no training_mode, training_mode false, or ratio 0) is the identity and an all-true
mask; only training-mode Dropout becomes the random ``dropout`` op.
"""

from __future__ import annotations

import numpy as np

from nnc.ir import DType, Value

from ..context import ConvertContext, Node, dtype_from_onnx
from ..registry import converter
from .shape import shape_of


def _dtype(node: Node, default: DType) -> DType:
    if "dtype" not in node.attrs:
        return default
    return dtype_from_onnx(node.attr("dtype"), f"{node.describe()}: ")


def _sample(ctx: ConvertContext, node: Node, opname: str, shape, dtype: DType, a: str, b: str,
            da: float, db: float):
    params = {a: node.attr(a, da), b: node.attr(b, db), "seed": node.attr("seed", None)}
    return ctx.op_dynamic(opname, [], {"shape": shape}, dtype=dtype, **params)


@converter("RandomUniform")
def random_uniform(ctx: ConvertContext, node: Node):
    return _sample(ctx, node, "random_uniform", node.attr("shape"), _dtype(node, DType.f32), "low", "high", 0.0, 1.0)


@converter("RandomNormal")
def random_normal(ctx: ConvertContext, node: Node):
    return _sample(ctx, node, "random_normal", node.attr("shape"), _dtype(node, DType.f32), "mean", "scale", 0.0, 1.0)


def _like_shape(ctx: ConvertContext, x: Value):
    return tuple(x.shape) if x.type.is_static else shape_of(ctx, x)


@converter("RandomUniformLike")
def random_uniform_like(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return _sample(ctx, node, "random_uniform", _like_shape(ctx, x), _dtype(node, x.dtype), "low", "high", 0.0, 1.0)


@converter("RandomNormalLike")
def random_normal_like(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return _sample(ctx, node, "random_normal", _like_shape(ctx, x), _dtype(node, x.dtype), "mean", "scale", 0.0, 1.0)


@converter("Bernoulli")
def bernoulli(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return ctx.op("bernoulli", x, dtype=_dtype(node, x.dtype), seed=node.attr("seed", None))


def _all_kept(ctx: ConvertContext, node: Node, x: Value) -> Value:
    mask = ctx.op_dynamic("expand", [ctx.const(np.array(True))], {"shape": shape_of(ctx, x)})
    return mask if node.opset >= 10 else ctx.cast(mask, x.dtype)  # before opset 10 the mask had x's type


@converter("Dropout")
def dropout(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    ratio, training = node.input(1), node.input(2)
    if node.opset < 12:
        ratio, training = node.attr("ratio", 0.5), None
    wants_mask = len(node.outputs) > 1 and bool(node.outputs[1])
    mode = ctx.const_value(training) if training is not None else np.array(False)
    rv = ctx.const_value(ratio) if isinstance(ratio, Value) else ratio
    if (mode is not None and not mode.reshape(-1)[0]) or \
            (rv is not None and float(np.asarray(rv).reshape(-1)[0]) == 0.0):
        return [x, _all_kept(ctx, node, x) if wants_mask else None]
    if ratio is None:
        ratio = 0.5
    if mode is not None:
        training = None  # a constant true: the op's default
    out, mask = ctx.op_dynamic("dropout", [x], {"ratio": ratio, "training": training}, seed=node.attr("seed", None))
    return [out, mask if wants_mask else None]

"""Converters for ONNX elementwise ops: math, activations, arithmetic, comparisons, logic, Cast.

Rare activations are decomposed into core IR ops here (Selu, Celu, Softsign, Mish, PRelu, ...).
"""

from __future__ import annotations

import numpy as np

from ..context import ConvertContext, Node, dtype_from_onnx
from ..registry import converter

_UNARY = {
    "Neg": "neg", "Abs": "abs", "Sign": "sign", "Exp": "exp", "Log": "log", "Sqrt": "sqrt",
    "Reciprocal": "reciprocal", "Sin": "sin", "Cos": "cos", "Tan": "tan", "Asin": "asin", "Acos": "acos",
    "Atan": "atan", "Sinh": "sinh", "Cosh": "cosh", "Tanh": "tanh", "Asinh": "asinh", "Acosh": "acosh",
    "Atanh": "atanh", "Erf": "erf", "Floor": "floor", "Ceil": "ceil", "Round": "round", "Sigmoid": "sigmoid",
    "Relu": "relu", "Softplus": "softplus", "HardSwish": "hard_swish", "Not": "not", "BitwiseNot": "bitwise_not",
    "IsNaN": "isnan",
}
_BINARY = {
    "Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "And": "and", "Or": "or", "Xor": "xor",
    "Equal": "equal", "Less": "less", "LessOrEqual": "less_equal", "Greater": "greater",
    "GreaterOrEqual": "greater_equal", "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or",
    "BitwiseXor": "bitwise_xor",
}


@converter(*_UNARY)
def unary(ctx: ConvertContext, node: Node):
    return ctx.op(_UNARY[node.op_type], node.inputs[0])


@converter(*_BINARY)
def binary(ctx: ConvertContext, node: Node):
    a, b = node.inputs[0], node.inputs[1]
    if node.opset < 7 and node.attr("broadcast", 0) and node.attr("axis", None) is not None:
        b = _legacy_broadcast(ctx, a, b, node.attr("axis"))
    return ctx.op(_BINARY[node.op_type], a, b)


def _legacy_broadcast(ctx: ConvertContext, a, b, axis: int):
    """Opset < 7 broadcasting aligns ``b`` at ``axis`` of ``a``: append trailing 1-dims."""
    ra, rb = a.type.rank, b.type.rank
    axis = axis % ra
    trailing = ra - axis - rb
    if trailing > 0:
        b = ctx.op("reshape", b, shape=tuple(b.shape) + (1,) * trailing)
    return b


@converter("Pow")
def pow_(ctx: ConvertContext, node: Node):
    x, y = node.inputs
    return ctx.op("pow", x, ctx.cast(y, x.dtype))


@converter("Mod")
def mod(ctx: ConvertContext, node: Node):
    return ctx.op("mod", node.inputs[0], node.inputs[1], fmod=node.attr("fmod", 0))


@converter("BitShift")
def bitshift(ctx: ConvertContext, node: Node):
    opname = "shift_left" if node.attr("direction") == "LEFT" else "shift_right"
    return ctx.op(opname, node.inputs[0], node.inputs[1])


@converter("Max", "Min", "Sum", "Mean")
def variadic(ctx: ConvertContext, node: Node):
    opname = {"Max": "max", "Min": "min", "Sum": "add", "Mean": "add"}[node.op_type]
    xs = [v for v in node.inputs if v is not None]
    acc = xs[0]
    for v in xs[1:]:
        acc = ctx.op(opname, acc, v)
    if node.op_type == "Mean":
        acc = ctx.op("div", acc, ctx.scalar(len(xs), acc.dtype))
    elif len(xs) == 1:
        acc = ctx.op("identity", acc)
    return acc


@converter("IsInf")
def isinf(ctx: ConvertContext, node: Node):
    return ctx.op("isinf", node.inputs[0], detect_positive=node.attr("detect_positive", 1),
                  detect_negative=node.attr("detect_negative", 1))


@converter("LeakyRelu")
def leaky_relu(ctx: ConvertContext, node: Node):
    return ctx.op("leaky_relu", node.inputs[0], alpha=node.attr("alpha", 0.01))


@converter("Elu")
def elu(ctx: ConvertContext, node: Node):
    return ctx.op("elu", node.inputs[0], alpha=node.attr("alpha", 1.0))


@converter("HardSigmoid")
def hard_sigmoid(ctx: ConvertContext, node: Node):
    return ctx.op("hard_sigmoid", node.inputs[0], alpha=node.attr("alpha", 0.2), beta=node.attr("beta", 0.5))


@converter("Gelu", since=20)
def gelu(ctx: ConvertContext, node: Node):
    return ctx.op("gelu", node.inputs[0], approximate=node.attr("approximate", "none"))


@converter("Selu")
def selu(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    alpha, gamma = node.attr("alpha", 1.67326319217681884765625), node.attr("gamma", 1.05070102214813232421875)
    neg = ctx.op("mul", ctx.op("elu", x, alpha=1.0), ctx.scalar(alpha, x.dtype))
    pos = ctx.op("relu", x)
    inner = ctx.op("where", ctx.op("greater", x, ctx.scalar(0, x.dtype)), pos, neg)
    return ctx.op("mul", inner, ctx.scalar(gamma, x.dtype))


@converter("Celu")
def celu(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    alpha = node.attr("alpha", 1.0)
    scaled = ctx.op("div", x, ctx.scalar(alpha, x.dtype))
    neg = ctx.op("mul", ctx.op("elu", scaled, alpha=1.0), ctx.scalar(alpha, x.dtype))
    return ctx.op("where", ctx.op("greater", x, ctx.scalar(0, x.dtype)), x, neg)


@converter("ThresholdedRelu")
def thresholded_relu(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    keep = ctx.op("greater", x, ctx.scalar(node.attr("alpha", 1.0), x.dtype))
    return ctx.op("where", keep, x, ctx.scalar(0, x.dtype))


@converter("Softsign")
def softsign(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return ctx.op("div", x, ctx.op("add", ctx.op("abs", x), ctx.scalar(1, x.dtype)))


@converter("Mish")
def mish(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    return ctx.op("mul", x, ctx.op("tanh", ctx.op("softplus", x)))


@converter("Swish")
def swish(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    alpha = node.attr("alpha", 1.0)
    z = x if alpha == 1.0 else ctx.op("mul", x, ctx.scalar(alpha, x.dtype))
    return ctx.op("mul", x, ctx.op("sigmoid", z))


@converter("Shrink")
def shrink(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    lambd, bias = node.attr("lambd", 0.5), node.attr("bias", 0.0)
    lo = ctx.op("less", x, ctx.scalar(-lambd, x.dtype))
    hi = ctx.op("greater", x, ctx.scalar(lambd, x.dtype))
    zero = ctx.scalar(0, x.dtype)
    return ctx.op("where", lo, ctx.op("add", x, ctx.scalar(bias, x.dtype)),
                  ctx.op("where", hi, ctx.op("sub", x, ctx.scalar(bias, x.dtype)), zero))


@converter("PRelu")
def prelu(ctx: ConvertContext, node: Node):
    x, slope = node.inputs
    if node.opset < 7 and slope.type.rank == 1 and x.type.rank and x.type.rank > 2:
        slope = ctx.op("reshape", slope, shape=(slope.shape[0],) + (1,) * (x.type.rank - 2))
    neg = ctx.op("mul", x, slope)
    return ctx.op("where", ctx.op("less", x, ctx.scalar(0, x.dtype)), neg, x)


@converter("Where")
def where(ctx: ConvertContext, node: Node):
    return ctx.op("where", *node.inputs)


@converter("Clip")
def clip_v1(ctx: ConvertContext, node: Node):
    return ctx.op("clip", node.inputs[0], min=node.attr("min", None), max=node.attr("max", None))


@converter("Clip", since=11)
def clip(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    lo, hi = node.input(1), node.input(2)
    if hi is not None and lo is None:
        info = np.finfo(x.dtype.numpy) if x.dtype.is_float else np.iinfo(x.dtype.numpy)
        lo = ctx.scalar(info.min if not x.dtype.is_float else -np.inf, x.dtype)
    return ctx.op_dynamic("clip", [x], {"min": lo, "max": hi})


@converter("Cast")
def cast(ctx: ConvertContext, node: Node):
    to = dtype_from_onnx(node.attr("to"), f"{node.describe()}: ")
    x = node.inputs[0]
    if x.dtype == to:
        return ctx.op("identity", x)
    return ctx.op("cast", x, to=to)


@converter("CastLike")
def cast_like(ctx: ConvertContext, node: Node):
    x, like = node.inputs
    if x.dtype == like.dtype:
        return ctx.op("identity", x)
    return ctx.op("cast", x, to=like.dtype)


@converter("Identity")
def identity(ctx: ConvertContext, node: Node):
    return node.inputs[0]



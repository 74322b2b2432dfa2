"""Converters for ATen elementwise ops: arithmetic (with torch's type promotion, read from the
node's result dtype), comparisons, logic, ``where``, ``clamp``, math functions and activations.

Activations without an IR op of their own are decomposed here (silu, mish, log1p, softplus with a
beta, rsqrt, ...). Python scalars become 0-d constants of the promoted dtype.
"""

from __future__ import annotations

from nnc.ir import DType, Value

from .context import AtenNode, TorchContext, dtype_from_torch
from .registry import aten

_UNARY = {
    "neg": "neg", "abs": "abs", "sign": "sign", "exp": "exp", "log": "log", "sqrt": "sqrt",
    "reciprocal": "reciprocal", "sin": "sin", "cos": "cos", "tan": "tan", "asin": "asin", "acos": "acos",
    "atan": "atan", "sinh": "sinh", "cosh": "cosh", "tanh": "tanh", "asinh": "asinh", "acosh": "acosh",
    "atanh": "atanh", "erf": "erf", "floor": "floor", "ceil": "ceil", "round": "round", "sigmoid": "sigmoid",
    "relu": "relu", "hardswish": "hard_swish", "logical_not": "not", "bitwise_not": "bitwise_not",
    "isnan": "isnan",
}
_BINARY = {
    "add": "add", "sub": "sub", "mul": "mul", "div": "div", "maximum": "max", "minimum": "min",
    "bitwise_and": "bitwise_and", "bitwise_or": "bitwise_or", "bitwise_xor": "bitwise_xor",
    "pow": "pow",
}
_COMPARE = {"eq": "equal", "lt": "less", "le": "less_equal", "gt": "greater", "ge": "greater_equal"}
_LOGIC = {"logical_and": "and", "logical_or": "or", "logical_xor": "xor"}


def _packet(node: AtenNode) -> str:
    return node.target.split(".")[1]


def _operands(node: AtenNode) -> list:
    return [a for a in node.positional[:2]]


def _promoted(a, b) -> DType:
    """torch's promotion of two operands for comparisons (the result is bool, so read the inputs)."""
    import torch

    def as_torch(v):
        if isinstance(v, Value):
            return getattr(torch, {"f32": "float32", "f64": "float64", "f16": "float16", "bf16": "bfloat16",
                                   "i64": "int64", "i32": "int32", "i16": "int16", "i8": "int8", "u8": "uint8",
                                   "bool": "bool"}.get(str(v.dtype), "float32"))
        return v

    ta, tb = as_torch(a), as_torch(b)
    if isinstance(ta, torch.dtype) and isinstance(tb, torch.dtype):
        return dtype_from_torch(torch.promote_types(ta, tb))
    dt = ta if isinstance(ta, torch.dtype) else tb
    scalar = b if isinstance(ta, torch.dtype) else a
    if isinstance(scalar, float) and not dt.is_floating_point:
        return DType.f32
    return dtype_from_torch(dt)


@aten(*(f"aten.{k}.default" for k in _UNARY))
def unary(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    opname = _UNARY[_packet(node)]
    out = node.out_dtype()
    if opname in ("not", "bitwise_not", "isnan"):
        if opname == "not" or x.dtype == DType.bool:
            return ctx.op("not", ctx.cast(x, DType.bool))
        return ctx.op(opname, x)
    return ctx.op(opname, ctx.cast(x, out))


@aten(*(f"aten.{k}.{o}" for k in ("add", "sub", "mul", "div", "bitwise_and", "bitwise_or", "bitwise_xor")
        for o in ("Tensor", "Scalar")),
      "aten.maximum.default", "aten.minimum.default", "aten.pow.Tensor_Scalar", "aten.pow.Tensor_Tensor",
      "aten.pow.Scalar")
def binary(ctx: TorchContext, node: AtenNode):
    a, b = _operands(node)
    packet = _packet(node)
    out = node.out_dtype()
    if packet == "pow" and not isinstance(b, Value) and float(b) == 2.0 and isinstance(a, Value):
        x = ctx.cast(a, out)
        return ctx.op("mul", x, x)  # x*x is exact where pow may not be, and backends fuse it
    a, b = ctx.tensor(a, out), ctx.tensor(b, out)
    if out == DType.bool and packet.startswith("bitwise_"):
        return ctx.op({"bitwise_and": "and", "bitwise_or": "or", "bitwise_xor": "xor"}[packet], a, b)
    alpha = node.arg("alpha", 1)
    if packet in ("add", "sub") and alpha != 1:
        b = ctx.op("mul", b, ctx.scalar(alpha, out))
    return ctx.op(_BINARY[packet], a, b)


@aten("aten.rsub.Scalar", "aten.rsub.Tensor")
def rsub(ctx: TorchContext, node: AtenNode):
    out = node.out_dtype()
    a, b = ctx.tensor(node.positional[0], out), ctx.tensor(node.positional[1], out)
    alpha = node.arg("alpha", 1)
    if alpha != 1:
        a = ctx.op("mul", a, ctx.scalar(alpha, out))
    return ctx.op("sub", b, a)


@aten("aten.div.Tensor_mode", "aten.div.Scalar_mode")
def div_mode(ctx: TorchContext, node: AtenNode):
    out = node.out_dtype()
    a, b = ctx.tensor(node.positional[0], out), ctx.tensor(node.positional[1], out)
    mode = node.arg("rounding_mode")
    if mode is None:
        return ctx.op("div", a, b)
    if out.is_int:
        if mode == "trunc":
            return ctx.op("div", a, b)  # integer division in the IR truncates, as C does
        fa, fb = ctx.cast(a, DType.f64), ctx.cast(b, DType.f64)
        return ctx.cast(ctx.op("floor", ctx.op("div", fa, fb)), out)
    q = ctx.op("div", a, b)
    if mode == "floor":
        return ctx.op("floor", q)
    return ctx.op("where", ctx.op("less", q, ctx.scalar(0, out)), ctx.op("ceil", q), ctx.op("floor", q))


@aten("aten.remainder.Tensor", "aten.remainder.Scalar", "aten.fmod.Tensor", "aten.fmod.Scalar")
def remainder(ctx: TorchContext, node: AtenNode):
    out = node.out_dtype()
    a, b = ctx.tensor(node.positional[0], out), ctx.tensor(node.positional[1], out)
    return ctx.op("mod", a, b, fmod=int(_packet(node) == "fmod"))


@aten(*(f"aten.{k}.{o}" for k in (*_COMPARE, "ne") for o in ("Tensor", "Scalar")))
def compare(ctx: TorchContext, node: AtenNode):
    a, b = _operands(node)
    dt = _promoted(a, b)
    a, b = ctx.tensor(a, dt), ctx.tensor(b, dt)
    packet = _packet(node)
    if packet == "ne":
        return ctx.op("not", ctx.op("equal", a, b))
    return ctx.op(_COMPARE[packet], a, b)


@aten(*(f"aten.{k}.default" for k in _LOGIC))
def logic(ctx: TorchContext, node: AtenNode):
    a, b = (ctx.cast(v, DType.bool) for v in _operands(node))
    return ctx.op(_LOGIC[_packet(node)], a, b)


@aten("aten.where.self", "aten.where.ScalarSelf", "aten.where.ScalarOther", "aten.where.Scalar")
def where(ctx: TorchContext, node: AtenNode):
    cond, a, b = node.positional[:3]
    out = node.out_dtype()
    return ctx.op("where", ctx.cast(cond, DType.bool), ctx.tensor(a, out), ctx.tensor(b, out))


@aten("aten.clamp.default", "aten.clamp.Tensor", "aten.clamp_min.default", "aten.clamp_max.default",
      "aten.clamp_min.Tensor", "aten.clamp_max.Tensor", "aten.hardtanh.default")
def clamp(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    out = node.out_dtype()
    x = ctx.cast(x, out)
    packet = _packet(node)
    if packet == "hardtanh":
        lo, hi = node.arg("min_val", -1.0), node.arg("max_val", 1.0)
    elif packet == "clamp_min":
        lo, hi = node.positional[1], None
    elif packet == "clamp_max":
        lo, hi = None, node.positional[1]
    else:
        lo, hi = node.args.get("min"), node.args.get("max")
    if not isinstance(lo, Value) and not isinstance(hi, Value) and out.is_float:
        return ctx.op("clip", x, min=None if lo is None else float(lo), max=None if hi is None else float(hi))
    if lo is not None:
        x = ctx.op("max", x, ctx.tensor(lo, out))
    if hi is not None:
        x = ctx.op("min", x, ctx.tensor(hi, out))
    return x


@aten("aten.rsqrt.default")
def rsqrt(ctx: TorchContext, node: AtenNode):
    return ctx.op("reciprocal", ctx.op("sqrt", ctx.cast(node.positional[0], node.out_dtype())))


@aten("aten.log1p.default", "aten.expm1.default", "aten.log2.default", "aten.exp2.default", "aten.trunc.default",
      "aten.square.default", "aten.erfc.default", "aten.log10.default")
def math_decomposed(ctx: TorchContext, node: AtenNode):
    out = node.out_dtype()
    x = ctx.cast(node.positional[0], out)
    one = ctx.scalar(1, out)
    packet = _packet(node)
    if packet == "log1p":
        return ctx.op("log", ctx.op("add", x, one))
    if packet == "expm1":
        return ctx.op("sub", ctx.op("exp", x), one)
    if packet in ("log2", "log10"):
        return ctx.op("div", ctx.op("log", x), ctx.scalar(2.302585092994046 if packet == "log10" else
                                                          0.6931471805599453, out))
    if packet == "exp2":
        return ctx.op("pow", ctx.scalar(2, out), x)
    if packet == "square":
        return ctx.op("mul", x, x)
    if packet == "erfc":
        return ctx.op("sub", one, ctx.op("erf", x))
    return ctx.op("where", ctx.op("less", x, ctx.scalar(0, out)), ctx.op("ceil", x), ctx.op("floor", x))


# -- activations ----------------------------------------------------------------------------------
@aten("aten.gelu.default")
def gelu(ctx: TorchContext, node: AtenNode):
    return ctx.op("gelu", node.positional[0], approximate=node.arg("approximate", "none"))


@aten("aten.silu.default")
def silu(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    return ctx.op("mul", x, ctx.op("sigmoid", x))


@aten("aten.mish.default")
def mish(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    return ctx.op("mul", x, ctx.op("tanh", ctx.op("softplus", x)))


@aten("aten.hardsigmoid.default")
def hardsigmoid(ctx: TorchContext, node: AtenNode):
    return ctx.op("hard_sigmoid", node.positional[0], alpha=1.0 / 6.0, beta=0.5)


@aten("aten.softplus.default")
def softplus(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    beta, threshold = float(node.arg("beta", 1.0)), float(node.arg("threshold", 20.0))
    bx = x if beta == 1.0 else ctx.op("mul", x, ctx.scalar(beta, x.dtype))
    y = ctx.op("softplus", bx)
    if beta != 1.0:
        y = ctx.op("div", y, ctx.scalar(beta, x.dtype))
    # torch returns x itself above the threshold (softplus(x) == x there to float precision)
    return ctx.op("where", ctx.op("greater", bx, ctx.scalar(threshold, x.dtype)), x, y)


@aten("aten.leaky_relu.default")
def leaky_relu(ctx: TorchContext, node: AtenNode):
    return ctx.op("leaky_relu", node.positional[0], alpha=float(node.arg("negative_slope", 0.01)))


@aten("aten.elu.default")
def elu(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    alpha, scale, input_scale = (float(node.arg(k, 1.0)) for k in ("alpha", "scale", "input_scale"))
    if input_scale != 1.0:
        x = ctx.op("mul", x, ctx.scalar(input_scale, x.dtype))
    y = ctx.op("elu", x, alpha=alpha)
    return y if scale == 1.0 else ctx.op("mul", y, ctx.scalar(scale, x.dtype))


@aten("aten.prelu.default", "aten._prelu_kernel.default")
def prelu(ctx: TorchContext, node: AtenNode):
    x, w = node.positional[:2]
    if w.type.rank == 1 and x.type.rank >= 2 and w.shape[0] != 1:
        w = ctx.op("reshape", w, shape=(w.shape[0],) + (1,) * (x.type.rank - 2))
    return ctx.op("where", ctx.op("greater", x, ctx.scalar(0, x.dtype)), x, ctx.op("mul", x, w))


@aten("aten._softmax.default", "aten.softmax.int", "aten._log_softmax.default", "aten.log_softmax.int")
def softmax(ctx: TorchContext, node: AtenNode):
    x = ctx.cast(node.positional[0], node.out_dtype())
    dim = int(node.positional[1])
    return ctx.op("log_softmax" if "log" in node.target else "softmax", x, axis=dim)


@aten("aten._to_copy.default", "aten.to.dtype", "aten._to_dtype.default")
def to_copy(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    if not isinstance(x, Value):
        return ctx.scalar(x, node.out_dtype())
    return ctx.cast(x, node.out_dtype())


@aten("aten.clone.default", "aten.alias.default", "aten.detach.default", "aten.lift_fresh_copy.default",
      "aten.contiguous.default", "aten.copy.default")
def identity(ctx: TorchContext, node: AtenNode):
    # copy(dst, src) writes src into a fresh tensor of dst's shape: src (broadcast) is the result
    x = node.positional[1] if node.target == "aten.copy.default" else node.positional[0]
    if node.target == "aten.copy.default" and tuple(x.shape) != node.out_shape():
        x = ctx.op("expand", x, shape=node.out_shape())
    return ctx.cast(x, node.out_dtype())


@aten("aten.dropout.default", "aten.native_dropout.default", "aten.feature_dropout.default")
def dropout(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    p = float(node.positional[1])
    train = node.positional[2] if len(node.positional) > 2 else node.arg("train", False)
    if node.target == "aten.feature_dropout.default" and train:
        raise node.unsupported("channel-wise dropout (Dropout2d) in training form")
    if not train or p == 0.0:
        out = ctx.op("identity", x)
        mask = ctx.op("equal", x, x)
    else:
        # training form: the IR's random dropout (scales kept values by 1 / (1 - p), as torch does)
        out, mask = ctx.op("dropout", x, ratio=p, training=1)
    return [out, mask] if node.target.startswith("aten.native_dropout") else out

"""Converters for ONNX quantization ops: QuantizeLinear, DequantizeLinear, DynamicQuantizeLinear,
QLinearMatMul, QLinearConv and BitCast.

QLinearMatMul and QLinearConv use the integer form of their definition, which is bit-exact:
i32 matmul/conv of the zero-point-shifted inputs, then a requantize (multiply by
``a_scale * b_scale / y_scale`` in f64 and ``quantize`` with unit scale onto the output zero point).
DynamicQuantizeLinear becomes min/max reductions, scalar arithmetic and a ``quantize``.
MatMulInteger and ConvInteger live with matmul and conv (linalg.py, conv.py).
"""

from __future__ import annotations

from nnc.ir import DType, Value
from nnc.ir.ops.quant import QUANT_TYPES

from ..context import ConvertContext, Node, dtype_from_onnx
from ..registry import converter
from .conv import spatial_rank, window_attrs
from .linalg import shifted_i32


def _out_dtype(node: Node, zero_point: Value | None) -> DType:
    if zero_point is not None:
        dt = zero_point.dtype
    elif node.attr("output_dtype", 0):
        dt = dtype_from_onnx(node.attr("output_dtype"), f"{node.describe()}: ")
    else:
        dt = DType.u8
    if dt not in QUANT_TYPES:
        raise node.unsupported(f"quantizing to {dt} is not supported "
                               f"(supported: {', '.join(sorted(map(str, QUANT_TYPES)))})")
    return dt


@converter("QuantizeLinear", since=10)
def quantize_linear(ctx: ConvertContext, node: Node):
    x, scale, zp = node.input(0), node.input(1), node.input(2)
    precision = node.attr("precision", 0)
    if precision and dtype_from_onnx(precision, f"{node.describe()}: ") != x.dtype:
        raise node.unsupported("a 'precision' different from the input dtype is not supported")
    operands = [x, scale] if zp is None else [x, scale, zp]
    return ctx.op("quantize", *operands, axis=node.attr("axis", 1), block_size=node.attr("block_size", 0),
                  dtype=_out_dtype(node, zp))


@converter("DequantizeLinear", since=10)
def dequantize_linear(ctx: ConvertContext, node: Node):
    x, scale, zp = node.input(0), node.input(1), node.input(2)
    if x.dtype not in QUANT_TYPES:
        raise node.unsupported(f"dequantizing {x.dtype} is not supported")
    operands = [x, scale] if zp is None else [x, scale, zp]
    y = ctx.op("dequantize", *operands, axis=node.attr("axis", 1), block_size=node.attr("block_size", 0))
    if node.attr("output_dtype", 0):
        y = ctx.cast(y, dtype_from_onnx(node.attr("output_dtype"), f"{node.describe()}: "))
    return y


@converter("DynamicQuantizeLinear", since=11)
def dynamic_quantize_linear(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    f = x.dtype
    zero = ctx.scalar(0, f)
    hi = ctx.op("max", ctx.op("reduce_max", x, keepdims=0), zero)
    lo = ctx.op("min", ctx.op("reduce_min", x, keepdims=0), zero)
    span = ctx.op("sub", hi, lo)
    # an all-zero input has no range: scale 1/255 keeps the division finite
    span = ctx.op("where", ctx.op("equal", span, zero), ctx.scalar(1, f), span)
    scale = ctx.op("div", span, ctx.scalar(255, f))
    zp_f = ctx.op("round", ctx.op("clip", ctx.op("neg", ctx.op("div", lo, scale)), min=0.0, max=255.0))
    zp = ctx.cast(zp_f, DType.u8)
    y = ctx.op("quantize", x, scale, zp, dtype=DType.u8)
    return [y, scale, zp]


def _requantize(ctx: ConvertContext, acc: Value, multiplier: Value, y_zp: Value | None, dtype: DType) -> Value:
    """quantize(acc * multiplier) onto ``y_zp``; f64 holds the i32 accumulator exactly."""
    scaled = ctx.op("mul", ctx.cast(acc, DType.f64), ctx.cast(multiplier, DType.f64))
    one = ctx.scalar(1.0, DType.f64)
    operands = [scaled, one] if y_zp is None else [scaled, one, y_zp]
    return ctx.op("quantize", *operands, dtype=dtype)


def _per_axis(ctx: ConvertContext, v: Value, shape: tuple[int, ...]) -> Value:
    """Reshape a per-row/per-channel 1-D parameter so that it broadcasts along ``shape``'s -1."""
    if v.shape is not None and len(v.shape) == 1 and v.shape[0] != 1:
        return ctx.op("reshape", v, shape=shape)
    return v


@converter("QLinearMatMul", since=10)
def qlinear_matmul(ctx: ConvertContext, node: Node):
    a, a_scale, a_zp, b, b_scale, b_zp, y_scale, y_zp = (node.input(i) for i in range(8))
    # a's parameters may be per row, b's per column
    acc = ctx.op("matmul", shifted_i32(ctx, a, a_zp, (-1, 1)), shifted_i32(ctx, b, b_zp))
    m = ctx.op("div", ctx.op("mul", _per_axis(ctx, a_scale, (-1, 1)), b_scale), y_scale)
    return _requantize(ctx, acc, m, y_zp, y_zp.dtype if y_zp is not None else a.dtype)


@converter("QLinearConv", since=10)
def qlinear_conv(ctx: ConvertContext, node: Node):
    x, x_scale, x_zp, w, w_scale, w_zp, y_scale, y_zp, bias = (node.input(i) for i in range(9))
    n = spatial_rank(node, x, node.attr("kernel_shape", None))
    kernel = node.attr("kernel_shape", None) or (w.shape[2:] if w.shape is not None else None)
    if kernel is None or not all(isinstance(k, int) for k in kernel):
        raise node.unsupported("the kernel shape must be static (kernel_shape or a weight of known shape)")
    attrs = window_attrs(node, x, tuple(kernel))
    channel = (-1,) + (1,) * n
    xi = shifted_i32(ctx, x, x_zp)
    wi = shifted_i32(ctx, w, w_zp, (-1,) + (1,) * (n + 1))
    operands = [xi, wi] if bias is None else [xi, wi, ctx.cast(bias, DType.i32)]
    acc = ctx.op("conv", *operands, group=node.attr("group", 1), **attrs)
    m = ctx.op("div", ctx.op("mul", x_scale, _per_axis(ctx, w_scale, channel)), y_scale)
    return _requantize(ctx, acc, m, y_zp, y_zp.dtype if y_zp is not None else x.dtype)


@converter("BitCast")
def bitcast(ctx: ConvertContext, node: Node):
    to = dtype_from_onnx(node.attr("to"), f"{node.describe()}: ")
    x = node.inputs[0]
    if x.dtype.itemsize != to.itemsize:
        raise node.unsupported(f"bitcast between element sizes ({x.dtype} -> {to}) is not supported")
    return ctx.op("bitcast", x, to=to)

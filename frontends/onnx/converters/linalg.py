"""Converters for ONNX linear-algebra ops: MatMul, Gemm, Einsum and MatMulInteger.

MatMulInteger has no IR op of its own: it becomes cast to i32, subtraction of the zero points and an
i32 ``matmul``, which is exactly its definition and what quantization passes later pattern-match.
"""

from __future__ import annotations

from nnc.ir import DType, Value

from ..context import ConvertContext, Node
from ..registry import converter


@converter("MatMul")
def matmul(ctx: ConvertContext, node: Node):
    return ctx.op("matmul", node.inputs[0], node.inputs[1])


@converter("Gemm")
def gemm(ctx: ConvertContext, node: Node):
    # opset < 7 has a ``broadcast`` flag; numpy-style broadcasting of c covers both settings
    a, b, c = node.input(0), node.input(1), node.input(2)
    operands = [a, b] if c is None else [a, b, c]
    return ctx.op("gemm", *operands, alpha=node.attr("alpha", 1.0), beta=node.attr("beta", 1.0),
                  trans_a=node.attr("transA", 0), trans_b=node.attr("transB", 0))


@converter("Einsum")
def einsum(ctx: ConvertContext, node: Node):
    return ctx.op("einsum", *node.inputs, equation=node.attr("equation"))


def shifted_i32(ctx: ConvertContext, x: Value, zero_point: Value | None, axis_shape: tuple | None = None) -> Value:
    """``i32(x) - i32(zero_point)``; a per-channel zero point is reshaped to ``axis_shape`` first so
    that it broadcasts along the right axis."""
    xi = ctx.cast(x, DType.i32)
    if zero_point is None:
        return xi
    zp = ctx.cast(zero_point, DType.i32)
    if axis_shape is not None and zp.shape is not None and len(zp.shape) == 1 and zp.shape[0] != 1:
        zp = ctx.op("reshape", zp, shape=axis_shape)
    return ctx.op("sub", xi, zp)


@converter("MatMulInteger")
def matmul_integer(ctx: ConvertContext, node: Node):
    a, b = node.inputs[0], node.inputs[1]
    # a's zero point may be per row (shape [M]): it must broadcast along a's rows, not columns
    a_i = shifted_i32(ctx, a, node.input(2), (-1, 1))
    b_i = shifted_i32(ctx, b, node.input(3))
    return ctx.op("matmul", a_i, b_i)

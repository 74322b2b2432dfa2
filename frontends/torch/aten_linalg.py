"""Converters for ATen matrix products and convolutions: mm, bmm, matmul, addmm, linear, baddbmm,
and ``convolution`` (1-3 spatial dims, groups, dilation, stride, padding; transposed with output
padding). ``addmm(b, x, w.T)`` and ``linear`` become ``gemm`` when 2-D, else ``matmul`` + ``add``,
so a Linear layer is one op the backends fuse with its bias and activation.
"""

from __future__ import annotations

from nnc.ir import Value

from .context import AtenNode, TorchContext
from .registry import aten


@aten("aten.mm.default", "aten.bmm.default", "aten.matmul.default")
def matmul(ctx: TorchContext, node: AtenNode):
    a, b = node.positional[:2]
    return ctx.op("matmul", a, b)


def _scaled(ctx: TorchContext, v: Value, s: float) -> Value:
    return v if s == 1 else ctx.op("mul", v, ctx.scalar(s, v.dtype))


@aten("aten.addmm.default")
def addmm(ctx: TorchContext, node: AtenNode):
    c, a, b = node.positional[:3]
    beta, alpha = float(node.arg("beta", 1)), float(node.arg("alpha", 1))
    trans_b = 0
    # x @ w.T is the Linear layer: read the weight untransposed (gemm trans_b), no transpose op
    if b.producer is not None and b.producer.opname == "transpose" and b.producer.attrs.get("perm") in ((1, 0), [1, 0]):
        src = b.producer.operands[0]
        if ctx.is_const(src) or src.producer is None:
            b, trans_b = src, 1
    return ctx.op("gemm", a, b, c, alpha=alpha, beta=beta, trans_b=trans_b)


@aten("aten.linear.default")
def linear(ctx: TorchContext, node: AtenNode):
    x, w = node.positional[:2]
    bias = node.args.get("bias")
    if x.type.rank == 2:
        return ctx.op("gemm", x, w, *([bias] if bias is not None else []), trans_b=1)
    y = ctx.op("matmul", x, ctx.op("transpose", w, perm=(1, 0)))
    return y if bias is None else ctx.op("add", y, bias)


@aten("aten.baddbmm.default")
def baddbmm(ctx: TorchContext, node: AtenNode):
    c, a, b = node.positional[:3]
    beta, alpha = float(node.arg("beta", 1)), float(node.arg("alpha", 1))
    y = _scaled(ctx, ctx.op("matmul", a, b), alpha)
    return y if beta == 0 else ctx.op("add", _scaled(ctx, c, beta), y)


@aten("aten.convolution.default")
def convolution(ctx: TorchContext, node: AtenNode):
    x, w, b = node.positional[:3]
    stride, padding, dilation = (ctx.ints(node.arg(k)) for k in ("stride", "padding", "dilation"))
    transposed, output_padding, groups = node.arg("transposed", False), ctx.ints(node.arg("output_padding")), \
        int(node.arg("groups", 1))
    n = w.type.rank - 2
    stride, dilation = _expand(stride, n), _expand(dilation, n)
    padding = _expand(padding, n)
    attrs = dict(strides=tuple(stride), pads=tuple(padding) * 2, dilations=tuple(dilation), group=groups)
    operands = [x, w] + ([b] if b is not None else [])
    if transposed:
        return ctx.op("conv_transpose", *operands, output_padding=tuple(_expand(output_padding, n)), **attrs)
    if any(output_padding):
        raise node.unsupported("output_padding on a non-transposed convolution")
    return ctx.op("conv", *operands, **attrs)


def _expand(v: list[int], n: int) -> list[int]:
    return v * n if len(v) == 1 else v

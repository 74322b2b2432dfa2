"""Converters for ONNX convolutions: Conv, ConvTranspose, ConvInteger, DeformConv and Col2Im.

``auto_pad`` is resolved into explicit pads whenever the input's spatial dims are static, so
backends normally see plain pads; Conv keeps ``auto_pad`` for symbolic spatial dims. ConvTranspose's
``output_shape``/``auto_pad`` always become pads (they need static input dims). ConvInteger becomes
cast/sub + an i32 ``conv``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.ir import Value
from nnc.ir.ops.conv import fill, resolve_pads

from ..context import ConvertContext, Node
from ..registry import converter
from .linalg import shifted_i32


def spatial_rank(node: Node, x: Value, kernel: tuple | None = None) -> int:
    if x.shape is not None:
        return len(x.shape) - 2
    if kernel:
        return len(kernel)
    raise node.unsupported("the input rank must be known")


def window_attrs(node: Node, x: Value, kernel: tuple) -> dict[str, Any]:
    """strides/pads/dilations/auto_pad with ONNX defaults filled in and auto_pad resolved when the
    spatial dims allow it."""
    n = len(kernel)
    s = fill(node.attr("strides", ()), n, 1, "strides")
    d = fill(node.attr("dilations", ()), n, 1, "dilations")
    auto = node.attr("auto_pad", "NOTSET") or "NOTSET"
    pads = resolve_pads(auto, x.shape[2:] if x.shape is not None else (None,) * n, kernel, s, d,
                        node.attr("pads", ()))
    if pads is None:
        return {"strides": s, "dilations": d, "pads": (), "auto_pad": auto}
    return {"strides": s, "dilations": d, "pads": pads, "auto_pad": "NOTSET"}


def _kernel(node: Node, w: Value, n: int) -> tuple:
    k = node.attr("kernel_shape", None)
    if k is not None:
        return tuple(k)
    if w.shape is None or not all(isinstance(v, int) for v in w.shape[2:]):
        raise node.unsupported("the kernel shape must be static (kernel_shape or a weight of known shape)")
    return tuple(w.shape[2:])


@converter("Conv")
def conv(ctx: ConvertContext, node: Node):
    x, w, b = node.input(0), node.input(1), node.input(2)
    n = spatial_rank(node, x, node.attr("kernel_shape", None))
    attrs = window_attrs(node, x, _kernel(node, w, n))
    operands = [x, w] if b is None else [x, w, b]
    return ctx.op("conv", *operands, group=node.attr("group", 1), **attrs)


@converter("ConvInteger")
def conv_integer(ctx: ConvertContext, node: Node):
    x, w = node.input(0), node.input(1)
    n = spatial_rank(node, x, node.attr("kernel_shape", None))
    attrs = window_attrs(node, x, _kernel(node, w, n))
    # subtracting the zero point before padding makes the padding equal the zero point, as specified
    xi = shifted_i32(ctx, x, node.input(2))
    wi = shifted_i32(ctx, w, node.input(3), (-1,) + (1,) * (n + 1))
    return ctx.op("conv", xi, wi, group=node.attr("group", 1), **attrs)


@converter("ConvTranspose")
def conv_transpose(ctx: ConvertContext, node: Node):
    x, w, b = node.input(0), node.input(1), node.input(2)
    n = spatial_rank(node, x, node.attr("kernel_shape", None))
    k = _kernel(node, w, n)
    s = fill(node.attr("strides", ()), n, 1, "strides")
    d = fill(node.attr("dilations", ()), n, 1, "dilations")
    op = fill(node.attr("output_padding", ()), n, 0, "output_padding")
    auto = node.attr("auto_pad", "NOTSET") or "NOTSET"
    out_shape = node.attr("output_shape", None)
    if out_shape is None and auto in ("SAME_UPPER", "SAME_LOWER"):
        out_shape = "same"
    if out_shape is not None:
        ins = x.shape[2:] if x.shape is not None else ()
        if len(ins) != n or not all(isinstance(v, int) for v in ins):
            raise node.unsupported("output_shape/auto_pad need static input spatial dims")
        target = [v * s[i] for i, v in enumerate(ins)] if out_shape == "same" else list(out_shape)[-n:]
        total = [s[i] * (ins[i] - 1) + op[i] + (k[i] - 1) * d[i] + 1 - target[i] for i in range(n)]
        if auto == "SAME_UPPER":
            pads = [t // 2 for t in total] + [t - t // 2 for t in total]
        else:
            pads = [t - t // 2 for t in total] + [t // 2 for t in total]
    elif auto == "VALID":
        pads = [0] * (2 * n)
    else:
        pads = list(fill(node.attr("pads", ()), 2 * n, 0, "pads"))
    operands = [x, w] if b is None else [x, w, b]
    return ctx.op("conv_transpose", *operands, strides=s, dilations=d, pads=pads, output_padding=op,
                  group=node.attr("group", 1))


@converter("DeformConv")
def deform_conv(ctx: ConvertContext, node: Node):
    x, w, offset = node.input(0), node.input(1), node.input(2)
    n = spatial_rank(node, x, node.attr("kernel_shape", None))
    if n != 2:
        raise node.unsupported(f"only 2-D deformable convolution is supported, got {n}-D")
    b, mask = node.input(3), node.input(4)
    operands = [x, w, offset]
    if b is not None or mask is not None:
        # the schema's optional operands are positional: a mask without bias needs a zero bias
        if b is None:
            m = w.shape[0] if w.shape is not None else None
            if not isinstance(m, int):
                raise node.unsupported("a mask without bias needs a static output-channel count")
            b = ctx.const(np.zeros(m, dtype=x.dtype.numpy))
        operands.append(b)
    if mask is not None:
        operands.append(mask)
    return ctx.op("deform_conv", *operands, strides=fill(node.attr("strides", ()), 2, 1, "strides"),
                  pads=fill(node.attr("pads", ()), 4, 0, "pads"),
                  dilations=fill(node.attr("dilations", ()), 2, 1, "dilations"),
                  group=node.attr("group", 1), offset_group=node.attr("offset_group", 1))


@converter("Col2Im")
def col2im(ctx: ConvertContext, node: Node):
    x, image, block = node.inputs[0], node.inputs[1], node.inputs[2]
    n = block.shape[0] if block.shape is not None and isinstance(block.shape[0], int) else None
    attrs: dict[str, Any] = {}
    if n is not None:
        attrs = {"strides": fill(node.attr("strides", ()), n, 1, "strides"),
                 "pads": fill(node.attr("pads", ()), 2 * n, 0, "pads"),
                 "dilations": fill(node.attr("dilations", ()), n, 1, "dilations")}
    else:
        attrs = {k: node.attr(k, ()) for k in ("strides", "pads", "dilations")}
    return ctx.op_dynamic("col2im", [x], {"image_shape": image, "block_shape": block}, **attrs)



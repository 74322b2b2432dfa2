"""Gradient rules: ``matmul`` and ``gemm`` (each cotangent is again a matmul/gemm, so backends
reuse their fast kernels for the backward pass)."""

from __future__ import annotations

from ..builder import Builder
from ..graph import Value
from . import register_vjp, shape_generic
from .util import reshape, scalar, shape_of, sum_to


def _swap_last(b: Builder, x: Value) -> Value:
    r = len(shape_of(x))
    return b.op("transpose", x, perm=list(range(r - 2)) + [r - 1, r - 2])


@register_vjp("matmul")
def _matmul(b, op, cts):
    g, (x, y) = cts[0], op.operands
    xs, ys = shape_of(x), shape_of(y)
    # 1-D operands are a row (x) or a column (y): work on the 2-D forms, reshape back at the end
    x2 = reshape(b, x, (1,) + xs) if len(xs) == 1 else x
    y2 = reshape(b, y, ys + (1,)) if len(ys) == 1 else y
    gs = list(shape_of(g))
    if len(xs) == 1:
        gs.insert(len(gs) - (0 if len(ys) == 1 else 1), 1)
    if len(ys) == 1:
        gs.append(1)
    g2 = reshape(b, g, gs)  # only adds unit axes: exact with symbolic dims too
    gx = b.op("matmul", g2, _swap_last(b, y2))
    gy = b.op("matmul", _swap_last(b, x2), g2)
    gx = sum_to(b, gx, x2.type) if shape_of(gx) != shape_of(x2) else gx
    gy = sum_to(b, gy, y2.type) if shape_of(gy) != shape_of(y2) else gy
    return [reshape(b, gx, xs, like=x), reshape(b, gy, ys, like=y)]


@register_vjp("gemm")
def _gemm(b, op, cts):
    g = cts[0]
    a, w = op.operands[0], op.operands[1]
    alpha, beta = op.attrs["alpha"], op.attrs["beta"]
    ta, tb = op.attrs["trans_a"], op.attrs["trans_b"]
    if ta:
        ga = b.op("gemm", w, g, alpha=alpha, beta=0.0, trans_a=tb, trans_b=1)
    else:
        ga = b.op("gemm", g, w, alpha=alpha, beta=0.0, trans_a=0, trans_b=1 - tb)
    if tb:
        gw = b.op("gemm", g, a, alpha=alpha, beta=0.0, trans_a=1, trans_b=ta)
    else:
        gw = b.op("gemm", a, g, alpha=alpha, beta=0.0, trans_a=1 - ta, trans_b=0)
    out = [ga, gw]
    if len(op.operands) > 2:
        c = op.operands[2]
        gc = g if beta == 1.0 else b.op("mul", g, scalar(b, beta, g))
        out.append(sum_to(b, gc, c))
    return out


shape_generic("matmul", "gemm")

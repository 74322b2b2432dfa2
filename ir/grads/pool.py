"""Gradient rules: ``avg_pool``, ``lp_pool`` and ``max_pool``.

Average and Lp pooling sum over windows, and the adjoint of a window sum is the input gradient of a
depthwise convolution with a kernel of ones (``conv.input_grad``: a stride-1 depthwise ``conv`` of the
stride-stuffed cotangent, which backends run on their depthwise fast path, unlike a gather-style
``conv_transpose``; ceil-mode overhang and rows no window reached come out of its pads).

Max pooling sends each output's cotangent to the first maximum of its window (PyTorch's
convention, and the argmax the op's ``with_indices`` form returns): the rule reuses that index
result, or adds an indexed ``max_pool`` when the forward had none, and scatter-adds the cotangent at
the indices (overlapping windows may pick the same element).
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..builder import Builder
from ..graph import Value
from ..ops.pool import _Geometry
from . import register_vjp, shape_generic
from .conv import input_grad
from .util import is_static, reshape, scalar, shape_of, zeros_like


def window_sum_adjoint(b: Builder, g: Value, in_dims: Sequence[int], geo: _Geometry) -> Value:
    """Each input element's sum of the cotangents ``g[N, C, *out]`` of the windows that hold it."""
    C = shape_of(g)[1]
    k, s, d = geo.kernel, geo.strides, geo.dilations
    ones = b.const(np.ones((C, 1) + tuple(k), dtype=g.dtype.numpy), name="ones")
    return input_grad(b, g, ones, in_dims, s, d, list(geo.begins) + list(geo.ends), C)


@register_vjp("avg_pool")
def _avg_pool(b, op, cts):
    g, x = cts[0], op.operands[0]
    geo = _Geometry(shape_of(x), op.attrs)
    counts = geo.counts(bool(op.attrs["count_include_pad"]))
    if np.all(counts == counts.flat[0]):
        g = b.op("mul", g, scalar(b, 1.0 / float(counts.flat[0]), g))
    else:
        g = b.op("mul", g, b.const((1.0 / counts).astype(g.dtype.numpy), name="inv_count"))
    return [window_sum_adjoint(b, g, shape_of(x)[2:], geo)]


@register_vjp("lp_pool")
def _lp_pool(b, op, cts):
    g, x, y = cts[0], op.operands[0], op.results[0]
    p = op.attrs["p"]
    geo = _Geometry(shape_of(x), op.attrs)
    # y = (sum |x|^p)^(1/p): dy/dx = sign(x) |x|^(p-1) y^(1-p)
    if p == 1:
        return [b.op("mul", window_sum_adjoint(b, g, shape_of(x)[2:], geo), b.op("sign", x))]
    gy = b.op("div", g, y) if p == 2 else b.op("mul", g, b.op("pow", y, scalar(b, 1.0 - p, y)))
    spread = window_sum_adjoint(b, gy, shape_of(x)[2:], geo)
    if p == 2:
        return [b.op("mul", spread, x)]
    dpow = b.op("mul", b.op("pow", b.op("abs", x), scalar(b, p - 1.0, x)), b.op("sign", x))
    return [b.op("mul", spread, dpow)]


@register_vjp("max_pool")
def _max_pool(b, op, cts):
    g, x = cts[0], op.operands[0]
    if g is None:
        return [None]
    if op.attrs["with_indices"] and op.attrs["storage_order"] == 0:
        idx = op.results[1]
    else:  # the same pooling with row-major argmax indices (recomputed once, in the backward pass)
        attrs = {**op.attrs, "with_indices": 1, "storage_order": 0}
        idx = b.create("max_pool", [x], attrs).results[1]
    xs = shape_of(x)
    if not is_static(xs):
        return [_max_pool_rows(b, x, g, idx)]
    total, n_out = math.prod(xs), math.prod(shape_of(g))
    flat = b.op("scatter_elements", b.const(np.zeros(total, dtype=x.dtype.numpy), name="zeros"),
                reshape(b, idx, [n_out]), reshape(b, g, [n_out]), axis=0, reduction="add")
    return [reshape(b, flat, xs)]


def _max_pool_rows(b: Builder, x: Value, g: Value, idx: Value) -> Value:
    """The max-pool scatter with a symbolic batch: per (image, channel) row. The indices are flat
    over the whole tensor, so ``idx mod (H*W)`` is the position within the row."""
    xs, gs = shape_of(x), shape_of(g)
    hw, ohw = math.prod(xs[2:]), math.prod(gs[2:])
    local = b.op("mod", reshape(b, idx, [gs[0], gs[1], ohw]), b.const(np.asarray(hw, np.int64), name="row"))
    rows = b.op("scatter_elements", reshape(b, zeros_like(b, x), [xs[0], xs[1], hw]), local,
                reshape(b, g, [gs[0], gs[1], ohw]), axis=2, reduction="add")
    return reshape(b, rows, xs)


def _batch_only(op) -> str | None:
    x = op.operands[0]
    if not is_static(shape_of(x)[1:]):
        return f"only the batch dim may be symbolic ({x.name}: {x.type})"
    return None


shape_generic("avg_pool", "lp_pool", "max_pool", check=_batch_only)

"""Gradient rules: ``tile``, ``trilu``, the scans ``cumsum``/``cumprod``, ``reduce_prod``,
``dequantize``, ``det`` and ``fused`` (which refuses).

- cumsum's cotangent is a cumsum in the other direction. cumprod's is written without dividing
  by x (so zeros in x are exact): each position j rescans the axis with x_j replaced by 1, an
  [n, n] expansion per scanned row, affordable because scans are short in practice.
- reduce_prod multiplies the cotangent by the product of all the other elements, the product of an
  exclusive forward and an exclusive reverse cumprod (exact at zeros, no division).
- dequantize: ``y = (x - zero_point) * scale`` with integer x. x and the zero point get no
  cotangent (integers); the scale gets ``sum(g * (x - zero_point))`` over the elements that share it
  (per tensor, per axis or per block), the gradient learned-step-size quantization training uses.
- det: d det(A) / dA is the cofactor matrix, computed as signed determinants of the minors (gathered
  with constant indices), so it is exact for singular matrices too; O(M^2) determinants of size
  M-1, meant for the small matrices models use.
- fused: autodiff runs on the unfused graph (fusion happens after training passes); a fused op on
  the path from the parameters to the loss means the passes ran in the wrong order.
"""

from __future__ import annotations

import numpy as np

from ..errors import GradientError
from . import register_vjp
from .indexing import static_attr
from .reduce import reduced_axes
from .util import reshape, scalar, shape_of


def _rest(op, first):
    return [first] + [None] * (len(op.operands) - 1)


@register_vjp("tile")
def _tile(b, op, cts):
    x, g = op.operands[0], cts[0]
    reps = static_attr(b, op, "repeats", 1)
    split, axes = [], []
    for d, r in zip(shape_of(x), reps):
        if r != 1:  # np.tile lays out the copies outermost: dim i of the result is [r_i, d_i]
            axes.append(len(split))
            split.append(int(r))
        split.append(d)
    if not axes:
        return _rest(op, reshape(b, g, shape_of(x)))
    g = b.op("reduce_sum", reshape(b, g, split), axes=axes, keepdims=0)
    return _rest(op, reshape(b, g, shape_of(x)))


@register_vjp("trilu")
def _trilu(b, op, cts):
    extra = list(op.operands[1:])  # a run-time k is reused as is
    return _rest(op, b.op("trilu", cts[0], *extra, upper=op.attrs["upper"], k=op.attrs["k"]))


def _scan_axis(b, op) -> int:
    axis = static_attr(b, op, "axis", 1)
    if axis is None:
        raise GradientError(f"cannot differentiate {op.opname}{op.where()}: no axis")
    return int(axis) % len(shape_of(op.operands[0]))


@register_vjp("cumsum")
def _cumsum(b, op, cts):
    a = op.attrs
    g = b.op("cumsum", cts[0], axis=_scan_axis(b, op), exclusive=a["exclusive"], reverse=1 - a["reverse"])
    return _rest(op, g)


@register_vjp("cumprod")
def _cumprod(b, op, cts):
    x, g = op.operands[0], cts[0]
    xs = shape_of(x)
    ax = _scan_axis(b, op)
    n = xs[ax]
    excl, rev = op.attrs["exclusive"], op.attrs["reverse"]
    trail = (1,) * (len(xs) - ax - 1)
    # dim ax indexes j (the differentiated element), dim ax+1 the scan position
    xj = b.op("expand", b.op("unsqueeze", x, axes=[ax]), shape=list(xs[:ax] + (n, n) + xs[ax + 1:]))
    eye = b.const(np.eye(n, dtype=bool).reshape((n, n) + trail), name="eye")
    without_j = b.op("where", eye, scalar(b, 1.0, x), xj)
    scans = b.op("cumprod", without_j, axis=ax + 1, exclusive=excl, reverse=rev)
    j, i = np.arange(n)[:, None], np.arange(n)[None, :]
    depends = (i <= j if rev else i >= j) & (i != j if excl else True)  # y_i depends on x_j
    mask = b.const(depends.astype(x.dtype.numpy).reshape((n, n) + trail), name="mask")
    gi = b.op("mul", b.op("unsqueeze", g, axes=[ax]), mask)
    return _rest(op, b.op("reduce_sum", b.op("mul", scans, gi), axes=[ax + 1], keepdims=0))


@register_vjp("reduce_prod")
def _reduce_prod(b, op, cts):
    x, g = op.operands[0], cts[0]
    xs = shape_of(x)
    axes = reduced_axes(b, op)
    if not axes:
        return _rest(op, g)
    kept = [i for i in range(len(xs)) if i not in axes]
    perm = kept + axes
    n = int(np.prod([xs[a] for a in axes], dtype=np.int64))
    # the reduced axes flattened last, so one scan covers them
    xt = x if perm == list(range(len(xs))) else b.op("transpose", x, perm=perm)
    flat = reshape(b, xt, [xs[i] for i in kept] + [n])
    last = len(kept)
    left = b.op("cumprod", flat, axis=last, exclusive=1, reverse=0)
    right = b.op("cumprod", flat, axis=last, exclusive=1, reverse=1)
    others = reshape(b, b.op("mul", left, right), [xs[i] for i in perm])
    if perm != list(range(len(xs))):
        others = b.op("transpose", others, perm=[int(i) for i in np.argsort(perm)])
    gk = reshape(b, g, [1 if i in axes else d for i, d in enumerate(xs)])
    return _rest(op, b.op("mul", gk, others))


# -- dequantize -----------------------------------------------------------------------------------

def _param_layout(xs, p, axis, block):
    """'tensor', 'axis' or 'block', as quant.expand_param decides."""
    ps = shape_of(p)
    size = int(np.prod(ps, dtype=np.int64))
    if size == 1 and (len(ps) <= 1 or not block):
        return "tensor"
    return "block" if block else "axis"


def _expand_param(b, p, xs, axis, block, layout):
    """``p`` made broadcastable against x of shape ``xs`` (the IR form of quant.expand_param)."""
    r = len(xs)
    if layout == "tensor":
        return reshape(b, p, ())
    if layout == "axis":
        return reshape(b, p, [xs[axis] if i == axis else 1 for i in range(r)])
    ps = shape_of(p)
    nb = ps[axis]
    rep = b.op("expand", b.op("unsqueeze", p, axes=[axis + 1]), shape=list(ps[:axis + 1] + (block,) + ps[axis + 1:]))
    rep = reshape(b, rep, ps[:axis] + (nb * block,) + ps[axis + 1:])
    if nb * block != xs[axis]:  # a short last block
        rep = b.op("slice", rep, starts=[0], ends=[xs[axis]], axes=[axis], steps=[1])
    return rep


def _reduce_to_param(b, v, p, xs, axis, block, layout):
    """The adjoint of _expand_param: sum ``v`` (shape xs) over the elements sharing each entry."""
    r = len(xs)
    ps = shape_of(p)
    if layout == "tensor":
        return reshape(b, b.op("reduce_sum", v, keepdims=0), ps)
    if layout == "axis":
        others = [i for i in range(r) if i != axis]
        return reshape(b, b.op("reduce_sum", v, axes=others, keepdims=0) if others else v, ps)
    nb = ps[axis]
    if nb * block != xs[axis]:
        pads = [0] * (2 * r)
        pads[r + axis] = nb * block - xs[axis]
        v = b.op("pad", v, pads=pads, value=0.0)
    v = reshape(b, v, xs[:axis] + (nb, block) + xs[axis + 1:])
    return b.op("reduce_sum", v, axes=[axis + 1], keepdims=0)


@register_vjp("dequantize")
def _dequantize(b, op, cts):
    x, scale = op.operands[0], op.operands[1]
    g = cts[0]
    xs = shape_of(x)
    axis = op.attrs["axis"] % max(len(xs), 1)
    block = op.attrs["block_size"]
    layout = _param_layout(xs, scale, axis, block)
    q = b.op("cast", x, to=scale.dtype)
    if len(op.operands) > 2:
        zp = op.operands[2]
        q = b.op("sub", q, _expand_param(b, b.op("cast", zp, to=scale.dtype), xs, axis, block, layout))
    gs = _reduce_to_param(b, b.op("mul", g, q), scale, xs, axis, block, layout)
    return [None, gs] + [None] * (len(op.operands) - 2)


# -- det ------------------------------------------------------------------------------------------

@register_vjp("det")
def _det(b, op, cts):
    x, g = op.operands[0], cts[0]
    xs = shape_of(x)
    m = xs[-1]
    lead = len(xs) - 2
    gk = reshape(b, g, xs[:-2] + (1, 1))
    if m == 1:
        return [b.op("expand", gk, shape=list(xs))]
    keep = np.array([[r for r in range(m) if r != i] for i in range(m)], dtype=np.int64)  # [m, m-1]
    idx = b.const(keep, name="minor")
    rows = b.op("gather", x, idx, axis=lead)              # [..., i, m-1, m]
    minors = b.op("gather", rows, idx, axis=lead + 2)     # [..., i, m-1, j, m-1]
    minors = b.op("transpose", minors, perm=list(range(lead)) + [lead, lead + 2, lead + 1, lead + 3])
    sign = (-1.0) ** (np.arange(m)[:, None] + np.arange(m)[None, :])
    cof = b.op("mul", b.op("det", minors), b.const(sign.astype(x.dtype.numpy), name="sign"))
    return [b.op("mul", gk, cof)]


# -- fused ----------------------------------------------------------------------------------------

@register_vjp("fused")
def _fused(b, op, cts):
    raise GradientError(f"cannot differentiate the fused op{op.where()}: differentiate before fusion (the "
                        "training pipeline runs autodiff on the unfused graph; fuse the joint graph afterwards)")

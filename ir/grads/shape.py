"""Gradient rules: data movement (reshape, transpose, squeeze/unsqueeze, expand, concat, split,
slice, constant pad).

These only move or replicate elements, so their cotangents move them back: inverse permutation,
reshape to the operand shape, sum over replication, slice of a concatenation, zero padding around
a slice (a strided slice also interleaves zeros).
"""

from __future__ import annotations

import numpy as np

from ..builder import const_value
from ..errors import GradientError
from . import register_vjp, shape_generic
from .util import is_static, reshape, reshape_like, shape_of, sum_to, zeros_like


def _rest(op, first):
    return [first] + [None] * (len(op.operands) - 1)


@register_vjp("reshape", "squeeze", "unsqueeze")
def _reshape(b, op, cts):
    return _rest(op, reshape_like(b, cts[0], op.operands[0]))


@register_vjp("transpose")
def _transpose(b, op, cts):
    x = op.operands[0]
    perm = op.attrs.get("perm") or list(reversed(range(len(shape_of(x)))))
    inv = list(np.argsort(perm))
    return [b.op("transpose", cts[0], perm=[int(i) for i in inv])]


@register_vjp("expand")
def _expand(b, op, cts):
    return _rest(op, sum_to(b, cts[0], op.operands[0]))


@register_vjp("concat")
def _concat(b, op, cts):
    g = cts[0]
    rank = len(shape_of(g))
    axis = op.attrs["axis"] % rank
    outs, start = [], 0
    for x in op.operands:
        n = shape_of(x)[axis]
        outs.append(b.op("slice", g, starts=[start], ends=[start + n], axes=[axis], steps=[1]))
        start += n
    return outs


@register_vjp("split")
def _split(b, op, cts):
    parts = [c if c is not None else zeros_like(b, r) for c, r in zip(cts, op.results)]
    axis = op.attrs["axis"] % len(shape_of(op.operands[0]))
    g = parts[0] if len(parts) == 1 else b.op("concat", *parts, axis=axis)
    return _rest(op, g)


def _slice_params(b, op):
    x = op.operands[0]
    vals = {}
    for i, name in enumerate(("starts", "ends", "axes", "steps"), start=1):
        v = op.attrs.get(name)
        if v is None and i < len(op.operands):
            c = const_value(b.module, op.operands[i])
            v = None if c is None else [int(t) for t in c.reshape(-1)]
        vals[name] = v
    rank = len(shape_of(x))
    axes = vals["axes"] if vals["axes"] is not None else list(range(len(vals["starts"])))
    steps = vals["steps"] if vals["steps"] is not None else [1] * len(axes)
    return [a % rank for a in axes], vals["starts"], vals["ends"], steps


@register_vjp("slice")
def _slice(b, op, cts):
    x, g = op.operands[0], cts[0]
    shape = shape_of(x)
    axes, starts, ends, steps = _slice_params(b, op)
    rank = len(shape)
    before, after = [0] * rank, [0] * rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        if st != 1:
            g = _unstride(b, g, a, shape[a], range(*slice(s, e, st).indices(shape[a])))
            continue
        n = shape[a]
        s = min(max(s + n if s < 0 else s, 0), n)
        e = min(max(e + n if e < 0 else e, 0), n)
        before[a], after[a] = s, n - max(e, s)
    return _rest(op, b.op("pad", g, pads=before + after, value=0.0))


def _unstride(b, g, axis, n, picked):
    """Scatter the cotangent of a strided slice along ``axis`` back to length ``n``: ``picked``
    (a range) lists the positions read. Zeros are interleaved by a pad of a new axis and a reshape;
    a negative step is read backwards first."""
    m, step, first = len(picked), abs(picked.step), min(picked, default=0)
    shape = list(shape_of(g))
    if m == 0:
        return b.op("expand", b.const(np.zeros((), g.dtype.numpy)), shape=shape[:axis] + [n] + shape[axis + 1:])
    if picked.step < 0:
        g = b.op("slice", g, starts=[-1], ends=[-(2 ** 62)], axes=[axis], steps=[-1])
    rank = len(shape)
    span = (m - 1) * step + 1
    if step > 1:
        pads = [0] * (2 * (rank + 1))
        pads[rank + 1 + axis + 1] = step - 1
        g = b.op("pad", b.op("unsqueeze", g, axes=[axis + 1]), pads=pads, value=0.0)
        g = reshape(b, g, shape[:axis] + [m * step] + shape[axis + 1:])
        g = b.op("slice", g, starts=[0], ends=[span], axes=[axis], steps=[1])
    pads = [0] * (2 * rank)
    pads[axis], pads[rank + axis] = first, n - first - span
    return b.op("pad", g, pads=pads, value=0.0)


@register_vjp("pad")
def _pad(b, op, cts):
    x, g = op.operands[0], cts[0]
    if op.attrs.get("mode", "constant") != "constant":
        raise GradientError(f"no gradient rule for pad mode {op.attrs['mode']!r}{op.where()}")
    pads = op.attrs.get("pads")
    if pads is None:
        c = const_value(b.module, op.operands[1])
        pads = [int(t) for t in c.reshape(-1)]
    if op.attrs.get("axes") is not None:
        raise GradientError(f"no gradient rule for pad with axes{op.where()}")
    rank = len(shape_of(x))
    shape = shape_of(x)
    # only the padded axes move (all of them when static; with symbolic dims those must be static)
    axes = list(range(rank)) if is_static(shape) else [i for i in range(rank) if pads[i] or pads[i + rank]]
    starts = [pads[i] for i in axes]
    ends = [s + shape[i] for s, i in zip(starts, axes)]
    # negative pads crop: the cotangent of a cropped element is zero, so pad it back
    return _rest(op, _crop_or_pad(b, g, starts, ends, [shape_of(g)[i] for i in axes], axes))


def _crop_or_pad(b, g, starts, ends, gdims, axes):
    """Keep [start, end) of each axis of ``axes`` (sizes ``gdims``), zeros where it lies outside."""
    rank = len(shape_of(g))
    lo = [max(0, -s) for s in starts]
    hi = [max(0, e - n) for e, n in zip(ends, gdims)]
    cs = [max(0, s) for s in starts]
    ce = [min(e, n) for e, n in zip(ends, gdims)]
    out = b.op("slice", g, starts=cs, ends=ce, axes=list(axes), steps=[1] * len(axes)) if axes else g
    if any(lo) or any(hi):
        full_lo, full_hi = [0] * rank, [0] * rank
        for i, a in enumerate(axes):
            full_lo[a], full_hi[a] = lo[i], hi[i]
        out = b.op("pad", out, pads=full_lo + full_hi, value=0.0)
    return out


def _static_along(op, axes_of) -> str | None:
    """None when the dims the rule computes with (``axes_of(op)``, per operand) are static."""
    for v in op.operands[:1] if op.opname != "concat" else op.operands:
        shape = shape_of(v)
        if not is_static([shape[a] for a in axes_of(op, len(shape))]):
            return f"it needs static sizes along the sliced/concatenated axis ({v.name}: {v.type})"
    return None


def _slice_axes(op, rank):
    axes = op.attrs.get("axes")
    if axes is None and op.attrs.get("starts") is not None:
        axes = list(range(len(op.attrs["starts"])))
    if axes is None:
        return list(range(rank))  # computed at run time: every axis must be static
    return [a % rank for a in axes]


shape_generic("reshape", "squeeze", "unsqueeze", "transpose", "expand", "split")
shape_generic("concat", check=lambda op: _static_along(op, lambda o, r: [o.attrs["axis"] % r]))
shape_generic("slice", check=lambda op: _static_along(op, _slice_axes))


def _pad_generic(op) -> str | None:
    """constant pad with pads known at compile time, of static axes only."""
    pads = op.attrs.get("pads")
    if op.attrs.get("mode", "constant") != "constant" or pads is None:
        return "only a constant pad with pads known at compile time is supported"
    rank = len(shape_of(op.operands[0]))
    return _static_along(op, lambda o, r: [i for i in range(rank) if pads[i] or pads[i + rank]])


shape_generic("pad", check=_pad_generic)

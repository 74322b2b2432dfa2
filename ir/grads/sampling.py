"""Gradient rules: ``deform_conv`` and ``roi_align`` (bilinear sampling at run-time positions).

deform_conv samples x bilinearly at the kernel taps moved by the offsets, optionally masks, then
multiplies by the weights per group. Its rule recomputes the sampled columns in the IR (one
``gather_elements`` per bilinear corner), gets the weight's cotangent and the columns' from two
batched ``matmul``s, the mask's from the columns, x's by scatter-adding each corner's share
(``scatter_elements`` with "add"), and the offsets' from the derivative of the bilinear weights
(the offsets are learned in deformable networks, so they get a gradient, as in torchvision; it
jumps where a sampling point crosses a pixel row or column, as there).

roi_align ("avg" mode, as torchvision): x gets each bin's cotangent spread over its sampling
points' bilinear corners; the boxes are coordinates and get none, as in torchvision.
"""

from __future__ import annotations

import numpy as np

from ..errors import GradientError
from ..ops.conv import fill, window_count
from . import register_vjp
from .indexing import zeros
from .util import reshape, scalar, shape_of


def _i64(b, v):
    return b.const(np.int64(v))


@register_vjp("deform_conv")
def _deform_conv(b, op, cts):
    x, w, off = op.operands[:3]
    bias = op.operands[3] if len(op.operands) > 3 and 0 not in shape_of(op.operands[3]) else None
    mask = op.operands[4] if len(op.operands) > 4 and 0 not in shape_of(op.operands[4]) else None
    dy = cts[0]
    n, c, h, wd = shape_of(x)
    m, _, kh, kw = shape_of(w)
    a = op.attrs
    s, d, p = fill(a["strides"], 2, 1), fill(a["dilations"], 2, 1), fill(a["pads"], 4, 0)
    oh, ow = (window_count((h, wd)[i], (kh, kw)[i], s[i], d[i], p[i], p[2 + i]) for i in range(2))
    og, grp, k, pp = a["offset_group"], a["group"], kh * kw, oh * ow
    cg = c // og
    dt = x.dtype.numpy
    base_h = (np.arange(kh)[:, None, None, None] * d[0] + np.arange(oh)[None, None, :, None] * s[0] - p[0])
    base_w = (np.arange(kw)[None, :, None, None] * d[1] + np.arange(ow)[None, None, None, :] * s[1] - p[1])
    base_h = np.broadcast_to(base_h, (kh, kw, oh, ow)).reshape(k, pp).astype(dt)
    base_w = np.broadcast_to(base_w, (kh, kw, oh, ow)).reshape(k, pp).astype(dt)
    off5 = reshape(b, off, (n, og, k, 2, pp))

    def part(i):
        return reshape(b, b.op("slice", off5, starts=[i], ends=[i + 1], axes=[3], steps=[1]), (n, og, k, pp))
    ph = b.op("add", part(0), b.const(base_h, name="base_h"))
    pw = b.op("add", part(1), b.const(base_w, name="base_w"))
    h0, w0 = b.op("floor", ph), b.op("floor", pw)
    one = scalar(b, 1.0, ph)
    xg = reshape(b, x, (n, og, cg, h * wd))
    corners = []  # (index [n, og, cg, k*pp], value, wh, ww, ok) per corner
    for dh in (0, 1):
        for dw in (0, 1):
            hh = h0 if dh == 0 else b.op("add", h0, one)
            ww = w0 if dw == 0 else b.op("add", w0, one)
            wh = b.op("sub", one, b.op("abs", b.op("sub", ph, hh)))
            wwt = b.op("sub", one, b.op("abs", b.op("sub", pw, ww)))
            ok = b.op("and", b.op("and", b.op("greater_equal", hh, scalar(b, 0.0, hh)),
                                  b.op("less", hh, scalar(b, float(h), hh))),
                      b.op("and", b.op("greater_equal", ww, scalar(b, 0.0, ww)),
                           b.op("less", ww, scalar(b, float(wd), ww))))
            okf = b.op("cast", ok, to=x.dtype)
            flat = b.op("add", b.op("mul", b.op("clip", hh, min=0.0, max=float(h - 1)), scalar(b, float(wd), hh)),
                        b.op("clip", ww, min=0.0, max=float(wd - 1)))
            idx = b.op("expand", reshape(b, b.op("cast", flat, to="i64"), (n, og, 1, k * pp)),
                       shape=[n, og, cg, k * pp])
            val = reshape(b, b.op("gather_elements", xg, idx, axis=3), (n, og, cg, k, pp))
            corners.append((idx, val, wh, wwt, okf, dh, dw))
    sampled = None
    for _, val, wh, wwt, okf, _, _ in corners:
        wt = reshape(b, b.op("mul", b.op("mul", wh, wwt), okf), (n, og, 1, k, pp))
        term = b.op("mul", val, wt)
        sampled = term if sampled is None else b.op("add", sampled, term)
    mk = None if mask is None else reshape(b, mask, (n, og, 1, k, pp))
    cols = sampled if mk is None else b.op("mul", sampled, mk)
    cols = reshape(b, cols, (n, grp, (c // grp) * k, pp))
    dyg = reshape(b, dy, (n, grp, m // grp, pp))
    dwm = b.op("reduce_sum", b.op("matmul", dyg, b.op("transpose", cols, perm=[0, 1, 3, 2])), axes=[0], keepdims=0)
    wm_t = b.op("transpose", reshape(b, w, (grp, m // grp, (c // grp) * k)), perm=[0, 2, 1])
    dcols = reshape(b, b.op("matmul", wm_t, dyg), (n, og, cg, k, pp))
    dmask = None
    if mk is not None:
        dmask = reshape(b, b.op("reduce_sum", b.op("mul", dcols, sampled), axes=[2], keepdims=0), shape_of(mask))
        dcols = b.op("mul", dcols, mk)
    dxg = zeros(b, (n, og, cg, h * wd), x)
    doff_h = doff_w = None
    for idx, val, wh, wwt, okf, dh, dw in corners:
        wt = reshape(b, b.op("mul", b.op("mul", wh, wwt), okf), (n, og, 1, k, pp))
        upd = reshape(b, b.op("mul", dcols, wt), (n, og, cg, k * pp))
        dxg = b.op("scatter_elements", dxg, idx, upd, axis=3, reduction="add")
        # d wh / d ph = -1 for the corner below the point, +1 for the one above (and so for w)
        gv = b.op("mul", b.op("reduce_sum", b.op("mul", dcols, val), axes=[2], keepdims=0), okf)
        th = b.op("mul", gv, wwt if dh else b.op("neg", wwt))
        tw = b.op("mul", gv, wh if dw else b.op("neg", wh))
        doff_h = th if doff_h is None else b.op("add", doff_h, th)
        doff_w = tw if doff_w is None else b.op("add", doff_w, tw)
    doff = b.op("concat", reshape(b, doff_h, (n, og, k, 1, pp)), reshape(b, doff_w, (n, og, k, 1, pp)), axis=3)
    out = [reshape(b, dxg, (n, c, h, wd)), reshape(b, dwm, shape_of(w)), reshape(b, doff, shape_of(off))]
    if len(op.operands) > 3:
        out.append(None if bias is None else b.op("reduce_sum", dy, axes=[0, 2, 3], keepdims=0))
    if len(op.operands) > 4:
        out.append(dmask)
    return out


@register_vjp("roi_align")
def _roi_align(b, op, cts):
    x, rois, bidx = op.operands
    a = op.attrs
    if a["mode"] != "avg":
        raise GradientError(f"no gradient rule for roi_align mode {a['mode']!r}{op.where()} (avg only)")
    if a["sampling_ratio"] <= 0:
        raise GradientError(f"no gradient rule for roi_align with adaptive sampling{op.where()}: the number "
                            "of samples depends on the boxes; give sampling_ratio > 0")
    return [_roi_align_dx(b, op, cts[0]), None, None]


def _roi_align_dx(b, op, g):
    """Spread each bin's cotangent / count over the bilinear corners of its sampling points."""
    x, rois, bidx = op.operands
    a = op.attrs
    n, c, h, wd = shape_of(x)
    r = shape_of(rois)[0]
    ph, pw, sr = a["output_height"], a["output_width"], a["sampling_ratio"]
    half = a["coordinate_transformation_mode"] == "half_pixel"
    box = b.op("mul", rois, scalar(b, a["spatial_scale"], rois))
    if half:
        box = b.op("sub", box, scalar(b, 0.5, rois))

    def col(i):
        return b.op("slice", box, starts=[i], ends=[i + 1], axes=[1], steps=[1])  # [R, 1]
    x0, y0, x1, y1 = (col(i) for i in range(4))
    rw, rh = b.op("sub", x1, x0), b.op("sub", y1, y0)
    if not half:  # the legacy mode forces malformed boxes to 1x1
        rw, rh = b.op("max", rw, scalar(b, 1.0, rw)), b.op("max", rh, scalar(b, 1.0, rh))
    frac_h = (np.arange(ph)[:, None] + (np.arange(sr)[None, :] + 0.5) / sr).reshape(1, -1)  # [1, ph*sr]
    frac_w = (np.arange(pw)[:, None] + (np.arange(sr)[None, :] + 0.5) / sr).reshape(1, -1)
    dt = rois.dtype.numpy
    yy = b.op("add", y0, b.op("mul", b.op("div", rh, scalar(b, float(ph), rh)), b.const(frac_h.astype(dt))))
    xx = b.op("add", x0, b.op("mul", b.op("div", rw, scalar(b, float(pw), rw)), b.const(frac_w.astype(dt))))

    def taps(cc, size):  # as ops.image._roi_align's axis_taps; cc [R, bins*sr]
        skip = b.op("or", b.op("less", cc, scalar(b, -1.0, cc)), b.op("greater", cc, scalar(b, float(size), cc)))
        cc = b.op("max", cc, scalar(b, 0.0, cc))
        low = b.op("floor", cc)
        at_end = b.op("greater_equal", low, scalar(b, float(size - 1), low))
        top = scalar(b, float(size - 1), low)
        low = b.op("where", at_end, top, low)
        high = b.op("where", at_end, top, b.op("add", low, scalar(b, 1.0, low)))
        cc = b.op("where", at_end, low, cc)
        fr = b.op("sub", cc, low)
        keep = b.op("cast", b.op("not", skip), to=x.dtype)
        return [(low, b.op("mul", b.op("sub", scalar(b, 1.0, fr), fr), keep)), (high, b.op("mul", fr, keep))]
    ty, tx = taps(yy, h), taps(xx, wd)
    ny, nx = ph * sr, pw * sr
    # the cotangent of each sample: the bin's, divided by the samples per bin
    gs = b.op("mul", reshape(b, g, (r, c, ph, 1, pw, 1)), scalar(b, 1.0 / (sr * sr), g))
    gs = reshape(b, b.op("expand", gs, shape=[r, c, ph, sr, pw, sr]), (r, c, ny * nx))
    base = b.op("mul", b.op("cast", reshape(b, bidx, (r, 1, 1)), to="i64"), _i64(b, h * wd))
    dx = zeros(b, (c, n * h * wd), x)
    for yi, wy in ty:
        for xi, wx in tx:
            wt = b.op("mul", reshape(b, wy, (r, ny, 1)), reshape(b, wx, (r, 1, nx)))  # [R, ny, nx]
            pos = b.op("add", b.op("mul", reshape(b, yi, (r, ny, 1)), scalar(b, float(wd), yi)),
                       reshape(b, xi, (r, 1, nx)))
            flat = b.op("add", base, b.op("cast", pos, to="i64"))  # [R, ny, nx] into one [N*H*W] plane
            upd = b.op("mul", gs, reshape(b, wt, (r, 1, ny * nx)))  # [R, C, ny*nx]
            # channels outermost so each (R, C) row scatters into its own [N*H*W] plane
            chan = b.op("transpose", reshape(b, upd, (r, c, ny * nx)), perm=[1, 0, 2])  # [C, R, S]
            idx = b.op("expand", reshape(b, flat, (1, r, ny * nx)), shape=[c, r, ny * nx])
            dx = b.op("scatter_elements", dx, reshape(b, idx, (c, r * ny * nx)),
                      reshape(b, chan, (c, r * ny * nx)), axis=1, reduction="add")
    dx = b.op("transpose", reshape(b, dx, (c, n, h, wd)), perm=[1, 0, 2, 3])
    return dx

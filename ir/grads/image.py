"""Gradient rules: ``resize``, ``affine_grid``, ``col2im`` and ``grid_sample``.

- resize is linear in x and separable: one [out, in] matrix per resized axis, built at compile
  time by running the reference's own per-axis resize on an identity (so every mode, coordinate
  transformation, antialias and exclude_outside is covered and agrees with the forward pass). The
  cotangent applies the transposed matrices in reverse order, each as one ``matmul``; a nearest
  upsampling by an integer factor, the common case, is a reshape and a ``reduce_sum`` instead.
  Positions extrapolated by tf_crop_and_resize are constants and get nothing.
- affine_grid is linear in theta: the cotangent is one batched matmul with the constant base grid.
- col2im sums blocks into an image; its adjoint reads the blocks back out (im2col): a ``gather``
  of the zero-padded cotangent at constant indices.
- grid_sample (2-D and 3-D, modes linear and nearest, padding zeros and border): the cotangent of x
  scatter-adds ``g * weight`` at each interpolation corner (``scatter_elements`` with "add"),
  corners and weights computed from the grid at run time. In linear mode the grid gets the
  derivative of the bilinear weights (a spatial transformer learns through it, as in PyTorch); in
  nearest mode the result is piecewise constant in the grid, which gets none.
"""

from __future__ import annotations

import numpy as np

from ..errors import GradientError
from ..ops.conv import fill, window_count
from ..ops.image import _affine_grid, _resize_axis, resize_axis_plans
from . import register_vjp
from .indexing import static_attr, zeros
from .util import reshape, scalar, shape_of


def _rest(op, first):
    return [first] + [None] * (len(op.operands) - 1)


# -- resize ---------------------------------------------------------------------------------------

def _resize_matrices(b, op, xs: tuple[int, ...]) -> list[tuple[int, np.ndarray]]:
    """(axis, [n_out, n_in] matrix) for each axis the forward pass resizes, in its order."""
    a = dict(op.attrs)
    for name, idx in (("roi", 1), ("scales", 2), ("sizes", 3)):
        a[name] = static_attr(b, op, name, idx)
    a["extrapolation_value"] = 0.0  # extrapolated outputs are constants: zero rows
    # the resize of the identity matrix along an axis is that axis's linear map
    return [(p.axis, _resize_axis(np.eye(p.n_in), 0, p.scale, p.n_out, p.roi, a))
            for p in resize_axis_plans(xs, a) if not p.identity]


def _apply_transposed(b, g, ax: int, m: np.ndarray):
    """g with ``m.T`` applied along axis ``ax`` (g's axis has m's row count)."""
    gs = shape_of(g)
    n_out, n_in = m.shape
    new = gs[:ax] + (n_in,) + gs[ax + 1:]
    if n_in == 0 or n_out == 0:
        return zeros(b, new, g)
    s = n_out // n_in
    if s >= 1 and n_out == n_in * s and np.array_equal(m, np.eye(n_in)[np.arange(n_out) // s]):
        # each input feeds s consecutive outputs (nearest upsampling by an integer factor)
        return b.op("reduce_sum", reshape(b, g, gs[:ax] + (n_in, s) + gs[ax + 1:]), axes=[ax + 1], keepdims=0)
    if ax == len(gs) - 1:
        return b.op("matmul", g, b.const(m.astype(g.dtype.numpy), name="resize_t"))
    pre, post = int(np.prod(gs[:ax], dtype=np.int64)), int(np.prod(gs[ax + 1:], dtype=np.int64))
    mt = b.const(np.ascontiguousarray(m.T).astype(g.dtype.numpy), name="resize_t")
    return reshape(b, b.op("matmul", mt, reshape(b, g, (pre, n_out, post))), new)


@register_vjp("resize")
def _resize(b, op, cts):
    x, g = op.operands[0], cts[0]
    if not x.dtype.is_float:
        return _rest(op, None)
    for ax, m in reversed(_resize_matrices(b, op, shape_of(x))):
        g = _apply_transposed(b, g, ax, m)
    return _rest(op, reshape(b, g, shape_of(x)))


# -- affine_grid ----------------------------------------------------------------------------------

@register_vjp("affine_grid")
def _affine_grid_rule(b, op, cts):
    theta, g = op.operands[0], cts[0]
    n, nd, _ = shape_of(theta)
    spatial = shape_of(g)[1:-1]
    size = [n, 1, *spatial]
    # the reference with theta = I (nd+1 rows) returns the homogeneous base grid itself
    base = _affine_grid(np.eye(nd + 1)[None], size, op.attrs["align_corners"])
    p = int(np.prod(spatial, dtype=np.int64))
    base = b.const(base.reshape(p, nd + 1).astype(theta.dtype.numpy), name="base_grid")
    gt = b.op("transpose", reshape(b, g, (n, p, nd)), perm=[0, 2, 1])
    return _rest(op, b.op("matmul", gt, base))


# -- col2im ---------------------------------------------------------------------------------------

@register_vjp("col2im")
def _col2im(b, op, cts):
    x, g = op.operands[0], cts[0]
    image = [int(v) for v in static_attr(b, op, "image_shape", 1)]
    block = [int(v) for v in static_attr(b, op, "block_shape", 2)]
    nsp = len(image)
    s = fill(op.attrs["strides"], nsp, 1)
    d = fill(op.attrs["dilations"], nsp, 1)
    p = fill(op.attrs["pads"], 2 * nsp, 0)
    blocks = [window_count(image[i], block[i], s[i], d[i], p[i], p[nsp + i]) for i in range(nsp)]
    n, ck, cols = shape_of(x)
    k = int(np.prod(block, dtype=np.int64))
    c = ck // k
    total = int(np.prod(image, dtype=np.int64))
    # image position of every (block offset, block) entry; outside the image -> the extra zero slot
    ko = np.indices(block).reshape(nsp, k, 1)
    lo = np.indices(blocks).reshape(nsp, 1, cols)
    pos = [lo[i] * s[i] - p[i] + ko[i] * d[i] for i in range(nsp)]
    inside = np.logical_and.reduce([(q >= 0) & (q < image[i]) for i, q in enumerate(pos)])
    flat = np.ravel_multi_index([np.clip(q, 0, image[i] - 1) for i, q in enumerate(pos)], image)
    idx = b.const(np.where(inside, flat, total).reshape(-1).astype(np.int64), name="im2col")
    gp = b.op("concat", reshape(b, g, (n, c, total)), zeros(b, (n, c, 1), g), axis=2)
    return _rest(op, reshape(b, b.op("gather", gp, idx, axis=2), (n, ck, cols)))


# -- grid_sample ----------------------------------------------------------------------------------

@register_vjp("grid_sample")
def _grid_sample(b, op, cts):
    x, grid = op.operands
    g = cts[0]
    mode, padding, align = op.attrs["mode"], op.attrs["padding_mode"], op.attrs["align_corners"]
    if mode not in ("linear", "nearest") or padding not in ("zeros", "border"):
        raise GradientError(f"no gradient rule for grid_sample mode {mode!r} with padding {padding!r}"
                            f"{op.where()}: linear or nearest, zeros or border padding")
    xs, gs = shape_of(x), shape_of(grid)
    n, c, dims = xs[0], xs[1], xs[2:]
    nsp = len(dims)
    out_sp = gs[1:-1]
    q = int(np.prod(out_sp, dtype=np.int64))
    total = int(np.prod(dims, dtype=np.int64))
    dt = grid.dtype
    flat_grid = reshape(b, grid, (n, q, nsp))
    coords, slopes = [], []
    for i, d in enumerate(dims):  # the grid lists coordinates innermost first (x = width)
        gi = reshape(b, b.op("slice", flat_grid, starts=[nsp - 1 - i], ends=[nsp - i], axes=[2], steps=[1]), (n, q))
        one = scalar(b, 1.0, gi)
        if align:
            cc = b.op("mul", b.op("div", b.op("add", gi, one), scalar(b, 2.0, gi)), scalar(b, float(d - 1), gi))
        else:
            cc = b.op("div", b.op("sub", b.op("mul", b.op("add", gi, one), scalar(b, float(d), gi)), one),
                      scalar(b, 2.0, gi))
        if dt.numpy != np.float32:  # the reference rounds coordinates to f32
            cc = b.op("cast", b.op("cast", cc, to="f32"), to=dt)
        if mode == "nearest":
            cc = b.op("round", cc)
        slope = scalar(b, (d - 1) / 2.0 if align else d / 2.0, gi)  # d coordinate / d grid
        if padding == "border":  # clamped coordinates do not move
            inside = b.op("and", b.op("greater_equal", cc, scalar(b, 0.0, cc)),
                          b.op("less_equal", cc, scalar(b, d - 1.0, cc)))
            slope = b.op("where", inside, slope, scalar(b, 0.0, gi))
            cc = b.op("clip", cc, min=0.0, max=float(d - 1))
        coords.append(cc)
        slopes.append(slope)
    if mode == "nearest":
        taps = [[(b.op("cast", cc, to="i64"), None)] for cc in coords]
    else:
        taps = []
        for cc in coords:
            f = b.op("floor", cc)
            t = b.op("sub", cc, f)
            fi = b.op("cast", f, to="i64")
            taps.append([(fi, b.op("sub", scalar(b, 1.0, t), t)), (b.op("add", fi, b.const(np.int64(1))), t)])
    gf = reshape(b, g, (n, c, q))
    dx = zeros(b, (n, c, total), x)
    xf = reshape(b, x, (n, c, total))
    dcoord: list = [None] * nsp
    strides = [int(np.prod(dims[i + 1:], dtype=np.int64)) for i in range(nsp)]
    for combo in np.ndindex(*(len(t) for t in taps)):
        w, valid, flat = None, None, None
        for i, j in enumerate(combo):
            k, wt = taps[i][j]
            if wt is not None:
                w = wt if w is None else b.op("mul", w, wt)
            ok = b.op("and", b.op("greater_equal", k, b.const(np.int64(0))),
                      b.op("less", k, b.const(np.int64(dims[i]))))
            valid = ok if valid is None else b.op("and", valid, ok)
            kc = b.op("clip", k, min=0.0, max=float(dims[i] - 1))
            term = kc if strides[i] == 1 else b.op("mul", kc, b.const(np.int64(strides[i])))
            flat = term if flat is None else b.op("add", flat, term)
        mask = b.op("cast", valid, to=x.dtype)
        w = mask if w is None else b.op("mul", w, mask)
        upd = b.op("mul", gf, reshape(b, w, (n, 1, q)))
        idx = b.op("expand", reshape(b, flat, (n, 1, q)), shape=[n, c, q])
        dx = b.op("scatter_elements", dx, idx, upd, axis=2, reduction="add")
        if mode == "linear":  # d out / d coordinate_i: the corner's value times d weight / d c_i
            vals = b.op("gather_elements", xf, idx, axis=2)
            gv = b.op("mul", b.op("reduce_sum", b.op("mul", gf, vals), axes=[1], keepdims=0), mask)
            gv = b.op("cast", gv, to=dt) if dt != x.dtype else gv
            for i, j in enumerate(combo):
                term = gv if j else b.op("neg", gv)  # the low tap's weight falls as c_i grows
                for l2, j2 in enumerate(combo):
                    if l2 != i:
                        term = b.op("mul", term, taps[l2][j2][1])
                dcoord[i] = term if dcoord[i] is None else b.op("add", dcoord[i], term)
    if mode != "linear":  # piecewise constant in the grid
        return [reshape(b, dx, xs), None]
    parts = [reshape(b, b.op("mul", dcoord[i], slopes[i]), (n, q, 1)) for i in reversed(range(nsp))]
    dgrid = parts[0] if nsp == 1 else b.op("concat", *parts, axis=2)
    return [reshape(b, dx, xs), reshape(b, dgrid, gs)]

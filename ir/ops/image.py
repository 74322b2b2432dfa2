"""Image ops: ``resize`` (nearest/linear/cubic, every ONNX coordinate mode, antialias),
``grid_sample``, ``affine_grid``, ``roi_align`` and ``nms`` (non-max suppression).

Resize is separable: it is applied one axis at a time, each axis as a small gather of ``k`` taps
per output position and a weighted sum, so the cost is ``O(output * k)`` with no Python loop over
pixels. Its scales, sizes and roi are dynamic attributes (ONNX passes them as tensors that may be
known only at run time). Numerics follow the ONNX specification and reference semantics (compute in
float64, round and saturate back to integer dtypes).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Sequence

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..codecs import PIXEL_FORMATS, decode_image
from ..dtypes import FLOAT_TYPES, NUMERIC_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import check_dtype, norm_axes, require_rank
from ..types import UNKNOWN, Dim, TensorType
from .indexing import checked_indices


def saturate(y: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Cast a float64 result back to ``dtype``: integer dtypes round half to even and saturate."""
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.clip(np.round(y), info.min, info.max).astype(dtype)
    return np.asarray(y).astype(dtype)


# -- resize ---------------------------------------------------------------------------------------

_COORD_MODES = ("half_pixel", "half_pixel_symmetric", "pytorch_half_pixel", "align_corners", "asymmetric",
                "tf_crop_and_resize", "tf_half_pixel_for_nn")
# "simple" is the opset < 11 rule of onnxruntime: floor when upsampling an axis, ceil when downsampling.
_NEAREST_MODES = ("round_prefer_floor", "round_prefer_ceil", "floor", "ceil", "simple")


def resize_plan(in_shape: Sequence[int], axes: Sequence[int], scales: Sequence[float] | None,
                sizes: Sequence[int] | None, policy: str) -> tuple[list[float], list[int]]:
    """Per-axis (scale, output length) for a resize of a tensor of ``in_shape`` (all axes)."""
    r = len(in_shape)
    scale = [1.0] * r
    out = list(in_shape)
    if sizes:
        for ax, s in zip(axes, sizes):
            out[ax] = int(s)
            scale[ax] = int(s) / in_shape[ax] if in_shape[ax] else 1.0
        if policy != "stretch":
            pick = min if policy == "not_larger" else max
            k = pick(scale[ax] for ax in axes)
            for ax in axes:
                scale[ax] = k
                out[ax] = int(k * in_shape[ax] + 0.5)  # round half up, as the spec says
    elif scales:
        for ax, s in zip(axes, scales):
            scale[ax] = float(s)
            out[ax] = int(float(s) * in_shape[ax])
    else:
        raise ValueError("resize needs scales or sizes")
    return scale, out


def _resize_axes(rank: int, axes: tuple[int, ...] | None) -> list[int]:
    return norm_axes(axes, rank) if axes else list(range(rank))


def _resize_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    check_dtype(ctx, 0, NUMERIC_TYPES)
    a = ctx.attrs
    if a["antialias"] and a["mode"] == "nearest":
        raise ctx.fail("antialias needs mode linear or cubic")
    if x.shape is None:
        return [x]
    axes = _resize_axes(len(x.shape), a["axes"])
    scales, sizes = a["scales"] or None, a["sizes"] or None
    for what, v in (("scales", scales), ("sizes", sizes)):
        if v is not None and len(v) != len(axes):
            raise ctx.fail(f"{what} has {len(v)} entries for {len(axes)} axes")
    out: list[Dim] = list(x.shape)
    known = all(isinstance(x.shape[ax], int) for ax in axes)
    if (scales or sizes) and known:
        _, o = resize_plan([d if isinstance(d, int) else 1 for d in x.shape], axes, scales, sizes,
                           a["keep_aspect_ratio_policy"])
        for ax in axes:
            out[ax] = o[ax]
    elif sizes and a["keep_aspect_ratio_policy"] == "stretch":
        for ax, s in zip(axes, sizes):
            out[ax] = int(s)
    elif scales:
        for ax, s in zip(axes, scales):
            d = x.shape[ax]
            out[ax] = d if s == 1.0 else (int(s * d) if isinstance(d, int) else UNKNOWN)
    else:
        for ax in axes:
            out[ax] = UNKNOWN
    return [TensorType(x.dtype, tuple(out))]


def _source_coords(mode: str, y: np.ndarray, scale: float, n_in: int, n_out: int,
                   roi: tuple[float, float] | None) -> tuple[np.ndarray, np.ndarray | None]:
    """Output index -> source coordinate along one axis; plus the out-of-range mask of
    tf_crop_and_resize (None for the other modes)."""
    out_w = scale * n_in  # the spec's (unrounded) resized length
    if mode == "align_corners":
        return (np.zeros_like(y) if out_w == 1 else y * (n_in - 1) / (out_w - 1)), None
    if mode == "asymmetric":
        return y / scale, None
    if mode == "tf_half_pixel_for_nn":
        return (y + 0.5) / scale, None
    if mode == "pytorch_half_pixel":
        return (np.full_like(y, -0.5) if out_w == 1 else (y + 0.5) / scale - 0.5), None
    if mode == "half_pixel":
        return (y + 0.5) / scale - 0.5, None
    if mode == "half_pixel_symmetric":
        offset = n_in / 2 * (1 - n_out / out_w)
        return offset + (y + 0.5) / scale - 0.5, None
    if mode == "tf_crop_and_resize":
        lo, hi = roi if roi is not None else (0.0, 1.0)
        if out_w == 1:
            x = np.full_like(y, (hi - lo) * (n_in - 1) / 2)
        else:
            x = y * (hi - lo) * (n_in - 1) / (out_w - 1)
        x = x + lo * (n_in - 1)
        return x, (x < 0) | (x > n_in - 1)
    raise ValueError(f"unknown coordinate_transformation_mode {mode!r}")


def _cubic_kernel(t: np.ndarray, a: float) -> np.ndarray:
    t = np.abs(t)
    inner = ((a + 2) * t - (a + 3)) * t * t + 1
    outer = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return np.where(t <= 1, inner, np.where(t < 2, outer, 0.0))


def _taps(x: np.ndarray, scale: float, n_in: int, mode: str, nearest_mode: str, cubic_a: float,
          antialias: bool) -> tuple[np.ndarray, np.ndarray]:
    """(indices [out, k], weights [out, k]) of the input samples that make each output sample."""
    fl = np.floor(x)
    frac = x - fl
    if mode == "nearest":
        if nearest_mode == "round_prefer_floor":
            idx = np.where(frac <= 0.5, fl, fl + 1)
        elif nearest_mode == "round_prefer_ceil":
            idx = np.where(frac < 0.5, fl, fl + 1)
        elif nearest_mode == "floor" or (nearest_mode == "simple" and scale >= 1):
            idx = fl
        else:
            idx = np.ceil(x)
        return idx[:, None].astype(np.int64), np.ones((len(x), 1))
    support = 1.0 if mode == "linear" else 2.0
    s = min(scale, 1.0) if antialias else 1.0
    start = math.floor(-support / s) + 1  # the kernel's footprint widens by 1/s when antialiasing
    offsets = np.arange(start, 1 - start + 1)
    t = (offsets[None, :] - frac[:, None]) * s
    w = np.clip(1 - np.abs(t), 0, 1) if mode == "linear" else _cubic_kernel(t, cubic_a)
    if antialias:
        w = w / w.sum(axis=1, keepdims=True)
    return fl.astype(np.int64)[:, None] + offsets[None, :], w


def _resize_axis(data: np.ndarray, axis: int, scale: float, n_out: int, roi: tuple[float, float] | None,
                 a: dict) -> np.ndarray:
    n_in = data.shape[axis]
    y = np.arange(n_out, dtype=np.float64)
    x, extrap = _source_coords(a["coordinate_transformation_mode"], y, scale, n_in, n_out, roi)
    idx, w = _taps(x, scale, n_in, a["mode"], a["nearest_mode"], a["cubic_coeff_a"], bool(a["antialias"]))
    if a["exclude_outside"] and a["mode"] != "nearest":
        w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
        total = w.sum(axis=1, keepdims=True)
        w = w / np.where(total == 0, 1.0, total)
    idx = np.clip(idx, 0, max(n_in - 1, 0))
    shape = (1,) * axis + (n_out,) + (1,) * (data.ndim - axis - 1)
    out = None
    for k in range(idx.shape[1]):  # one gather per tap: no [.., out, k, ..] intermediate
        term = np.take(data, idx[:, k], axis=axis) * w[:, k].reshape(shape)
        out = term if out is None else out + term
    if extrap is not None and extrap.any():
        mask = extrap.reshape((1,) * axis + (n_out,) + (1,) * (data.ndim - axis - 1))
        out = np.where(mask, a["extrapolation_value"], out)
    return out


class ResizeAxis(NamedTuple):
    """How ``resize`` treats one axis it resizes: scale, sizes, the crop window (tf_crop_and_resize
    only, else None) and whether the axis maps onto itself unchanged."""
    axis: int
    scale: float
    n_in: int
    n_out: int
    roi: tuple[float, float] | None
    identity: bool


def resize_axis_plans(shape: Sequence[int], a: dict) -> list[ResizeAxis]:
    """The per-axis geometry of a resize of a tensor of ``shape`` with attributes ``a`` (axes in the
    order the op resizes them); shared by the reference, its gradient rule and the x86 kernel."""
    r = len(shape)
    axes = _resize_axes(r, a["axes"])
    scale, out = resize_plan(tuple(shape), axes, a["scales"] or None, a["sizes"] or None,
                             a["keep_aspect_ratio_policy"])
    roi = [0.0] * r + [1.0] * r
    if a["roi"]:
        n = len(axes)
        for i, ax in enumerate(axes):
            roi[ax], roi[r + ax] = a["roi"][i], a["roi"][n + i]
    crop = a["coordinate_transformation_mode"] == "tf_crop_and_resize"
    plans = []
    for ax in axes:
        ident = (math.isclose(scale[ax], 1.0) and out[ax] == shape[ax]
                 and (not crop or (math.isclose(roi[ax], 0.0) and math.isclose(roi[r + ax], 1.0))))
        plans.append(ResizeAxis(ax, scale[ax], shape[ax], out[ax], (roi[ax], roi[r + ax]) if crop else None, ident))
    return plans


def _resize(x: np.ndarray, **a) -> np.ndarray:
    y = x.astype(np.float64)
    for p in resize_axis_plans(x.shape, a):
        if p.identity or p.n_out == 0:
            if p.n_out == 0:
                y = np.take(y, np.zeros(0, np.int64), axis=p.axis)
            continue
        y = _resize_axis(y, p.axis, p.scale, p.n_out, p.roi, a)
    return saturate(y, x.dtype)


defop("resize", operands=("x", "roi?", "scales?", "sizes?"), infer=_resize_infer, reference=_resize,
      attrs={"mode": AttrSpec(AttrKind.STR, "nearest", ("nearest", "linear", "cubic")),
             "coordinate_transformation_mode": AttrSpec(AttrKind.STR, "half_pixel", _COORD_MODES),
             "nearest_mode": AttrSpec(AttrKind.STR, "round_prefer_floor", _NEAREST_MODES),
             "cubic_coeff_a": AttrSpec(AttrKind.FLOAT, -0.75),
             "exclude_outside": AttrSpec(AttrKind.INT, 0),
             "extrapolation_value": AttrSpec(AttrKind.FLOAT, 0.0),
             "antialias": AttrSpec(AttrKind.INT, 0),
             "axes": AttrSpec(AttrKind.INTS, None),
             "keep_aspect_ratio_policy": AttrSpec(AttrKind.STR, "stretch", ("stretch", "not_larger", "not_smaller")),
             "roi": AttrSpec(AttrKind.FLOATS, None),
             "scales": AttrSpec(AttrKind.FLOATS, None),
             "sizes": AttrSpec(AttrKind.INTS, None)},
      dynamic={"roi": "roi", "scales": "scales", "sizes": "sizes"},
      doc="Resize (ONNX Resize-19 semantics): output size from ``sizes`` (with the aspect-ratio policy) or "
          "floor(in * scale); ``axes`` selects the resized axes (default all); empty scales/sizes/roi "
          "mean absent.")


# -- grid_sample -----------------------------------------------------------------------------------

def _grid_sample_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    check_dtype(ctx, 1, FLOAT_TYPES)
    xs, gs = ctx.types[0].shape, ctx.types[1].shape
    if xs is not None and gs is not None:
        if len(xs) != len(gs) or len(xs) < 3:
            raise ctx.fail("x is [N, C, *spatial] and grid is [N, *out_spatial, len(spatial)]")
        if isinstance(gs[-1], int) and gs[-1] != len(xs) - 2:
            raise ctx.fail(f"grid's last dim must be {len(xs) - 2}")
        return [TensorType(ctx.types[0].dtype, (xs[0], xs[1], *gs[1:-1]))]
    rank = xs and len(xs) or (gs and len(gs))
    n = xs[0] if xs else (gs[0] if gs else UNKNOWN)
    c = xs[1] if xs else UNKNOWN
    tail = tuple(gs[1:-1]) if gs else (UNKNOWN,) * (rank - 2) if rank else None
    return [TensorType(ctx.types[0].dtype, None if tail is None else (n, c, *tail))]


def _reflect(x: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Reflect coordinates at the borders [lo, hi] until they fall inside (as PyTorch does)."""
    rng = hi - lo
    if rng <= 0:
        return np.full_like(x, lo)
    below, above = x < lo, x > hi
    dx = np.where(below, lo - x, np.where(above, x - hi, 0.0))
    n = np.trunc(dx / rng)
    r = dx - n * rng
    even = n % 2 == 0
    return np.where(below, np.where(even, lo + r, hi - r),
                    np.where(above, np.where(even, hi - r, lo + r), x))


def _grid_sample(x: np.ndarray, grid: np.ndarray, mode: str, padding_mode: str, align_corners: int) -> np.ndarray:
    n_b, n_c, *dims = x.shape
    out_sp = grid.shape[1:-1]
    # grid's last axis lists coordinates innermost-first (x = width); compute in the grid's dtype
    # and store as float32, as the ONNX reference and PyTorch do
    g = grid[..., ::-1]
    coords = []
    for i, d in enumerate(dims):
        n = g[..., i]
        c = (n + 1) / 2.0 * (d - 1) if align_corners else ((n + 1) * d - 1) / 2.0
        coords.append(np.asarray(c).astype(np.float32).astype(np.float64))
    lo = [0.0 if align_corners else -0.5 for _ in dims]
    hi = [d - 1.0 if align_corners else d - 0.5 for d in dims]
    for i, d in enumerate(dims):
        if mode == "cubic":  # PyTorch pads each cubic tap, not the sample position
            continue
        c = np.rint(coords[i]) if mode == "nearest" else coords[i]
        out = (c < lo[i]) | (c > hi[i])
        if padding_mode == "border":
            c = np.where(out, np.clip(c, 0, d - 1), c)
        elif padding_mode == "reflection":
            c = np.where(out, _reflect(c, lo[i], hi[i]), c)
        coords[i] = c

    def lookup(idx: list[np.ndarray]) -> tuple[list[np.ndarray], np.ndarray]:
        valid = np.ones(idx[0].shape, bool)
        fixed = []
        for i, (k, d) in enumerate(zip(idx, dims)):
            if padding_mode == "zeros":
                valid &= (k >= 0) & (k < d)
                k = np.clip(k, 0, d - 1)
            elif padding_mode == "border":
                k = np.clip(k, 0, d - 1)
            else:
                k = np.trunc(_reflect(k.astype(np.float64), lo[i], hi[i])).astype(np.int64)
            fixed.append(k)
        return fixed, valid

    xt = np.moveaxis(x, 1, -1).astype(np.float64)  # [N, *dims, C]
    bidx = np.arange(n_b).reshape((n_b,) + (1,) * len(out_sp))
    if mode == "nearest":
        taps = [[(np.trunc(c).astype(np.int64), np.ones_like(c))] for c in coords]
    else:
        taps = []
        for c in coords:
            f = np.floor(c)
            t = c - f
            fi = f.astype(np.int64)
            if mode == "linear":
                taps.append([(fi, 1 - t), (fi + 1, t)])
            else:
                taps.append([(fi + k, _cubic_kernel(t - k, -0.75)) for k in (-1, 0, 1, 2)])
    acc = np.zeros((n_b, *out_sp, n_c))
    for combo in np.ndindex(*(len(tp) for tp in taps)):
        idx = [taps[i][j][0] for i, j in enumerate(combo)]
        w = np.ones(idx[0].shape)
        for i, j in enumerate(combo):
            w = w * taps[i][j][1]
        fixed, valid = lookup(idx)
        vals = xt[(bidx, *fixed)]
        acc += vals * (w * valid)[..., None]
    return np.moveaxis(acc, -1, 1).astype(x.dtype)


defop("grid_sample", operands=("x", "grid"), infer=_grid_sample_infer, reference=_grid_sample,
      attrs={"mode": AttrSpec(AttrKind.STR, "linear", ("linear", "nearest", "cubic")),
             "padding_mode": AttrSpec(AttrKind.STR, "zeros", ("zeros", "border", "reflection")),
             "align_corners": AttrSpec(AttrKind.INT, 0)},
      doc="Sample x [N, C, *spatial] at normalized grid positions [N, *out, len(spatial)] in [-1, 1].")


# -- affine_grid -----------------------------------------------------------------------------------

def _affine_grid_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    ts = require_rank(ctx, 0, 3)
    size = ctx.attrs["size"]
    nd = len(size) - 2 if size is not None else (ts[1] if ts is not None and isinstance(ts[1], int) else None)
    if nd is None:
        return [TensorType(ctx.types[0].dtype, None)]
    if nd not in (2, 3):
        raise ctx.fail("affine_grid makes 2-D or 3-D grids")
    n = ts[0] if ts is not None else UNKNOWN
    spatial = tuple(size[2:]) if size is not None else (UNKNOWN,) * nd
    return [TensorType(ctx.types[0].dtype, (n, *spatial, nd))]


def _affine_grid(theta: np.ndarray, size: tuple[int, ...], align_corners: int) -> np.ndarray:
    spatial = size[2:]
    axes = []
    for d in spatial:
        if align_corners:
            axes.append(np.linspace(-1.0, 1.0, d) if d > 1 else np.full(d, -1.0))
        else:
            axes.append((2 * np.arange(d) + 1) / d - 1)
    mesh = np.meshgrid(*axes, indexing="ij")
    # homogeneous base coordinates, innermost spatial axis first (x, y[, z], 1)
    base = np.stack([*mesh[::-1], np.ones(tuple(spatial))], axis=-1)
    out = np.einsum("...k,nik->n...i", base, theta.astype(np.float64))
    return out.astype(theta.dtype)


defop("affine_grid", operands=("theta", "size?"), infer=_affine_grid_infer, reference=_affine_grid,
      attrs={"align_corners": AttrSpec(AttrKind.INT, 0), "size": AttrSpec(AttrKind.INTS, None)},
      dynamic={"size": "size"},
      doc="Sampling grid [N, *spatial, nd] of affine maps theta [N, nd, nd+1] for an output of ``size``.")


# -- roi_align --------------------------------------------------------------------------------------

def _roi_align_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    xs = require_rank(ctx, 0, 4)
    rs = require_rank(ctx, 1, 2)
    bs = require_rank(ctx, 2, 1)
    n = rs[0] if rs is not None else (bs[0] if bs is not None else UNKNOWN)
    c = xs[1] if xs is not None else UNKNOWN
    return [TensorType(ctx.types[0].dtype, (n, c, ctx.attrs["output_height"], ctx.attrs["output_width"]))]


def _roi_align(x: np.ndarray, rois: np.ndarray, batch_indices: np.ndarray, mode: str, output_height: int,
               output_width: int, sampling_ratio: int, spatial_scale: float,
               coordinate_transformation_mode: str) -> np.ndarray:
    _, n_c, h, w = x.shape
    ph, pw = output_height, output_width
    half = coordinate_transformation_mode == "half_pixel"
    offset = 0.5 if half else 0.0
    out = np.zeros((len(rois), n_c, ph, pw))
    xd = x.astype(np.float64)
    batch_indices = checked_indices(batch_indices, x.shape[0])
    for r, (roi, b) in enumerate(zip(rois.astype(np.float64), batch_indices)):
        x0, y0, x1, y1 = roi * spatial_scale - offset
        rw, rh = x1 - x0, y1 - y0
        if not half:  # malformed ROIs are forced to 1x1 in the legacy mode
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = sampling_ratio if sampling_ratio > 0 else int(np.ceil(rh / ph))
        gw = sampling_ratio if sampling_ratio > 0 else int(np.ceil(rw / pw))
        count = gh * gw
        if count == 0:  # an empty sampling grid pools nothing
            continue
        # sample positions [ph, gh] and [pw, gw]
        yy = y0 + np.arange(ph)[:, None] * bh + (np.arange(gh)[None, :] + 0.5) * bh / gh
        xx = x0 + np.arange(pw)[:, None] * bw + (np.arange(gw)[None, :] + 0.5) * bw / gw

        def axis_taps(c: np.ndarray, size: int):
            skip = (c < -1.0) | (c > size)
            c = np.maximum(c, 0)
            low = np.trunc(c).astype(np.int64)
            at_end = low >= size - 1
            low = np.where(at_end, size - 1, low)
            high = np.where(at_end, size - 1, low + 1)
            c = np.where(at_end, low, c)
            frac = c - low
            return low, high, 1 - frac, frac, skip

        yl, yh, hy, ly, sy = axis_taps(yy, h)
        xl, xh, hx, lx, sx = axis_taps(xx, w)
        # broadcast to [ph, gh, pw, gw]
        e = (slice(None), slice(None), None, None)
        f = (None, None, slice(None), slice(None))
        ok = ~(sy[e] | sx[f])
        img = xd[int(b)]  # [C, H, W]
        terms = [(yl, xl, hy[e] * hx[f]), (yl, xh, hy[e] * lx[f]), (yh, xl, ly[e] * hx[f]), (yh, xh, ly[e] * lx[f])]
        vals = [img[:, yi[e], xi[f]] * (wt * ok) for yi, xi, wt in terms]  # each [C, ph, gh, pw, gw]
        if mode == "avg":
            out[r] = sum(vals).sum(axis=(2, 4)) / count
        else:  # max over samples of the largest weighted corner (onnxruntime's definition)
            out[r] = np.max(np.maximum.reduce(vals), axis=(2, 4))
    return out.astype(x.dtype)


defop("roi_align", operands=("x", "rois", "batch_indices"), infer=_roi_align_infer, reference=_roi_align,
      attrs={"mode": AttrSpec(AttrKind.STR, "avg", ("avg", "max")),
             "output_height": AttrSpec(AttrKind.INT, 1), "output_width": AttrSpec(AttrKind.INT, 1),
             "sampling_ratio": AttrSpec(AttrKind.INT, 0), "spatial_scale": AttrSpec(AttrKind.FLOAT, 1.0),
             "coordinate_transformation_mode": AttrSpec(AttrKind.STR, "half_pixel",
                                                        ("half_pixel", "output_half_pixel"))},
      doc="Region-of-interest pooling by bilinear sampling; rois are [x1, y1, x2, y2] rows.")


# -- nms ------------------------------------------------------------------------------------------

def _nms_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    require_rank(ctx, 0, 3)
    require_rank(ctx, 1, 3)
    return [TensorType(DType.i64, (UNKNOWN, 3))]


def _nms(boxes: np.ndarray, scores: np.ndarray, center_point_box: int, max_output_boxes_per_class: int | None,
         iou_threshold: float | None, score_threshold: float | None) -> np.ndarray:
    limit = max(int(max_output_boxes_per_class or 0), 0)
    dt = boxes.dtype.type
    iou_t = dt(iou_threshold or 0.0)
    selected: list[tuple[int, int, int]] = []
    for b in range(boxes.shape[0]):
        bx = boxes[b]
        if center_point_box:
            half_w, half_h = bx[:, 2] / dt(2), bx[:, 3] / dt(2)
            x_lo, x_hi = bx[:, 0] - half_w, bx[:, 0] + half_w
            y_lo, y_hi = bx[:, 1] - half_h, bx[:, 1] + half_h
        else:
            x_lo, x_hi = np.minimum(bx[:, 1], bx[:, 3]), np.maximum(bx[:, 1], bx[:, 3])
            y_lo, y_hi = np.minimum(bx[:, 0], bx[:, 2]), np.maximum(bx[:, 0], bx[:, 2])
        area = (x_hi - x_lo) * (y_hi - y_lo)
        for c in range(scores.shape[1]):
            s = scores[b, c]
            cand = np.arange(len(s)) if score_threshold is None else np.nonzero(s > score_threshold)[0]
            cand = cand[np.argsort(-s[cand], kind="stable")]  # best first; ties keep the lower index
            keep: list[int] = []
            for i in cand:
                if len(keep) >= limit:
                    break
                if keep:
                    k = np.asarray(keep)
                    iw = np.minimum(x_hi[i], x_hi[k]) - np.maximum(x_lo[i], x_lo[k])
                    ih = np.minimum(y_hi[i], y_hi[k]) - np.maximum(y_lo[i], y_lo[k])
                    inter = iw * ih
                    union = area[i] + area[k] - inter
                    ok = (iw > 0) & (ih > 0) & (inter > 0) & (area[i] > 0) & (area[k] > 0) & (union > 0)
                    with np.errstate(all="ignore"):
                        iou = inter / np.where(union > 0, union, 1)
                    if np.any(ok & (iou > iou_t)):
                        continue
                keep.append(int(i))
                selected.append((b, c, int(i)))
    return np.asarray(selected, dtype=np.int64).reshape(-1, 3)


defop("nms", operands=("boxes", "scores", "max_output_boxes_per_class?", "iou_threshold?", "score_threshold?"),
      infer=_nms_infer, reference=_nms, vjp=NOT_DIFFERENTIABLE, traits=Trait.PURE,
      attrs={"center_point_box": AttrSpec(AttrKind.INT, 0),
             "max_output_boxes_per_class": AttrSpec(AttrKind.INT, None),
             "iou_threshold": AttrSpec(AttrKind.FLOAT, None),
             "score_threshold": AttrSpec(AttrKind.FLOAT, None)},
      dynamic={"max_output_boxes_per_class": "max_output_boxes_per_class", "iou_threshold": "iou_threshold",
               "score_threshold": "score_threshold"},
      doc="Greedy non-max suppression per batch and class; result rows are [batch, class, box].")


# -- image_decode ---------------------------------------------------------------------------------

def _image_decode_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, {DType.u8})
    require_rank(ctx, 0, 1)
    return [TensorType(DType.u8, (UNKNOWN, UNKNOWN, 1 if ctx.attrs["pixel_format"] == "Grayscale" else 3))]


defop("image_decode", operands=("encoded",), infer=_image_decode_infer, vjp=NOT_DIFFERENTIABLE,
      attrs={"pixel_format": AttrSpec(AttrKind.STR, "RGB", PIXEL_FORMATS)},
      reference=lambda encoded, *, pixel_format: decode_image(np.asarray(encoded).tobytes(), pixel_format),
      doc="decode an encoded image (JPEG, PNG, BMP, TIFF, WebP, PNM, JPEG 2000) to u8[H, W, C] through the "
          "registered codec (ir/codecs.py); H and W are known only after decoding")

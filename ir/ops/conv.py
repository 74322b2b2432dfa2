"""Convolution ops: ``conv`` (N-D, grouped, with an optional bias), ``conv_transpose``,
``conv_weight_grad`` (conv's weight gradient as one op, so backends can run it as a GEMM over the
pixels), ``deform_conv`` and ``col2im``, plus the sliding-window arithmetic the pooling ops share.

Spatial attributes follow ONNX: ``pads`` is ``[begin_0, begin_1, ..., end_0, end_1, ...]``; an empty
``strides``/``dilations``/``pads`` means all ones/ones/zeros. ``auto_pad`` is kept so graphs with
symbolic spatial dims stay importable; the frontend resolves it to explicit pads whenever the input
shape is static. References use strided window views and batched matmuls (im2col, or one matmul
per kernel tap when channels are many), never Python loops over pixels, because the interpreter runs
whole image models with them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, NUMERIC_TYPES
from ..registry import NOT_DIFFERENTIABLE, InferContext, defop
from ..shape_rules import check_dtype, require_rank
from ..types import UNKNOWN, Dim, TensorType

AUTO_PAD = ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")


def spatial_attrs(**extra: AttrSpec) -> dict[str, AttrSpec]:
    """The attribute schema every windowed op shares."""
    return {"strides": AttrSpec(AttrKind.INTS, ()), "pads": AttrSpec(AttrKind.INTS, ()),
            "dilations": AttrSpec(AttrKind.INTS, ()),
            "auto_pad": AttrSpec(AttrKind.STR, "NOTSET", AUTO_PAD), **extra}


# -- window arithmetic (shared with pool.py) -----------------------------------------------------

def fill(values: Sequence[int], n: int, default: int, what: str = "attribute") -> tuple[int, ...]:
    """An empty per-axis attribute means ``default`` on every axis."""
    if not values:
        return (default,) * n
    if len(values) != n:
        raise ValueError(f"{what} {list(values)} must have {n} entries")
    return tuple(values)


def resolve_pads(auto_pad: str, in_dims: Sequence[Dim], kernel: Sequence[int], strides: Sequence[int],
                 dilations: Sequence[int], pads: Sequence[int]) -> tuple[int, ...] | None:
    """Explicit ``[begins..., ends...]`` pads; None when SAME padding meets a non-static dim."""
    n = len(kernel)
    if auto_pad == "VALID":
        return (0,) * (2 * n)
    if auto_pad == "NOTSET":
        return fill(pads, 2 * n, 0, "pads")
    begins, ends = [], []
    for i in range(n):
        d = in_dims[i]
        if not isinstance(d, int):
            return None
        out = -(-d // strides[i])
        total = max(0, (out - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1 - d)
        small, big = total // 2, total - total // 2
        begins.append(small if auto_pad == "SAME_UPPER" else big)
        ends.append(big if auto_pad == "SAME_UPPER" else small)
    return tuple(begins + ends)


def window_count(size: Dim, kernel: int, stride: int, dilation: int, pad_begin: int, pad_end: int,
                 ceil_mode: bool = False) -> Dim:
    """How many windows fit along one axis; with ``ceil_mode`` a last partial window counts when it
    starts inside the input or its begin padding (the ONNX/PyTorch rule)."""
    if not isinstance(size, int):
        return UNKNOWN
    span = size + pad_begin + pad_end - ((kernel - 1) * dilation + 1)
    if span < 0:
        raise ValueError(f"window of {kernel} (dilation {dilation}) does not fit an axis of {size} padded "
                         f"by {pad_begin}+{pad_end}")
    if not ceil_mode:
        return span // stride + 1
    out = -(-span // stride) + 1
    if (out - 1) * stride >= size + pad_begin:
        out -= 1
    return out


def window_view(xp: np.ndarray, kernel: Sequence[int], strides: Sequence[int], dilations: Sequence[int],
                out: Sequence[int]) -> np.ndarray:
    """A read-only view ``[N, C, *out, *kernel]`` of the (already padded) ``xp`` without copying."""
    n = len(kernel)
    st = xp.strides
    shape = xp.shape[:2] + tuple(out) + tuple(kernel)
    strides = st[:2] + tuple(st[2 + i] * strides[i] for i in range(n)) + \
        tuple(st[2 + i] * dilations[i] for i in range(n))
    return np.lib.stride_tricks.as_strided(xp, shape, strides, writeable=False)


def pad_spatial(x: np.ndarray, begins: Sequence[int], ends: Sequence[int], value: float | int = 0) -> np.ndarray:
    """Pad (or crop, for negative amounts) the spatial axes of ``[N, C, *spatial]``."""
    crop = tuple(slice(max(0, -b), x.shape[2 + i] - max(0, -e)) for i, (b, e) in enumerate(zip(begins, ends)))
    x = x[(slice(None), slice(None)) + crop]
    widths = [(0, 0), (0, 0)] + [(max(0, b), max(0, e)) for b, e in zip(begins, ends)]
    if not any(w for pair in widths for w in pair):
        return x
    return np.pad(x, widths, mode="constant", constant_values=value)


def accumulator(dt: np.dtype) -> np.dtype:
    """The dtype to compute in: f32 for half types (BLAS has no f16), i64 for integers."""
    if dt.kind in "iub":
        return np.dtype(np.int64)
    if dt == np.float64:
        return dt
    return np.dtype(np.float32)


def scatter_windows(cols: np.ndarray, strides: Sequence[int], dilations: Sequence[int], begins: Sequence[int],
                    out: Sequence[int]) -> np.ndarray:
    """The adjoint of ``window_view``: add ``cols[N, C, *kernel, *blocks]`` into an image of spatial
    size ``out`` whose padded origin is ``-begins``. Loops over kernel offsets only."""
    n = len(out)
    kernel, blocks = cols.shape[2:2 + n], cols.shape[2 + n:]
    # the full (uncropped) extent, shifted so that negative begins (extra room) stay in range
    offs = [max(0, -b) for b in begins]
    full = [max((blocks[i] - 1) * strides[i] + (kernel[i] - 1) * dilations[i] + 1, begins[i] + out[i]) + offs[i]
            for i in range(n)]
    buf = np.zeros(cols.shape[:2] + tuple(full), dtype=cols.dtype)
    for kk in np.ndindex(*kernel):
        dst = tuple(slice(kk[i] * dilations[i] + offs[i],
                          kk[i] * dilations[i] + offs[i] + (blocks[i] - 1) * strides[i] + 1, strides[i])
                    for i in range(n))
        buf[(slice(None), slice(None)) + dst] += cols[(slice(None), slice(None)) + kk]
    crop = tuple(slice(begins[i] + offs[i], begins[i] + offs[i] + out[i]) for i in range(n))
    return buf[(slice(None), slice(None)) + crop]


# -- conv -----------------------------------------------------------------------------------------

def _conv_out_dims(x: tuple[Dim, ...], kernel: tuple[Dim, ...], attrs: dict) -> list[Dim]:
    n = len(kernel)
    if not all(isinstance(k, int) for k in kernel):
        return [UNKNOWN] * n
    s, d = fill(attrs["strides"], n, 1, "strides"), fill(attrs["dilations"], n, 1, "dilations")
    pads = resolve_pads(attrs["auto_pad"], x[2:], kernel, s, d, attrs["pads"])
    if pads is None:
        return [-(-x[2 + i] // s[i]) if isinstance(x[2 + i], int) else UNKNOWN for i in range(n)]
    return [window_count(x[2 + i], kernel[i], s[i], d[i], pads[i], pads[n + i]) for i in range(n)]


def _check_groups(ctx: InferContext, c: Dim, cw: Dim, m: Dim, group: int) -> None:
    if group < 1:
        raise ctx.fail(f"group must be >= 1, got {group}")
    if isinstance(c, int) and isinstance(cw, int) and c != cw * group:
        raise ctx.fail(f"input has {c} channels but weight expects {cw} x group {group}")
    if isinstance(m, int) and m % group:
        raise ctx.fail(f"{m} output channels are not divisible by group {group}")


def _conv_infer(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.types[0], ctx.types[1]
    dt = check_dtype(ctx, 0, NUMERIC_TYPES)
    if w.dtype != dt or (len(ctx.types) > 2 and ctx.types[2].dtype != dt):
        raise ctx.fail("input, weight and bias must share a dtype")
    if x.shape is None or w.shape is None:
        rank = x.rank if x.shape is not None else w.rank
        return [TensorType(dt, None if rank is None else (UNKNOWN,) * rank)]
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise ctx.fail(f"input {x} and weight {w} must have the same rank >= 3")
    _check_groups(ctx, x.shape[1], w.shape[1], w.shape[0], ctx.attrs["group"])
    _check_bias(ctx, w.shape[0])
    return [TensorType(dt, (x.shape[0], w.shape[0], *_conv_out_dims(x.shape, w.shape[2:], ctx.attrs)))]


def _check_bias(ctx: InferContext, channels: Dim) -> None:
    """The optional bias is one value per output channel (a bias of another shape would broadcast
    silently in one backend and fail in another)."""
    if len(ctx.types) < 3 or ctx.types[2].shape is None:
        return
    b = ctx.types[2].shape
    if len(b) != 1 or (isinstance(b[0], int) and isinstance(channels, int) and b[0] != channels):
        raise ctx.fail(f"bias {ctx.types[2]} must be one value per output channel ({channels})")


def grouped_conv(xp: np.ndarray, w: np.ndarray, group: int, strides: Sequence[int], dilations: Sequence[int],
                 out: Sequence[int]) -> np.ndarray:
    """Correlate the padded ``xp[N, C, *in]`` with ``w[M, C/group, *k]`` -> ``[N, M, *out]``.

    One batched (over groups) matmul per kernel tap, accumulated: each tap reads a strided slice of
    the input, so the copies stay cache-sized instead of one im2col matrix K times the input."""
    n = len(out)
    N, C = xp.shape[:2]
    M, k = w.shape[0], w.shape[2:]
    cg, mg, P = C // group, M // group, math.prod(out)
    if cg < 32:  # few channels per tap: one im2col matrix makes a better-shaped matmul
        return _im2col_conv(xp, w, group, strides, dilations, out)
    taps = w.reshape(group, mg, cg, math.prod(k)).transpose(3, 0, 1, 2)  # [K, G, Mg, Cg]
    y = np.zeros((group, mg, N * P), dtype=xp.dtype)
    for t, kk in enumerate(np.ndindex(*k)):
        sl = tuple(slice(kk[i] * dilations[i], kk[i] * dilations[i] + (out[i] - 1) * strides[i] + 1, strides[i])
                   for i in range(n))
        xs = xp[(slice(None), slice(None)) + sl]  # [N, C, *out]
        cols = np.ascontiguousarray(np.moveaxis(xs, 1, 0)).reshape(group, cg, N * P)
        y += np.matmul(taps[t], cols)
    return y.reshape(group, mg, N, P).transpose(2, 0, 1, 3).reshape((N, M) + tuple(out))


def _im2col_conv(xp: np.ndarray, w: np.ndarray, group: int, strides: Sequence[int], dilations: Sequence[int],
                 out: Sequence[int]) -> np.ndarray:
    n = len(out)
    N, C = xp.shape[:2]
    M, k = w.shape[0], tuple(w.shape[2:])
    cg, mg, P, K = C // group, M // group, math.prod(out), math.prod(k)
    win = window_view(xp, k, strides, dilations, out).reshape((N, group, cg) + tuple(out) + k)
    # [N, G, Cg, *out, *k] -> [G, Cg, *k, N, *out]: output pixels innermost so the copy streams
    axes = (1, 2) + tuple(range(3 + n, 3 + 2 * n)) + (0,) + tuple(range(3, 3 + n))
    cols = win.transpose(axes).reshape(group, cg * K, N * P)
    res = np.matmul(w.reshape(group, mg, cg * K), cols)  # [G, Mg, N*P]
    return res.reshape(group, mg, N, P).transpose(2, 0, 1, 3).reshape((N, M) + tuple(out))


def _conv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, strides, pads, dilations, group,
          auto_pad) -> np.ndarray:
    n = x.ndim - 2
    k = w.shape[2:]
    s, d = fill(strides, n, 1), fill(dilations, n, 1)
    p = resolve_pads(auto_pad, x.shape[2:], k, s, d, pads)
    acc = accumulator(x.dtype)
    xp = pad_spatial(x.astype(acc, copy=False), p[:n], p[n:])
    out = [window_count(x.shape[2 + i], k[i], s[i], d[i], p[i], p[n + i]) for i in range(n)]
    y = grouped_conv(xp, w.astype(acc, copy=False), group, s, d, out)
    if b is not None:
        y = y + b.astype(acc).reshape((1, -1) + (1,) * n)
    return y.astype(x.dtype, copy=False)


defop("conv", operands=("x", "w", "b?"), attrs=spatial_attrs(group=AttrSpec(AttrKind.INT, 1)),
      infer=_conv_infer, reference=_conv,
      doc="N-D cross-correlation: x[N,C,*in], w[M,C/group,*k], optional bias b[M] -> [N,M,*out]")


# -- conv_transpose -------------------------------------------------------------------------------

def _convt_out_dims(x: tuple[Dim, ...], w: tuple[Dim, ...], attrs: dict) -> list[Dim]:
    n = len(x) - 2
    s, d = fill(attrs["strides"], n, 1, "strides"), fill(attrs["dilations"], n, 1, "dilations")
    op = fill(attrs["output_padding"], n, 0, "output_padding")
    p = fill(attrs["pads"], 2 * n, 0, "pads")
    out: list[Dim] = []
    for i in range(n):
        xi, ki = x[2 + i], w[2 + i]
        if isinstance(xi, int) and isinstance(ki, int):
            out.append(s[i] * (xi - 1) + op[i] + (ki - 1) * d[i] + 1 - p[i] - p[n + i])
        else:
            out.append(UNKNOWN)
    return out


def _convt_infer(ctx: InferContext) -> list[TensorType]:
    x, w = ctx.types[0], ctx.types[1]
    dt = check_dtype(ctx, 0, FLOAT_TYPES)
    if w.dtype != dt or (len(ctx.types) > 2 and ctx.types[2].dtype != dt):
        raise ctx.fail("input, weight and bias must share a dtype")
    if x.shape is None or w.shape is None:
        return [TensorType(dt, None)]
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise ctx.fail(f"input {x} and weight {w} must have the same rank >= 3")
    g = ctx.attrs["group"]
    if isinstance(x.shape[1], int) and isinstance(w.shape[0], int) and x.shape[1] != w.shape[0]:
        raise ctx.fail(f"input has {x.shape[1]} channels but weight expects {w.shape[0]}")
    m: Dim = w.shape[1] * g if isinstance(w.shape[1], int) else UNKNOWN
    _check_bias(ctx, m)
    return [TensorType(dt, (x.shape[0], m, *_convt_out_dims(x.shape, w.shape, ctx.attrs)))]


def _conv_transpose(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, strides, pads, dilations,
                    group, output_padding) -> np.ndarray:
    n = x.ndim - 2
    s, d = fill(strides, n, 1), fill(dilations, n, 1)
    p = fill(pads, 2 * n, 0)
    out = _convt_out_dims(x.shape, w.shape, {"strides": s, "dilations": d, "pads": p,
                                             "output_padding": output_padding})
    acc = accumulator(x.dtype)
    N, C = x.shape[:2]
    cg, mg = C // group, w.shape[1]
    k = w.shape[2:]
    P, K = math.prod(x.shape[2:]), math.prod(k)
    # per group: [N*P, Cg] @ [Cg, Mg*K] gives each input pixel's contribution to every kernel tap
    xm = x.astype(acc, copy=False).reshape(N, group, cg, P).transpose(1, 0, 3, 2).reshape(group, N * P, cg)
    wm = w.astype(acc, copy=False).reshape(group, cg, mg * K)
    cols = np.matmul(xm, wm).reshape((group, N) + x.shape[2:] + (mg,) + k)
    # -> [N, M, *k, *in]
    axes = (1, 0, 2 + n) + tuple(range(3 + n, 3 + 2 * n)) + tuple(range(2, 2 + n))
    cols = cols.transpose(axes).reshape((N, group * mg) + k + x.shape[2:])
    y = scatter_windows(cols, s, d, p[:n], out)
    if b is not None:
        y = y + b.astype(acc).reshape((1, -1) + (1,) * n)
    return y.astype(x.dtype, copy=False)


defop("conv_transpose", operands=("x", "w", "b?"), infer=_convt_infer, reference=_conv_transpose,
      attrs={"strides": AttrSpec(AttrKind.INTS, ()), "pads": AttrSpec(AttrKind.INTS, ()),
             "dilations": AttrSpec(AttrKind.INTS, ()), "group": AttrSpec(AttrKind.INT, 1),
             "output_padding": AttrSpec(AttrKind.INTS, ())},
      doc="transposed convolution: x[N,C,*in], w[C,M/group,*k], optional b[M]; explicit pads only")


# -- conv_weight_grad -----------------------------------------------------------------------------

def _cwg_geometry(n: int, attrs: dict) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
    k = tuple(attrs["kernel_shape"])
    if len(k) != n:
        raise ValueError(f"kernel_shape {list(k)} must have {n} entries")
    return (k, fill(attrs["strides"], n, 1, "strides"), fill(attrs["dilations"], n, 1, "dilations"),
            fill(attrs["pads"], 2 * n, 0, "pads"))


def _cwg_infer(ctx: InferContext) -> list[TensorType]:
    x, dy = ctx.types
    dt = check_dtype(ctx, 0, FLOAT_TYPES)
    if dy.dtype != dt:
        raise ctx.fail(f"the output cotangent {dy} must have the input's dtype {dt}")
    if x.shape is None or dy.shape is None or len(x.shape) < 3 or len(dy.shape) != len(x.shape):
        raise ctx.fail(f"input {x} and output cotangent {dy} must have one known rank >= 3")
    n, group = len(x.shape) - 2, ctx.attrs["group"]
    try:
        k, s, d, p = _cwg_geometry(n, ctx.attrs)
    except ValueError as e:
        raise ctx.fail(str(e)) from None
    c, m = x.shape[1], dy.shape[1]
    _check_groups(ctx, c, c // group if isinstance(c, int) else UNKNOWN, m, group)
    for i in range(n):
        xi, oi = x.shape[2 + i], dy.shape[2 + i]
        if isinstance(xi, int) and isinstance(oi, int) and oi != window_count(xi, k[i], s[i], d[i], p[i], p[n + i]):
            raise ctx.fail(f"output cotangent {dy} does not match a conv of {x} with these attributes")
    return [TensorType(dt, (m, c // group if isinstance(c, int) else UNKNOWN, *k))]


def _conv_weight_grad(x: np.ndarray, dy: np.ndarray, *, kernel_shape, strides, pads, dilations,
                      group) -> np.ndarray:
    n = x.ndim - 2
    k, s, d, p = _cwg_geometry(n, {"kernel_shape": kernel_shape, "strides": strides, "dilations": dilations,
                                   "pads": pads})
    acc = accumulator(x.dtype)
    N, C, M, out = x.shape[0], x.shape[1], dy.shape[1], dy.shape[2:]
    cg, mg, P = C // group, M // group, math.prod(out)
    xp = pad_spatial(x.astype(acc, copy=False), p[:n], p[n:])
    g = dy.astype(acc, copy=False).reshape(N, group, mg, P).transpose(1, 2, 0, 3).reshape(group, mg, N * P)
    dw = np.zeros((group, mg, cg) + k, dtype=acc)
    # one batched (over groups) matmul per kernel tap, as grouped_conv: [G, Mg, N*P] @ [G, N*P, Cg]
    for kk in np.ndindex(*k):
        sl = tuple(slice(kk[i] * d[i], kk[i] * d[i] + (out[i] - 1) * s[i] + 1, s[i]) for i in range(n))
        xs = xp[(slice(None), slice(None)) + sl].reshape(N, group, cg, P).transpose(1, 0, 3, 2)
        dw[(Ellipsis,) + kk] = np.matmul(g, xs.reshape(group, N * P, cg))
    return dw.reshape((M, cg) + k).astype(x.dtype, copy=False)


defop("conv_weight_grad", operands=("x", "dy"), infer=_cwg_infer, reference=_conv_weight_grad,
      attrs={"kernel_shape": AttrSpec(AttrKind.INTS, ()), "strides": AttrSpec(AttrKind.INTS, ()),
             "pads": AttrSpec(AttrKind.INTS, ()), "dilations": AttrSpec(AttrKind.INTS, ()),
             "group": AttrSpec(AttrKind.INT, 1)},
      vjp=NOT_DIFFERENTIABLE,
      doc="the gradient of conv(x, w)'s weight w[M,C/group,*kernel_shape] given the output cotangent "
          "dy[N,M,*out] (explicit pads): dw[m,c,t] = sum over n, o of dy[n,m,o] * xpad[n,g(m)*C/group+c,o*s+t*d]")


# -- deform_conv ----------------------------------------------------------------------------------

def _deform_infer(ctx: InferContext) -> list[TensorType]:
    x, w, off = ctx.types[0], ctx.types[1], ctx.types[2]
    dt = check_dtype(ctx, 0, FLOAT_TYPES)
    if any(t.dtype != dt for t in ctx.types):
        raise ctx.fail("all operands must share a dtype")
    require_rank(ctx, 0, 4)
    if x.shape is None or w.shape is None:
        return [TensorType(dt, (UNKNOWN,) * 4)]
    _check_groups(ctx, x.shape[1], w.shape[1], w.shape[0], ctx.attrs["group"])
    out = _conv_out_dims(x.shape, w.shape[2:], {**ctx.attrs, "auto_pad": "NOTSET"})
    if off.shape is not None:
        out = [o if isinstance(o, int) else off.shape[2 + i] for i, o in enumerate(out)]
    return [TensorType(dt, (x.shape[0], w.shape[0], *out))]


def _deform_conv(x: np.ndarray, w: np.ndarray, offset: np.ndarray, b: np.ndarray | None = None,
                 mask: np.ndarray | None = None, *, strides, pads, dilations, group, offset_group) -> np.ndarray:
    N, C, H, W = x.shape
    kh, kw = w.shape[2:]
    s, d, p = fill(strides, 2, 1), fill(dilations, 2, 1), fill(pads, 4, 0)
    oh, ow = (window_count(x.shape[2 + i], w.shape[2 + i], s[i], d[i], p[i], p[2 + i]) for i in range(2))
    og, K, P = offset_group, kh * kw, oh * ow
    acc = accumulator(x.dtype)
    off = offset.astype(acc).reshape(N, og, K, 2, P)
    base_h = (np.arange(kh)[:, None] * d[0] + 0 * np.arange(kw)[None, :]).reshape(K, 1) + \
        (np.arange(oh)[:, None] * s[0] - p[0] + 0 * np.arange(ow)[None, :]).reshape(1, P)
    base_w = (0 * np.arange(kh)[:, None] + np.arange(kw)[None, :] * d[1]).reshape(K, 1) + \
        (0 * np.arange(oh)[:, None] + np.arange(ow)[None, :] * s[1] - p[1]).reshape(1, P)
    ph, pw = base_h + off[:, :, :, 0], base_w + off[:, :, :, 1]  # [N, og, K, P] sampling points
    h0, w0 = np.floor(ph), np.floor(pw)
    xg = x.astype(acc).reshape(N, og, C // og, H * W)
    n_i, g_i = np.arange(N)[:, None, None, None], np.arange(og)[None, :, None, None]
    sampled = np.zeros((N, og, K, P, C // og), dtype=acc)
    # bilinear interpolation; corners outside the image contribute zero
    for dh in (0, 1):
        for dw in (0, 1):
            hh, ww = h0 + dh, w0 + dw
            wt = (1 - np.abs(ph - hh)) * (1 - np.abs(pw - ww))
            ok = (hh >= 0) & (hh < H) & (ww >= 0) & (ww < W)
            flat = (np.clip(hh, 0, H - 1) * W + np.clip(ww, 0, W - 1)).astype(np.int64)
            sampled += xg[n_i, g_i, :, flat] * (wt * ok)[..., None]
    if mask is not None:
        sampled *= mask.astype(acc).reshape(N, og, K, P)[..., None]
    # [N, og, K, P, C/og] -> [N, C, K, P] -> per-group matmul with w[M, C/g, K]
    cols = sampled.transpose(0, 1, 4, 2, 3).reshape(N, group, (C // group) * K, P)
    wm = w.astype(acc).reshape(group, w.shape[0] // group, (C // group) * K)
    y = np.matmul(wm[None], cols).reshape(N, w.shape[0], oh, ow)
    if b is not None:
        y = y + b.astype(acc).reshape(1, -1, 1, 1)
    return y.astype(x.dtype, copy=False)


defop("deform_conv", operands=("x", "w", "offset", "b?", "mask?"), infer=_deform_infer, reference=_deform_conv,
      attrs={"strides": AttrSpec(AttrKind.INTS, ()), "pads": AttrSpec(AttrKind.INTS, ()),
             "dilations": AttrSpec(AttrKind.INTS, ()), "group": AttrSpec(AttrKind.INT, 1),
             "offset_group": AttrSpec(AttrKind.INT, 1)},
      doc="2-D deformable convolution: kernel taps sampled bilinearly at learned offsets, optionally masked")


# -- col2im ---------------------------------------------------------------------------------------

def _col2im_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    dt = check_dtype(ctx, 0, NUMERIC_TYPES)
    require_rank(ctx, 0, 3)
    image, block = ctx.attrs["image_shape"], ctx.attrs["block_shape"]
    if image is None:
        n = len(block) if block is not None else None
        return [TensorType(dt, None if n is None else (x.shape[0] if x.shape else UNKNOWN, UNKNOWN) + (UNKNOWN,) * n)]
    c: Dim = UNKNOWN
    if block is not None and x.shape is not None and isinstance(x.shape[1], int):
        c = x.shape[1] // math.prod(block)
    return [TensorType(dt, (x.shape[0] if x.shape else UNKNOWN, c, *image))]


def _col2im(x: np.ndarray, *, image_shape, block_shape, strides, pads, dilations) -> np.ndarray:
    n = len(image_shape)
    s, d, p = fill(strides, n, 1), fill(dilations, n, 1), fill(pads, 2 * n, 0)
    blocks = [window_count(image_shape[i], block_shape[i], s[i], d[i], p[i], p[n + i]) for i in range(n)]
    N, CK, L = x.shape
    if L != math.prod(blocks):
        raise ValueError(f"{L} columns but the image holds {math.prod(blocks)} blocks")
    cols = x.reshape((N, CK // math.prod(block_shape)) + tuple(block_shape) + tuple(blocks))
    return scatter_windows(cols, s, d, p[:n], image_shape).astype(x.dtype, copy=False)


defop("col2im", operands=("x", "image_shape?", "block_shape?"), infer=_col2im_infer, reference=_col2im,
      attrs={"image_shape": AttrSpec(AttrKind.INTS, None), "block_shape": AttrSpec(AttrKind.INTS, None),
             "strides": AttrSpec(AttrKind.INTS, ()), "pads": AttrSpec(AttrKind.INTS, ()),
             "dilations": AttrSpec(AttrKind.INTS, ())},
      dynamic={"image_shape": "image_shape", "block_shape": "block_shape"},
      doc="sum sliding blocks x[N, C*prod(block), L] back into an image [N, C, *image_shape]")


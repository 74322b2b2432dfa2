"""Pooling ops: ``max_pool`` (with an optional argmax-indices result), ``avg_pool``, ``lp_pool`` and
``max_unpool``.

They share the conv family's window arithmetic (``ir/ops/conv.py``): ONNX ``pads`` layout,
``auto_pad``, dilations, and ``ceil_mode`` (a last partial window counts when it starts inside the
input or its begin padding). Global pools are not ops: the frontend writes them as reductions over
the spatial axes. References reduce over a strided window view, never loop over pixels.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, INT_TYPES, DType
from ..registry import InferContext, defop
from ..shape_rules import check_dtype
from ..types import UNKNOWN, Dim, TensorType
from .conv import fill, pad_spatial, resolve_pads, spatial_attrs, window_count, window_view
from .indexing import checked_indices

_MAX_TYPES = FLOAT_TYPES | frozenset({DType.i8, DType.u8})


def _pool_attrs(**extra: AttrSpec) -> dict[str, AttrSpec]:
    return spatial_attrs(kernel_shape=AttrSpec(AttrKind.INTS), ceil_mode=AttrSpec(AttrKind.INT, 0), **extra)


def _out_dims(shape: tuple[Dim, ...], attrs: dict) -> list[Dim]:
    k = attrs["kernel_shape"]
    n = len(k)
    if len(shape) != n + 2:
        raise ValueError(f"kernel_shape {list(k)} needs an input of rank {n + 2}, got rank {len(shape)}")
    s, d = fill(attrs["strides"], n, 1, "strides"), fill(attrs["dilations"], n, 1, "dilations")
    pads = resolve_pads(attrs["auto_pad"], shape[2:], k, s, d, attrs["pads"])
    if pads is None:
        return [-(-shape[2 + i] // s[i]) if isinstance(shape[2 + i], int) else UNKNOWN for i in range(n)]
    ceil = bool(attrs["ceil_mode"]) and attrs["auto_pad"] == "NOTSET"
    return [window_count(shape[2 + i], k[i], s[i], d[i], pads[i], pads[n + i], ceil) for i in range(n)]


def _pool_infer(allowed: frozenset[DType], indices: bool = False):
    def infer(ctx: InferContext) -> list[TensorType]:
        x = ctx.types[0]
        dt = check_dtype(ctx, 0, allowed)
        shape = None if x.shape is None else (x.shape[0], x.shape[1], *_out_dims(x.shape, ctx.attrs))
        out = [TensorType(dt, shape)]
        if indices and ctx.attrs["with_indices"]:
            out.append(TensorType(DType.i64, shape))
        return out
    return infer


class _Geometry:
    """Where the windows of one pooling call sit in the padded input."""

    def __init__(self, shape: Sequence[int], attrs: dict):
        k = tuple(attrs["kernel_shape"])
        n = len(k)
        self.kernel, self.n = k, n
        self.strides, self.dilations = fill(attrs["strides"], n, 1), fill(attrs["dilations"], n, 1)
        p = resolve_pads(attrs["auto_pad"], shape[2:], k, self.strides, self.dilations, attrs["pads"])
        self.begins, self.ends = p[:n], p[n:]
        self.out = [int(o) for o in _out_dims(tuple(shape), attrs)]
        self.in_dims = tuple(shape[2:])
        # ceil_mode windows may run past the end padding: pad further so the view stays in bounds
        self.extra = [max(0, (self.out[i] - 1) * self.strides[i] + (k[i] - 1) * self.dilations[i] + 1
                          - (self.in_dims[i] + self.begins[i] + self.ends[i])) for i in range(n)]

    def windows(self, x: np.ndarray, value: float | int) -> np.ndarray:
        ends = [e + x for e, x in zip(self.ends, self.extra)]
        xp = pad_spatial(x, self.begins, ends, value)
        return window_view(xp, self.kernel, self.strides, self.dilations, self.out)

    def counts(self, include_pad: bool) -> np.ndarray:
        """Elements per window that are real input (or also explicit padding): a separable product."""
        total = np.ones((), dtype=np.int64)
        for i in range(self.n):
            size = self.in_dims[i] + self.begins[i] + self.ends[i] + self.extra[i]
            pos = np.arange(size)
            lo, hi = (0, size - self.extra[i]) if include_pad else (self.begins[i], self.begins[i] + self.in_dims[i])
            valid = ((pos >= lo) & (pos < hi)).astype(np.int64)
            taps = (np.arange(self.out[i])[:, None] * self.strides[i]
                    + np.arange(self.kernel[i])[None, :] * self.dilations[i])
            total = np.multiply.outer(total, valid[taps].sum(axis=1))
        return total

    @property
    def spatial_axes(self) -> tuple[int, ...]:
        return tuple(range(-self.n, 0))


def _lowest(dt: np.dtype) -> float | int:
    return -np.inf if dt.kind == "f" else np.iinfo(dt).min


def _max_pool(x: np.ndarray, **attrs) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    g = _Geometry(x.shape, attrs)
    win = g.windows(x, _lowest(x.dtype))
    if not attrs["with_indices"]:
        return win.max(axis=g.spatial_axes)
    flat = win.reshape(win.shape[: 2 + g.n] + (-1,))
    arg = flat.argmax(axis=-1)
    y = np.take_along_axis(flat, arg[..., None], axis=-1)[..., 0]
    taps = np.unravel_index(arg, g.kernel)
    # input coordinates of the winners, then a flat index over [N, C, *spatial] in the stored order
    idx = np.zeros(arg.shape, dtype=np.int64)
    for i in range(g.n):
        o = np.arange(g.out[i]).reshape((-1,) + (1,) * (g.n - 1 - i))
        coord = o * g.strides[i] + taps[i] * g.dilations[i] - g.begins[i]
        later = g.in_dims[i + 1:] if attrs["storage_order"] == 0 else g.in_dims[:i]
        idx += coord * math.prod(later)
    nc = np.arange(x.shape[0] * x.shape[1]).reshape(x.shape[:2] + (1,) * g.n)
    return y, idx + nc * math.prod(g.in_dims)


defop("max_pool", operands=("x",), results=("outs*",), infer=_pool_infer(_MAX_TYPES, indices=True),
      reference=_max_pool,
      attrs=_pool_attrs(storage_order=AttrSpec(AttrKind.INT, 0), with_indices=AttrSpec(AttrKind.INT, 0)),
      doc="max over windows; with_indices=1 adds a second result: the flat i64 index of each max in "
          "x (row-major, or column-major over the spatial axes when storage_order=1)")


def _avg_pool(x: np.ndarray, count_include_pad: int, **attrs) -> np.ndarray:
    g = _Geometry(x.shape, attrs)
    acc = np.float64 if x.dtype == np.float64 else np.float32
    sums = g.windows(x.astype(acc, copy=False), 0).sum(axis=g.spatial_axes)
    return (sums / g.counts(bool(count_include_pad))).astype(x.dtype, copy=False)


defop("avg_pool", operands=("x",), infer=_pool_infer(FLOAT_TYPES), reference=_avg_pool,
      attrs=_pool_attrs(count_include_pad=AttrSpec(AttrKind.INT, 0)),
      doc="mean over windows; padding counts toward the divisor only with count_include_pad=1")


def _lp_pool(x: np.ndarray, p: int, **attrs) -> np.ndarray:
    g = _Geometry(x.shape, attrs)
    acc = np.float64 if x.dtype == np.float64 else np.float32
    powered = np.abs(x.astype(acc, copy=False)) ** p
    sums = g.windows(powered, 0).sum(axis=g.spatial_axes)
    return (sums ** (1.0 / p)).astype(x.dtype, copy=False)


defop("lp_pool", operands=("x",), infer=_pool_infer(FLOAT_TYPES), reference=_lp_pool,
      attrs=_pool_attrs(p=AttrSpec(AttrKind.INT, 2)), doc="(sum over windows of |x|^p)^(1/p)")


# -- max_unpool -----------------------------------------------------------------------------------

def _unpool_shape(x: tuple[Dim, ...], attrs: dict) -> tuple[Dim, ...]:
    if attrs["output_shape"] is not None:
        return tuple(attrs["output_shape"])
    k = attrs["kernel_shape"]
    n = len(k)
    s, p = fill(attrs["strides"], n, 1, "strides"), fill(attrs["pads"], 2 * n, 0, "pads")
    sp = [(x[2 + i] - 1) * s[i] - p[i] - p[n + i] + k[i] if isinstance(x[2 + i], int) else UNKNOWN
          for i in range(n)]
    return (x[0], x[1], *sp)


def _unpool_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    dt = check_dtype(ctx, 0, FLOAT_TYPES | INT_TYPES)
    check_dtype(ctx, 1, {DType.i64})
    out = ctx.attrs["output_shape"]
    if out is None and len(ctx.types) > 2:  # the shape arrives at run time
        return [TensorType(dt, None if x.shape is None else (UNKNOWN,) * len(x.shape))]
    if x.shape is None:
        return [TensorType(dt, None if out is None else tuple(out))]
    return [TensorType(dt, _unpool_shape(x.shape, ctx.attrs))]


def _max_unpool(x: np.ndarray, indices: np.ndarray, **attrs) -> np.ndarray:
    # indices address the shape the pool inverts; a larger output_shape only adds zeros at the end
    # of each axis (the ONNX test data's reading of the spec)
    natural = _unpool_shape(x.shape, {**attrs, "output_shape": None})
    y = np.zeros(math.prod(natural), dtype=x.dtype)
    y[checked_indices(indices.reshape(-1), y.size)] = x.reshape(-1)
    y = y.reshape(natural)
    shape = _unpool_shape(x.shape, attrs)
    if tuple(shape) == tuple(natural):
        return y
    out = np.zeros(shape, dtype=x.dtype)
    region = tuple(slice(0, min(a, b)) for a, b in zip(shape, natural))
    out[region] = y[region]
    return out


defop("max_unpool", operands=("x", "indices", "output_shape?"), infer=_unpool_infer, reference=_max_unpool,
      attrs={"kernel_shape": AttrSpec(AttrKind.INTS), "strides": AttrSpec(AttrKind.INTS, ()),
             "pads": AttrSpec(AttrKind.INTS, ()), "output_shape": AttrSpec(AttrKind.INTS, None)},
      dynamic={"output_shape": "output_shape"},
      doc="scatter x into zeros at the flat indices a max_pool returned")


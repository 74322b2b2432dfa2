"""Reductions and scans along axes: ``reduce_sum/mean/max/min/prod``, ``argmax/argmin``,
``cumsum/cumprod`` and ``topk``.

Other ONNX reductions (L1, L2, LogSum, LogSumExp, SumSquare) are not ops: the frontend composes
them from these and elementwise ops, and fusion puts them back together. Reduction axes may be
known at compile time (attribute) or only at run time (the optional ``axes`` operand, a dynamic
attribute); ``axes`` None means every axis, and an empty ``axes`` means every axis too unless
``noop_with_empty_axes`` is set, as in ONNX.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import ALL_TYPES, NUMERIC_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import check_dtype, norm_axes, norm_axis
from ..types import UNKNOWN, TensorType

RED = Trait.PURE | Trait.REDUCTION

_REDUCE_ATTRS = {
    "axes": AttrSpec(AttrKind.INTS, None),
    "keepdims": AttrSpec(AttrKind.INT, 1),
    "noop_with_empty_axes": AttrSpec(AttrKind.INT, 0),
}


def _acc_dtype(x: np.ndarray) -> np.dtype:
    """Accumulate floats in f64, then round once: the reference is the oracle, so its sums should
    be as close to exact as is cheap. In f32, numpy's pairwise/SIMD order rounds differently from
    one row to the next, so rows whose exact means are equal come out an ulp apart (SqueezeNet's
    global average pool at ~1e9, where one ulp is 512, turned a uniform softmax into 1/512 and 0);
    summing thousands of f16 values in f16 would lose most of their bits."""
    if x.dtype.kind == "f" or x.dtype.name == "bfloat16":
        return np.dtype(np.float64)
    return x.dtype


def _reduced_axes(axes: tuple[int, ...] | None, noop: int, rank: int) -> list[int] | None:
    """The axes to reduce, or None for "no reduction at all" (empty axes with noop set)."""
    if axes is None:
        return list(range(rank))
    if len(axes) == 0:
        return None if noop else list(range(rank))
    return norm_axes(axes, rank)


def _reduce_infer(allowed: frozenset[DType]) -> Callable[[InferContext], list[TensorType]]:
    def infer(ctx: InferContext) -> list[TensorType]:
        t = ctx.types[0]
        check_dtype(ctx, 0, allowed)
        axes, keep = ctx.attrs["axes"], ctx.attrs["keepdims"]
        if axes is None and len(ctx.types) > 1:  # axes known only at run time
            if t.shape is None or not keep:
                return [t.with_shape(None)]
            return [t.with_shape((UNKNOWN,) * len(t.shape))]
        if t.shape is None:
            return [t]
        red = _reduced_axes(axes, ctx.attrs["noop_with_empty_axes"], len(t.shape))
        if red is None:
            return [t]
        if keep:
            shape = tuple(1 if i in red else d for i, d in enumerate(t.shape))
        else:
            shape = tuple(d for i, d in enumerate(t.shape) if i not in red)
        return [t.with_shape(shape)]
    return infer


def _empty_identity(kind: str, dt: np.dtype):
    """The value a reduction over an empty set gives (ONNX: -inf for max, +inf for min)."""
    if kind == "max":
        return False if dt.kind == "b" else -np.inf if dt.kind == "f" or dt.name == "bfloat16" else np.iinfo(dt).min
    return True if dt.kind == "b" else np.inf if dt.kind == "f" or dt.name == "bfloat16" else np.iinfo(dt).max


def _reduce_ref(kind: str) -> Callable[..., np.ndarray]:
    def ref(x: np.ndarray, axes, keepdims: int, noop_with_empty_axes: int) -> np.ndarray:
        red = _reduced_axes(axes, noop_with_empty_axes, x.ndim)
        if red is None:
            return np.array(x, copy=True)
        ax = tuple(red)
        keep = bool(keepdims)
        if kind == "sum":
            out = np.sum(x, axis=ax, keepdims=keep, dtype=_acc_dtype(x))
        elif kind == "prod":
            out = np.prod(x, axis=ax, keepdims=keep, dtype=_acc_dtype(x))
        elif kind == "mean":
            acc = np.float64 if x.dtype.kind in "iu" else _acc_dtype(x)
            out = np.mean(x, axis=ax, keepdims=keep, dtype=acc)
            if x.dtype.kind in "iu":
                out = np.trunc(out)
        elif kind == "max":
            out = np.max(x, axis=ax, keepdims=keep, initial=_empty_identity("max", x.dtype))
        else:
            out = np.min(x, axis=ax, keepdims=keep, initial=_empty_identity("min", x.dtype))
        return np.asarray(out).astype(x.dtype, copy=False)
    return ref


for _kind, _allowed in (("sum", NUMERIC_TYPES), ("mean", NUMERIC_TYPES), ("prod", NUMERIC_TYPES),
                        ("max", ALL_TYPES), ("min", ALL_TYPES)):
    defop(f"reduce_{_kind}", operands=("x", "axes?"), attrs=dict(_REDUCE_ATTRS),
          infer=_reduce_infer(_allowed), reference=_reduce_ref(_kind), traits=RED,
          dynamic={"axes": "axes"},
          doc=f"{_kind} over ``axes`` (all axes when None); ``keepdims`` keeps them as size 1")


# -- argmax / argmin -------------------------------------------------------------------------------

def _arg_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.types[0]
    check_dtype(ctx, 0, NUMERIC_TYPES)
    if t.shape is None:
        return [TensorType(DType.i64, None)]
    ax = norm_axis(ctx.attrs["axis"], len(t.shape))
    if ctx.attrs["keepdims"]:
        shape = tuple(1 if i == ax else d for i, d in enumerate(t.shape))
    else:
        shape = tuple(d for i, d in enumerate(t.shape) if i != ax)
    return [TensorType(DType.i64, shape)]


def _arg_ref(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    def ref(x: np.ndarray, axis: int, keepdims: int, select_last_index: int) -> np.ndarray:
        ax = axis % x.ndim
        if select_last_index:
            # the first extreme of the reversed array is the last extreme of the original
            idx = x.shape[ax] - 1 - fn(np.flip(x, ax), axis=ax)
        else:
            idx = fn(x, axis=ax)
        if keepdims:
            idx = np.expand_dims(idx, ax)
        return np.asarray(idx).astype(np.int64)
    return ref


_ARG_ATTRS = {"axis": AttrSpec(AttrKind.INT, 0), "keepdims": AttrSpec(AttrKind.INT, 1),
              "select_last_index": AttrSpec(AttrKind.INT, 0)}
defop("argmax", operands=("x",), attrs=dict(_ARG_ATTRS), infer=_arg_infer, reference=_arg_ref(np.argmax),
      traits=RED, vjp=NOT_DIFFERENTIABLE,
      doc="index (i64) of the largest element along ``axis``; ties: first, or last if select_last_index")
defop("argmin", operands=("x",), attrs=dict(_ARG_ATTRS), infer=_arg_infer, reference=_arg_ref(np.argmin),
      traits=RED, vjp=NOT_DIFFERENTIABLE,
      doc="index (i64) of the smallest element along ``axis``; ties: first, or last if select_last_index")


# -- cumulative scans ------------------------------------------------------------------------------

def _scan_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.types[0]
    check_dtype(ctx, 0, NUMERIC_TYPES)
    if ctx.attrs["axis"] is not None and t.shape is not None:
        norm_axis(ctx.attrs["axis"], len(t.shape))
    return [t]


def _scan_ref(fn: Callable[..., np.ndarray], unit: int) -> Callable[..., np.ndarray]:
    def ref(x: np.ndarray, axis: int, exclusive: int, reverse: int) -> np.ndarray:
        if axis is None:
            raise ValueError("axis was not given")
        ax = axis % x.ndim
        y = np.flip(x, ax) if reverse else x
        out = fn(y, axis=ax, dtype=_acc_dtype(x))
        if exclusive:
            # shift by one along the axis, filling with the identity (0 for sum, 1 for product)
            pad = np.full_like(np.take(out, [0], axis=ax), unit)
            out = np.concatenate([pad, np.take(out, np.arange(out.shape[ax] - 1), axis=ax)], axis=ax)
        if reverse:
            out = np.flip(out, ax)
        return np.ascontiguousarray(out).astype(x.dtype, copy=False)
    return ref


_SCAN_ATTRS = {"axis": AttrSpec(AttrKind.INT, None), "exclusive": AttrSpec(AttrKind.INT, 0),
               "reverse": AttrSpec(AttrKind.INT, 0)}
defop("cumsum", operands=("x", "axis?"), attrs=dict(_SCAN_ATTRS), infer=_scan_infer,
      reference=_scan_ref(np.cumsum, 0), dynamic={"axis": "axis"},
      doc="running sum along ``axis``; ``exclusive`` leaves out the current element, ``reverse`` "
          "scans from the end")
defop("cumprod", operands=("x", "axis?"), attrs=dict(_SCAN_ATTRS), infer=_scan_infer,
      reference=_scan_ref(np.cumprod, 1), dynamic={"axis": "axis"},
      doc="running product along ``axis``; ``exclusive`` and ``reverse`` as in cumsum")


# -- topk ------------------------------------------------------------------------------------------

def _topk_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.types[0]
    check_dtype(ctx, 0, NUMERIC_TYPES)
    k = ctx.attrs["k"]
    if t.shape is None:
        return [t, TensorType(DType.i64, None)]
    ax = norm_axis(ctx.attrs["axis"], len(t.shape))
    if k is not None:
        if k < 0:
            raise ctx.fail(f"k must be >= 0, got {k}")
        d = t.shape[ax]
        if isinstance(d, int) and k > d:
            raise ctx.fail(f"k = {k} is larger than axis {ax} of {t}")
    shape = tuple((UNKNOWN if k is None else k) if i == ax else d for i, d in enumerate(t.shape))
    return [t.with_shape(shape), TensorType(DType.i64, shape)]


def _topk_ref(x: np.ndarray, k: int, axis: int, largest: int, sorted: int) -> tuple[np.ndarray, np.ndarray]:
    ax = axis % x.ndim
    n = x.shape[ax]
    if largest:
        # descending with ties broken by the lower index: a stable ascending sort of the reversed
        # array, read backwards, visits equal values from the lowest original index
        order = np.argsort(np.flip(x, ax), axis=ax, kind="stable")
        order = n - 1 - np.flip(order, ax)
    else:
        order = np.argsort(x, axis=ax, kind="stable")
    idx = np.take(order, np.arange(k), axis=ax)
    vals = np.take_along_axis(x, idx, axis=ax)
    return vals.astype(x.dtype, copy=False), idx.astype(np.int64)


defop("topk", operands=("x", "k?"), results=("values", "indices"),
      attrs={"k": AttrSpec(AttrKind.INT, None), "axis": AttrSpec(AttrKind.INT, -1),
             "largest": AttrSpec(AttrKind.INT, 1), "sorted": AttrSpec(AttrKind.INT, 1)},
      infer=_topk_infer, reference=_topk_ref, dynamic={"k": "k"},
      doc="the ``k`` largest (or smallest) elements along ``axis`` and their i64 indices, sorted; "
          "equal values come lower index first")

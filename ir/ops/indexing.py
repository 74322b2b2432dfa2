"""Indexing ops: gathers and scatters (by axis, elementwise, N-d), ``index_copy`` (the KV-cache
write), ``nonzero`` and ``unique``.

Indices may be i32 or i64 and negative (counted from the end, once), as in ONNX: the valid range of
an index into a dim of n is [-n, n-1], and anything else raises ``InputError`` naming the index (the
interpreter adds the op). Rare ONNX ops built on these (OneHot, Compress, ReverseSequence,
TensorScatter, Scatter) are decomposed by the frontend.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import DType
from ..errors import InputError
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import check_dtype, norm_axis
from ..types import UNKNOWN, Dim, TensorType

_INDEX = frozenset({DType.i32, DType.i64})
_REDUCTIONS = ("none", "add", "mul", "max", "min")
_UFUNC = {"add": np.add, "mul": np.multiply, "max": np.maximum, "min": np.minimum}


def checked_indices(indices: np.ndarray, dim: int | np.ndarray) -> np.ndarray:
    """Indices checked against [-dim, dim-1]; negative ones count from the end. ``dim`` may be an
    array broadcasting against the indices (one bound per index component, for the N-d ops)."""
    idx = indices.astype(np.int64)
    dims = np.broadcast_to(np.asarray(dim, dtype=np.int64), idx.shape)
    bad = (idx < -dims) | (idx >= dims)
    if bad.any():
        pos = tuple(int(p[0]) for p in np.nonzero(bad))
        n = int(dims[pos])
        raise InputError(f"index {int(idx[pos])} (at indices{list(pos)}) is out of range for a dim of {n} "
                         f"(valid: [{-n}, {n - 1}])")
    return np.where(idx < 0, idx + dims, idx)


# -- gather --------------------------------------------------------------------------------------------

def _gather_infer(ctx: InferContext) -> list[TensorType]:
    x, ind = ctx.types
    check_dtype(ctx, 1, _INDEX)
    if x.shape is None or ind.shape is None:
        return [x.with_shape(None)]
    axis = norm_axis(ctx.attrs["axis"], len(x.shape))
    return [x.with_shape(x.shape[:axis] + ind.shape + x.shape[axis + 1:])]


def _gather(x: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    axis %= x.ndim
    return np.take(x, checked_indices(indices, x.shape[axis]), axis=axis)


defop("gather", operands=("x", "indices"), attrs={"axis": AttrSpec(AttrKind.INT, 0)}, infer=_gather_infer,
      reference=_gather, doc="take slices of ``x`` at ``indices`` along ``axis`` (numpy take)")


def _gather_elements_infer(ctx: InferContext) -> list[TensorType]:
    x, ind = ctx.types
    check_dtype(ctx, 1, _INDEX)
    if x.shape is not None and ind.shape is not None and len(x.shape) != len(ind.shape):
        raise ctx.fail("indices must have the rank of x")
    return [x.with_shape(ind.shape)]


def _gather_elements(x: np.ndarray, indices: np.ndarray, axis: int) -> np.ndarray:
    axis %= x.ndim
    return np.take_along_axis(x, checked_indices(indices, x.shape[axis]), axis=axis)


defop("gather_elements", operands=("x", "indices"), attrs={"axis": AttrSpec(AttrKind.INT, 0)},
      infer=_gather_elements_infer, reference=_gather_elements,
      doc="out[i][j][k] = x[indices[i][j][k]][j][k] for axis 0 (numpy take_along_axis)")


def _gather_nd_infer(ctx: InferContext) -> list[TensorType]:
    x, ind = ctx.types
    check_dtype(ctx, 1, _INDEX)
    b = ctx.attrs["batch_dims"]
    if x.shape is None or ind.shape is None or not isinstance(ind.shape[-1], int):
        return [x.with_shape(None)]
    k = ind.shape[-1]
    if b + k > len(x.shape):
        raise ctx.fail(f"index depth {k} with {b} batch dims exceeds rank {len(x.shape)}")
    return [x.with_shape(ind.shape[:-1] + x.shape[b + k:])]


def _gather_nd(x: np.ndarray, indices: np.ndarray, batch_dims: int) -> np.ndarray:
    b, k = batch_dims, indices.shape[-1]
    batch = x.shape[:b]
    xb = x.reshape((-1,) + x.shape[b:])
    ib = checked_indices(indices, np.array(x.shape[b:b + k])).reshape((xb.shape[0], -1, k))
    out = np.stack([xb[i][tuple(ib[i].T)] for i in range(xb.shape[0])]) if xb.shape[0] else \
        np.zeros((0, ib.shape[1]) + x.shape[b + k:], x.dtype)
    return out.reshape(batch + indices.shape[b:-1] + x.shape[b + k:])


defop("gather_nd", operands=("x", "indices"), attrs={"batch_dims": AttrSpec(AttrKind.INT, 0)},
      infer=_gather_nd_infer, reference=_gather_nd,
      doc="index the leading dims of ``x`` (after batch_dims) by the last axis of ``indices``")


# -- scatter --------------------------------------------------------------------------------------------

def _scatter_infer(ctx: InferContext) -> list[TensorType]:
    x, ind, upd = ctx.types
    check_dtype(ctx, 1, _INDEX)
    if upd.dtype != x.dtype:
        raise ctx.fail(f"updates dtype {upd.dtype} differs from {x.dtype}")
    return [x]


def _scatter_elements(x: np.ndarray, indices: np.ndarray, updates: np.ndarray, axis: int,
                      reduction: str) -> np.ndarray:
    axis %= x.ndim
    out = x.copy()
    idx = list(np.indices(indices.shape, sparse=True))
    idx[axis] = checked_indices(indices, x.shape[axis])
    where = tuple(idx)
    if reduction == "none":
        out[where] = updates
    else:
        _UFUNC[reduction].at(out, where, updates)  # .at applies repeated indices one by one
    return out


defop("scatter_elements", operands=("x", "indices", "updates"), infer=_scatter_infer,
      attrs={"axis": AttrSpec(AttrKind.INT, 0), "reduction": AttrSpec(AttrKind.STR, "none", _REDUCTIONS)},
      reference=_scatter_elements, doc="inverse of gather_elements; reduction combines with x")


def _scatter_nd(x: np.ndarray, indices: np.ndarray, updates: np.ndarray, reduction: str) -> np.ndarray:
    out = x.copy()
    k = indices.shape[-1]
    ind = checked_indices(indices, np.array(x.shape[:k])).reshape(-1, k)
    upd = updates.reshape((-1,) + x.shape[k:])
    for i in range(ind.shape[0]):  # sequential: later updates win, reductions see earlier ones
        where = tuple(ind[i])
        out[where] = upd[i] if reduction == "none" else _UFUNC[reduction](out[where], upd[i])
    return out


defop("scatter_nd", operands=("x", "indices", "updates"), infer=_scatter_infer,
      attrs={"reduction": AttrSpec(AttrKind.STR, "none", _REDUCTIONS)}, reference=_scatter_nd,
      doc="inverse of gather_nd (batch_dims 0); reduction combines with x")


# -- index_copy ------------------------------------------------------------------------------------

def _index_copy_infer(ctx: InferContext) -> list[TensorType]:
    x, ind, upd = ctx.types
    check_dtype(ctx, 1, _INDEX)
    if upd.dtype != x.dtype:
        raise ctx.fail(f"updates dtype {upd.dtype} differs from {x.dtype}")
    if ind.shape is not None and len(ind.shape) != 1:
        raise ctx.fail(f"indices must be 1-D, got {ind}")
    if x.shape is not None and upd.shape is not None and len(x.shape) != len(upd.shape):
        raise ctx.fail(f"updates {upd} must have the rank of x {x}")
    if x.shape is not None:
        norm_axis(ctx.attrs["axis"], len(x.shape))
    return [x]


def _index_copy(x: np.ndarray, indices: np.ndarray, updates: np.ndarray, axis: int) -> np.ndarray:
    axis %= x.ndim
    out = x.copy()
    ind = checked_indices(indices.reshape(-1), x.shape[axis])
    where = [slice(None)] * x.ndim
    for i, j in enumerate(ind):  # sequential: a repeated index keeps the last update
        where[axis] = j
        src = [slice(None)] * x.ndim
        src[axis] = i
        out[tuple(where)] = updates[tuple(src)]
    return out


# INPLACE: a decoder's KV cache is fed as x and bound as the result, so a step writes only its rows
defop("index_copy", operands=("x", "indices", "updates"), infer=_index_copy_infer,
      attrs={"axis": AttrSpec(AttrKind.INT, 0)}, reference=_index_copy,
      traits=Trait.PURE | Trait.INPLACE,
      doc="x with slice i of updates along ``axis`` written at position indices[i] (torch's index_copy); "
          "a KV-cache write when indices are the new tokens' positions")


# -- nonzero, unique -------------------------------------------------------------------------------

def _nonzero_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    return [TensorType(DType.i64, (UNKNOWN if x.shape is None else len(x.shape), UNKNOWN))]


defop("nonzero", operands=("x",), infer=_nonzero_infer, vjp=NOT_DIFFERENTIABLE,
      reference=lambda x: np.array(np.nonzero(x), dtype=np.int64).reshape(x.ndim, -1),
      doc="indices of non-zero elements, one row per dim (i64[rank, count])")


def _unique_infer(ctx: InferContext) -> list[TensorType]:
    x, axis = ctx.types[0], ctx.attrs["axis"]
    i64 = DType.i64
    y: tuple[Dim, ...] | None
    if axis is None:
        y, n = (UNKNOWN,), UNKNOWN if x.numel is None else x.numel
    elif x.shape is None:
        y, n = None, UNKNOWN
    else:
        a = norm_axis(axis, len(x.shape))
        y = x.shape[:a] + (UNKNOWN,) + x.shape[a + 1:]
        n = x.shape[a]
    return [x.with_shape(y), TensorType(i64, (UNKNOWN,)), TensorType(i64, (n,)), TensorType(i64, (UNKNOWN,))]


def _unique(x: np.ndarray, axis: int | None, sorted: int) -> Sequence[np.ndarray]:  # noqa: A002
    y, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True,
                                          axis=axis)
    inverse = inverse.reshape(-1)
    if not sorted:  # order of first occurrence
        order = np.argsort(first, kind="stable")
        rank = np.empty_like(order)
        rank[order] = np.arange(len(order))
        first, counts, inverse = first[order], counts[order], rank[inverse]
        y = np.take(x.reshape(-1) if axis is None else x, first, axis=0 if axis is None else axis)
    i64 = np.int64
    return [y, first.astype(i64), inverse.astype(i64), counts.astype(i64)]


defop("unique", operands=("x",), results=("y", "indices", "inverse", "counts"), infer=_unique_infer,
      reference=_unique, vjp=NOT_DIFFERENTIABLE,
      attrs={"axis": AttrSpec(AttrKind.INT, None), "sorted": AttrSpec(AttrKind.INT, 1)},
      doc="distinct values (or slices along axis), first-occurrence indices, inverse map, counts")

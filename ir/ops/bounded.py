"""Bounded forms of the ops whose output size depends on data: ``nonzero``, ``unique``, ``nms`` and
``topk`` with a run-time ``k``.

A bounded op has the operands and attributes of its original, but every data-dependent dim of
its results is replaced by an upper bound that follows from the operand *shapes* (NonZero:
``rank x numel``; Unique: the input's numel, or its size along ``axis``; NMS:
``batches * classes * min(max_output_boxes_per_class, boxes)``; TopK: the size of ``axis``), and
one more result, ``count`` (i64 scalar), says how many entries along that dim are valid. The
valid entries lead; the rest of the buffer is zero. So a backend that can only allocate sizes
known before a kernel runs can still compile them: the host reads ``count`` afterwards and trims
(docs/dynamic-shapes.md, "Data-dependent output sizes"). ``BOUNDED`` maps each original op to its
bounded form and, per result, the axis ``count`` applies to (None: the result is whole).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..dtypes import FLOAT_TYPES, NUMERIC_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, array_to_attr, declared_op, defop
from ..shape_rules import check_dtype, dim_mul, dim_product, norm_axis, require_rank
from ..types import UNKNOWN, TensorType
from . import image, indexing, reduce  # noqa: F401  (the originals must be declared first)

_COUNT = TensorType(DType.i64, ())
Axes = Callable[[dict[str, Any], int], tuple]  # (attributes, input rank) -> each result's count axis


def _padded(original: Callable[..., Any], axes: Axes, bounds: Callable[..., list[tuple[int, ...]]]) -> Callable:
    """A reference: ``original``'s results (the unbounded op's reference), each padded with zeros
    along its count axis to the bound, then the count."""
    def reference(*arrays: np.ndarray, **attrs: Any) -> list[np.ndarray]:
        outs = original(*arrays, **attrs)
        outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
        result, count = [], 0
        for out, ax, shape in zip(outs, axes(attrs, np.ndim(arrays[0])), bounds(*arrays, **attrs)):
            out = np.asarray(out)
            if ax is None:
                result.append(out)
                continue
            count = out.shape[ax]
            buf = np.zeros(shape, out.dtype)
            buf[(slice(None),) * ax + (slice(0, count),)] = out
            result.append(buf)
        return result + [np.array(count, np.int64)]
    return reference


def _unique_axes(attrs: dict[str, Any], rank: int) -> tuple[int | None, ...]:
    axis = attrs["axis"]
    return (0 if axis is None else norm_axis(axis, rank), 0, None, 0)


def _topk_axes(attrs: dict[str, Any], rank: int) -> tuple[int | None, ...]:
    return (norm_axis(attrs["axis"], rank),) * 2


# original op -> (its bounded form, the count axis of each result)
BOUNDED: dict[str, tuple[str, Axes]] = {
    "nonzero": ("nonzero_bounded", lambda attrs, rank: (1,)),
    "unique": ("unique_bounded", _unique_axes),
    "nms": ("nms_bounded", lambda attrs, rank: (0,)),
    "topk": ("topk_bounded", _topk_axes),
}


# -- nonzero_bounded -------------------------------------------------------------------------------
def _nonzero_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    if x.shape is None:
        return [TensorType(DType.i64, (UNKNOWN, UNKNOWN)), _COUNT]
    return [TensorType(DType.i64, (len(x.shape), dim_product(x.shape))), _COUNT]


defop("nonzero_bounded", operands=("x",), results=("indices", "count"), infer=_nonzero_infer,
      vjp=NOT_DIFFERENTIABLE, fold=False,
      reference=_padded(declared_op("nonzero").reference, BOUNDED["nonzero"][1], lambda x: [(x.ndim, x.size)]),
      doc="nonzero into an i64[rank, numel] buffer: the first ``count`` columns are the indices")


# -- unique_bounded --------------------------------------------------------------------------------
def _unique_infer(ctx: InferContext) -> list[TensorType]:
    x, axis = ctx.types[0], ctx.attrs["axis"]
    i64 = DType.i64
    if x.shape is None:
        return [x.with_shape(None)] + [TensorType(i64, (UNKNOWN,))] * 3 + [_COUNT]
    if axis is None:
        n = dim_product(x.shape)
        y = x.with_shape((n,))
    else:
        n = x.shape[norm_axis(axis, len(x.shape))]
        y = x
    return [y, TensorType(i64, (n,)), TensorType(i64, (n,)), TensorType(i64, (n,)), _COUNT]


def _unique_bounds(x: np.ndarray, axis: int | None, sorted: int) -> list[tuple[int, ...]]:  # noqa: A002
    n = x.size if axis is None else x.shape[axis]
    return [(x.size,) if axis is None else x.shape, (n,), (n,), (n,)]


defop("unique_bounded", operands=("x",), results=("y", "indices", "inverse", "counts", "count"),
      infer=_unique_infer, vjp=NOT_DIFFERENTIABLE, fold=False, attrs=dict(declared_op("unique").attrs),
      reference=_padded(declared_op("unique").reference, _unique_axes, _unique_bounds),
      doc="unique with y, indices and counts padded to the input's numel (or its size along axis); "
          "the first ``count`` entries are the distinct values; inverse is whole")


# -- nms_bounded -----------------------------------------------------------------------------------
# The parameters that nms takes as dynamic attributes are plain optional operands here, read by the
# kernel at run time (the host never needs their values); absent operands fall back to the attributes.
_NMS = declared_op("nms")
_NMS_PARAMS = ("max_output_boxes_per_class", "iou_threshold", "score_threshold")


def _nms_bound(boxes: Any, scores: Any, limit: int | None) -> Any:
    n = boxes[1]
    per_class = n if limit is None else (min(max(limit, 0), n) if isinstance(n, int) else UNKNOWN)
    return dim_mul(dim_mul(scores[0], scores[1]), per_class)


def _nms_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    boxes, scores = require_rank(ctx, 0, 3), require_rank(ctx, 1, 3)
    if boxes is None or scores is None:
        return [TensorType(DType.i64, (UNKNOWN, 3)), _COUNT]
    limit = None if len(ctx.types) > 2 else ctx.attrs["max_output_boxes_per_class"]
    return [TensorType(DType.i64, (_nms_bound(boxes, scores, limit), 3)), _COUNT]


def _nms_attrs(params: tuple[np.ndarray, ...], attrs: dict[str, Any]) -> dict[str, Any]:
    out = dict(attrs)
    for name, a in zip(_NMS_PARAMS, params):
        out[name] = array_to_attr(_NMS.attrs[name].kind, np.asarray(a))
    return out


def _nms_original(boxes: np.ndarray, scores: np.ndarray, *params: np.ndarray, **attrs: Any) -> np.ndarray:
    return _NMS.reference(boxes, scores, **_nms_attrs(params, attrs))


def _nms_bounds(boxes: np.ndarray, scores: np.ndarray, *params: np.ndarray, **attrs: Any) -> list[tuple[int, ...]]:
    limit = None if params else attrs["max_output_boxes_per_class"]
    return [(int(_nms_bound(boxes.shape, scores.shape, limit)), 3)]


defop("nms_bounded", operands=_NMS.operands, results=("selected", "count"), infer=_nms_infer,
      vjp=NOT_DIFFERENTIABLE, fold=False, attrs=dict(_NMS.attrs),
      reference=_padded(_nms_original, BOUNDED["nms"][1], _nms_bounds),
      doc="nms into an i64[batches * classes * min(max_output_boxes_per_class, boxes), 3] buffer (the limit "
          "counts only when it is an attribute); the first ``count`` rows are the selected [batch, class, box]")


# -- topk_bounded ----------------------------------------------------------------------------------
def _topk_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.types[0]
    check_dtype(ctx, 0, NUMERIC_TYPES)
    if t.shape is not None:
        norm_axis(ctx.attrs["axis"], len(t.shape))
    return [t, TensorType(DType.i64, t.shape), _COUNT]


def _topk_original(x: np.ndarray, k: np.ndarray, **attrs: Any) -> Any:
    return declared_op("topk").reference(x, k=int(np.asarray(k).reshape(-1)[0]), **attrs)


_TOPK_ATTRS = {k: v for k, v in declared_op("topk").attrs.items() if k != "k"}
defop("topk_bounded", operands=("x", "k"), results=("values", "indices", "count"), infer=_topk_infer,
      vjp=NOT_DIFFERENTIABLE, fold=False, attrs=_TOPK_ATTRS,
      reference=_padded(_topk_original, _topk_axes, lambda x, k, **attrs: [x.shape, x.shape]),
      doc="topk with a run-time k (an operand, read by the kernel) into buffers the shape of x; the first "
          "``count`` (= k) entries along axis are the result")

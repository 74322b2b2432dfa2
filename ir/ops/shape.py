"""Shape-manipulation ops: reshape, transpose, squeeze/unsqueeze, concat, split, slice, expand,
tile, pad, the ``shape`` query, ``range`` and ``trilu``.

Parameters that ONNX passes as tensors (a reshape's shape, a slice's starts, pads, repeats, ...)
are dynamic attributes: attributes when known at compile time, operands otherwise. Inference keeps
symbolic dims where it can prove them and says "?" where only run time knows. Rare ONNX ops
(Flatten, DepthToSpace, ConstantOfShape, CenterCropPad, ...) are decomposed into these by the
frontend.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import NUMERIC_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import broadcast_shapes, check_dtype, norm_axes, norm_axis, same_dtype
from ..types import UNKNOWN, Dim, TensorType

MOVE = Trait.PURE | Trait.SHAPE_ONLY
# a reshape keeps the element order: its result may take its operand's buffer (then it moves nothing)
VIEW = MOVE | Trait.INPLACE
# Slice ends at or beyond this mean "to the end" (ONNX exporters write INT64_MAX or INT32_MAX).
_BIG = 2 ** 31 - 1


def _len_operand(ctx: InferContext, i: int) -> int | None:
    """The static length of 1-D operand ``i`` (a run-time shape/axes tensor), if known."""
    if i >= len(ctx.types):
        return None
    s = ctx.types[i].shape
    return s[0] if s is not None and len(s) == 1 and isinstance(s[0], int) else None


# -- reshape ----------------------------------------------------------------------------------------

def _reshape_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    target, copy_zero = ctx.attrs["shape"], ctx.attrs["copy_zero"]
    if target is None:
        n = _len_operand(ctx, 1)
        return [x.with_shape(None if n is None else (UNKNOWN,) * n)]
    if sum(1 for d in target if d == -1) > 1 or any(d < -1 for d in target):
        raise ctx.fail(f"bad target shape {list(target)}")
    out: list[Dim] = []
    for i, d in enumerate(target):
        if d == 0 and copy_zero:
            if x.shape is None:
                out.append(UNKNOWN)
            elif i >= len(x.shape):
                raise ctx.fail(f"shape entry {i} copies a dim the input (rank {len(x.shape)}) lacks")
            else:
                out.append(x.shape[i])
        else:
            out.append(d)
    if -1 in out:
        out[out.index(-1)] = _inferred_dim(x.shape, [d for d in out if d != -1])
    elif x.is_static and all(isinstance(d, int) for d in out) and math.prod(out) != x.numel:  # type: ignore[arg-type]
        raise ctx.fail(f"cannot reshape {x} to {list(target)}")
    return [x.with_shape(tuple(out))]


def _inferred_dim(src: tuple[Dim, ...] | None, known: list[Dim]) -> Dim:
    """The -1 entry of a reshape: numel(src) / prod(known), cancelling equal symbols."""
    if src is None:
        return UNKNOWN
    rest = list(src)
    divisor = 1
    for d in known:
        if d in rest:
            rest.remove(d)
        elif isinstance(d, int):
            divisor *= d
        else:
            return UNKNOWN
    if not all(isinstance(d, int) for d in rest):
        return UNKNOWN
    total = math.prod(rest)  # type: ignore[arg-type]
    if divisor == 0 or total % divisor:
        raise ValueError(f"cannot infer the -1 dim: {total} elements do not split by {divisor}")
    return total // divisor


def _reshape(x: np.ndarray, shape: Sequence[int], copy_zero: int) -> np.ndarray:
    target = [x.shape[i] if d == 0 and copy_zero else d for i, d in enumerate(shape)]
    return np.reshape(x, target).copy()


defop("reshape", operands=("x", "shape?"), infer=_reshape_infer, reference=_reshape, traits=VIEW,
      attrs={"shape": AttrSpec(AttrKind.INTS, None), "copy_zero": AttrSpec(AttrKind.INT, 0)},
      dynamic={"shape": "shape"},
      doc="new shape; one entry may be -1 (inferred); with copy_zero=1 a 0 entry copies the input dim")


# -- transpose, squeeze, unsqueeze ----------------------------------------------------------------------

def _transpose_infer(ctx: InferContext) -> list[TensorType]:
    x, perm = ctx.types[0], ctx.attrs["perm"]
    if x.shape is None:
        return [x]
    perm = tuple(reversed(range(len(x.shape)))) if perm is None else perm
    if sorted(norm_axes(perm, len(x.shape))) != list(range(len(x.shape))):
        raise ctx.fail(f"perm {list(perm)} is not a permutation of rank {len(x.shape)}")
    return [x.with_shape(tuple(x.shape[p] for p in norm_axes(perm, len(x.shape))))]


defop("transpose", operands=("x",), attrs={"perm": AttrSpec(AttrKind.INTS, None)}, infer=_transpose_infer,
      reference=lambda x, perm: np.transpose(x, perm).copy(), traits=MOVE,
      doc="permute dims; no perm reverses them")


def _squeeze_infer(ctx: InferContext) -> list[TensorType]:
    x, axes = ctx.types[0], ctx.attrs["axes"]
    if x.shape is None:
        return [x]
    if axes is None:
        if len(ctx.types) > 1 or any(not isinstance(d, int) for d in x.shape):  # run-time axes
            return [x.with_shape(None)]
        return [x.with_shape(tuple(d for d in x.shape if d != 1))]
    ax = norm_axes(axes, len(x.shape))
    for a in ax:
        if isinstance(x.shape[a], int) and x.shape[a] != 1:
            raise ctx.fail(f"cannot squeeze axis {a} of size {x.shape[a]}")
    return [x.with_shape(tuple(d for i, d in enumerate(x.shape) if i not in ax))]


def _squeeze(x: np.ndarray, axes: Sequence[int] | None) -> np.ndarray:
    return np.squeeze(x, axis=None if axes is None else tuple(axes)).copy()


defop("squeeze", operands=("x", "axes?"), attrs={"axes": AttrSpec(AttrKind.INTS, None)},
      dynamic={"axes": "axes"}, infer=_squeeze_infer, reference=_squeeze, traits=VIEW,
      doc="drop size-1 dims (all of them when no axes are given)")


def _unsqueeze_infer(ctx: InferContext) -> list[TensorType]:
    x, axes = ctx.types[0], ctx.attrs["axes"]
    if axes is None:
        n = _len_operand(ctx, 1)
        ok = x.shape is not None and n is not None
        return [x.with_shape((UNKNOWN,) * (len(x.shape) + n) if ok else None)]  # type: ignore[arg-type]
    if x.shape is None:
        return [x]
    rank = len(x.shape) + len(axes)
    ax = set(norm_axes(axes, rank))
    it = iter(x.shape)
    return [x.with_shape(tuple(1 if i in ax else next(it) for i in range(rank)))]


def _unsqueeze(x: np.ndarray, axes: Sequence[int]) -> np.ndarray:
    rank = x.ndim + len(axes)
    return np.expand_dims(x, tuple(a % rank for a in axes)).copy()


defop("unsqueeze", operands=("x", "axes?"), attrs={"axes": AttrSpec(AttrKind.INTS, None)},
      dynamic={"axes": "axes"}, infer=_unsqueeze_infer, reference=_unsqueeze, traits=VIEW,
      doc="insert size-1 dims at ``axes`` (positions in the result)")


# -- concat, split ---------------------------------------------------------------------------------

def _merge_dims(ds: Sequence[Dim]) -> Dim:
    ints = {d for d in ds if isinstance(d, int)}
    if len(ints) > 1:
        raise ValueError(f"dims {sorted(ints)} differ")
    if ints:
        return ints.pop()
    syms = {d for d in ds if d != UNKNOWN}
    return syms.pop() if len(syms) == 1 else UNKNOWN


def _concat_infer(ctx: InferContext) -> list[TensorType]:
    dt = same_dtype(ctx)
    shapes = [t.shape for t in ctx.types]
    known = [s for s in shapes if s is not None]
    if not known:
        return [TensorType(dt, None)]
    rank = len(known[0])
    if any(len(s) != rank for s in known):
        raise ctx.fail("operands have different ranks")
    axis = norm_axis(ctx.attrs["axis"], rank)
    out: list[Dim] = []
    for i in range(rank):
        if i == axis:
            parts = [s[i] if s is not None else UNKNOWN for s in shapes]
            ints = [p for p in parts if isinstance(p, int)]
            syms = [p for p in parts if not isinstance(p, int)]
            out.append(sum(ints) if not syms else syms[0] if len(syms) == 1 and not sum(ints) else UNKNOWN)
        else:
            out.append(_merge_dims([s[i] for s in known]))
    return [TensorType(dt, tuple(out))]


defop("concat", operands=("xs*",), attrs={"axis": AttrSpec(AttrKind.INT)}, infer=_concat_infer,
      reference=lambda *xs, axis: np.concatenate(xs, axis=axis), traits=MOVE, doc="join along ``axis``")


def _split_sizes(dim: int, sizes: Sequence[int] | None, n: int) -> list[int]:
    if sizes is not None:
        if sum(sizes) != dim or len(sizes) != n:
            raise ValueError(f"split sizes {list(sizes)} do not cover dim {dim} in {n} parts")
        return list(sizes)
    chunk = -(-dim // n)  # ONNX 18: ceil-sized chunks, the last one smaller
    return [max(0, min(chunk, dim - i * chunk)) for i in range(n)]


def _split_infer(ctx: InferContext) -> list[TensorType]:
    x, sizes, n = ctx.types[0], ctx.attrs["sizes"], ctx.attrs["num_outputs"]
    n = len(sizes) if sizes is not None else n if n is not None else ctx.n_results
    if n is None:
        raise ctx.fail("split needs sizes or num_outputs")
    if x.shape is None:
        return [x] * n
    axis = norm_axis(ctx.attrs["axis"], len(x.shape))
    d = x.shape[axis]
    if sizes is not None:
        parts: list[Dim] = list(sizes)
    elif len(ctx.types) > 1:  # sizes only known at run time
        parts = [UNKNOWN] * n
    elif isinstance(d, int):
        parts = list(_split_sizes(d, None, n))
    else:
        parts = [UNKNOWN] * n
    return [x.with_shape(x.shape[:axis] + (p,) + x.shape[axis + 1:]) for p in parts]


def _split(x: np.ndarray, axis: int, sizes: Sequence[int] | None, num_outputs: int | None) -> list[np.ndarray]:
    n = len(sizes) if sizes is not None else num_outputs
    parts = _split_sizes(x.shape[axis], sizes, n)  # type: ignore[arg-type]
    return [a.copy() for a in np.split(x, np.cumsum(parts)[:-1], axis=axis)]


defop("split", operands=("x", "sizes?"), results=("outs*",), infer=_split_infer, reference=_split,
      attrs={"axis": AttrSpec(AttrKind.INT, 0), "sizes": AttrSpec(AttrKind.INTS, None),
             "num_outputs": AttrSpec(AttrKind.INT, None)},
      dynamic={"sizes": "sizes"}, traits=MOVE,
      doc="cut along ``axis`` into parts of ``sizes``, or into num_outputs ceil-sized chunks")


# -- slice ----------------------------------------------------------------------------------------------

def _slice_params(rank: int, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int] | None,
                  steps: Sequence[int] | None) -> list[tuple[int, int, int, int]]:
    axes = list(range(len(starts))) if axes is None else list(axes)
    steps = [1] * len(starts) if steps is None else list(steps)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise ValueError("starts, ends, axes and steps differ in length")
    if any(s == 0 for s in steps):
        raise ValueError("slice step 0")
    return [(a, s, e, st) for a, s, e, st in zip(norm_axes(axes, rank), starts, ends, steps)]


def _slice_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    a = ctx.attrs
    if x.shape is None:
        return [x]
    if a["starts"] is None or a["ends"] is None or (len(ctx.types) > 3 and a["axes"] is None):
        return [x.with_shape((UNKNOWN,) * len(x.shape))]
    out = list(x.shape)
    steps_unknown = len(ctx.types) > 4 and a["steps"] is None
    for axis, s, e, st in _slice_params(len(out), a["starts"], a["ends"], a["axes"], a["steps"] or None):
        d = out[axis]
        if steps_unknown:
            out[axis] = UNKNOWN
        elif isinstance(d, int):
            out[axis] = _slice_len(d, s, e, st)
        elif not (s == 0 and e >= _BIG and st == 1):
            out[axis] = UNKNOWN
    return [x.with_shape(tuple(out))]


def _slice_len(d: int, s: int, e: int, st: int) -> int:
    """The length of ``range(d)[s:e:st]``. Plain ints use Python's own; int subclasses that carry a
    dim's formula (ir/sym_dims.py) get the same clamping written as arithmetic, which keeps it."""
    if all(type(v) is int for v in (d, s, e, st)):
        return len(range(*slice(s, e, st).indices(d)))
    lo, hi = (0, d) if st > 0 else (-1, d - 1)

    def clamp(i: int) -> int:
        i = i + d if i < 0 else i
        return lo if i < lo else hi if i > hi else i
    s, e = clamp(s), clamp(e)
    if st > 0:
        return (e - s + st - 1) // st if e > s else 0
    return (s - e - st - 1) // -st if s > e else 0


def _slice(x: np.ndarray, starts, ends, axes, steps) -> np.ndarray:
    idx = [slice(None)] * x.ndim
    for axis, s, e, st in _slice_params(x.ndim, starts, ends, axes, steps):
        idx[axis] = slice(s, e, st)  # python slices clamp exactly as ONNX specifies
    return x[tuple(idx)].copy()


defop("slice", operands=("x", "starts?", "ends?", "axes?", "steps?"), infer=_slice_infer, reference=_slice,
      attrs={k: AttrSpec(AttrKind.INTS, None) for k in ("starts", "ends", "axes", "steps")},
      dynamic={k: k for k in ("starts", "ends", "axes", "steps")}, traits=MOVE,
      doc="strided slice with ONNX clamping; axes default to 0..n-1, steps to 1")


# -- expand, tile, pad ------------------------------------------------------------------------------

def _expand_infer(ctx: InferContext) -> list[TensorType]:
    x, shape = ctx.types[0], ctx.attrs["shape"]
    if shape is None:
        n = _len_operand(ctx, 1)
        if n is None or x.shape is None:
            return [x.with_shape(None)]
        return [x.with_shape((UNKNOWN,) * max(n, len(x.shape)))]
    return [x.with_shape(broadcast_shapes(x.shape, tuple(shape)))]


defop("expand", operands=("x", "shape?"), attrs={"shape": AttrSpec(AttrKind.INTS, None)},
      dynamic={"shape": "shape"}, infer=_expand_infer, traits=MOVE,
      reference=lambda x, shape: np.broadcast_to(x, np.broadcast_shapes(x.shape, tuple(shape))).copy(),
      doc="broadcast to ``shape`` (numpy rules; the result may be larger than ``shape``)")


def _tile_infer(ctx: InferContext) -> list[TensorType]:
    x, reps = ctx.types[0], ctx.attrs["repeats"]
    if x.shape is None:
        return [x]
    if reps is None:
        return [x.with_shape((UNKNOWN,) * len(x.shape))]
    if len(reps) != len(x.shape):
        raise ctx.fail(f"{len(reps)} repeats for rank {len(x.shape)}")
    return [x.with_shape(tuple(d * r if isinstance(d, int) else d if r == 1 else UNKNOWN
                               for d, r in zip(x.shape, reps)))]


defop("tile", operands=("x", "repeats?"), attrs={"repeats": AttrSpec(AttrKind.INTS, None)},
      dynamic={"repeats": "repeats"}, infer=_tile_infer, traits=MOVE,
      reference=lambda x, repeats: np.tile(x, repeats), doc="repeat ``repeats[i]`` times along dim i")


def _pad_infer(ctx: InferContext) -> list[TensorType]:
    x, pads = ctx.types[0], ctx.attrs["pads"]
    if x.shape is None:
        return [x]
    if pads is None:
        return [x.with_shape((UNKNOWN,) * len(x.shape))]
    r = len(x.shape)
    if len(pads) != 2 * r:
        raise ctx.fail(f"{len(pads)} pads for rank {r} (need begins then ends)")
    out: list[Dim] = []
    for i, d in enumerate(x.shape):
        extra = pads[i] + pads[i + r]
        out.append(d + extra if isinstance(d, int) else d if extra == 0 else UNKNOWN)
    return [x.with_shape(tuple(out))]


def _pad(x: np.ndarray, pads: Sequence[int], value: float | None, mode: str) -> np.ndarray:
    r = x.ndim
    # negative pads crop first; numpy pads only outward
    crop = tuple(slice(max(0, -pads[i]), x.shape[i] - max(0, -pads[i + r])) for i in range(r))
    x = x[crop]
    width = [(max(0, pads[i]), max(0, pads[i + r])) for i in range(r)]
    if mode == "constant":
        fill = np.asarray(0 if value is None else value).astype(x.dtype)
        return np.pad(x, width, mode="constant", constant_values=fill)
    if x.size == 0:
        if any(w != (0, 0) and n == 0 for w, n in zip(width, x.shape)):
            raise ValueError(f"{mode} padding of an empty axis")
        # an empty axis that is not padded (a batch of 0): the result is empty too
        return np.empty(tuple(n + a + b for n, (a, b) in zip(x.shape, width)), x.dtype)
    return np.pad(x, width, mode={"reflect": "reflect", "edge": "edge", "wrap": "wrap"}[mode])


defop("pad", operands=("x", "pads?", "value?"), infer=_pad_infer, reference=_pad,
      attrs={"pads": AttrSpec(AttrKind.INTS, None), "value": AttrSpec(AttrKind.FLOAT, None),
             "mode": AttrSpec(AttrKind.STR, "constant", ("constant", "reflect", "edge", "wrap"))},
      dynamic={"pads": "pads", "value": "value"}, traits=MOVE,
      doc="pads = all begins then all ends (negative crops); constant value defaults to 0")


# -- shape queries and generators ---------------------------------------------------------------

def _shape_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    if x.shape is None:
        return [TensorType(DType.i64, (UNKNOWN,))]
    n = len(x.shape[ctx.attrs["start"]:ctx.attrs["end"]])
    return [TensorType(DType.i64, (n,))]


defop("shape", operands=("x",), attrs={"start": AttrSpec(AttrKind.INT, 0), "end": AttrSpec(AttrKind.INT, None)},
      infer=_shape_infer, vjp=NOT_DIFFERENTIABLE,
      reference=lambda x, start, end: np.array(x.shape[start:end], dtype=np.int64),
      doc="the dims of ``x`` (python-style [start:end]) as i64; the frontend folds static ones")


def _range_len(start: Any, limit: Any, delta: Any) -> int:
    if all(isinstance(v, int) for v in (start, limit, delta)) and delta:  # exact (and keeps a dim's formula)
        return max(-((start - limit) // delta), 0)
    return max(int(math.ceil((float(limit) - float(start)) / float(delta))), 0)


def _range_infer(ctx: InferContext) -> list[TensorType]:
    dt = same_dtype(ctx)
    check_dtype(ctx, 0, NUMERIC_TYPES)
    vals = [ctx.const(i) for i in range(3)]
    if any(v is None for v in vals):
        return [TensorType(dt, (UNKNOWN,))]
    return [TensorType(dt, (_range_len(*(v.item() for v in vals)),))]  # type: ignore[union-attr]


def _range(start: np.ndarray, limit: np.ndarray, delta: np.ndarray) -> np.ndarray:
    s, lim, d = start.item(), limit.item(), delta.item()
    if start.dtype.kind not in "iu":
        s, lim, d = float(s), float(lim), float(d)
    n = _range_len(s, lim, d)
    return (s + np.arange(n, dtype=np.float64 if isinstance(s, float) else np.int64) * d).astype(start.dtype)


defop("range", operands=("start", "limit", "delta"), infer=_range_infer, reference=_range,
      vjp=NOT_DIFFERENTIABLE, doc="start, start+delta, ... up to (excluding) limit; 0-d operands")


def _trilu(x: np.ndarray, k: int | None, upper: int) -> np.ndarray:
    k = 0 if k is None else k
    return (np.triu(x, k) if upper else np.tril(x, k)).astype(x.dtype, copy=False)


def _trilu_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    if x.shape is not None and len(x.shape) < 2:
        raise ctx.fail(f"needs rank >= 2, got {x}")
    return [x]


defop("trilu", operands=("x", "k?"), attrs={"upper": AttrSpec(AttrKind.INT, 1), "k": AttrSpec(AttrKind.INT, None)},
      dynamic={"k": "k"}, infer=_trilu_infer, reference=_trilu,
      doc="keep the upper (or lower) triangle of the last two dims from diagonal k; zero the rest")

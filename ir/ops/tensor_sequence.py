"""Sequences of tensors and optional values (ONNX ``seq(tensor)`` and ``optional(...)``).

A sequence value (``SequenceType``) is a Python list of arrays at run time; an optional value
(``OptionalType``) is its element or None. The ops are few: build (``sequence_construct``,
``sequence_empty``, ``split_to_sequence``), edit (``sequence_insert``, ``sequence_erase``), read
(``sequence_at``, ``sequence_length``, ``concat_from_sequence``), map a region over elements
(``sequence_map``), and wrap/test/unwrap optionals. Positions are i32/i64 scalars; negative ones
count from the end. None of them folds at compile time (their results are not tensors).
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import INT_TYPES, DType
from ..errors import InputError
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import norm_axis
from ..types import UNKNOWN, OptionalType, SequenceType, TensorType, join_types


def _seq(ctx: InferContext, i: int) -> SequenceType:
    t = ctx.types[i]
    if not isinstance(t, SequenceType):
        raise ctx.fail(f"operand {i} must be a sequence, got {t}")
    return t


def _tensor(ctx: InferContext, i: int) -> TensorType:
    t = ctx.types[i]
    if not isinstance(t, TensorType):
        raise ctx.fail(f"operand {i} must be a tensor, got {t}")
    return t


def _position(ctx: InferContext, i: int) -> None:
    t = _tensor(ctx, i)
    if t.dtype not in INT_TYPES or (t.is_static and t.numel != 1):
        raise ctx.fail(f"a position is an integer scalar, got {t}")


def _index(seq: list, pos: Any, insert: bool = False) -> int:
    n = len(seq)
    p = int(np.asarray(pos).reshape(-1)[0])
    hi = n if insert else n - 1
    if not -n <= p <= hi:
        raise InputError(f"position {p} is out of range for a sequence of {n}")
    return p + n if p < 0 else p


PURE = Trait.PURE


def _declare(name: str, operands: tuple[str, ...], infer: Callable, reference: Callable, doc: str,
             attrs: dict[str, AttrSpec] | None = None) -> None:
    defop(name, operands=operands, infer=infer, reference=reference, attrs=attrs, traits=PURE,
          vjp=NOT_DIFFERENTIABLE, fold=False, doc=doc)


# -- building --------------------------------------------------------------------------------------
def _construct_infer(ctx: InferContext) -> list[Any]:
    if not ctx.types:
        raise ctx.fail("needs at least one tensor (use sequence_empty for none)")
    elem = _tensor(ctx, 0)
    for i in range(1, len(ctx.types)):
        j = join_types(elem, _tensor(ctx, i))
        if j is None:
            raise ctx.fail(f"elements of one sequence share a dtype: {elem} and {ctx.types[i]}")
        elem = j  # type: ignore[assignment]
    return [SequenceType(elem)]


_declare("sequence_construct", ("xs*",), _construct_infer, lambda *xs: [np.asarray(x) for x in xs],
         "A sequence of its operands.")
_declare("sequence_empty", (), lambda ctx: [SequenceType(TensorType(ctx.attrs["dtype"], None))],
         lambda *, dtype: [], "An empty sequence of tensors of ``dtype``.",
         attrs={"dtype": AttrSpec(AttrKind.DTYPE, DType.f32)})


def _split_infer(ctx: InferContext) -> list[Any]:
    x = _tensor(ctx, 0)
    a = ctx.attrs
    if x.shape is None:
        return [SequenceType(x)]
    axis = norm_axis(a["axis"], len(x.shape))
    if len(ctx.types) == 1:
        shape = x.shape[:axis] + ((1,) if a["keepdims"] else ()) + x.shape[axis + 1:]
        return [SequenceType(x.with_shape(shape))]
    split = ctx.const(1)
    d: Any = UNKNOWN
    if split is not None:
        sizes = split.reshape(-1)
        n = x.shape[axis]
        if split.ndim == 0 and isinstance(n, int) and n % int(sizes[0]) == 0:
            d = int(sizes[0])
        elif split.ndim == 1 and len(set(sizes.tolist())) == 1:
            d = int(sizes[0])
    return [SequenceType(x.with_shape(x.shape[:axis] + (d,) + x.shape[axis + 1:]))]


def _split_ref(x: np.ndarray, split: np.ndarray | None = None, *, axis: int, keepdims: int) -> list[np.ndarray]:
    axis = norm_axis(axis, x.ndim)
    n = x.shape[axis]
    if split is None:
        parts = [np.take(x, [i], axis=axis) for i in range(n)]
        return parts if keepdims else [np.squeeze(p, axis=axis) for p in parts]
    split = np.asarray(split)
    if split.ndim == 0:
        step = int(split)
        if step <= 0:
            raise InputError(f"split size {step} must be positive")
        bounds = list(range(step, n, step))
    else:
        if split.sum() != n or (split < 0).any():
            raise InputError(f"split sizes {split.tolist()} do not add up to the axis length {n}")
        bounds = np.cumsum(split)[:-1].tolist()
    return [np.ascontiguousarray(p) for p in np.split(x, bounds, axis=axis)]


_declare("split_to_sequence", ("x", "split?"), _split_infer, _split_ref,
         "Splits ``x`` along ``axis`` into a sequence: by ``split`` (one size, or a list of sizes), or into "
         "pieces of 1 (without the axis unless ``keepdims``).",
         attrs={"axis": AttrSpec(AttrKind.INT, 0), "keepdims": AttrSpec(AttrKind.INT, 1)})


# -- editing and reading ---------------------------------------------------------------------------
def _insert_infer(ctx: InferContext) -> list[Any]:
    s, x = _seq(ctx, 0), _tensor(ctx, 1)
    if len(ctx.types) > 2:
        _position(ctx, 2)
    if s.elem.dtype != x.dtype:
        raise ctx.fail(f"cannot insert {x} into {s}")
    return [SequenceType(join_types(s.elem, x))]  # type: ignore[arg-type]


def _insert_ref(s: list, x: np.ndarray, pos: Any = None) -> list:
    out = list(s)
    out.insert(len(out) if pos is None else _index(out, pos, insert=True), np.asarray(x))
    return out


def _erase_ref(s: list, pos: Any = None) -> list:
    out = list(s)
    if not out:
        raise InputError("cannot erase from an empty sequence")
    del out[len(out) - 1 if pos is None else _index(out, pos)]
    return out


def _erase_infer(ctx: InferContext) -> list[Any]:
    s = _seq(ctx, 0)
    if len(ctx.types) > 1:
        _position(ctx, 1)
    return [s]


def _at_infer(ctx: InferContext) -> list[Any]:
    s = _seq(ctx, 0)
    _position(ctx, 1)
    return [s.elem]


_declare("sequence_insert", ("s", "x", "pos?"), _insert_infer, _insert_ref,
         "The sequence with ``x`` inserted before ``pos`` (default: at the end).")
_declare("sequence_erase", ("s", "pos?"), _erase_infer, _erase_ref,
         "The sequence without the element at ``pos`` (default: the last).")
_declare("sequence_at", ("s", "pos"), _at_infer, lambda s, pos: np.asarray(s[_index(s, pos)]).copy(),
         "The element at ``pos``.")
_declare("sequence_length", ("s",), lambda ctx: [TensorType(DType.i64, ()) if _seq(ctx, 0) else None],
         lambda s: np.array(len(s), np.int64), "The number of elements, as an i64 scalar.")


def _concat_infer(ctx: InferContext) -> list[Any]:
    e = _seq(ctx, 0).elem
    if e.shape is None:
        return [e]
    new = ctx.attrs["new_axis"]
    axis = norm_axis(ctx.attrs["axis"], len(e.shape) + (1 if new else 0))
    if new:
        return [e.with_shape(e.shape[:axis] + (UNKNOWN,) + e.shape[axis:])]
    return [e.with_shape(e.shape[:axis] + (UNKNOWN,) + e.shape[axis + 1:])]


def _concat_ref(s: list, *, axis: int, new_axis: int) -> np.ndarray:
    if not s:
        raise InputError("concat_from_sequence of an empty sequence has no element type to concatenate")
    return np.stack(s, axis=axis) if new_axis else np.concatenate(s, axis=axis)


_declare("concat_from_sequence", ("s",), _concat_infer, _concat_ref,
         "Concatenates the elements along ``axis`` (stacks them on a new axis with ``new_axis``).",
         attrs={"axis": AttrSpec(AttrKind.INT), "new_axis": AttrSpec(AttrKind.INT, 0)})


# -- sequence_map ----------------------------------------------------------------------------------
def _map_infer(ctx: InferContext) -> list[Any]:
    if len(ctx.regions) != 1:
        raise ctx.fail("sequence_map owns one region (the body)")
    _seq(ctx, 0)
    body = ctx.regions[0]
    if len(body.params) != len(ctx.types):
        raise ctx.fail(f"the body takes {len(body.params)} parameters for {len(ctx.types)} operands")
    for p, t in zip(body.params, ctx.types):
        want = t.elem if isinstance(t, SequenceType) else t
        if join_types(p.type, want) != p.type:
            raise ctx.fail(f"body parameter %{p.name}: {p.type} does not cover {want}")
    out = []
    for v in body.outputs:
        if not isinstance(v.type, TensorType):
            raise ctx.fail(f"the body returns tensors, got {v.type}")
        out.append(SequenceType(v.type))
    return out


def _map_ref(*operands: Any, regions: list) -> tuple:
    seqs = [o for o in operands if isinstance(o, list)]
    n = len(operands[0])
    if any(len(s) != n for s in seqs):
        raise InputError(f"sequence_map over sequences of lengths {[len(s) for s in seqs]}")
    outs: list[list[np.ndarray]] = [[] for _ in regions[0].graph.outputs]
    for i in range(n):
        res = regions[0](*[o[i] if isinstance(o, list) else o for o in operands])
        for acc, r in zip(outs, res):
            acc.append(np.asarray(r))
    return tuple(outs)


defop("sequence_map", operands=("inputs*",), results=("outs*",), infer=_map_infer, reference=_map_ref,
      traits=PURE, vjp=NOT_DIFFERENTIABLE, fold=False,
      doc="Runs the body once per element of the sequence operands (tensor operands are passed whole); "
          "each body result becomes a sequence.")


# -- optionals -------------------------------------------------------------------------------------
def _opt(ctx: InferContext, i: int) -> OptionalType:
    t = ctx.types[i]
    if not isinstance(t, OptionalType):
        raise ctx.fail(f"operand {i} must be an optional, got {t}")
    return t


def _none_infer(ctx: InferContext) -> list[Any]:
    t = TensorType(ctx.attrs["dtype"], None)
    return [OptionalType(SequenceType(t) if ctx.attrs["kind"] == "sequence" else t)]


def _wrap_infer(ctx: InferContext) -> list[Any]:
    t = ctx.types[0]
    if isinstance(t, OptionalType):
        raise ctx.fail("an optional cannot hold an optional")
    return [OptionalType(t)]


def _get_ref(o: Any) -> Any:
    if o is None:
        raise InputError("optional_get_element of an empty optional")
    return o


_declare("optional", ("x",), _wrap_infer, lambda x: x, "A present optional holding ``x``.")
_declare("optional_none", (), _none_infer, lambda *, dtype, kind: None,
         "An empty optional of a tensor or a sequence of ``dtype``.",
         attrs={"dtype": AttrSpec(AttrKind.DTYPE, DType.f32),
                "kind": AttrSpec(AttrKind.STR, "tensor", ("tensor", "sequence"))})
_declare("optional_has_element", ("o",), lambda ctx: [TensorType(DType.bool, ()) if _opt(ctx, 0) else None],
         lambda o: np.array(o is not None), "Whether the optional holds a value.")
_declare("optional_get_element", ("o",), lambda ctx: [_opt(ctx, 0).elem], _get_ref,
         "The optional's value (an error when it is empty).")

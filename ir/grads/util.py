"""Building blocks for gradient rules: constants, un-broadcasting, reshaping back.

Shapes may hold symbolic dims (``batch``, ``seq``, ``?``) when autodiff runs on a shape-generic
graph (``engine.py`` lets only the rules declared shape-generic see them). The helpers then keep
result types exact where the IR can say them (a reshape's ``0`` entries copy a dim, a broadcast
against a value of the target type) and otherwise compute the shape at run time from a ``shape``
op, never from a size fixed at compile time.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from ..builder import Builder, const_value
from ..errors import GradientError
from ..graph import Module, Op, Value
from ..types import Dim, TensorType


def shape_of(v: Value) -> tuple[Dim, ...]:
    """The shape of ``v``: ints, and symbols where the graph is shape-generic (autodiff has checked
    the rank is known)."""
    return tuple(v.type.shape)  # type: ignore[arg-type]


def is_static(shape: Sequence[Dim]) -> bool:
    return all(isinstance(d, int) for d in shape)


def run_time_shape(b: Builder, like: Value) -> Value:
    """``like``'s shape as an i64 tensor computed at run time."""
    return b.op("shape", like, name=f"{like.name}.shape")


def count(b: Builder, x: Value, axes: Sequence[int], dtype_like: Value) -> Value | float:
    """The number of elements of ``x`` over ``axes``: a float when the dims are static, else a
    0-d value of ``dtype_like``'s dtype computed from ``x``'s run-time shape."""
    dims = [shape_of(x)[a] for a in axes]
    if is_static(dims):
        return float(np.prod(dims, dtype=np.float64))
    picked = b.op("gather", run_time_shape(b, x), b.const(np.asarray(list(axes), np.int64), name="axes"), axis=0)
    n = b.op("reduce_prod", picked, axes=[0], keepdims=0)
    return b.op("cast", n, to=dtype_like.dtype)


def scale_by_inverse(b: Builder, g: Value, n: Value | float) -> Value:
    """``g / n`` for a count from ``count``."""
    if isinstance(n, float):
        return g if n == 1 else b.op("mul", g, scalar(b, 1.0 / n, g))
    return b.op("div", g, n)


def scalar(b: Builder, x: float, like: Value) -> Value:
    """A 0-d constant with ``like``'s dtype."""
    return b.const(np.array(x, dtype=like.dtype.numpy), name="c")


def full(b: Builder, x: float, like: Value | TensorType) -> Value:
    """A tensor of ``like``'s type filled with ``x`` (a constant; for symbolic dims ``like`` must be
    a value, whose type the result takes by broadcasting against it)."""
    t = like.type if isinstance(like, Value) else like
    if t.is_static:
        return b.const(np.full(t.shape, x, dtype=t.dtype.numpy), name="c")
    if not isinstance(like, Value):
        raise GradientError(f"internal: a constant of the symbolic type {t} needs a value to take its shape from")
    return _spread_like(b, scalar(b, x, like), like)


def zeros(b: Builder, shape: tuple[int, ...] | list[int], like: Value) -> Value:
    """Zeros of ``shape`` with ``like``'s dtype, as a broadcast scalar (no big constant in the pool)."""
    z = scalar(b, 0.0, like)
    return b.op("expand", z, shape=list(shape)) if len(shape) else z


def zeros_like(b: Builder, v: Value) -> Value:
    return full(b, 0.0, v)


def _spread_like(b: Builder, g: Value, like: Value) -> Value:
    """``g`` broadcast to ``like``'s shape, typed exactly as ``like`` (a select that always takes
    ``g``; ``like``'s values are never used)."""
    yes = b.const(np.array(True), name="always")
    return b.op("where", yes, g, like)


def _reshape_attr(x: Value, want: Sequence[Dim]) -> list[int] | None:
    """A ``reshape`` target (with ``copy_zero``) whose inferred type is exactly ``want``: ints as
    they are, a symbol at the index where ``x`` has it as ``0`` (copy), and at most one other
    symbol as ``-1`` when the element counts pin it down; None when there is none."""
    have = shape_of(x)
    attr: list[int] = []
    for i, d in enumerate(want):
        if isinstance(d, int):
            if d == 0:
                return None  # a literal 0 would read as "copy"
            attr.append(d)
        elif i < len(have) and have[i] == d and d != "?":
            attr.append(0)
        else:
            attr.append(-1)
    if attr.count(-1) > 1:
        return None
    got = _infer_reshape(x, attr)
    return attr if got == tuple(want) else None


def _unit_axes(have: tuple[Dim, ...], want: tuple[Dim, ...]) -> tuple[str, list[int]] | None:
    """("unsqueeze", axes) when ``want`` is ``have`` with 1s inserted at ``axes``, ("squeeze", axes)
    when it is ``have`` with the 1s at ``axes`` removed; else None."""
    for op, long, short in (("unsqueeze", want, have), ("squeeze", have, want)):
        if len(long) <= len(short):
            continue
        axes, j = [], 0
        for i, d in enumerate(long):
            if j < len(short) and d == short[j]:
                j += 1
            elif d == 1:
                axes.append(i)
            else:
                break
        else:
            if j == len(short):
                return op, axes
    return None


def _infer_reshape(x: Value, attr: list[int]) -> tuple[Dim, ...] | None:
    from ..registry import get_opdef

    try:
        (t,) = get_opdef("reshape").run_infer([x.type], {"shape": attr, "copy_zero": 1}, [None])
    except Exception:  # noqa: BLE001  (a target inference rejects is simply not usable)
        return None
    return t.shape


def reshape(b: Builder, x: Value, shape: Sequence[Dim], like: Value | None = None) -> Value:
    """``x`` reshaped to ``shape``. With symbolic dims the target is written with copied (``0``) and
    inferred (``-1``) entries when that gives exactly ``shape``; otherwise it is ``like``'s shape
    read at run time (``like`` must then be given; the result's dims are ``?``)."""
    if shape_of(x) == tuple(shape):
        return x
    if is_static(shape):
        return b.op("reshape", x, shape=list(shape))
    unit = _unit_axes(shape_of(x), tuple(shape))
    if unit is not None:
        return b.op(unit[0], x, axes=unit[1])
    attr = _reshape_attr(x, shape)
    if attr is not None:
        return b.op("reshape", x, shape=attr, copy_zero=1)
    if like is None:
        raise GradientError(f"internal: cannot reshape {x.name} ({x.type}) to {list(shape)} without a value of "
                            "that shape")
    return b.op("reshape", x, run_time_shape(b, like))


def reshape_like(b: Builder, x: Value, like: Value) -> Value:
    """``x`` reshaped to ``like``'s shape."""
    return reshape(b, x, shape_of(like), like)


def sum_to(b: Builder, g: Value, target: Value | TensorType) -> Value:
    """Sum ``g`` over the dims that broadcasting added or stretched to reach ``target``'s shape
    (the adjoint of numpy broadcasting). A symbolic target dim facing a different dim of ``g``
    cannot be told apart from a broadcast 1 at compile time: a ``GradientError``."""
    t = target.type if isinstance(target, Value) else target
    want, have = tuple(t.shape), shape_of(g)
    if want == have:
        return g
    lead = len(have) - len(want)
    if is_static(want) and is_static(have):
        axes = list(range(lead)) + [lead + i for i, d in enumerate(want) if d == 1 and have[lead + i] != 1]
        if axes:
            g = b.op("reduce_sum", g, axes=axes, keepdims=1)
        return reshape(b, g, want)
    inner = []
    for i, d in enumerate(want):
        h = have[lead + i]
        if d == h or (isinstance(d, int) and d != 1):
            continue  # equal, or stretched to the same int by broadcasting
        if d == 1:
            inner.append(lead + i)
            continue
        name = target.name if isinstance(target, Value) else str(t)
        raise GradientError(f"cannot un-broadcast the gradient {g.name} ({g.type}) to {name} ({t}): dim {i} is "
                            f"{d!r} there and {h!r} here, which may or may not be a broadcast 1 at run time")
    if inner or lead:
        g = b.op("reduce_sum", g, axes=list(range(lead)) + inner, keepdims=1)
    if lead:
        g = b.op("squeeze", g, axes=list(range(lead)))
    return g


def broadcast_to(b: Builder, g: Value, shape: Sequence[Dim], like: Value | None = None) -> Value:
    """``g`` broadcast to ``shape``. A symbolic dim of ``shape`` where ``g`` has a 1 is taken from
    ``like`` (a value of that shape) at run time."""
    if shape_of(g) == tuple(shape):
        return g
    if is_static(shape):
        return b.op("expand", g, shape=list(shape))
    have = shape_of(g)
    lead = len(shape) - len(have)
    padded = (1,) * lead + tuple(have)
    if all(isinstance(d, int) or d == h for d, h in zip(shape, padded)):
        # every symbolic dim is already g's: expand only the static ones (1 keeps g's dim)
        return b.op("expand", g, shape=[d if isinstance(d, int) else 1 for d in shape])
    if like is None:
        raise GradientError(f"internal: broadcasting {g.name} ({g.type}) to {list(shape)} needs a value of that "
                            "shape")
    return _spread_like(b, g, like)


def cast_to(b: Builder, g: Value, like: Value) -> Value:
    return g if g.dtype == like.dtype else b.op("cast", g, to=like.dtype)


def is_float(v: Value) -> bool:
    return v.dtype.is_float


def scalar_attr(module: Module, op: Op, name: str, index: int) -> tuple[Any, Value | None]:
    """(compile-time value or None, run-time operand or None) of a scalar dynamic attribute: the
    attribute when set, else operand ``index`` when it is a constant, else that operand."""
    v = op.attrs.get(name)
    if v is not None:
        return v, None
    if index < len(op.operands):
        c = const_value(module, op.operands[index])
        if c is None:
            return None, op.operands[index]
        return c.reshape(-1)[0].item(), None
    return None, None

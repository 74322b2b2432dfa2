"""Shared type-inference rules: broadcasting, axis normalisation, symbolic dim arithmetic.

Op declarations build their ``infer`` functions from these so that the same rule (numpy
broadcasting, say) is written once.
"""

from __future__ import annotations

from typing import Sequence

from .dtypes import DType
from .errors import TypeInferenceError
from .registry import InferContext
from .types import UNKNOWN, Dim, TensorType


def broadcast_dims(a: Dim, b: Dim) -> Dim:
    if a == b:
        return a
    if a == 1:
        return b
    if b == 1:
        return a
    if isinstance(a, int) and isinstance(b, int):
        raise TypeInferenceError(f"dims {a} and {b} do not broadcast")
    # A symbol against an int > 1 must be that int (or 1); two different symbols: unknown.
    if isinstance(a, int):
        return a
    if isinstance(b, int):
        return b
    return UNKNOWN


def broadcast_shapes(*shapes: tuple[Dim, ...] | None) -> tuple[Dim, ...] | None:
    if any(s is None for s in shapes):
        return None
    rank = max((len(s) for s in shapes), default=0)  # type: ignore[arg-type]
    out: list[Dim] = [1] * rank
    for s in shapes:
        padded = (1,) * (rank - len(s)) + tuple(s)  # type: ignore[arg-type]
        out = [broadcast_dims(a, b) for a, b in zip(out, padded)]
    return tuple(out)


def norm_axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < max(rank, 1):
        raise TypeInferenceError(f"{what} {axis} out of range for rank {rank}")
    return axis % rank if rank else 0


def norm_axes(axes: Sequence[int], rank: int) -> list[int]:
    out = [norm_axis(a, rank) for a in axes]
    if len(set(out)) != len(out):
        raise TypeInferenceError(f"repeated axes {list(axes)}")
    return out


def dim_mul(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a * b
    if a == 1:
        return b
    if b == 1:
        return a
    return UNKNOWN


def dim_product(dims: Sequence[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def same_dtype(ctx: InferContext, *indices: int) -> DType:
    """The shared dtype of the given operands (all operands if none given)."""
    idx = indices or tuple(range(len(ctx.types)))
    dts = {ctx.types[i].dtype for i in idx}
    if len(dts) != 1:
        raise ctx.fail(f"operands must share a dtype, got {', '.join(sorted(str(d) for d in dts))}")
    return dts.pop()


def check_dtype(ctx: InferContext, i: int, allowed: frozenset[DType] | set[DType]) -> DType:
    dt = ctx.types[i].dtype
    if dt not in allowed:
        raise ctx.fail(f"operand {i} has dtype {dt}, expected one of "
                       f"{', '.join(sorted(str(d) for d in allowed))}")
    return dt


def require_rank(ctx: InferContext, i: int, *ranks: int) -> tuple[Dim, ...] | None:
    s = ctx.types[i].shape
    if s is not None and ranks and len(s) not in ranks:
        raise ctx.fail(f"operand {i} must have rank {' or '.join(map(str, ranks))}, got {ctx.types[i]}")
    return s


def same_as(i: int = 0):
    """Infer rule: one result of operand ``i``'s type."""
    def infer(ctx: InferContext) -> list[TensorType]:
        return [ctx.types[i]]
    return infer


def unknown_shape(rank: int | None) -> tuple[Dim, ...] | None:
    return None if rank is None else (UNKNOWN,) * rank

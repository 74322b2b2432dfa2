"""Arithmetic on dims that are either compile-time ints or run-time i64 values.

Shape-generic kernels (``KernelBuilder.shape``) get a mix of both; these helpers fold what is known
at compile time and emit instructions only for the rest, so a lowering written with them produces
exactly the static code when every dim is an int.
"""

from __future__ import annotations

from typing import Iterable, Sequence, Union

from llvmlite import ir

from ..llvm_types import const_int

Dim = Union[int, ir.Value]


def is_static(*dims: Dim) -> bool:
    return all(isinstance(d, int) for d in dims)


def val(d: Dim) -> ir.Value:
    """``d`` as an i64 value."""
    return const_int(d) if isinstance(d, int) else d


def mul(b: ir.IRBuilder, x: Dim, y: Dim) -> Dim:
    if isinstance(x, int) and isinstance(y, int):
        return x * y
    if isinstance(x, int) and x == 1:
        return y
    if isinstance(y, int) and y == 1:
        return x
    if isinstance(x, int) and x == 0 or isinstance(y, int) and y == 0:
        return 0
    return b.mul(val(x), val(y))


def add(b: ir.IRBuilder, x: Dim, y: Dim) -> Dim:
    if isinstance(x, int) and isinstance(y, int):
        return x + y
    if isinstance(x, int) and x == 0:
        return y
    if isinstance(y, int) and y == 0:
        return x
    return b.add(val(x), val(y))


def sub(b: ir.IRBuilder, x: Dim, y: Dim) -> Dim:
    if isinstance(x, int) and isinstance(y, int):
        return x - y
    if isinstance(y, int) and y == 0:
        return x
    return b.sub(val(x), val(y))


def div(b: ir.IRBuilder, x: Dim, y: Dim) -> Dim:
    """Floor division of non-negative dims."""
    if isinstance(x, int) and isinstance(y, int):
        return x // y
    if isinstance(y, int) and y == 1:
        return x
    return b.udiv(val(x), val(y))


def ceil_div(b: ir.IRBuilder, x: Dim, y: Dim) -> Dim:
    if isinstance(x, int) and isinstance(y, int):
        return -(-x // y)
    return div(b, add(b, x, sub(b, y, 1)), y)


def minimum(b: ir.IRBuilder, x: Dim, y: Dim) -> Dim:
    if isinstance(x, int) and isinstance(y, int):
        return min(x, y)
    xv, yv = val(x), val(y)
    return b.select(b.icmp_signed("<", xv, yv), xv, yv)


def prod(b: ir.IRBuilder, dims: Iterable[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = mul(b, out, d)
    return out


def row_major_strides(b: ir.IRBuilder, shape: Sequence[Dim]) -> list[Dim]:
    """Element strides of a contiguous tensor of ``shape``."""
    strides: list[Dim] = [1] * len(shape)
    acc: Dim = 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d] = acc
        acc = mul(b, acc, shape[d])
    return strides


def hint(d: Dim, default: int = 64) -> int:
    """A compile-time size for heuristics (blocking, thread split) where ``d`` is only known at run
    time: ``d`` itself when static, else ``default``."""
    return d if isinstance(d, int) else default

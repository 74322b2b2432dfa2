"""IR dtypes as LLVM types, and small IRBuilder helpers (counted loops, constants)."""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator

from llvmlite import ir

from nnc.ir import DType

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
F64 = ir.DoubleType()
F16 = ir.HalfType()
VOID = ir.VoidType()
PTR = ir.PointerType()

_LL: dict[DType, ir.Type] = {
    DType.f64: F64, DType.f32: F32, DType.f16: F16, DType.i64: I64, DType.i32: I32,
    DType.i16: ir.IntType(16), DType.i8: I8, DType.u64: I64, DType.u32: I32, DType.u16: ir.IntType(16),
    DType.u8: I8, DType.bool: I8,
}


def ll_type(dt: DType) -> ir.Type:
    """The LLVM storage type of an element (bool is one byte, as in numpy)."""
    try:
        return _LL[dt]
    except KeyError:
        raise NotImplementedError(f"dtype {dt} has no x86 lowering yet") from None


def const_int(v: int, ty: ir.IntType = I64) -> ir.Constant:
    return ir.Constant(ty, v)


def const_of(dt: DType, v: float | int | bool) -> ir.Constant:
    t = ll_type(dt)
    if dt.is_float:
        return ir.Constant(t, float(v))
    return ir.Constant(t, int(v))


@contextmanager
def for_range(b: ir.IRBuilder, count: ir.Value | int, name: str = "i", start: int | ir.Value = 0,
              step: int = 1) -> Iterator[ir.Value]:
    """``for (i = start; i < count; i += step)`` with an i64 induction variable.

    The body is emitted inside the ``with`` block; the builder ends positioned after the loop.
    """
    count = const_int(count) if isinstance(count, int) else count
    start = const_int(start) if isinstance(start, int) else start
    pre = b.block
    fn = b.function
    head = fn.append_basic_block(f"{name}.head")
    body = fn.append_basic_block(f"{name}.body")
    end = fn.append_basic_block(f"{name}.end")
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, count), body, end)
    b.position_at_end(body)
    yield i
    nxt = b.add(i, const_int(step), name=f"{name}.next")
    i.add_incoming(nxt, b.block)
    b.branch(head)
    b.position_at_end(end)

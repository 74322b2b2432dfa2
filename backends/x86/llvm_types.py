"""IR dtypes as LLVM types, and small IRBuilder helpers (counted loops, constants, bf16 words).

bf16 has no LLVM arithmetic type here: it is stored as a 16-bit word (``storage_type``), and a
kernel that supports it loads the word, widens it to f32 (``bf16_to_f32``: the word is the top half
of an f32), computes in f32 and rounds back with ``f32_to_bf16`` (round to nearest even, NaN to the
canonical quiet NaN, exactly as ml_dtypes does). ``ll_type`` deliberately has no bf16 entry, so a
kernel that has not opted in fails loudly instead of doing integer arithmetic on the raw words.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from llvmlite import ir

from nnc.ir import DType, TargetError

I1 = ir.IntType(1)
I8 = ir.IntType(8)
I16 = ir.IntType(16)
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


class UnsupportedDType(TargetError, NotImplementedError):
    """A kernel met a dtype it has no lowering for (a TargetError for the driver; still a
    NotImplementedError for the kernels that catch that to fall back to a typeless path)."""


def ll_type(dt: DType) -> ir.Type:
    """The LLVM storage type of an element (bool is one byte, as in numpy)."""
    try:
        return _LL[dt]
    except KeyError:
        if dt is DType.bf16:
            raise UnsupportedDType("x86: an op on bf16 whose kernel does not support bf16 (bf16 has no LLVM "
                                   "arithmetic type; kernels opt in through storage_type/bf16_to_f32)") from None
        raise UnsupportedDType(f"x86: dtype {dt} has no lowering yet") from None


def storage_type(dt: DType) -> ir.Type:
    """The LLVM type an element is stored as: ``ll_type``, and bf16 as its raw 16-bit word."""
    return I16 if dt is DType.bf16 else ll_type(dt)


def bf16_to_f32(b: ir.IRBuilder, word: ir.Value) -> ir.Value:
    """A bf16 word (i16, or a vector of them) as the f32 it denotes, exactly."""
    if isinstance(word.type, ir.VectorType):
        n = word.type.count
        wide = b.shl(b.zext(word, ir.VectorType(I32, n)), ir.Constant(ir.VectorType(I32, n), [16] * n))
        return b.bitcast(wide, ir.VectorType(F32, n))
    return b.bitcast(b.shl(b.zext(word, I32), ir.Constant(I32, 16)), F32)


def f32_to_bf16(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """An f32 rounded to a bf16 word as ml_dtypes does: to nearest, ties to even (overflow goes
    to infinity); a NaN becomes the quiet NaN 0x7FC0 with the sign kept."""
    bits = b.bitcast(x, I32)
    odd = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 1))
    rounded = b.lshr(b.add(bits, b.add(ir.Constant(I32, 0x7FFF), odd)), ir.Constant(I32, 16))
    sign = b.and_(b.lshr(bits, ir.Constant(I32, 16)), ir.Constant(I32, 0x8000))
    nan = b.or_(sign, ir.Constant(I32, 0x7FC0))
    return b.trunc(b.select(b.fcmp_unordered("uno", x, x), nan, rounded), I16)


def round_bf16(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """An f32 rounded to the nearest bf16 value, kept as f32 (how kernels carry bf16 in registers)."""
    return bf16_to_f32(b, f32_to_bf16(b, x))


def f64_to_f32_odd(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """An f64 narrowed to f32 rounding to odd: truncated toward zero, lowest bit set when inexact.
    Rounding that to bf16 (to nearest even) then gives the correctly rounded bf16 of ``x``, where
    two roundings to nearest would not (1 + 2**-8 + 2**-30 would tie in f32, then round to 1):
    f32 keeps more than two bits beyond bf16's eight, which is what rounding to odd needs."""
    t = b.fptrunc(x, F32)
    back = b.fpext(t, F64)
    inexact = b.fcmp_ordered("one", back, x)
    away = b.select(b.fcmp_ordered(">", x, ir.Constant(F64, 0.0)), b.fcmp_ordered(">", back, x),
                    b.fcmp_ordered("<", back, x))  # rounded away from zero (inf included): step back
    bits = b.bitcast(t, I32)
    bits = b.select(away, b.sub(bits, ir.Constant(I32, 1)), bits)
    bits = b.select(inexact, b.or_(bits, ir.Constant(I32, 1)), bits)
    return b.bitcast(bits, F32)


def i64_to_f64_odd(b: ir.IRBuilder, x: ir.Value, signed: bool) -> ir.Value:
    """A 64-bit integer as an f64 whose rounding to 24 bits (or fewer) is that of ``x``: from 2**53
    on, the bits below the 53 an f64 holds are folded into one sticky bit, so the conversion is exact."""
    neg = b.icmp_signed("<", x, ir.Constant(I64, 0)) if signed else None
    mag = b.select(neg, b.sub(ir.Constant(I64, 0), x), x) if signed else x  # INT64_MIN: 2**63 unsigned
    low = b.and_(mag, ir.Constant(I64, 0xFFF))
    sticky = b.shl(b.zext(b.icmp_unsigned("!=", low, ir.Constant(I64, 0)), I64), ir.Constant(I64, 11))
    folded = b.or_(b.and_(mag, ir.Constant(I64, ~0xFFF & (2**64 - 1))), sticky)
    big = b.icmp_unsigned(">=", mag, ir.Constant(I64, 2**53))
    d = b.uitofp(b.select(big, folded, mag), F64)
    return b.select(neg, b.fneg(d), d) if signed else d


def const_int(v: int, ty: ir.IntType = I64) -> ir.Constant:
    return ir.Constant(ty, v)


def const_of(dt: DType, v: float | int | bool) -> ir.Constant:
    t = ll_type(dt)
    if dt.is_float:
        return ir.Constant(t, float(v))
    return ir.Constant(t, int(v))


@contextmanager
def for_range(b: ir.IRBuilder, count: ir.Value | int, name: str = "i", start: int | ir.Value = 0,
              step: int = 1, on_latch: Callable[[ir.Instruction, list[ir.Block]], None] | None = None
              ) -> Iterator[ir.Value]:
    """``for (i = start; i < count; i += step)`` with an i64 induction variable.

    The body is emitted inside the ``with`` block; the builder ends positioned after the loop.
    ``on_latch(back_edge_branch, body_blocks)`` may attach loop metadata once the body is built.
    """
    count = const_int(count) if isinstance(count, int) else count
    start = const_int(start) if isinstance(start, int) else start
    pre = b.block
    fn = b.function
    head = fn.append_basic_block(f"{name}.head")
    body = fn.append_basic_block(f"{name}.body")
    end = fn.append_basic_block(f"{name}.end")
    first_new = len(fn.blocks)
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(start, pre)
    b.cbranch(b.icmp_signed("<", i, count), body, end)
    b.position_at_end(body)
    yield i
    nxt = b.add(i, const_int(step), name=f"{name}.next")
    i.add_incoming(nxt, b.block)
    latch = b.branch(head)
    b.position_at_end(end)
    if on_latch is not None:
        on_latch(latch, [body, *fn.blocks[first_new:]])

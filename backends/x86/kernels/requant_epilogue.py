"""Requantization as a kernel epilogue: the ``requantize`` op's arithmetic on a vector of 16 i32
accumulators, so a ``qconv`` / depthwise / ``qmatmul`` kernel can write its int8 result straight from
registers instead of storing an i32 tensor for a separate ``requantize`` pass to read back.

The arithmetic is the reference's (ir/ops/quant.py ``_requantize``), bit for bit: in i64,
``y = round_half_to_even(acc * multiplier / 2**shift) + zero_point``, clamped to the clip bounds and
the output dtype's range. ``RequantSpec`` carries the compile-time constants (one multiplier and shift
per output channel, or one for all); the fused lowering (``quant_fused.py``) builds it from the
requantize op the ``fuse-requantize`` pass put in the group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from nnc.ir import DType

from ..llvm_types import I8, I32, I64, PTR, VOID, const_int

V16 = ir.VectorType(I32, 16)
V16I64 = ir.VectorType(I64, 16)
V16I8 = ir.VectorType(I8, 16)


@dataclass
class RequantSpec:
    """A requantize op's constants, one entry per output channel (broadcast if it had one)."""
    multiplier: np.ndarray  # i64 [channels]
    shift: np.ndarray  # i64 [channels]
    zero_point: int
    lo: int  # the clamp, already intersected with the output dtype's range
    hi: int
    dtype: DType

    @staticmethod
    def build(multiplier: np.ndarray, shift: np.ndarray, channels: int, attrs: dict) -> "RequantSpec":
        dt = attrs["dtype"]
        info = np.iinfo(dt.numpy)
        lo = int(info.min) if attrs["clip_min"] is None else max(int(attrs["clip_min"]), int(info.min))
        hi = int(info.max) if attrs["clip_max"] is None else min(int(attrs["clip_max"]), int(info.max))
        m = np.broadcast_to(np.asarray(multiplier, np.int64).reshape(-1), (channels,)).copy()
        s = np.broadcast_to(np.asarray(shift, np.int64).reshape(-1), (channels,)).copy()
        return RequantSpec(m, s, int(attrs["zero_point"]), lo, hi, dt)


def splat(b: ir.IRBuilder, x: ir.Value, vt: ir.VectorType) -> ir.Value:
    v = b.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(I32, 0))
    return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(I32, vt.count), [0] * vt.count))


def requantize_v16(b: ir.IRBuilder, acc: ir.Value, mult: ir.Value, shift: ir.Value, spec: RequantSpec) -> ir.Value:
    """16 i32 accumulators -> 16 bytes of ``spec.dtype``; ``mult``/``shift`` are <16 x i64> (a splat
    for a per-channel row, or one value per lane when the lanes are channels)."""
    one = ir.Constant(V16I64, [1] * 16)
    p = b.mul(b.sext(acc, V16I64), mult)
    q = b.ashr(p, shift)
    half = b.ashr(b.shl(one, shift), one)
    r = b.ashr(b.add(b.add(p, b.sub(half, one)), b.and_(q, one)), shift)
    r = b.select(b.icmp_signed("==", shift, ir.Constant(V16I64, [0] * 16)), p, r)
    y = b.add(r, ir.Constant(V16I64, [spec.zero_point] * 16))
    lo, hi = ir.Constant(V16I64, [spec.lo] * 16), ir.Constant(V16I64, [spec.hi] * 16)
    y = b.select(b.icmp_signed("<", y, lo), lo, y)
    y = b.select(b.icmp_signed(">", y, hi), hi, y)
    return b.trunc(y, V16I8)


def store_lanes(b: ir.IRBuilder, x: ir.Value, ptr: ir.Value, remaining: ir.Value) -> None:
    """Store the first min(16, remaining) lanes of the 16-lane vector ``x`` (i32 or i8) at ``ptr``."""
    et = x.type.element
    width = et.width // 8
    full = b.icmp_signed(">=", remaining, const_int(16))
    with b.if_else(full) as (then, other):
        with then:
            st = b.store(x, ptr)
            st.align = width
        with other:
            lanes = ir.Constant(V16I64, list(range(16)))
            mask = b.icmp_signed("<", lanes, splat(b, remaining, V16I64))
            name = f"llvm.masked.store.v16i{et.width}.p0"
            fn = b.module.globals.get(name) or ir.Function(
                b.module, ir.FunctionType(VOID, [x.type, PTR, I32, ir.VectorType(ir.IntType(1), 16)]), name=name)
            b.call(fn, [x, ptr, ir.Constant(I32, width), mask])


def store_result(b: ir.IRBuilder, acc: ir.Value, out: ir.Value, at: ir.Value, remaining: ir.Value,
                 requant: RequantSpec | None, mult: ir.Value | None = None, shift: ir.Value | None = None) -> None:
    """Store 16 finished accumulators at element ``at`` of ``out``: as i32, or requantized to bytes."""
    if requant is None:
        store_lanes(b, acc, b.gep(out, [at], source_etype=I32, inbounds=True), remaining)
    else:
        y = requantize_v16(b, acc, mult, shift, requant)
        store_lanes(b, y, b.gep(out, [at], source_etype=I8, inbounds=True), remaining)

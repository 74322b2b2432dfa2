"""Requantization as a kernel epilogue: the ``requantize`` op's arithmetic on a vector of 16 i32
accumulators, so a ``qconv`` / depthwise / ``qmatmul`` kernel can write its int8 result straight from
registers instead of storing an i32 tensor for a separate ``requantize`` pass to read back.

The arithmetic is the reference's (ir/ops/quant.py ``_requantize``), bit for bit: in i64,
``y = round_half_to_even(acc * multiplier / 2**shift) + zero_point``, clamped to the clip bounds and
the output dtype's range. ``RequantSpec`` says where the kernel reads the multiplier and shift (the
requantize's own i32 constants, in place: one per output channel, or one for all) and carries the
zero point and clamp; the fused lowering (``quant_fused.py``) builds it from the requantize op the
``fuse-requantize`` pass put in the group.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from nnc.ir import DType

from ..llvm_types import F64, I8, I32, I64, PTR, VOID, const_int

V16 = ir.VectorType(I32, 16)
V16I64 = ir.VectorType(I64, 16)
V16I8 = ir.VectorType(I8, 16)
F64_MAX_SHIFT = 44  # the largest shift for which the f64 requantization is exact (_requantize_f64)


@dataclass
class RequantSpec:
    """A fused requantize: its attributes, and where the kernel finds its multiplier and shift (i32
    constants, read in place: operand ``mult_arg`` / ``shift_arg`` of the kernel, each per output
    channel or one value for all)."""
    zero_point: int
    lo: int  # the clamp, already intersected with the output dtype's range
    hi: int
    dtype: DType
    mult_arg: int
    shift_arg: int
    mult_per_channel: bool
    shift_per_channel: bool
    exact_in_f64: bool = False  # every shift <= F64_MAX_SHIFT: the f64 form is exact (requantize_v16)
    fma: bool = False  # the target has FMA: the one-rounding f64 form (_requantize_fma), exact for every requantize
    # |acc * m / 2**s| < 2**30 for every accumulator the anchor can produce (``acc_bound``): the FMA
    # form clamps in i32 instead of f64
    small: bool = False

    def bound_accumulators(self, bound: np.ndarray, multiplier: np.ndarray, shift: np.ndarray) -> None:
        """``bound``: per output channel (or one) a bound on |accumulator| (``acc_bound``); sets
        ``small`` where every ``|acc| * m * 2**-s`` stays below 2**30."""
        c = np.ldexp(multiplier.reshape(-1).astype(np.float64), -shift.reshape(-1).astype(np.int64))
        bound = bound.reshape(-1).astype(np.float64)
        if c.size > 1 and bound.size > 1 and c.size != bound.size:
            bound = bound.max(keepdims=True)
        self.small = self.fma and bool(np.all(bound * (1 + 2.0 ** -40) * c < 2.0 ** 30))

    @staticmethod
    def build(attrs: dict, mult_arg: int, shift_arg: int, multiplier: np.ndarray, shift: np.ndarray,
              fma: bool = False) -> "RequantSpec":
        dt = attrs["dtype"]
        info = np.iinfo(dt.numpy)
        lo = int(info.min) if attrs["clip_min"] is None else max(int(attrs["clip_min"]), int(info.min))
        hi = int(info.max) if attrs["clip_max"] is None else min(int(attrs["clip_max"]), int(info.max))
        f64 = bool(np.all((shift >= 0) & (shift <= F64_MAX_SHIFT)) and np.all(multiplier >= 0))
        fma = fma and np.dtype(dt.numpy).itemsize == 1 and bool(
            np.all((shift >= 0) & (shift <= 62)) and np.all((multiplier >= 0) & (multiplier < 2 ** 31)))
        return RequantSpec(int(attrs["zero_point"]), lo, hi, dt, mult_arg, shift_arg, multiplier.size > 1,
                           shift.size > 1, f64, fma)

    def channel_params(self, k, kb, channel: ir.Value) -> tuple[ir.Value, ir.Value]:
        """Multiplier and shift of one output channel, splat to <16 x i64> (lanes are pixels); ``k``
        is the kernel's builder, ``kb`` the one of the task being emitted."""
        b = kb.b
        out = []
        for arg, per in ((self.mult_arg, self.mult_per_channel), (self.shift_arg, self.shift_per_channel)):
            p = b.gep(kb.local(k.arg(arg)), [channel if per else const_int(0)], source_etype=I32, inbounds=True)
            out.append(splat(b, b.sext(b.load(p, typ=I32), I64), V16I64))
        return out[0], out[1]

    def lane_params(self, k, kb, col: ir.Value, remaining: ir.Value) -> tuple[ir.Value, ir.Value]:
        """Multiplier and shift of the 16 output channels from ``col`` (lanes are channels; lanes at
        or past ``remaining`` are not read)."""
        b = kb.b
        out = []
        for arg, per in ((self.mult_arg, self.mult_per_channel), (self.shift_arg, self.shift_per_channel)):
            base = kb.local(k.arg(arg))
            if per:
                v = load_lanes(b, b.gep(base, [col], source_etype=I32, inbounds=True), remaining)
                out.append(b.sext(v, V16I64))
            else:
                out.append(splat(b, b.sext(b.load(base, typ=I32), I64), V16I64))
        return out[0], out[1]


def splat(b: ir.IRBuilder, x: ir.Value, vt: ir.VectorType) -> ir.Value:
    v = b.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(I32, 0))
    return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(I32, vt.count), [0] * vt.count))


def requantize_v16(b: ir.IRBuilder, acc: ir.Value, mult: ir.Value, shift: ir.Value, spec: RequantSpec) -> ir.Value:
    """16 i32 accumulators -> 16 bytes of ``spec.dtype``; ``mult``/``shift`` are <16 x i64> (a splat
    for a per-channel row, or one value per lane when the lanes are channels)."""
    if spec.fma:
        return _requantize_fma(b, acc, mult, shift, spec)
    if spec.exact_in_f64:
        return _requantize_f64(b, acc, mult, shift, spec)
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


_MAGIC = 1.5 * 2.0 ** 52  # f64 values in [2**52, 2**53) are the integers: ulp 1


def _f64_scale(b: ir.IRBuilder, mult: ir.Value, shift: ir.Value) -> ir.Value:
    """``m * 2**-s`` in f64, exact (m < 2**31; 2**-s built from its exponent bits, (1023 - s) << 52)."""
    vd = ir.VectorType(F64, 16)
    scale = b.bitcast(b.shl(b.sub(ir.Constant(V16I64, [1023] * 16), shift), ir.Constant(V16I64, [52] * 16)), vd)
    return b.fmul(b.sitofp(mult, vd), scale)


def _requantize_fma(b: ir.IRBuilder, acc: ir.Value, mult: ir.Value, shift: ir.Value, spec: RequantSpec) -> ir.Value:
    """The reference's integers with one f64 FMA and no rounding instruction:
    ``R = fma(f64(acc), c, MAGIC)`` with ``c = m * 2**-s`` and ``MAGIC = 1.5 * 2**52``, clamped to
    ``[MAGIC + lo - zp, MAGIC + hi - zp]`` in f64; the low byte of R's bits, plus ``zp`` (mod 256).

    Why it is exact for every requantize (multiplier in [0, 2**31), shift in [0, 62], |acc| <= 2**31),
    8-bit outputs: ``c`` is exact (an integer below 2**31 times a power of two, >= 2**-62, normal),
    so the FMA's exact sum is ``MAGIC + v`` with ``v = acc * m / 2**s``, the reference's rational
    value, rounded once. Where ``|v| < 2**51`` that sum lies in [2**52, 2**53), where the f64 values
    are exactly the integers, so round-to-nearest-even gives ``MAGIC + rne(v)`` (MAGIC is even, so the
    ties go to the even ``rne(v)``, as the reference's). Elsewhere R is still a monotone function of
    ``v`` (|v| < 2**62: finite), and the clamp bounds ``MAGIC + lo - zp``, ``MAGIC + hi - zp`` are in
    the exact range, so every ``v`` whose reference result saturates gives the same bound here. The
    clamped R is ``MAGIC + r`` with ``r`` in [lo - zp, hi - zp]: its mantissa field is ``2**51 + r``,
    whose low byte is ``r`` mod 256; adding ``zp`` mod 256 gives ``r + zp`` in [lo, hi], the
    reference's result. (``zp`` is not folded into MAGIC: an odd MAGIC would round the ties to odd.)
    With ``spec.small`` the clamp runs on the low dwords instead (see there)."""
    vd = ir.VectorType(F64, 16)
    fn = b.module.globals.get("llvm.fma.v16f64") or ir.Function(
        b.module, ir.FunctionType(vd, [vd, vd, vd]), name="llvm.fma.v16f64")
    r = b.call(fn, [b.sitofp(acc, vd), _f64_scale(b, mult, shift), ir.Constant(vd, [_MAGIC] * 16)])
    zp = spec.zero_point
    if spec.small:
        # |v| < 2**30 for every accumulator (RequantSpec.bound_accumulators): R = MAGIC + rne(v) with
        # |rne(v)| <= 2**30, so the low 32 bits of R's mantissa field 2**51 + rne(v) are rne(v) as
        # an i32 (one two-source dword permute picks them), clamped there
        v32 = ir.VectorType(I32, 32)
        q = b.shuffle_vector(b.bitcast(r, v32), ir.Constant(v32, ir.Undefined),
                             ir.Constant(V16, list(range(0, 32, 2))))
        lo, hi = ir.Constant(V16, [spec.lo - zp] * 16), ir.Constant(V16, [spec.hi - zp] * 16)
        q = b.select(b.icmp_signed("<", q, lo), lo, q)
        q = b.select(b.icmp_signed(">", q, hi), hi, q)
        y = b.trunc(q, V16I8)
        if zp % 256:
            y = b.add(y, ir.Constant(V16I8, [((zp + 128) % 256) - 128] * 16))
        return y
    lo = ir.Constant(vd, [_MAGIC + (spec.lo - zp)] * 16)
    hi = ir.Constant(vd, [_MAGIC + (spec.hi - zp)] * 16)
    r = b.select(b.fcmp_ordered("<", r, lo), lo, r)
    r = b.select(b.fcmp_ordered(">", r, hi), hi, r)
    y = b.trunc(b.bitcast(r, V16I64), V16I8)
    if zp % 256:
        y = b.add(y, ir.Constant(V16I8, [((zp + 128) % 256) - 128] * 16))
    return y


def _requantize_f64(b: ir.IRBuilder, acc: ir.Value, mult: ir.Value, shift: ir.Value, spec: RequantSpec) -> ir.Value:
    """The same integers in f64, in about half the instructions of the i64 form (no 64-bit
    multiply-and-shift sequence): ``roundeven(f64(acc) * (m * 2**-s)) + zp``, clamped.

    Why it is exact when every shift is at most ``F64_MAX_SHIFT`` (44) and the output has 8 bits:
    ``acc`` and ``m * 2**-s`` are exact in f64. If ``|v| < 2**9`` for the true ``v = acc * m / 2**s``,
    then ``acc * m = v * 2**s < 2**53`` so ``v`` is representable and the f64 product *is* ``v``;
    round-half-to-even then matches the reference's, ties included. If ``|v| >= 2**9``, the product
    is within a relative 2**-53 of ``v``, so it rounds to an integer of magnitude >= 2**9 too and
    the clamp (any 8-bit range, any 8-bit zero point) gives the same bound as the reference."""
    vd = ir.VectorType(F64, 16)
    c = _f64_scale(b, mult, shift)
    rne = b.module.globals.get("llvm.roundeven.v16f64") or ir.Function(
        b.module, ir.FunctionType(vd, [vd]), name="llvm.roundeven.v16f64")
    r = b.call(rne, [b.fmul(b.sitofp(acc, vd), c)])
    y = b.fadd(r, ir.Constant(vd, [float(spec.zero_point)] * 16))
    lo, hi = ir.Constant(vd, [float(spec.lo)] * 16), ir.Constant(vd, [float(spec.hi)] * 16)
    y = b.select(b.fcmp_ordered("<", y, lo), lo, y)
    y = b.select(b.fcmp_ordered(">", y, hi), hi, y)
    return b.trunc(b.fptosi(y, V16), V16I8)


def _lane_mask(b: ir.IRBuilder, remaining: ir.Value, n: int = 16) -> ir.Value:
    vt = ir.VectorType(I64, n)
    return b.icmp_signed("<", ir.Constant(vt, list(range(n))), splat(b, remaining, vt))


def load_lanes(b: ir.IRBuilder, ptr: ir.Value, remaining: ir.Value) -> ir.Value:
    """The first min(16, remaining) i32 at ``ptr`` (the other lanes 0, never read)."""
    name = "llvm.masked.load.v16i32.p0"
    fn = b.module.globals.get(name) or ir.Function(
        b.module, ir.FunctionType(V16, [PTR, I32, ir.VectorType(ir.IntType(1), 16), V16]), name=name)
    return b.call(fn, [ptr, ir.Constant(I32, 4), _lane_mask(b, remaining), ir.Constant(V16, [0] * 16)])


def store_lanes(b: ir.IRBuilder, x: ir.Value, ptr: ir.Value, remaining: ir.Value) -> None:
    """Store the first min(n, remaining) lanes of the n-lane vector ``x`` (i32 or i8) at ``ptr``."""
    et, n = x.type.element, x.type.count
    width = et.width // 8
    full = b.icmp_signed(">=", remaining, const_int(n))
    with b.if_else(full) as (then, other):
        with then:
            st = b.store(x, ptr)
            st.align = width
        with other:
            mask = _lane_mask(b, remaining, n)
            name = f"llvm.masked.store.v{n}i{et.width}.p0"
            fn = b.module.globals.get(name) or ir.Function(
                b.module, ir.FunctionType(VOID, [x.type, PTR, I32, ir.VectorType(ir.IntType(1), n)]), name=name)
            b.call(fn, [x, ptr, ir.Constant(I32, width), mask])


def store_result(b: ir.IRBuilder, acc: ir.Value, out: ir.Value, at: ir.Value, remaining: ir.Value,
                 requant: RequantSpec | None, mult: ir.Value | None = None, shift: ir.Value | None = None) -> None:
    """Store 16 finished accumulators at element ``at`` of ``out``: as i32, or requantized to bytes."""
    if requant is None:
        store_lanes(b, acc, b.gep(out, [at], source_etype=I32, inbounds=True), remaining)
    else:
        y = requantize_v16(b, acc, mult, shift, requant)
        store_lanes(b, y, b.gep(out, [at], source_etype=I8, inbounds=True), remaining)


def acc_bound(anchor, weights: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """A bound on |accumulator| per output channel of a ``qconv`` (weights [M, Cg, ...]) or
    ``qmatmul`` (weights [K, N]): ``|x - zp| * sum|w| + |bias|`` with ``|x - zp|`` at most its
    largest value over the i8 input range (padding reads the zero point: 0)."""
    zp = int(anchor.attrs["x_zero_point" if anchor.opname == "qconv" else "a_zero_point"])
    w = np.abs(weights.astype(np.int64))
    s = w.reshape(w.shape[0], -1).sum(axis=1) if anchor.opname == "qconv" else w.sum(axis=0)
    out = max(127 - zp, zp + 128) * s
    if bias is not None:
        out = out + np.abs(bias.astype(np.int64)).reshape(-1)
    return out

"""Small conveniences for the scalar loop-nest kernels of the long-tail ops (sequence, attention,
quant, image, signal lowerings).

These ops are not on the hot path, so their kernels are plain counted loops over scalars computed
in a wide float type (f32, or f64 for f64 data), converting at every load and store. ``Loops``
bundles what those kernels repeat: typed loads/stores with conversion (including bf16, which has no
LLVM storage type of its own here), linear index arithmetic, mutable scalars (allocas that mem2reg
promotes), scratch buffers, math without libm, compile-time constant tables, and the "absent operand"
convention of the IR (a zero-element operand stands for a missing optional input).
"""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Iterator, Sequence

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op, Value

from ..llvm_types import F32, F64, I1, I8, I64, PTR, bf16_to_f32, const_int, f32_to_bf16, for_range, ll_type
from . import vecmath

I16 = ir.IntType(16)
_STACK_LIMIT = 128 * 1024  # bytes; larger scratch comes from malloc (worker threads have small stacks)


def storage_type(dt: DType) -> ir.Type:
    """The LLVM type an element is stored as (bf16 as its raw 16 bits)."""
    return I16 if dt is DType.bf16 else ll_type(dt)


def compute_type(dt: DType) -> ir.Type:
    """The float type arithmetic on ``dt`` data runs in: f64 for f64, f32 otherwise."""
    return F64 if dt is DType.f64 else F32


def operand(op: Op, i: int) -> Value | None:
    """Operand ``i``, or None when it is missing or the zero-element stand-in for an absent input."""
    if i >= len(op.operands):
        return None
    v = op.operands[i]
    shape = v.shape
    if shape is not None and 0 in shape:
        return None
    return v


def numel(shape: Sequence[int]) -> int:
    n = 1
    for d in shape:
        n *= int(d)
    return n


class Loops:
    """Scalar loop-nest helpers bound to one kernel (or one outlined parallel task)."""

    def __init__(self, k, ct: ir.Type = F32):
        self.k = k
        self.b: ir.IRBuilder = k.b
        self.ct = ct
        self._frees: list[ir.Value] = []

    # -- constants and index arithmetic ------------------------------------------------------------
    def f(self, v: float, t: ir.Type | None = None) -> ir.Constant:
        return ir.Constant(t or self.ct, float(v))

    @staticmethod
    def i(v: int) -> ir.Constant:
        return const_int(int(v))

    def lin(self, *terms) -> ir.Value:
        """Sum of terms: an int, an i64 value, or a (value-or-int, stride) pair; a stride is an int
        or (a size read at run time) an i64 value."""
        b = self.b
        acc, const = None, 0
        for t in terms:
            v, s = t if isinstance(t, tuple) else (t, 1)
            if isinstance(v, int) and isinstance(s, int):
                const += v * s
                continue
            if isinstance(s, int) and s == 0 or isinstance(v, int) and v == 0:
                continue
            if isinstance(s, int):
                term = v if s == 1 else b.mul(v, const_int(s))
            else:
                term = s if isinstance(v, int) and v == 1 else b.mul(const_int(v) if isinstance(v, int) else v, s)
            acc = term if acc is None else b.add(acc, term)
        if acc is None:
            return const_int(const)
        return b.add(acc, const_int(const)) if const else acc

    # -- loads and stores with conversion ----------------------------------------------------------
    def ptr(self, base: ir.Value, idx: ir.Value | int, dt: DType) -> ir.Value:
        idx = const_int(idx) if isinstance(idx, int) else idx
        return self.b.gep(base, [idx], source_etype=storage_type(dt), inbounds=True)

    def raw(self, base: ir.Value, idx: ir.Value | int, dt: DType) -> ir.Value:
        return self.b.load(self.ptr(base, idx, dt), typ=storage_type(dt))

    def ld(self, base: ir.Value, idx: ir.Value | int, dt: DType, to: ir.Type | None = None) -> ir.Value:
        """Element ``idx`` of a ``dt`` buffer as a float of type ``to`` (the compute type)."""
        return self.to_float(self.raw(base, idx, dt), dt, to or self.ct)

    def ld_int(self, base: ir.Value, idx: ir.Value | int, dt: DType) -> ir.Value:
        """Element ``idx`` of an integer (or bool) buffer as i64."""
        x = self.raw(base, idx, dt)
        if dt.is_float:
            return self.b.fptosi(self.to_float(x, dt, F64), I64)
        if x.type.width == 64:
            return x
        return self.b.sext(x, I64) if dt.is_signed else self.b.zext(x, I64)

    def st(self, x: ir.Value, base: ir.Value, idx: ir.Value | int, dt: DType) -> None:
        """Store float ``x`` into a float ``dt`` buffer, rounding to nearest."""
        self.b.store(self.from_float(x, dt), self.ptr(base, idx, dt))

    def to_float(self, x: ir.Value, dt: DType, to: ir.Type) -> ir.Value:
        b = self.b
        if dt is DType.bf16:
            x = bf16_to_f32(b, x)
            return x if to == F32 else b.fpext(x, to)
        if dt.is_float:
            return self.fcast(x, to)
        if dt is DType.bool:
            return b.uitofp(b.icmp_unsigned("!=", x, ir.Constant(x.type, 0)), to)
        return b.sitofp(x, to) if dt.is_signed else b.uitofp(x, to)

    def from_float(self, x: ir.Value, dt: DType) -> ir.Value:
        b = self.b
        if dt is DType.bf16:
            # round to nearest even on the upper 16 bits of the f32 pattern; NaN stays a quiet NaN
            return f32_to_bf16(b, self.fcast(x, F32))
        if dt.is_float:
            return self.fcast(x, ll_type(dt))
        raise TypeError(f"from_float: {dt} is not a float type")

    def fcast(self, x: ir.Value, to: ir.Type) -> ir.Value:
        if x.type == to:
            return x
        width = {ir.HalfType: 16, ir.FloatType: 32, ir.DoubleType: 64}
        return self.b.fpext(x, to) if width[type(x.type)] < width[type(to)] else self.b.fptrunc(x, to)

    def round_to(self, x: ir.Value, dt: DType) -> ir.Value:
        """``x`` rounded to ``dt``'s precision, back in x's type (mimics a store and reload)."""
        if dt is DType.f64 or (dt is DType.f32 and x.type == F32):
            return x
        return self.to_float(self.from_float(x, dt), dt, x.type)

    # -- control flow and mutable scalars ------------------------------------------------------------
    @contextmanager
    def loop(self, n: int | ir.Value, name: str = "i", start: int | ir.Value = 0) -> Iterator[ir.Value]:
        with for_range(self.b, n, name, start) as i:
            yield i

    def _at_entry(self):
        b = self.b
        saved = b.block
        b.position_at_start(b.function.entry_basic_block)
        return saved

    def var(self, init: ir.Value) -> ir.Value:
        """A mutable scalar (an entry-block alloca, promoted to a register by mem2reg)."""
        saved = self._at_entry()
        p = self.b.alloca(init.type)
        self.b.position_at_end(saved)
        self.b.store(init, p)
        return p

    def get(self, p: ir.Value, t: ir.Type | None = None) -> ir.Value:
        return self.b.load(p, typ=t or p.allocated_type)

    def set(self, p: ir.Value, v: ir.Value) -> None:
        self.b.store(v, p)

    def buffer(self, n: int | ir.Value, t: ir.Type | None = None) -> ir.Value:
        """Scratch space for ``n`` elements of ``t``: on the stack when small, else malloc'ed and
        freed by ``done()``. A size read at run time is always malloc'ed, here (after the size is
        known; outside any loop, so once per kernel or task): the stack must hold any size."""
        t = t or self.ct
        esize = t.width // 8 if isinstance(t, ir.IntType) else {F32: 4, F64: 8}.get(t, 8)
        b = self.b
        if not isinstance(n, int):
            malloc = self._extern("malloc", PTR, [I64])
            p = b.call(malloc, [b.add(b.mul(n, const_int(esize)), const_int(64))])
            self._frees.append(p)
            return p
        nbytes = max(n, 1) * esize
        if nbytes <= _STACK_LIMIT:
            saved = self._at_entry()
            p = b.alloca(t, size=const_int(max(n, 1)))
            p.align = 64
            b.position_at_end(saved)
            return p
        malloc = self._extern("malloc", PTR, [I64])
        saved = self._at_entry()
        p = b.call(malloc, [const_int(nbytes + 64)])
        b.position_at_end(saved)
        self._frees.append(p)
        return p

    def done(self) -> None:
        """Free the malloc'ed scratch; call at the end of the kernel (or task) body."""
        free = self._extern("free", ir.VoidType(), [PTR]) if self._frees else None
        for p in self._frees:
            self.b.call(free, [p])
        self._frees = []

    # -- math ----------------------------------------------------------------------------------------
    def _extern(self, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
        m = self.b.module
        fn = m.globals.get(name)
        if fn is None:
            fn = ir.Function(m, ir.FunctionType(ret, args), name=name)
        return fn

    def intr(self, name: str, x: ir.Value, *more: ir.Value) -> ir.Value:
        """An LLVM intrinsic overloaded on x's type (rounding, fabs, copysign: single instructions)."""
        return vecmath.intrinsic(self.b, name, x, *more)

    # Transcendentals never call libm (the generated code must not depend on it): f32 uses the
    # vectorisable polynomials of vecmath.py, f64 the range-reduced series at the end of this file.
    def exp(self, x):
        return vecmath.call(self.b, "exp", x) if x.type == F32 else f64_exp(self.b, x)

    def tanh(self, x):
        if x.type == F32:
            return vecmath.call(self.b, "tanh", x)
        # tanh(x) = sign(x) * (1 - 2 / (exp(2|x|) + 1)): exact limits, absolute error ~1e-16 near 0
        b = self.b
        ax = self.intr("llvm.fabs", x)
        t = b.fsub(self.f(1.0, F64), b.fdiv(self.f(2.0, F64), b.fadd(f64_exp(b, b.fmul(ax, self.f(2.0, F64))),
                                                                   self.f(1.0, F64))))
        return self.intr("llvm.copysign", t, x)

    def sigmoid(self, x):
        if x.type == F32:
            return vecmath.call(self.b, "sigmoid", x)
        one = ir.Constant(x.type, 1.0)
        return self.b.fdiv(one, self.b.fadd(one, self.exp(self.b.fneg(x))))

    def log1p(self, x):
        return vecmath.call(self.b, "log1p", x) if x.type == F32 else f64_log1p(self.b, x)

    def fmax(self, x, y):
        """max where a NaN in either operand wins (numpy's maximum)."""
        b = self.b
        pick = b.select(b.fcmp_ordered(">=", x, y), x, y)
        return b.select(b.fcmp_unordered("uno", x, x), x, b.select(b.fcmp_unordered("uno", y, y), y, pick))

    def fmin(self, x, y):
        b = self.b
        pick = b.select(b.fcmp_ordered("<=", x, y), x, y)
        return b.select(b.fcmp_unordered("uno", x, x), x, b.select(b.fcmp_unordered("uno", y, y), y, pick))

    def clamp(self, x, lo, hi):
        b = self.b
        x = b.select(b.fcmp_ordered("<", x, lo), lo, x)
        return b.select(b.fcmp_ordered(">", x, hi), hi, x)

    def imin(self, x, y):
        return self.b.select(self.b.icmp_signed("<", x, y), x, y)

    def imax(self, x, y):
        return self.b.select(self.b.icmp_signed(">", x, y), x, y)

    # -- compile-time tables -------------------------------------------------------------------------
    def table(self, values: np.ndarray, dt: DType) -> ir.Value:
        """A constant global array holding ``values`` (as ``dt``); returns its address."""
        arr = np.ascontiguousarray(np.asarray(values).astype(dt.numpy)).reshape(-1)
        if dt is DType.bf16:
            arr = arr.view(np.uint16)
        et = storage_type(dt)
        n = max(arr.size, 1)
        if arr.size == 0:
            arr = np.zeros(1, arr.dtype)
        if isinstance(et, ir.IntType):
            elems = [ir.Constant(et, int(v) & ((1 << et.width) - 1)) for v in arr.view(f"u{et.width // 8}")]
        else:
            elems = [ir.Constant(et, float(v)) for v in arr]
        ty = ir.ArrayType(et, n)
        m = self.b.module
        g = ir.GlobalVariable(m, ty, name=m.get_unique_name(f"{self.b.function.name}.tab"))
        g.linkage = "internal"
        g.global_constant = True
        g.initializer = ir.Constant(ty, elems)
        g.align = 64
        return g

    def memcpy(self, dst: ir.Value, src: ir.Value, nbytes: int | ir.Value, move: bool = False) -> None:
        if isinstance(nbytes, int) and nbytes == 0:
            return
        fn = self.b.module.declare_intrinsic("llvm.memmove" if move else "llvm.memcpy", [PTR, PTR, I64])
        n = const_int(nbytes) if isinstance(nbytes, int) else nbytes
        self.b.call(fn, [dst, src, n, ir.Constant(I1, 0)])

    def memset0(self, dst: ir.Value, nbytes: int) -> None:
        if nbytes == 0:
            return
        fn = self.b.module.declare_intrinsic("llvm.memset", [PTR, I64])
        self.b.call(fn, [dst, ir.Constant(I8, 0), const_int(nbytes), ir.Constant(I1, 0)])


# -- f64 math without libm -------------------------------------------------------------------------
_LN2_HI, _LN2_LO = 6.93147180369123816490e-01, 1.90821492927058770002e-10  # fdlibm's split of ln 2


def _pow2(b: ir.IRBuilder, n: ir.Value) -> ir.Value:
    """2**n for an i64 n in [-1022, 1023], built from the exponent bits."""
    return b.bitcast(b.shl(b.add(n, const_int(1023)), const_int(52)), F64)


def f64_exp(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """exp(x) in f64: x = n ln2 + r with |r| <= ln2/2, a degree-13 Taylor polynomial for exp(r)
    (truncation error < 1e-17), then scaling by 2**n in two halves so subnormal results work."""
    c = lambda v: ir.Constant(F64, v)  # noqa: E731
    fn = b.module.declare_intrinsic("llvm.roundeven", [F64])
    xc = b.select(b.fcmp_ordered(">", x, c(709.8)), c(709.8), b.select(b.fcmp_ordered("<", x, c(-745.2)), c(-745.2), x))
    n = b.call(fn, [b.fmul(xc, c(1.4426950408889634))])
    r = b.fsub(b.fsub(xc, b.fmul(n, c(_LN2_HI))), b.fmul(n, c(_LN2_LO)))
    p = c(1.0 / math.factorial(13))
    for k in range(12, -1, -1):
        p = b.fadd(b.fmul(p, r), c(1.0 / math.factorial(k)))
    ni = b.fptosi(n, I64)
    n1 = b.sdiv(ni, const_int(2))
    y = b.fmul(b.fmul(p, _pow2(b, n1)), _pow2(b, b.sub(ni, n1)))
    y = b.select(b.fcmp_ordered(">", x, c(709.79)), c(math.inf), y)
    y = b.select(b.fcmp_ordered("<", x, c(-745.14)), c(0.0), y)
    return b.select(b.fcmp_unordered("uno", x, x), x, y)


def _f64_log(b: ir.IRBuilder, u: ir.Value) -> ir.Value:
    """log(u) for finite u > 0: u = m 2**e with m in [sqrt(1/2), sqrt(2)), log m = 2 atanh(f)."""
    c = lambda v: ir.Constant(F64, v)  # noqa: E731
    bits = b.bitcast(u, I64)
    e = b.sub(b.lshr(bits, const_int(52)), const_int(1023))
    m = b.bitcast(b.or_(b.and_(bits, const_int((1 << 52) - 1)), const_int(1023 << 52)), F64)
    big = b.fcmp_ordered(">", m, c(math.sqrt(2.0)))
    m = b.select(big, b.fmul(m, c(0.5)), m)
    e = b.select(big, b.add(e, const_int(1)), e)
    f = b.fdiv(b.fsub(m, c(1.0)), b.fadd(m, c(1.0)))
    f2 = b.fmul(f, f)
    s = c(1.0 / 23)
    for k in range(21, 0, -2):
        s = b.fadd(b.fmul(s, f2), c(1.0 / k))
    ef = b.sitofp(e, F64)
    return b.fadd(b.fmul(c(2.0), b.fmul(f, s)), b.fadd(b.fmul(ef, c(_LN2_HI)), b.fmul(ef, c(_LN2_LO))))


def f64_log1p(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    """log(1 + x) for x >= -1 (as softplus needs): log(u) corrected by the rounding of u = 1 + x."""
    c = lambda v: ir.Constant(F64, v)  # noqa: E731
    u = b.fadd(c(1.0), x)
    tiny = b.fcmp_ordered("==", u, c(1.0))
    corr = b.fdiv(b.fsub(b.fsub(u, c(1.0)), x), u)
    y = b.fsub(_f64_log(b, b.select(tiny, c(2.0), u)), corr)
    y = b.select(tiny, x, y)
    y = b.select(b.fcmp_ordered("==", u, c(math.inf)), c(math.inf), y)
    return b.select(b.fcmp_unordered("uno", x, x), x, y)

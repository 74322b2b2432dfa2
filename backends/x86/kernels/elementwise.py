"""Elementwise ops: one scalar expression per op, inside a broadcasting loop nest.

``SCALAR[opname](b, args, op)`` emits the scalar computation of one element; the same table serves
single ops and fused elementwise groups. The loop nest iterates the output in row-major order;
each operand advances by its broadcast strides (0 along broadcast dims), and the innermost loop is
a ``vector_loop`` (broadcast_loops.py): declared free of loop-carried dependencies, so LLVM
vectorises it at the full vector width even in place. f32 transcendentals come from ``vecmath`` (polynomials,
so the loop still vectorises); f64 uses exact libm calls; f16 computes in f32 and rounds once, as
numpy does. bf16 elements are carried as f32 values (widened at the load, rounded to bf16 at the
store and after every op of a fused group), so each op computes in f32 and rounds once, as
ml_dtypes does; the scalar table never sees a raw bf16 word.
"""

from __future__ import annotations

import math
from typing import Callable

import ml_dtypes
import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op

from .. import llvm_types as lt
from ..llvm_types import F16, F32, I1, I64, ll_type
from . import vecmath
from .broadcast_loops import broadcast_strides, emit_elementwise, load_elem  # noqa: F401  (re-exported)
from .registry import lowering
from .vecmath import intrinsic

ScalarFn = Callable[[ir.IRBuilder, list[ir.Value], Op], ir.Value]
SCALAR: dict[str, ScalarFn] = {}


def scalar(*names: str):
    def register(fn: ScalarFn) -> ScalarFn:
        for n in names:
            SCALAR[n] = fn
        return fn
    return register


def _dt(op: Op, i: int = 0) -> DType:
    return op.operands[i].dtype


def _is_float(t: ir.Type) -> bool:
    return isinstance(t, (ir.FloatType, ir.DoubleType, ir.HalfType))


def _zero(t: ir.Type) -> ir.Constant:
    return ir.Constant(t, 0.0 if _is_float(t) else 0)


def _c(x: ir.Value, v: float | int) -> ir.Constant:
    """A constant of ``x``'s type (floats are rounded to it, so half constants are exact)."""
    if isinstance(x.type, ir.HalfType):
        return ir.Constant(x.type, float(np.float16(v)))
    if isinstance(x.type, ir.FloatType):
        return ir.Constant(x.type, float(np.float32(v)))
    return ir.Constant(x.type, v)


def libm(b: ir.IRBuilder, name: str, *args: ir.Value) -> ir.Value:
    """A C math library call (``sinf`` for f32, ``sin`` for f64)."""
    t = args[0].type
    full = name + ("f" if isinstance(t, ir.FloatType) else "")
    fn = b.module.globals.get(full)
    if fn is None:
        fn = ir.Function(b.module, ir.FunctionType(t, [a.type for a in args]), name=full)
    return b.call(fn, list(args))


_INTRINSIC = {"sqrt": "llvm.sqrt", "floor": "llvm.floor", "ceil": "llvm.ceil", "round": "llvm.roundeven",
              "fabs": "llvm.fabs"}
_F64_EXP = {"exp": "llvm.exp", "log": "llvm.log"}


def fmath(b: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
    """A unary float math function of ``x`` (f16, f32 or f64), in the best form for its type."""
    if isinstance(x.type, ir.HalfType):
        return b.fptrunc(fmath(b, name, b.fpext(x, F32)), F16)
    if name in _INTRINSIC:
        return intrinsic(b, _INTRINSIC[name], x)
    if isinstance(x.type, ir.FloatType) and name in vecmath.FUNCTIONS:
        return vecmath.call(b, name, x)
    if name in _F64_EXP:
        return intrinsic(b, _F64_EXP[name], x)
    if name == "sigmoid":  # f64: the same two-tailed form as vecmath's
        e = intrinsic(b, "llvm.exp", b.fneg(intrinsic(b, "llvm.fabs", x)))
        neg = b.fcmp_ordered("<", x, _zero(x.type))
        return b.fdiv(b.select(neg, e, _c(x, 1.0)), b.fadd(e, _c(x, 1.0)))
    return libm(b, name, x)


def _promoted(fn: Callable[[ir.IRBuilder, ir.Value, Op], ir.Value]) -> ScalarFn:
    """A float unary op computed in f32 for f16 inputs (one rounding at the end, as numpy)."""
    def emit(b, a, op):
        x = a[0]
        if isinstance(x.type, ir.HalfType):
            return b.fptrunc(fn(b, b.fpext(x, F32), op), F16)
        return fn(b, x, op)
    return emit


# -- arithmetic -------------------------------------------------------------------------------------
@scalar("add")
def _add(b, a, op):
    return b.fadd(a[0], a[1]) if _dt(op).is_float else b.add(a[0], a[1])


@scalar("sub")
def _sub(b, a, op):
    return b.fsub(a[0], a[1]) if _dt(op).is_float else b.sub(a[0], a[1])


@scalar("mul")
def _mul(b, a, op):
    return b.fmul(a[0], a[1]) if _dt(op).is_float else b.mul(a[0], a[1])


def _safe_divisor(b: ir.IRBuilder, y: ir.Value, signed: bool) -> tuple[ir.Value, ir.Value]:
    """(divisor with 0 and -1 replaced by 1, flag of those cases): x86 traps on x/0 and MIN/-1."""
    bad = b.icmp_unsigned("==", y, _zero(y.type))
    if signed:
        bad = b.or_(bad, b.icmp_signed("==", y, _c(y, -1)))
    return b.select(bad, _c(y, 1), y), bad


@scalar("div")
def _div(b, a, op):
    dt = _dt(op)
    x, y = a
    if dt.is_float:
        return b.fdiv(x, y)
    # integer division truncates; dividing by zero gives 0 (as the reference does), not a trap;
    # x / -1 is -x (wrapping for the minimum, as numpy)
    safe, _ = _safe_divisor(b, y, dt.is_signed)
    q = b.sdiv(x, safe) if dt.is_signed else b.udiv(x, safe)
    q = b.select(b.icmp_unsigned("==", y, _zero(y.type)), _zero(y.type), q)
    if dt.is_signed:
        q = b.select(b.icmp_signed("==", y, _c(y, -1)), b.neg(x), q)
    return q


@scalar("mod")
def _mod(b, a, op):
    dt = _dt(op)
    x, y = a
    if dt.is_float:
        if isinstance(x.type, ir.HalfType):
            x, y = b.fpext(x, F32), b.fpext(y, F32)
        r = b.frem(x, y)  # C fmod: the sign of the dividend
        if not op.attrs.get("fmod", 0):
            # numpy's mod: the sign of the divisor; an exact zero takes the divisor's sign
            fix = b.and_(b.fcmp_ordered("!=", r, _zero(r.type)),
                         b.xor(b.fcmp_ordered("<", r, _zero(r.type)), b.fcmp_ordered("<", y, _zero(y.type))))
            r = b.select(fix, b.fadd(r, y), r)
            r = b.select(b.fcmp_ordered("==", r, _zero(r.type)), intrinsic(b, "llvm.copysign", r, y), r)
        return b.fptrunc(r, F16) if _dt(op) is DType.f16 else r
    safe, bad = _safe_divisor(b, y, dt.is_signed)
    r = b.srem(x, safe) if dt.is_signed else b.urem(x, safe)
    r = b.select(bad, _zero(r.type), r)  # x % 0 is 0 here; x % -1 is 0
    if dt.is_signed and not op.attrs.get("fmod", 0):
        zero = _zero(r.type)
        fix = b.and_(b.icmp_signed("!=", r, zero),
                     b.xor(b.icmp_signed("<", r, zero), b.icmp_signed("<", y, zero)))
        r = b.select(fix, b.add(r, y), r)
    return r


@scalar("pow")
def _pow(b, a, op):
    dt = _dt(op)
    x, y = a
    if dt.is_float:
        if isinstance(x.type, ir.HalfType):
            return b.fptrunc(intrinsic(b, "llvm.pow", b.fpext(x, F32), b.fpext(y, F32)), F16)
        return intrinsic(b, "llvm.pow", x, y)
    return _ipow(b, x, y, dt.is_signed)


def _ipow(b: ir.IRBuilder, x: ir.Value, y: ir.Value, signed: bool) -> ir.Value:
    """x ** y for integers by repeated squaring (wrapping like numpy); a negative exponent gives
    1 for x == 1, +-1 for x == -1 and 0 otherwise (numpy refuses it)."""
    t = x.type
    fn = b.function
    pre = b.block
    head, body, done = (fn.append_basic_block(n) for n in ("ipow.head", "ipow.body", "ipow.done"))
    b.branch(head)
    b.position_at_end(head)
    r, base, e = b.phi(t), b.phi(t), b.phi(t)
    r.add_incoming(_c(x, 1), pre)
    base.add_incoming(x, pre)
    e.add_incoming(y, pre)
    more = b.icmp_signed(">", e, _zero(t)) if signed else b.icmp_unsigned("!=", e, _zero(t))
    b.cbranch(more, body, done)
    b.position_at_end(body)
    odd = b.trunc(e, I1)
    r.add_incoming(b.select(odd, b.mul(r, base), r), body)
    base.add_incoming(b.mul(base, base), body)
    e.add_incoming(b.lshr(e, _c(e, 1)), body)
    b.branch(head)
    b.position_at_end(done)
    if not signed:
        return r
    odd_y = b.trunc(y, I1)
    neg_one = b.select(odd_y, _c(x, -1), _c(x, 1))
    special = b.select(b.icmp_signed("==", x, _c(x, 1)), _c(x, 1),
                       b.select(b.icmp_signed("==", x, _c(x, -1)), neg_one, _zero(t)))
    return b.select(b.icmp_signed("<", y, _zero(t)), special, r)


@scalar("neg")
def _neg(b, a, op):
    return b.fneg(a[0]) if _dt(op).is_float else b.neg(a[0])


@scalar("max", "min")
def _maxmin(b, a, op):
    x, y = a
    if _dt(op).is_float:
        pick_x = b.fcmp_unordered(">" if op.opname == "max" else "<", x, y)  # NaN in x propagates
        nan_y = b.fcmp_unordered("uno", y, y)
        return b.select(nan_y, y, b.select(pick_x, x, y))
    cmp = (b.icmp_signed if _dt(op).is_signed else b.icmp_unsigned)(">" if op.opname == "max" else "<", x, y)
    return b.select(cmp, x, y)


@scalar("relu")
def _relu(b, a, op):
    x = a[0]
    zero = _zero(x.type)
    if _dt(op).is_float:
        return b.select(b.fcmp_ordered("<", x, zero), zero, x)
    if not _dt(op).is_signed:
        return x
    return b.select(b.icmp_signed("<", x, zero), zero, x)


@scalar("abs")
def _abs(b, a, op):
    if _dt(op).is_float:
        return intrinsic(b, "llvm.fabs", a[0])
    if not _dt(op).is_signed:
        return a[0]
    return intrinsic(b, "llvm.abs", a[0], ir.Constant(I1, 0))


@scalar("sign")
def _sign(b, a, op):
    x = a[0]
    zero = _zero(x.type)
    if _dt(op).is_float:  # NaN and +-0 are returned as they are
        s = b.select(b.fcmp_ordered(">", x, zero), _c(x, 1.0), x)
        return b.select(b.fcmp_ordered("<", x, zero), _c(x, -1.0), s)
    if not _dt(op).is_signed:
        return b.zext(b.icmp_unsigned("!=", x, zero), x.type)
    s = b.zext(b.icmp_signed(">", x, zero), x.type)
    return b.select(b.icmp_signed("<", x, zero), _c(x, -1), s)


@scalar("reciprocal")
def _recip(b, a, op):
    return b.fdiv(_c(a[0], 1.0), a[0])


_MATH = ("sqrt", "exp", "log", "floor", "ceil", "round", "sin", "cos", "tan", "asin", "acos", "atan",
         "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "sigmoid")


def _math_op(name: str) -> ScalarFn:
    def emit(b, a, op):
        return fmath(b, name, a[0])
    return emit


for _n in _MATH:
    SCALAR[_n] = _math_op(_n)


# -- activations (computed in f32 for f16 inputs) -------------------------------------------------
def _cd(x: ir.Value, v: float, dt: DType) -> ir.Constant:
    """A float constant of ``x``'s type holding ``v`` rounded to ``dt`` (the reference converts
    such attributes to the data's dtype; bf16 data is carried in f32)."""
    if dt is DType.bf16:
        return ir.Constant(x.type, float(ml_dtypes.bfloat16(v)))
    return _c(x, v)


@scalar("leaky_relu")
def _leaky_relu(b, a, op):
    x = a[0]
    neg = b.fcmp_ordered("<", x, _zero(x.type))
    return b.select(neg, b.fmul(x, _cd(x, op.attrs.get("alpha", 0.01), _dt(op))), x)


@scalar("elu")
@_promoted
def _elu(b, x, op):
    em1 = b.fmul(_c(x, op.attrs.get("alpha", 1.0)), fmath(b, "expm1", x))
    return b.select(b.fcmp_ordered(">", x, _zero(x.type)), x, em1)


@scalar("softplus")
@_promoted
def _softplus(b, x, op):
    # max(x, 0) + log1p(exp(-|x|)): no overflow, full accuracy on both tails
    e = fmath(b, "exp", b.fneg(intrinsic(b, "llvm.fabs", x)))
    pos = b.select(b.fcmp_ordered(">", x, _zero(x.type)), x, _zero(x.type))
    return b.fadd(pos, fmath(b, "log1p", e))


@scalar("gelu")
@_promoted
def _gelu(b, x, op):
    if op.attrs.get("approximate", "none") == "tanh":
        # 0.5 x (1 + tanh(u)) = x sigmoid(2u): no cancellation for negative x
        x3 = b.fmul(b.fmul(x, x), x)
        u = b.fmul(_c(x, 2.0 * math.sqrt(2.0 / math.pi)), b.fadd(x, b.fmul(_c(x, 0.044715), x3)))
        return b.fmul(x, fmath(b, "sigmoid", u))
    # 0.5 x erfc(-x / sqrt 2): erfc keeps relative accuracy where 1 + erf would cancel
    t = b.fmul(x, _c(x, -1.0 / math.sqrt(2.0)))
    return b.fmul(b.fmul(_c(x, 0.5), x), fmath(b, "erfc", t))


def _clamp(b: ir.IRBuilder, x: ir.Value, lo: ir.Value | None, hi: ir.Value | None, signed: bool = True) -> ir.Value:
    """min(max(x, lo), hi); a float NaN in x stays NaN (ordered compares fail)."""
    fl = _is_float(x.type)
    if lo is not None:
        below = b.fcmp_ordered("<", x, lo) if fl else (b.icmp_signed if signed else b.icmp_unsigned)("<", x, lo)
        x = b.select(below, lo, x)
    if hi is not None:
        above = b.fcmp_ordered(">", x, hi) if fl else (b.icmp_signed if signed else b.icmp_unsigned)(">", x, hi)
        x = b.select(above, hi, x)
    return x


@scalar("hard_sigmoid")
@_promoted
def _hard_sigmoid(b, x, op):
    v = b.fadd(b.fmul(_c(x, op.attrs.get("alpha", 0.2)), x), _c(x, op.attrs.get("beta", 0.5)))
    return _clamp(b, v, _c(x, 0.0), _c(x, 1.0))


@scalar("hard_swish")
@_promoted
def _hard_swish(b, x, op):
    v = b.fadd(b.fdiv(x, _c(x, 6.0)), _c(x, 0.5))
    return b.fmul(x, _clamp(b, v, _c(x, 0.0), _c(x, 1.0)))


def _int_bound(dt: DType, v: float) -> int | None:
    """A float clip bound as an integer of ``dt``, converted as numpy's astype does (truncated,
    then wrapped to the type's width); None for NaN."""
    if math.isnan(v) or math.isinf(v):
        return None if math.isnan(v) else (np.iinfo(dt.numpy).max if v > 0 else np.iinfo(dt.numpy).min)
    bits = dt.itemsize * 8
    iv = int(math.trunc(v)) % (1 << bits)
    if dt.is_signed and iv >= 1 << (bits - 1):
        iv -= 1 << bits
    return iv


@scalar("clip")
def _clip(b, a, op):
    x = a[0]
    dt = _dt(op)
    bounds: list[ir.Value | None] = []
    for i, key in ((1, "min"), (2, "max")):
        if len(a) > i:  # a bound given at run time, a broadcast scalar operand
            bounds.append(a[i])
            continue
        v = op.attrs.get(key)
        if v is None:
            bounds.append(None)
        elif dt.is_float:
            bounds.append(_cd(x, v, dt))
        else:
            iv = _int_bound(dt, float(v))
            if iv is not None and not dt.is_signed and iv >= 1 << (dt.itemsize * 8 - 1):
                iv -= 1 << (dt.itemsize * 8)  # LLVM integer constants are written signed
            bounds.append(None if iv is None else _c(x, iv))
    return _clamp(b, x, bounds[0], bounds[1], dt.is_signed)


# -- predicates and bits ----------------------------------------------------------------------------
@scalar("isnan")
def _isnan(b, a, op):
    return b.zext(b.fcmp_unordered("uno", a[0], a[0]), ll_type(DType.bool))


@scalar("isinf")
def _isinf(b, a, op):
    x = a[0]
    hit = ir.Constant(I1, 0)
    if op.attrs.get("detect_positive", 1):
        hit = b.or_(hit, b.fcmp_ordered("==", x, _c(x, float("inf"))))
    if op.attrs.get("detect_negative", 1):
        hit = b.or_(hit, b.fcmp_ordered("==", x, _c(x, float("-inf"))))
    return b.zext(hit, ll_type(DType.bool))


@scalar("bitwise_not")
def _bitwise_not(b, a, op):
    return b.xor(a[0], _c(a[0], -1))


@scalar("shift_left", "shift_right")
def _shift(b, a, op):
    x, n = a
    width = x.type.width
    signed = _dt(op).is_signed
    # shifting by the width or more is poison in LLVM; numpy gives 0 (or the sign for >> of signed)
    big = b.icmp_unsigned(">=", n, _c(n, width))
    safe = b.select(big, _c(n, width - 1), n)
    if op.opname == "shift_left":
        return b.select(big, _zero(x.type), b.shl(x, safe))
    if signed:
        return b.ashr(x, safe)
    return b.select(big, _zero(x.type), b.lshr(x, safe))


@scalar("bitcast")
def _bitcast(b, a, op):
    x, src, dst = a[0], _dt(op), op.attrs["to"]
    if src is DType.bf16:  # the f32 register form back to its (exact) word
        x = lt.f32_to_bf16(b, x)
    if dst is DType.bf16:
        return lt.bf16_to_f32(b, b.bitcast(x, lt.storage_type(dst)))
    return b.bitcast(x, ll_type(dst))


# -- comparisons and logic ----------------------------------------------------------------------
_CMP = {"equal": "==", "less": "<", "less_equal": "<=", "greater": ">", "greater_equal": ">="}


def _compare(name: str) -> ScalarFn:
    def emit(b, a, op):
        dt = _dt(op)
        pred = _CMP[name]
        if dt.is_float:
            c = b.fcmp_ordered(pred, a[0], a[1])
        elif dt.is_signed:
            c = b.icmp_signed(pred, a[0], a[1])
        else:
            c = b.icmp_unsigned(pred, a[0], a[1])
        return b.zext(c, ll_type(DType.bool))
    return emit


for _n in _CMP:
    SCALAR[_n] = _compare(_n)


@scalar("and", "or", "xor", "bitwise_and", "bitwise_or", "bitwise_xor")
def _logic(b, a, op):
    fn = {"and": b.and_, "or": b.or_, "xor": b.xor, "bitwise_and": b.and_, "bitwise_or": b.or_,
          "bitwise_xor": b.xor}[op.opname]
    return fn(a[0], a[1])


@scalar("not")
def _not(b, a, op):
    return b.xor(a[0], ir.Constant(a[0].type, 1))


@scalar("where")
def _where(b, a, op):
    return b.select(b.icmp_unsigned("!=", a[0], _zero(a[0].type)), a[1], a[2])


@scalar("identity")
def _identity(b, a, op):
    return a[0]


@scalar("cast")
def _cast(b, a, op):
    return cast_value(b, a[0], op.operands[0].dtype, op.attrs["to"])


def cast_value(b: ir.IRBuilder, x: ir.Value, src: DType, dst: DType) -> ir.Value:
    """``x`` of dtype ``src`` converted to ``dst`` as numpy's astype does (NaN -> integer is 0).

    bf16 values are in their f32 register form on both sides. To bf16, every value is rounded once,
    to nearest even, as ml_dtypes >= 0.7 does: dtypes wider than f32 (f64, 32- and 64-bit
    integers) go through f32 rounded to odd, never through two roundings to nearest."""
    if src is DType.bf16:
        return x if dst is DType.bf16 else cast_value(b, x, DType.f32, dst)
    if dst is DType.bf16:
        if src in (DType.i64, DType.u64):
            x, src = lt.i64_to_f64_odd(b, x, src.is_signed), DType.f64
        elif src in (DType.i32, DType.u32):
            x, src = cast_value(b, x, src, DType.f64), DType.f64  # exact
        if src is DType.f64:
            return lt.round_bf16(b, lt.f64_to_f32_odd(b, x))
        return lt.round_bf16(b, cast_value(b, x, src, DType.f32))  # f32, f16 and narrow ints: exact
    st, tt = ll_type(src), ll_type(dst)
    if src is DType.bool:
        x = b.icmp_unsigned("!=", x, _zero(x.type))
        return b.uitofp(x, tt) if dst.is_float else b.zext(x, tt)
    if dst is DType.bool:
        nz = b.fcmp_unordered("!=", x, _zero(st)) if src.is_float else b.icmp_unsigned("!=", x, _zero(st))
        return b.zext(nz, tt)
    if src.is_float and dst.is_float:
        if src.itemsize == dst.itemsize:
            return x
        return b.fptrunc(x, tt) if src.itemsize > dst.itemsize else b.fpext(x, tt)
    if src.is_float:
        # saturating conversions are defined for NaN (0) and out-of-range values; narrower types
        # go through i64 and wrap, as the C conversion numpy uses does for in-range negatives
        if dst is DType.u64:
            return intrinsic(b, "llvm.fptoui.sat", x, ret=I64, tys=[I64, st])
        wide = intrinsic(b, "llvm.fptosi.sat", x, ret=I64, tys=[I64, st])
        return wide if tt.width == 64 else b.trunc(wide, tt)
    if dst.is_float:
        return b.sitofp(x, tt) if src.is_signed else b.uitofp(x, tt)
    if src.itemsize == dst.itemsize:
        return x
    if src.itemsize > dst.itemsize:
        return b.trunc(x, tt)
    return b.sext(x, tt) if src.is_signed else b.zext(x, tt)


@lowering(*SCALAR, generic=True)
def lower_elementwise(k, op: Op) -> None:
    fn = SCALAR[op.opname]
    emit_elementwise(k, 0, [k.arg(i) for i in range(len(op.operands))], op.operands, op.results[0],
                     lambda b, elems: fn(b, elems, op))


"""Softmax and normalizations, each one kernel: ``softmax``, ``log_softmax``, ``layer_norm``,
``rms_norm``, ``batch_norm`` (inference), ``group_norm``, ``lrn``.

Each independent row (a softmax row, a layer-norm row, a (sample, group) block, a (sample,
channel) plane) is one ``parallel_for`` task when there is enough work. Within a row, passes are
simple counted loops over contiguous memory that LLVM vectorises: statistics are sums with the
``reassoc`` flag (partial sums in vector lanes), exp/log come from ``vecmath`` for f32. Softmax
subtracts the row maximum; variances are two-pass (sum of squared deviations from the mean), as
the reference computes them. Statistics use ``stash_type`` (layer/group/rms norm) or f32 for f16
inputs, and the rounding to the input dtype happens where the reference does it.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from nnc.ir import UNKNOWN, DType, Op, TargetError, Value

from ..llvm_types import F32, F64, I16, bf16_to_f32, const_int, f32_to_bf16, for_range, ll_type
from . import dims as dm
from .broadcast_loops import vector_lanes, vector_loop
from .dims import Dim
from .elementwise import cast_value, fmath
from .reduce import axis_layout, combine, fold_range, gep, load, rows
from .registry import batch_only, lowering
from .vecmath import intrinsic


def _ct(dt: DType) -> DType:
    """The compute dtype: f64 stays f64, everything else computes in f32."""
    return DType.f64 if dt is DType.f64 else DType.f32


def _check(op: Op) -> None:
    for v in list(op.operands) + list(op.results):
        if v.dtype is DType.bf16:
            raise TargetError(f"x86: {op.opname} on bf16 is not supported yet ({op.where()})")


def _lv(b: ir.IRBuilder, ptr: ir.Value, idx: ir.Value, v: Value, to: DType) -> ir.Value:
    """Load element ``idx`` of ``v`` converted to dtype ``to``."""
    x = load(b, ptr, idx, ll_type(v.dtype))
    return x if v.dtype is to else cast_value(b, x, v.dtype, to)


def _row_sum(b: ir.IRBuilder, n: int, t: ir.Type, term, lanes: int = 0) -> ir.Value:
    """sum over j < n of term(j), vectorisable (reassociated partial sums)."""
    zero = ir.Constant(t, 0.0)
    return fold_range(b, n, [zero], lambda j, a: [combine(b, "sum", a[0], term(j), DType.f32)], lanes=lanes)[0]


def _c(t: ir.Type, v: float) -> ir.Constant:
    return ir.Constant(t, float(np.float32(v)) if t == F32 else float(v))


# -- softmax -----------------------------------------------------------------------------------------
@lowering("softmax", "log_softmax", generic=True)
def lower_softmax(k, op: Op) -> None:
    x = op.operands[0]
    dt = x.dtype
    # bf16 runs in f32 like the reference: words widened at each load, one rounding at the store
    # (the exponentials are recomputed in the last pass rather than parked in the bf16 output)
    bf = dt is DType.bf16
    if not bf:
        _check(op)
    t = F32 if bf else ll_type(dt)
    axis = op.attrs.get("axis", -1) % len(x.shape)
    outer, n, inner = axis_layout(k.shape(x), axis, k.b)
    log = op.opname == "log_softmax"
    # f16 runs in f16 like the reference (each step rounded to f16), with exp and the sum in f32
    half = dt is DType.f16
    st = F32 if half else t
    if dm.is_static(outer, n, inner) and outer * n * inner == 0:
        return

    def line(kb, oi):
        b = kb.b
        _, n, inner = axis_layout(kb.shape(x), axis, b)  # (the task's own reads of run-time dims)
        contiguous = isinstance(inner, int) and inner == 1
        o, i = b.sdiv(oi, dm.val(inner)), b.srem(oi, dm.val(inner))
        base = b.add(b.mul(o, dm.val(dm.mul(b, n, inner))), i)

        def at(j):
            return b.add(base, b.mul(j, dm.val(inner))) if not contiguous else b.add(base, j)

        def xv(j):
            return bf16_to_f32(b, load(b, kb.arg(0), at(j), I16)) if bf else load(b, kb.arg(0), at(j), t)
        m = fold_range(b, n, [_c(t, float("-inf"))],
                       lambda j, a: [intrinsic(b, "llvm.maximum", a[0], xv(j))], name="max")[0]
        finite = b.fcmp_ordered("<", intrinsic(b, "llvm.fabs", m), _c(t, float("inf")))
        m = b.select(finite, m, _c(t, 0.0))

        def exp_term(j):
            d = b.fsub(xv(j), m)
            e = fmath(b, "exp", d)
            if not log and not bf:
                b.store(e, gep(b, kb.out(0), at(j), t))
            return b.fpext(e, F32) if half else e
        # f32 rows: the full vector width (exp is vecmath's, the sum reassociates)
        lanes = vector_lanes(kb, [dt]) if t == F32 and not half and not bf and contiguous else 0
        s = _row_sum(b, n, st, exp_term, lanes)
        if half:
            s = b.fptrunc(s, t)
        if log:
            ls = fmath(b, "log", s)
            with for_range(b, n, "w") as j:
                y = b.fsub(b.fsub(xv(j), m), ls)
                if bf:
                    b.store(f32_to_bf16(b, y), gep(b, kb.out(0), at(j), I16))
                else:
                    b.store(y, gep(b, kb.out(0), at(j), t))
        elif bf:
            with for_range(b, n, "w") as j:
                y = b.fdiv(fmath(b, "exp", b.fsub(xv(j), m)), s)
                b.store(f32_to_bf16(b, y), gep(b, kb.out(0), at(j), I16))
        else:
            # f32: one division per row, then a multiply per element (within 1.5 ulp of e / s; a
            # vector division per element costs more than the exponentials)
            r = b.fdiv(_c(t, 1.0), s) if lanes else s
            with vector_loop(b, n, lanes or 1, "w") as j:
                p = gep(b, kb.out(0), at(j), t)
                b.store(b.fmul(b.load(p, typ=t), r) if lanes else b.fdiv(b.load(p, typ=t), s), p)

    rows(k, dm.mul(k.b, outer, inner), dm.mul(k.b, 3, n), line)


# -- layer norm / rms norm ---------------------------------------------------------------------------
def _param_index(b: ir.IRBuilder, p: Value, tail: tuple[Dim, ...], j: ir.Value) -> ir.Value:
    """Index into a parameter broadcast over the normalized ``tail`` shape at flat position j. A
    run-time tail takes a parameter of its shape or a single value (``_layer_norm_generic``)."""
    if not dm.is_static(*tail):
        return const_int(0) if p.type.numel == 1 else j
    numel = int(np.prod(p.shape, dtype=np.int64))
    n = int(np.prod(tail, dtype=np.int64))
    if numel == n:
        return j
    if numel == 1:
        return const_int(0)
    from .elementwise import broadcast_strides
    strides = broadcast_strides(p, tail)
    idx, rem = const_int(0), j
    for d in range(len(tail) - 1, -1, -1):
        q = b.urem(rem, const_int(tail[d]))
        rem = b.udiv(rem, const_int(tail[d]))
        if strides[d]:
            idx = b.add(idx, b.mul(q, const_int(strides[d])))
    return idx


def _layer_norm_generic(op: Op) -> str | None:
    """A run-time normalised shape needs parameters of that very shape (the same symbols) or of one
    value: a broadcast over run-time dims would need a division per element."""
    x = op.operands[0]
    axis = op.attrs.get("axis", -1) % len(x.shape)
    tail = _strip_ones(x.type.shape[axis:])
    if dm.is_static(*tail):
        return None if all(v.type.is_static for v in op.operands[1:]) else "parameters with run-time dims"
    for p in op.operands[1:]:
        if p.type.numel != 1 and (_strip_ones(p.type.shape) != tail or UNKNOWN in tail):
            return f"parameter %{p.name} {p.type} broadcast over the run-time normalised shape {list(tail)}"
    return None


def _strip_ones(shape: tuple) -> tuple:
    """``shape`` without its leading 1s (a broadcast prefix)."""
    i = 0
    while i < len(shape) and shape[i] == 1:
        i += 1
    return tuple(shape[i:])


@lowering("layer_norm", "rms_norm", generic=_layer_norm_generic)
def lower_layer_norm(k, op: Op) -> None:
    _check(op)
    x = op.operands[0]
    dt = x.dtype
    t = ll_type(dt)
    shape = k.shape(x)
    axis = op.attrs.get("axis", -1) % len(shape)
    outer = dm.prod(k.b, shape[:axis])
    n = _norm_size(k.b, shape[axis:])
    sdt = op.attrs.get("stash_type", DType.f32)
    st = ll_type(sdt)
    eps = _c(st, op.attrs.get("epsilon", 1e-5))
    rms = op.opname == "rms_norm"
    scale = op.operands[1]
    bias = op.operands[2] if len(op.operands) > 2 else None
    if isinstance(outer, int) and outer == 0:
        return

    def row(kb, r):
        b = kb.b
        tail = kb.shape(x)[axis:]
        n = _norm_size(b, tail)
        base = b.mul(r, dm.val(n))
        count = _c(st, float(n)) if isinstance(n, int) else b.sitofp(n, st)

        def v(j):
            return _lv(b, kb.arg(0), b.add(base, j), x, sdt)
        if rms:
            ss = _row_sum(b, n, st, lambda j: (lambda a: b.fmul(a, a))(v(j)))
            denom = fmath(b, "sqrt", b.fadd(b.fdiv(ss, count), eps))
            mean = None
        else:
            mean = b.fdiv(_row_sum(b, n, st, v), count)
            ss = _row_sum(b, n, st, lambda j: (lambda d: b.fmul(d, d))(b.fsub(v(j), mean)))
            inv = b.fdiv(_c(st, 1.0), fmath(b, "sqrt", b.fadd(b.fdiv(ss, count), eps)))
            b.store(mean, gep(b, kb.out(1), r, st))
            b.store(inv, gep(b, kb.out(2), r, st))
        with for_range(b, n, "w") as j:
            if rms:
                y = b.fdiv(v(j), denom)
            else:
                y = b.fmul(b.fsub(v(j), mean), inv)
            y = cast_value(b, y, sdt, dt) if sdt is not dt else y
            y = b.fmul(y, _lv(b, kb.arg(1), _param_index(b, scale, tail, j), scale, dt))
            if bias is not None:
                y = b.fadd(y, _lv(b, kb.arg(2), _param_index(b, bias, tail, j), bias, dt))
            b.store(y, gep(b, kb.out(0), b.add(base, j), t))

    rows(k, outer, dm.mul(k.b, 3, n), row)


def _norm_size(b: ir.IRBuilder, tail: tuple[Dim, ...]) -> Dim:
    return int(np.prod(tail, dtype=np.int64)) if dm.is_static(*tail) else dm.prod(b, tail)


# -- batch norm / group norm -------------------------------------------------------------------------
@lowering("batch_norm", generic=batch_only)
def lower_batch_norm(k, op: Op) -> None:
    _check(op)
    x = op.operands[0]
    dt = x.dtype
    t = ll_type(dt)
    cdt = _ct(dt)
    ct = ll_type(cdt)
    N, C = k.shape(x)[:2]
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    eps = _c(ct, op.attrs.get("epsilon", 1e-5))
    if C * S == 0 or (isinstance(N, int) and N == 0):
        return

    def plane(kb, nc):
        b = kb.b
        c = b.srem(nc, const_int(C))
        s, bb, m, var = (_lv(b, kb.arg(i), c, op.operands[i], cdt) for i in range(1, 5))
        sq = fmath(b, "sqrt", b.fadd(var, eps))
        base = b.mul(nc, const_int(S))
        with for_range(b, S, "s") as j:
            p = b.add(base, j)
            y = b.fadd(b.fmul(b.fdiv(b.fsub(_lv(b, kb.arg(0), p, x, cdt), m), sq), s), bb)
            b.store(cast_value(b, y, cdt, dt) if cdt is not dt else y, gep(b, kb.out(0), p, t))

    rows(k, dm.mul(k.b, N, C), S, plane)  # a run-time batch: a run-time count of static planes


@lowering("group_norm", generic=batch_only)
def lower_group_norm(k, op: Op) -> None:
    _check(op)
    x, scale, bias = op.operands
    dt = x.dtype
    t = ll_type(dt)
    sdt = op.attrs.get("stash_type", DType.f32)
    st = ll_type(sdt)
    N, C = k.shape(x)[:2]
    G = op.attrs["num_groups"]
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    cg = C // G
    n = cg * S
    eps = _c(st, op.attrs.get("epsilon", 1e-5))
    if C * S == 0 or (isinstance(N, int) and N == 0):
        return

    def block(kb, ng):
        b = kb.b
        base = b.mul(ng, const_int(n))

        def v(j):
            return _lv(b, kb.arg(0), b.add(base, j), x, sdt)
        mean = b.fdiv(_row_sum(b, n, st, v), _c(st, float(n)))
        ss = _row_sum(b, n, st, lambda j: (lambda d: b.fmul(d, d))(b.fsub(v(j), mean)))
        std = fmath(b, "sqrt", b.fadd(b.fdiv(ss, _c(st, float(n))), eps))
        g = b.srem(ng, const_int(G))
        with for_range(b, cg, "c") as ci:
            c = b.add(b.mul(g, const_int(cg)), ci)
            sc, bi = _lv(b, kb.arg(1), c, scale, dt), _lv(b, kb.arg(2), c, bias, dt)
            cbase = b.mul(ci, const_int(S))
            with for_range(b, S, "s") as j:
                jj = b.add(cbase, j)
                y = b.fdiv(b.fsub(v(jj), mean), std)
                y = cast_value(b, y, sdt, dt) if sdt is not dt else y
                b.store(b.fadd(b.fmul(y, sc), bi), gep(b, kb.out(0), b.add(base, jj), t))

    rows(k, dm.mul(k.b, N, G), 3 * n, block)


# -- local response normalization --------------------------------------------------------------------
@lowering("lrn", generic=batch_only)
def lower_lrn(k, op: Op) -> None:
    _check(op)
    x = op.operands[0]
    dt = x.dtype
    t = ll_type(dt)
    cdt = _ct(dt)
    ct = ll_type(cdt)
    N, C = k.shape(x)[:2]
    S = int(np.prod(x.shape[2:], dtype=np.int64))
    size = op.attrs["size"]
    lo, hi = (size - 1) // 2, (size - 1) - (size - 1) // 2
    alpha, beta, bias = (op.attrs.get(a, d) for a, d in (("alpha", 1e-4), ("beta", 0.75), ("bias", 1.0)))
    if C * S == 0 or (isinstance(N, int) and N == 0):
        return

    def plane(kb, nc):
        # x / (bias + alpha / size * sum of x^2 over channels c - lo .. c + hi) ^ beta; for f32 the
        # power is exp(-beta * log(.)) from vecmath, so the spatial loop vectorises
        b = kb.b
        nn, c = b.sdiv(nc, const_int(C)), b.srem(nc, const_int(C))
        base = b.mul(nc, const_int(S))
        start = b.sub(c, const_int(lo))
        stop = b.add(c, const_int(hi + 1))
        start = b.select(b.icmp_signed("<", start, const_int(0)), const_int(0), start)
        stop = b.select(b.icmp_signed(">", stop, const_int(C)), const_int(C), stop)
        if ct == t:
            # the window sums accumulate in the output row, channel by channel: the spatial loop
            # is innermost and vectorises
            with for_range(b, S, "z") as j:
                b.store(ir.Constant(t, 0.0), gep(b, kb.out(0), b.add(base, j), t))
            with for_range(b, b.sub(stop, start), "win") as w:
                cbase = b.mul(b.add(b.mul(nn, const_int(C)), b.add(start, w)), const_int(S))
                with for_range(b, S, "s") as j:
                    v = load(b, kb.arg(0), b.add(cbase, j), t)
                    p = gep(b, kb.out(0), b.add(base, j), t)
                    b.store(b.fadd(b.load(p, typ=t), b.fmul(v, v)), p)
        with for_range(b, S, "s") as j:
            def term(cc, a):
                p = b.add(b.mul(b.add(b.mul(nn, const_int(C)), cc), const_int(S)), j)
                v = _lv(b, kb.arg(0), p, x, cdt)
                return [b.fadd(a[0], b.fmul(v, v))]
            if ct == t:
                window = load(b, kb.out(0), b.add(base, j), t)
            else:
                window = _fold_between(b, start, stop, ir.Constant(ct, 0.0), term)
            d = b.fadd(_c(ct, bias), b.fmul(_c(ct, alpha / size), window))
            if ct == F64:
                den = intrinsic(b, "llvm.pow", d, ir.Constant(F64, beta))
                y = b.fdiv(_lv(b, kb.arg(0), b.add(base, j), x, cdt), den)
            else:
                scale = fmath(b, "exp", b.fmul(_c(ct, -beta), fmath(b, "log", d)))
                y = b.fmul(_lv(b, kb.arg(0), b.add(base, j), x, cdt), scale)
            b.store(cast_value(b, y, cdt, dt) if cdt is not dt else y, gep(b, kb.out(0), b.add(base, j), t))

    rows(k, dm.mul(k.b, N, C), S * size, plane)


def _fold_between(b: ir.IRBuilder, start: ir.Value, stop: ir.Value, init: ir.Value, step) -> ir.Value:
    """Fold ``step(i, [acc])`` over i in [start, stop)."""
    span = b.sub(stop, start)
    return fold_range(b, span, [init], lambda i, a: step(b.add(start, i), a), name="win")[0]


"""Optimizer updates: ``sgd_update`` and ``adam_update``, one fused elementwise pass each.

An update reads the parameter, its gradient and the optimizer state once and writes the new
parameter and state once (memory-bound: the point is one pass instead of the chain of elementwise
ops the formula spells out). The run-time scalars (learning rate, step count) are loaded once per
task; Adam's bias corrections ``1 - beta^t`` are computed in f64 as ``exp(t * log(beta))`` (no libm).
The element loop is split into chunks over the worker threads when the parameter is large. The
arithmetic follows the reference's order of operations (``ir/ops/optim.py``) in the parameter's
float type, f32 for f16/bf16 storage.
"""

from __future__ import annotations

import math

from llvmlite import ir

from nnc.ir import DType, Op

from ..llvm_types import F64
from .loopkit import Loops, compute_type, f64_exp, operand
from .reduce import element_chunks
from .registry import lowering, static_shapes


def _scalar_f64(L: Loops, ptr: ir.Value, dt: DType) -> ir.Value:
    if dt.is_float:
        return L.ld(ptr, 0, dt, F64)
    return L.b.sitofp(L.ld_int(ptr, 0, dt), F64)


@lowering("sgd_update", generic=static_shapes)
def lower_sgd(k, op: Op) -> None:
    p = op.operands[0]
    dt = p.dtype
    ct = compute_type(dt)
    n = p.type.numel or 0
    has_buf = operand(op, 3) is not None
    has_step = operand(op, 4) is not None
    a = op.attrs
    mu, damp, wd = float(a["momentum"]), float(a["dampening"]), float(a["weight_decay"])
    if n == 0:
        return

    def body(kb, lo, hi):
        L = Loops(kb, ct)
        b = kb.b
        lr = L.fcast(_scalar_f64(L, kb.arg(2), op.operands[2].dtype), ct)
        gscale = L.f(1.0 - damp)
        if has_step:  # the buffer takes the gradient unscaled on the first step
            step = _scalar_f64(L, kb.arg(4), op.operands[4].dtype)
            first = b.fcmp_ordered("==", step, ir.Constant(F64, float(a["first_step"])))
            gscale = b.select(first, L.f(1.0), gscale)
        with L.loop(hi, "e", lo) as i:
            x = L.ld(kb.arg(0), i, dt)
            d = L.ld(kb.arg(1), i, dt)
            if wd != 0:
                d = b.fadd(d, b.fmul(L.f(wd), x))
            if has_buf:
                v = L.ld(kb.arg(3), i, dt)
                nb = b.fadd(b.fmul(L.f(mu), v), b.fmul(gscale, d))
                nb = L.round_to(nb, dt)
                L.st(nb, kb.out(1), i, dt)
                d = b.fadd(d, b.fmul(L.f(mu), nb)) if a["nesterov"] else nb
            L.st(b.fsub(x, b.fmul(lr, d)), kb.out(0), i, dt)
        L.done()

    element_chunks(k, n, body)


@lowering("adam_update", generic=static_shapes)
def lower_adam(k, op: Op) -> None:
    p = op.operands[0]
    dt = p.dtype
    ct = compute_type(dt)
    n = p.type.numel or 0
    a = op.attrs
    b1, b2, eps, wd = float(a["beta1"]), float(a["beta2"]), float(a["epsilon"]), float(a["weight_decay"])
    decoupled = bool(a["decoupled"])
    if n == 0:
        return

    def pow_t(L: Loops, beta: float, t: ir.Value) -> ir.Value:
        if beta <= 0:
            return ir.Constant(F64, 0.0)
        return f64_exp(L.b, L.b.fmul(t, ir.Constant(F64, math.log(beta))))

    def body(kb, lo, hi):
        L = Loops(kb, ct)
        b = kb.b
        lr64 = _scalar_f64(L, kb.arg(4), op.operands[4].dtype)
        t = _scalar_f64(L, kb.arg(5), op.operands[5].dtype)
        one = ir.Constant(F64, 1.0)
        bc1 = b.fsub(one, pow_t(L, b1, t))
        bc2_sqrt = L.intr("llvm.sqrt", b.fsub(one, pow_t(L, b2, t)))
        step_size = L.fcast(b.fdiv(lr64, bc1), ct)
        bc2s = L.fcast(bc2_sqrt, ct)
        decay = L.fcast(b.fsub(one, b.fmul(lr64, ir.Constant(F64, wd))), ct)
        with L.loop(hi, "e", lo) as i:
            x = L.ld(kb.arg(0), i, dt)
            g = L.ld(kb.arg(1), i, dt)
            m = L.ld(kb.arg(2), i, dt)
            v = L.ld(kb.arg(3), i, dt)
            if wd != 0:
                if decoupled:
                    x = L.round_to(b.fmul(x, decay), dt)
                else:
                    g = b.fadd(g, b.fmul(L.f(wd), x))
            m = L.round_to(b.fadd(m, b.fmul(L.f(1 - b1), b.fsub(g, m))), dt)
            v = L.round_to(b.fadd(b.fmul(v, L.f(b2)), b.fmul(b.fmul(L.f(1 - b2), g), g)), dt)
            denom = b.fadd(b.fdiv(L.intr("llvm.sqrt", v), bc2s), L.f(eps))
            L.st(m, kb.out(1), i, dt)
            L.st(v, kb.out(2), i, dt)
            L.st(b.fsub(x, b.fmul(step_size, b.fdiv(m, denom))), kb.out(0), i, dt)
        L.done()

    element_chunks(k, n, body)


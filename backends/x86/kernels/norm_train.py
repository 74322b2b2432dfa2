"""Training-mode batch norm: ``batch_norm_train`` (batch statistics, normalization, running-stat
update) and its gradient ``batch_norm_train_grad``, one kernel each.

Each channel is one independent task (``parallel_for`` over channels when there is enough work):
two passes over the channel's N x S elements for the statistics (mean, then the sum of squared
deviations, as the reference computes them), one more to write the output; the gradient needs two
(sums of dy and dy * x_hat, then dx). Arithmetic runs in f32 (f64 for f64 data). The batch may be
read at run time (a shape-generic training step): then the element count and the unbiased
correction are computed in the kernel; channels and spatial dims are static.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from nnc.ir import Op

from . import dims as dm
from .loopkit import Loops, compute_type
from .reduce import rows
from .registry import batch_only, lowering


def _layout(op: Op) -> tuple[int, int]:
    shape = tuple(op.operands[0].shape)
    return int(shape[1]), int(np.prod(shape[2:], dtype=np.int64))


def _count(L: Loops, N, S: int) -> tuple[ir.Value, ir.Value]:
    """(N*S as a float, 1/(N*S) or 0 when empty) for a batch N known now or read at run time."""
    if isinstance(N, int):
        n = N * S
        return L.f(float(n)), L.f(1.0 / n if n else 0.0)
    b = L.b
    n = b.mul(N, L.i(S))
    nf = b.sitofp(n, L.ct)
    empty = b.icmp_signed("==", n, L.i(0))
    return nf, b.select(empty, L.f(0.0), b.fdiv(L.f(1.0), b.select(empty, L.f(1.0), nf)))


def _channel_sum(L: Loops, N, C: int, S: int, c: ir.Value, term) -> ir.Value:
    """sum over (n, s) of term(flat index) for channel c."""
    acc = L.var(L.f(0.0))
    with L.loop(N, "n") as n:
        base = L.lin((n, C * S), (c, S))
        with L.loop(S, "s") as s:
            L.set(acc, L.b.fadd(L.get(acc), term(L.b.add(base, s)), flags=("reassoc",)))
    return L.get(acc)


def _each(L: Loops, N, C: int, S: int, c: ir.Value, fn) -> None:
    with L.loop(N, "n") as n:
        base = L.lin((n, C * S), (c, S))
        with L.loop(S, "s") as s:
            fn(L.b.add(base, s))


@lowering("batch_norm_train", generic=batch_only)
def lower_batch_norm_train(k, op: Op) -> None:
    C, S = _layout(op)
    x, scale, bias, rmean, rvar = op.operands
    dt = x.dtype
    ct = compute_type(dt)
    eps, mom = float(op.attrs["epsilon"]), float(op.attrs["momentum"])
    if C == 0:
        return

    def channel(kb, c):
        L = Loops(kb, ct)
        b = kb.b
        N = kb.shape(x)[0]
        count, inv_n = _count(L, N, S)
        if op.attrs["unbiased"]:  # count / (count - 1), 1 for a single element
            many = b.fcmp_ordered(">", count, L.f(1.0))
            corr = b.select(many, b.fdiv(count, b.fsub(count, L.f(1.0))), L.f(1.0))
        else:
            corr = L.f(1.0)
        mean = b.fmul(_channel_sum(L, N, C, S, c, lambda i: L.ld(kb.arg(0), i, dt)), inv_n)

        def sq(i):
            d = b.fsub(L.ld(kb.arg(0), i, dt), mean)
            return b.fmul(d, d)
        var = b.fmul(_channel_sum(L, N, C, S, c, sq), inv_n)
        inv = b.fdiv(L.f(1.0), L.intr("llvm.sqrt", b.fadd(var, L.f(eps))))
        w = L.ld(kb.arg(1), c, scale.dtype)
        sh = L.ld(kb.arg(2), c, bias.dtype)
        _each(L, N, C, S, c, lambda i: L.st(b.fadd(b.fmul(b.fmul(b.fsub(L.ld(kb.arg(0), i, dt), mean), inv), w), sh),
                                            kb.out(0), i, dt))
        m = L.f(mom)
        keep = L.f(1.0 - mom)
        L.st(b.fadd(b.fmul(keep, L.ld(kb.arg(3), c, rmean.dtype)), b.fmul(m, mean)), kb.out(1), c, rmean.dtype)
        L.st(b.fadd(b.fmul(keep, L.ld(kb.arg(4), c, rvar.dtype)), b.fmul(m, b.fmul(var, corr))),
             kb.out(2), c, rvar.dtype)
        L.st(mean, kb.out(3), c, op.results[3].dtype)
        L.st(inv, kb.out(4), c, op.results[4].dtype)
        L.done()

    rows(k, C, dm.mul(k.b, k.shape(x)[0], 3 * S), channel, name="channel")


def _batch_only_with_dy(op: Op) -> str | None:
    """batch_norm_train_grad: x and dy (one type) may have a run-time batch; the rest is static."""
    x, dy = op.operands[0], op.operands[1]
    if dy.type != x.type or x.shape is None or not all(isinstance(d, int) for d in x.shape[1:]):
        return f"{op.opname}: only the batch dim of x and dy may be symbolic ({x.type}, {dy.type})"
    if not all(v.type.is_static for v in op.operands[2:]):
        return f"{op.opname}: the scale and statistics must have static shapes"
    return None


@lowering("batch_norm_train_grad", generic=_batch_only_with_dy)
def lower_batch_norm_train_grad(k, op: Op) -> None:
    C, S = _layout(op)
    x, dy, scale, mean, inv_std = op.operands
    dt = x.dtype
    ct = compute_type(dt)
    if C == 0:
        return

    def channel(kb, c):
        L = Loops(kb, ct)
        b = kb.b
        N = kb.shape(x)[0]
        _, inv_n = _count(L, N, S)
        mu = L.ld(kb.arg(3), c, mean.dtype)
        inv = L.ld(kb.arg(4), c, inv_std.dtype)

        def xhat(i):
            return b.fmul(b.fsub(L.ld(kb.arg(0), i, dt), mu), inv)
        dbias = _channel_sum(L, N, C, S, c, lambda i: L.ld(kb.arg(1), i, dt))
        dscale = _channel_sum(L, N, C, S, c, lambda i: b.fmul(L.ld(kb.arg(1), i, dt), xhat(i)))
        L.st(dscale, kb.out(1), c, op.results[1].dtype)
        L.st(dbias, kb.out(2), c, op.results[2].dtype)
        kc = b.fmul(L.ld(kb.arg(2), c, scale.dtype), inv)
        mb, ms = b.fmul(dbias, inv_n), b.fmul(dscale, inv_n)
        _each(L, N, C, S, c, lambda i: L.st(
            b.fmul(kc, b.fsub(b.fsub(L.ld(kb.arg(1), i, dt), mb), b.fmul(xhat(i), ms))), kb.out(0), i, dt))
        L.done()

    rows(k, C, dm.mul(k.b, k.shape(x)[0], 3 * S), channel, name="channel")


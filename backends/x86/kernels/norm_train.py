"""Training-mode batch norm: ``batch_norm_train`` (batch statistics, normalization, running-stat
update) and its gradient ``batch_norm_train_grad``, one kernel each.

Each channel is one independent task (``parallel_for`` over channels when there is enough work):
two passes over the channel's N x S elements for the statistics (mean, then the sum of squared
deviations, as the reference computes them), one more to write the output; the gradient needs two
(sums of dy and dy * x_hat, then dx). Arithmetic runs in f32 (f64 for f64 data).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from nnc.ir import Op

from .loopkit import Loops, compute_type
from .reduce import rows
from .registry import lowering


def _layout(op: Op) -> tuple[int, int, int]:
    shape = tuple(op.operands[0].shape)
    return int(shape[0]), int(shape[1]), int(np.prod(shape[2:], dtype=np.int64))


def _channel_sum(L: Loops, N: int, C: int, S: int, c: ir.Value, term) -> ir.Value:
    """sum over (n, s) of term(flat index) for channel c."""
    acc = L.var(L.f(0.0))
    with L.loop(N, "n") as n:
        base = L.lin((n, C * S), (c, S))
        with L.loop(S, "s") as s:
            L.set(acc, L.b.fadd(L.get(acc), term(L.b.add(base, s)), flags=("reassoc",)))
    return L.get(acc)


def _each(L: Loops, N: int, C: int, S: int, c: ir.Value, fn) -> None:
    with L.loop(N, "n") as n:
        base = L.lin((n, C * S), (c, S))
        with L.loop(S, "s") as s:
            fn(L.b.add(base, s))


@lowering("batch_norm_train")
def lower_batch_norm_train(k, op: Op) -> None:
    N, C, S = _layout(op)
    x, scale, bias, rmean, rvar = op.operands
    dt = x.dtype
    ct = compute_type(dt)
    count = N * S
    eps, mom = float(op.attrs["epsilon"]), float(op.attrs["momentum"])
    corr = count / (count - 1) if op.attrs["unbiased"] and count > 1 else 1.0
    if C == 0:
        return

    def channel(kb, c):
        L = Loops(kb, ct)
        b = kb.b
        inv_n = L.f(1.0 / count) if count else L.f(0.0)
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
        L.st(b.fadd(b.fmul(keep, L.ld(kb.arg(4), c, rvar.dtype)), b.fmul(m, b.fmul(var, L.f(corr)))),
             kb.out(2), c, rvar.dtype)
        L.st(mean, kb.out(3), c, op.results[3].dtype)
        L.st(inv, kb.out(4), c, op.results[4].dtype)
        L.done()

    rows(k, C, 3 * N * S, channel, name="channel")


@lowering("batch_norm_train_grad")
def lower_batch_norm_train_grad(k, op: Op) -> None:
    N, C, S = _layout(op)
    x, dy, scale, mean, inv_std = op.operands
    dt = x.dtype
    ct = compute_type(dt)
    count = N * S
    if C == 0:
        return

    def channel(kb, c):
        L = Loops(kb, ct)
        b = kb.b
        mu = L.ld(kb.arg(3), c, mean.dtype)
        inv = L.ld(kb.arg(4), c, inv_std.dtype)

        def xhat(i):
            return b.fmul(b.fsub(L.ld(kb.arg(0), i, dt), mu), inv)
        dbias = _channel_sum(L, N, C, S, c, lambda i: L.ld(kb.arg(1), i, dt))
        dscale = _channel_sum(L, N, C, S, c, lambda i: b.fmul(L.ld(kb.arg(1), i, dt), xhat(i)))
        L.st(dscale, kb.out(1), c, op.results[1].dtype)
        L.st(dbias, kb.out(2), c, op.results[2].dtype)
        inv_n = L.f(1.0 / count) if count else L.f(0.0)
        kc = b.fmul(L.ld(kb.arg(2), c, scale.dtype), inv)
        mb, ms = b.fmul(dbias, inv_n), b.fmul(dscale, inv_n)
        _each(L, N, C, S, c, lambda i: L.st(
            b.fmul(kc, b.fsub(b.fsub(L.ld(kb.arg(1), i, dt), mb), b.fmul(xhat(i), ms))), kb.out(0), i, dt))
        L.done()

    rows(k, C, 3 * N * S, channel, name="channel")


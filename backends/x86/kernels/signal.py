"""x86 lowerings of the signal ops: ``dft``, ``stft``, ``window``, ``mel_weight_matrix``, ``det``.

dft and stft are direct O(n^2) transforms per line (one task per line or frame), with the twiddle
factors cos/sin(2 pi j / n) from a compile-time table (no libm at run time) and f64 accumulation.
The inverse one-sided transform (irfft) rebuilds the Hermitian spectrum on the fly and keeps the
real part, which ignores the imaginary part of the DC and Nyquist bins as numpy does. ``window``
and ``mel_weight_matrix`` depend only on their (static) attributes: the kernel copies the
reference's values from a constant table. det is LU with partial pivoting in f64 per matrix.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op

from ..llvm_types import F64
from .loopkit import Loops, numel, operand
from .registry import lowering


def _twiddles(L: Loops, n: int) -> tuple[ir.Value, ir.Value]:
    j = np.arange(max(n, 1), dtype=np.float64)
    return L.table(np.cos(2 * np.pi * j / n), DType.f64), L.table(np.sin(2 * np.pi * j / n), DType.f64)


def _dft_line(L: Loops, n: int, n_out: int, read, write, sign: float, scale: float, cos_t, sin_t) -> None:
    """out[f] = scale * sum_{t<n} z[t] exp(sign * 2 pi i f t / n) for f < n_out; ``read(t)`` gives
    (re, im, in range), ``write(f, re, im)`` stores a bin."""
    b = L.b
    with L.loop(n_out, "f") as f:
        re, im = L.var(L.f(0.0, F64)), L.var(L.f(0.0, F64))
        with L.loop(n, "t") as t:
            zr, zi, inside = read(t)
            j = b.srem(b.mul(f, t), L.i(n))
            c = L.ld(cos_t, j, DType.f64, F64)
            s = b.fmul(L.ld(sin_t, j, DType.f64, F64), L.f(sign, F64))
            pr = b.fsub(b.fmul(zr, c), b.fmul(zi, s))
            pi = b.fadd(b.fmul(zr, s), b.fmul(zi, c))
            L.set(re, b.fadd(L.get(re), b.select(inside, pr, L.f(0.0, F64))))
            L.set(im, b.fadd(L.get(im), b.select(inside, pi, L.f(0.0, F64))))
        write(f, b.fmul(L.get(re), L.f(scale, F64)), b.fmul(L.get(im), L.f(scale, F64)))


@lowering("dft")
def lower_dft(k, op: Op) -> None:
    x = op.operands[0]
    y = op.results[0]
    a = op.attrs
    shape = tuple(x.shape)
    axis = (-2 if a["axis"] is None else a["axis"]) % len(shape)
    inverse, onesided = a["inverse"], a["onesided"]
    m = shape[axis]
    n = a["dft_length"] if a["dft_length"] is not None else (2 * (m - 1) if inverse and onesided else m)
    outer, inner = numel(shape[:axis]), numel(shape[axis + 1:-1])
    c_in, c_out = shape[-1], y.shape[-1]
    n_out = y.shape[axis]
    dt = x.dtype
    L0 = Loops(k, F64)
    cos_t, sin_t = _twiddles(L0, n)

    def line(kb, li) -> None:
        L = Loops(kb, F64)
        b = L.b
        o, i = b.sdiv(li, L.i(inner)), b.srem(li, L.i(inner))

        def sample(t):  # (re, im, in range) of input sample / bin t (clamped when out of range)
            inside = b.icmp_signed("<", t, L.i(m))
            tc = L.imin(t, L.i(m - 1))
            base = L.lin((o, m * inner * c_in), (tc, inner * c_in), (i, c_in))
            re = L.ld(kb.arg(0), base, dt, F64)
            im = L.ld(kb.arg(0), L.lin(base, 1), dt, F64) if c_in == 2 else L.f(0.0, F64)
            return re, im, inside

        def write(f, re, im):
            base = L.lin((o, n_out * inner * c_out), (f, inner * c_out), (i, c_out))
            L.st(re, kb.out(0), base, dt)
            if c_out == 2:
                L.st(im, kb.out(0), L.lin(base, 1), dt)

        if inverse and onesided:
            half = n // 2

            def hermitian(t):  # bin t of the full spectrum: Z[t], or conj(Z[n - t]) above n/2
                upper = b.icmp_signed(">", t, L.i(half))
                kk = b.select(upper, b.sub(L.i(n), t), t)
                re, im, inside = sample(kk)
                inside = b.and_(inside, b.icmp_signed("<=", kk, L.i(half)))
                return re, b.select(upper, b.fneg(im), im), inside
            _dft_line(L, n, n_out, hermitian, write, 1.0, 1.0 / n, cos_t, sin_t)
        else:
            _dft_line(L, n, n_out, sample, write, 1.0 if inverse else -1.0, 1.0 / n if inverse else 1.0,
                      cos_t, sin_t)

    k.parallel_for(outer * inner, line, "line")


@lowering("stft")
def lower_stft(k, op: Op) -> None:
    sig = op.operands[0]
    win = operand(op, 1)
    a = op.attrs
    B, length, c_in = sig.shape
    y = op.results[0]
    frames, bins = y.shape[1], y.shape[2]
    fl = a["frame_length"] if a["frame_length"] is not None else (win.shape[0] if win is not None else length)
    wlen = win.shape[0] if win is not None else fl
    step = a["frame_step"]
    dt = sig.dtype
    L0 = Loops(k, F64)
    cos_t, sin_t = _twiddles(L0, fl)

    def frame(kb, bf) -> None:
        L = Loops(kb, F64)
        b = L.b
        bi, fr = b.sdiv(bf, L.i(frames)), b.srem(bf, L.i(frames))

        def sample(t):
            pos = b.add(b.mul(fr, L.i(step)), t)
            inside = b.and_(b.icmp_signed("<", pos, L.i(length)), b.icmp_signed("<", t, L.i(wlen)))
            base = L.lin((bi, length * c_in), (L.imin(pos, L.i(length - 1)), c_in))
            w = L.ld(kb.arg(1), L.imin(t, L.i(wlen - 1)), win.dtype, F64) if win is not None else L.f(1.0, F64)
            re = b.fmul(L.ld(kb.arg(0), base, dt, F64), w)
            im = b.fmul(L.ld(kb.arg(0), L.lin(base, 1), dt, F64), w) if c_in == 2 else L.f(0.0, F64)
            return re, im, inside

        def write(f, re, im):
            base = L.lin((bf, bins * 2), (f, 2))
            L.st(re, kb.out(0), base, dt)
            L.st(im, kb.out(0), L.lin(base, 1), dt)

        _dft_line(L, fl, bins, sample, write, -1.0, 1.0, cos_t, sin_t)

    k.parallel_for(B * frames, frame, "frame")


@lowering("window", "mel_weight_matrix")
def lower_constant_of_attrs(k, op: Op) -> None:
    # the result is a function of the static attributes alone: the reference's values, as a table
    from nnc.ir.ops.signal import _mel_weight_matrix, _window

    a = op.attrs
    if op.opname == "window":
        values = _window(a["kind"], a["periodic"], a["dtype"], a["size"])
    else:
        values = _mel_weight_matrix(a["dtype"], a["num_mel_bins"], a["dft_length"], a["sample_rate"],
                                    a["lower_edge_hertz"], a["upper_edge_hertz"])
    y = op.results[0]
    L = Loops(k)
    L.memcpy(k.out(0), L.table(values, y.dtype), y.type.nbytes or 0)


@lowering("det")
def lower_det(k, op: Op) -> None:
    x = op.operands[0]
    n = x.shape[-1]
    count = numel(x.shape[:-2])
    dt = x.dtype

    def matrix(kb, mi) -> None:
        L = Loops(kb, F64)
        b = L.b
        M = L.buffer(n * n, F64)
        f64 = DType.f64

        def at(r, c):
            return L.ptr(M, L.lin((r, n), c), f64)

        with L.loop(n * n, "cp") as i:
            b.store(L.ld(kb.arg(0), L.lin((mi, n * n), i), dt, F64), L.ptr(M, i, f64))
        det = L.var(L.f(1.0, F64))
        with L.loop(n, "col") as c:
            best, piv_row = L.var(L.f(-1.0, F64)), L.var(c)
            with L.loop(n, "r", start=c) as r:
                v = L.intr("llvm.fabs", b.load(at(r, c), typ=F64))
                better = b.fcmp_ordered(">", v, L.get(best))
                L.set(best, b.select(better, v, L.get(best)))
                L.set(piv_row, b.select(better, r, L.get(piv_row)))
            p = L.get(piv_row)
            with b.if_then(b.icmp_signed("!=", p, c)):
                with L.loop(n, "sw") as j:
                    u, w = b.load(at(c, j), typ=F64), b.load(at(p, j), typ=F64)
                    b.store(w, at(c, j))
                    b.store(u, at(p, j))
                L.set(det, b.fneg(L.get(det)))
            piv = b.load(at(c, c), typ=F64)
            L.set(det, b.fmul(L.get(det), piv))
            with b.if_then(b.fcmp_unordered("!=", piv, L.f(0.0, F64))):
                with L.loop(n, "el", start=b.add(c, L.i(1))) as r:
                    f = b.fdiv(b.load(at(r, c), typ=F64), piv)
                    with L.loop(n, "ej", start=b.add(c, L.i(1))) as j:
                        q = at(r, j)
                        b.store(b.fsub(b.load(q, typ=F64), b.fmul(f, b.load(at(c, j), typ=F64))), q)
        L.st(L.get(det), kb.out(0), mi, dt)
        L.done()

    k.parallel_for(count, matrix, "mat")


"""x86 lowerings of the sequence ops: ``rnn``, ``gru``, ``lstm``, ``causal_conv_with_state`` and
``tfidf_vectorizer``.

A recurrent layer is independent per (direction, batch entry): each is one task that walks the
time steps with its hidden (and cell) state in scratch buffers, computing every gate as a dot
product of a weight row with x_t and with h (weights are [gates*hidden, input] row-major, so the
dot products stream contiguous rows). Steps past a batch entry's sequence length keep the state
and write zeros, as the reference does. Activations (with their alpha/beta bound in the ONNX /
onnxruntime order) are emitted as scalar code per direction.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op
from nnc.ir.ops.sequence import _ACTS, _DEFAULT_ACTS, _ngram_table

from ..llvm_types import F32, F64
from .loopkit import Loops, compute_type, operand
from .registry import lowering

Act = Callable[[Loops, ir.Value], ir.Value]


def _activation(name: str, alpha: float, beta: float) -> Act:
    name = name.lower()

    def emit(L: Loops, x: ir.Value) -> ir.Value:
        b = L.b
        a, bt, zero, one = L.f(alpha), L.f(beta), L.f(0.0), L.f(1.0)
        if name == "relu":
            return b.select(b.fcmp_ordered("<", x, zero), zero, x)
        if name == "tanh":
            return L.tanh(x)
        if name == "sigmoid":
            return L.sigmoid(x)
        if name == "affine":
            return b.fadd(b.fmul(a, x), bt)
        if name == "leakyrelu":
            return b.select(b.fcmp_ordered(">=", x, zero), x, b.fmul(a, x))
        if name == "thresholdedrelu":
            return b.select(b.fcmp_ordered(">", x, a), x, zero)
        if name == "scaledtanh":
            return b.fmul(a, L.tanh(b.fmul(bt, x)))
        if name == "hardsigmoid":
            return L.clamp(b.fadd(b.fmul(a, x), bt), zero, one)
        if name == "elu":
            return b.select(b.fcmp_ordered(">=", x, zero), x, b.fmul(a, b.fsub(L.exp(x), one)))
        if name == "softsign":
            return b.fdiv(x, b.fadd(one, L.intr("llvm.fabs", x)))
        if name == "softplus":
            return L.log1p(L.exp(x))
        raise NotImplementedError(f"x86: activation {name!r}")
    return emit


def _activations(op: Op, dirs: int) -> list[Act]:
    """Bind each activation to its alpha/beta; the lists are consumed in order by the activations
    that take parameters (the reference's rule)."""
    a = op.attrs
    names = a["activations"] or _DEFAULT_ACTS[op.opname] * dirs
    out, ia, ib = [], 0, 0
    for name in names:
        _, al, be, n = _ACTS[name.lower()]
        if n >= 1 and ia < len(a["activation_alpha"]):
            al, ia = a["activation_alpha"][ia], ia + 1
        if n >= 2 and ib < len(a["activation_beta"]):
            be, ib = a["activation_beta"][ib], ib + 1
        out.append(_activation(name, float(al), float(be)))
    return out


@lowering("rnn", "gru", "lstm")
def lower_recurrent(k, op: Op) -> None:
    a = op.attrs
    kind = op.opname
    x, w, r = op.operands[:3]
    bias, lens, h0 = operand(op, 3), operand(op, 4), operand(op, 5)
    c0, peep = (operand(op, 6), operand(op, 7)) if kind == "lstm" else (None, None)
    dt = x.dtype
    ct = compute_type(dt)
    cdt = DType.f64 if dt is DType.f64 else DType.f32
    layout = a["layout"]
    seq, batch, n_in = (x.shape[0], x.shape[1], x.shape[2]) if layout == 0 else (x.shape[1], x.shape[0], x.shape[2])
    dirs = w.shape[0]
    hs = a["hidden_size"]
    G = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    acts = _activations(op, dirs)
    per = len(_DEFAULT_ACTS[kind])
    clip = a["clip"]
    lbr = a.get("linear_before_reset", 0)
    coupled = a.get("input_forget", 0)

    def x_index(L: Loops, t, bi, i):
        return L.lin((t, batch * n_in), (bi, n_in), i) if layout == 0 else L.lin((bi, seq * n_in), (t, n_in), i)

    def y_index(L: Loops, t, d: int, bi, n):
        return L.lin((t, dirs * batch * hs), (d * batch * hs), (bi, hs), n) if layout == 0 else \
            L.lin((bi, seq * dirs * hs), (t, dirs * hs), (d * hs), n)

    def state_index(L: Loops, d: int, bi, n):
        return L.lin((d * batch * hs), (bi, hs), n) if layout == 0 else L.lin((bi, dirs * hs), (d * hs), n)

    def direction(d: int) -> None:
        f_act = acts[d * per:(d + 1) * per]
        reverse = a["direction"] == "reverse" or d == 1

        def chain(kb, bi) -> None:
            L = Loops(kb, ct)
            b = L.b
            gates = L.buffer(G * hs, ct)
            h = L.buffer(hs, ct)
            c = L.buffer(hs, ct)
            hn = L.buffer(hs, ct)
            cn = L.buffer(hs, ct)
            rh = L.buffer(hs, ct)

            def get(buf, i):
                return L.ld(buf, i, cdt)

            def put(v, buf, i):
                b.store(v, L.ptr(buf, i, cdt))

            with L.loop(hs, "init") as n:
                put(L.ld(kb.arg(5), state_index(L, d, bi, n), dt) if h0 is not None else L.f(0.0), h, n)
                if kind == "lstm":
                    put(L.ld(kb.arg(6), state_index(L, d, bi, n), dt) if c0 is not None else L.f(0.0), c, n)
            n_len = L.ld_int(kb.arg(4), bi, lens.dtype) if lens is not None else L.i(seq)

            def clipped(v):
                return v if clip is None else L.clamp(v, L.f(-clip), L.f(clip))

            def bias_of(j: int, n):  # bias entry j*hs + n of this direction (0 when absent)
                if bias is None:
                    return L.f(0.0)
                return L.ld(kb.arg(3), L.lin((d * 2 * G * hs) + j * hs, n), dt)

            def dot(mat: int, row, vec, length: int, from_x: bool, t=None):
                """sum_i M[d, row, i] * v[i] for M = w (mat 1) or r (mat 2)."""
                acc = L.var(L.f(0.0))
                base = L.lin((d * G * hs * length), (row, length))
                with L.loop(length, "dk") as i:
                    m = L.ld(kb.arg(mat), L.lin(base, i), dt)
                    v = L.ld(kb.arg(0), x_index(L, t, bi, i), dt) if from_x else get(vec, i)
                    L.set(acc, b.fadd(L.get(acc), b.fmul(m, v)))
                return L.get(acc)

            with L.loop(seq, "step") as step:
                t = b.sub(L.i(seq - 1), step) if reverse else step
                # x_t W^T for every gate row, plus the input bias
                with L.loop(G * hs, "gx") as g:
                    put(dot(1, g, None, n_in, True, t), gates, g)
                if kind == "rnn":
                    with L.loop(hs, "n") as n:
                        pre = b.fadd(b.fadd(get(gates, n), dot(2, n, h, hs, False)),
                                     b.fadd(bias_of(0, n), bias_of(1, n)))
                        put(f_act[0](L, clipped(pre)), hn, n)
                elif kind == "gru":
                    f, g_act = f_act
                    zs = L.buffer(hs, ct)
                    with L.loop(hs, "zr") as n:
                        zn = L.lin(n)
                        rn = L.lin(n, hs)
                        z = f(L, clipped(b.fadd(b.fadd(get(gates, zn), dot(2, zn, h, hs, False)),
                                                b.fadd(bias_of(0, n), bias_of(3, n)))))
                        rg = f(L, clipped(b.fadd(b.fadd(get(gates, rn), dot(2, rn, h, hs, False)),
                                                 b.fadd(bias_of(1, n), bias_of(4, n)))))
                        put(z, zs, n)
                        put(rg, rh, n)  # the reset gate, turned into r*h below when needed
                    if not lbr:
                        with L.loop(hs, "rh") as n:
                            put(b.fmul(get(rh, n), get(h, n)), rh, n)
                    with L.loop(hs, "hh") as n:
                        hn_row = L.lin(n, 2 * hs)
                        if lbr:
                            rec = b.fmul(get(rh, n), b.fadd(dot(2, hn_row, h, hs, False), bias_of(5, n)))
                            pre = b.fadd(b.fadd(get(gates, hn_row), rec), bias_of(2, n))
                        else:
                            pre = b.fadd(b.fadd(get(gates, hn_row), dot(2, hn_row, rh, hs, False)),
                                         b.fadd(bias_of(5, n), bias_of(2, n)))
                        hh = g_act(L, clipped(pre))
                        z = get(zs, n)
                        put(b.fadd(b.fmul(b.fsub(L.f(1.0), z), hh), b.fmul(z, get(h, n))), hn, n)
                else:
                    f, g_act, h_act = f_act
                    with L.loop(hs, "cell") as n:
                        def pre(j: int):
                            row = L.lin(n, j * hs)
                            return b.fadd(b.fadd(get(gates, row), dot(2, row, h, hs, False)),
                                          b.fadd(bias_of(j, n), bias_of(4 + j, n)))

                        def peephole(j: int, cv):
                            if peep is None:
                                return L.f(0.0)
                            return b.fmul(L.ld(kb.arg(7), L.lin(d * 3 * hs + j * hs, n), dt), cv)
                        cprev = get(c, n)
                        gi = f(L, clipped(b.fadd(pre(0), peephole(0, cprev))))
                        if coupled:
                            fg = b.fsub(L.f(1.0), gi)
                        else:
                            fg = f(L, clipped(b.fadd(pre(2), peephole(2, cprev))))
                        c_new = b.fadd(b.fmul(fg, cprev), b.fmul(gi, g_act(L, clipped(pre(3)))))
                        o = f(L, clipped(b.fadd(pre(1), peephole(1, c_new))))
                        put(c_new, cn, n)
                        put(b.fmul(o, h_act(L, c_new)), hn, n)
                valid = b.icmp_signed("<", t, n_len)
                with L.loop(hs, "upd") as n:
                    hv = b.select(valid, get(hn, n), get(h, n))
                    put(hv, h, n)
                    if kind == "lstm":
                        put(b.select(valid, get(cn, n), get(c, n)), c, n)
                    L.st(b.select(valid, hv, L.f(0.0)), kb.out(0), y_index(L, t, d, bi, n), dt)
            with L.loop(hs, "fin") as n:
                L.st(get(h, n), kb.out(1), state_index(L, d, bi, n), dt)
                if kind == "lstm":
                    L.st(get(c, n), kb.out(2), state_index(L, d, bi, n), dt)
            L.done()

        k.parallel_for(batch, chain, f"dir{d}")

    for d in range(dirs):
        direction(d)


# -- causal depthwise conv with state -----------------------------------------------------------------

@lowering("causal_conv_with_state")
def lower_causal_conv(k, op: Op) -> None:
    x, w = op.operands[:2]
    bias, past = operand(op, 2), operand(op, 3)
    dt = x.dtype
    B, C, N = x.shape
    K = w.shape[2]
    silu = op.attrs["activation"] in ("silu", "swish")
    L = Loops(k, compute_type(dt))

    def channel(kb, bc) -> None:
        R = Loops(kb, L.ct)
        b = R.b
        c = b.srem(bc, R.i(C))

        def padded(p):  # element p of [past_state, x] along the time axis
            inx = b.icmp_signed(">=", p, R.i(K - 1))
            xi = R.lin((bc, N), p, -(K - 1))
            if past is None:
                return b.select(inx, R.ld(kb.arg(0), R.imax(xi, R.lin((bc, N))), dt, F64), R.f(0.0, F64))
            pi = R.lin((bc, K - 1), R.imin(p, R.i(max(K - 2, 0))))
            return b.select(inx, R.ld(kb.arg(0), R.imax(xi, R.lin((bc, N))), dt, F64), R.ld(kb.arg(3), pi, dt, F64))

        with R.loop(N, "l") as t:
            acc = R.var(R.f(0.0, F64))
            with R.loop(K, "j") as j:
                wv = R.ld(kb.arg(1), R.lin((c, K), j), w.dtype, F64)
                R.set(acc, b.fadd(R.get(acc), b.fmul(wv, padded(b.add(t, j)))))
            y = R.get(acc)
            if bias is not None:
                y = b.fadd(y, R.ld(kb.arg(2), c, bias.dtype, F64))
            y = R.round_to(y, dt)
            if silu:
                y32 = R.fcast(y, F32)
                y = R.fcast(b.fdiv(y32, b.fadd(R.f(1.0, F32), R.exp(b.fneg(y32)))), F64)
            R.st(y, kb.out(0), R.lin((bc, N), t), dt)
        with R.loop(K - 1, "s") as s:  # present_state: the last K-1 padded inputs
            R.st(padded(R.lin(s, N)), kb.out(1), R.lin((bc, K - 1), s), dt)

    k.parallel_for(B * C, channel, "chan")


# -- tfidf --------------------------------------------------------------------------------------------

@lowering("tfidf_vectorizer")
def lower_tfidf(k, op: Op) -> None:
    a = op.attrs
    x = op.operands[0]
    rows, width_in = (1, x.shape[0]) if len(x.shape) == 1 else tuple(x.shape)
    table = _ngram_table(a["pool_int64s"], a["ngram_counts"], a["ngram_indexes"])
    width = max(a["ngram_indexes"]) + 1
    weights = np.asarray(a["weights"], np.float32) if a["weights"] else np.ones(width, np.float32)
    L = Loops(k, F32)
    b = L.b
    out = k.out(0)
    L.memset0(out, rows * width * 4)
    f32 = DType.f32
    for n in range(a["min_gram_length"], a["max_gram_length"] + 1):
        grams = [(g, i) for g, i in table.items() if len(g) == n]
        if not grams:
            continue
        pool = L.table(np.asarray([g for g, _ in grams], np.int64).reshape(-1), DType.i64)
        idx = L.table(np.asarray([i for _, i in grams], np.int64), DType.i64)
        for dist in (range(1, 2) if n == 1 else range(1, a["max_skip_count"] + 2)):
            starts = width_in - dist * (n - 1)
            if starts <= 0:
                continue
            with L.loop(rows, "row") as rr:
                with L.loop(starts, "s") as s:
                    with L.loop(len(grams), "g") as gi:
                        same = ir.Constant(ir.IntType(1), 1)
                        for m in range(n):
                            tok = L.ld_int(k.arg(0), L.lin((rr, width_in), s, m * dist), x.dtype)
                            same = b.and_(same, b.icmp_signed("==", tok, L.ld_int(pool, L.lin((gi, n), m), DType.i64)))
                        with b.if_then(same):
                            p = L.ptr(out, L.lin((rr, width), L.ld_int(idx, gi, DType.i64)), f32)
                            b.store(b.fadd(b.load(p, typ=F32), L.f(1.0)), p)
    mode = a["mode"]
    if mode != "TF":
        wt = L.table(weights, f32)
        with L.loop(rows * width, "w") as i:
            p = L.ptr(out, i, f32)
            cnt = b.load(p, typ=F32)
            wv = L.ld(wt, b.srem(i, L.i(width)), f32)
            v = b.select(b.fcmp_ordered(">", cnt, L.f(0.0)), wv, L.f(0.0)) if mode == "IDF" else b.fmul(cnt, wv)
            b.store(v, p)


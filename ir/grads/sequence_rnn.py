"""Gradient rules: the recurrent ops ``rnn``, ``gru``, ``lstm`` and ``linear_attention``.

Backpropagation through time by static unrolling: a rule re-expresses the op's forward recurrence
step by step with primitive IR ops (one input projection ``gemm`` for all time steps, then per step
a ``matmul`` with the recurrent weights, ``split`` into gates, elementwise activations, ``where``
masks for ``sequence_lens``) and differentiates that unrolled subgraph with ``engine.grad``
itself, seeded with the op's result cotangents. Shapes are static in autodiff, so the unroll is
exact; the recomputed forward costs one extra forward pass (the usual price of not keeping the
op's internal gates). The inner ``grad`` only walks the unrolled ops: its loss is built from them
alone, and the seed (the cotangents) is not differentiated.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from ..builder import Builder
from ..errors import GradientError
from ..graph import Op, Value
from ..ops.sequence import _ACTS, _DEFAULT_ACTS
from . import register_vjp
from .engine import grad
from .indexing import zeros
from .util import reshape, scalar, shape_of


def _given(op: Op, i: int) -> Value | None:
    """Operand i unless it is missing or empty (an empty operand stands for an absent one)."""
    if i >= len(op.operands):
        return None
    v = op.operands[i]
    return None if 0 in shape_of(v) else v


def _take(b: Builder, v: Value, axis: int, start: int, stop: int) -> Value:
    return b.op("slice", v, starts=[start], ends=[stop], axes=[axis], steps=[1])


def _steps(b: Builder, v: Value, axis: int) -> list[Value]:
    """v cut into its size-1 pieces along ``axis``: one ``split`` (whose gradient is one
    ``concat``) rather than a slice per step (whose gradients are full-size pads to add up)."""
    n = shape_of(v)[axis]
    return [v] if n == 1 else list(b.op("split", v, axis=axis, sizes=[1] * n, n_results=n))


def _row(b: Builder, v: Value, d: int) -> Value:
    """v[d] of a [dirs, ...] operand."""
    return reshape(b, _take(b, v, 0, d, d + 1), shape_of(v)[1:])


def _grad_through(b: Builder, op: Op, outs: list[Value], cts: list[Value | None]) -> list[Value | None]:
    """Cotangents of ``op``'s operands given the unrolled forward ``outs`` (one per result, same
    types) and the result cotangents: differentiate the unrolled ops with ``engine.grad``."""

    pairs = [(o, c) for o, c in zip(outs, cts) if c is not None]
    flat = [reshape(b, o, [int(np.prod(shape_of(o)))]) for o, _ in pairs]
    seeds = [reshape(b, c, [int(np.prod(shape_of(c)))]) for _, c in pairs]
    loss = flat[0] if len(flat) == 1 else b.op("concat", *flat, axis=0)
    seed = seeds[0] if len(seeds) == 1 else b.op("concat", *seeds, axis=0)
    wrt: list[Value] = []
    for i, v in enumerate(op.operands):
        if v.dtype.is_float and _given(op, i) is not None and all(v is not w for w in wrt):
            wrt.append(v)
    grads = grad(b.module, loss, wrt, graph=b.graph, seed=seed)
    result: list[Value | None] = []
    done: set[int] = set()
    for v in op.operands:  # a value used as two operands gets its total gradient once
        result.append(grads[v] if v in grads and id(v) not in done else None)
        done.add(id(v))
    return result


# -- activations ---------------------------------------------------------------------------------

def _activation(b: Builder, name: str, a: float, bt: float, like: Value) -> Callable[[Value], Value]:
    n = name.lower()
    if n in ("relu", "tanh", "sigmoid", "softplus"):
        return lambda x: b.op(n, x)
    if n == "leakyrelu":
        return lambda x: b.op("leaky_relu", x, alpha=a)
    if n == "elu":
        return lambda x: b.op("elu", x, alpha=a)
    if n == "hardsigmoid":
        return lambda x: b.op("hard_sigmoid", x, alpha=a, beta=bt)
    if n == "affine":
        return lambda x: b.op("add", b.op("mul", x, scalar(b, a, like)), scalar(b, bt, like))
    if n == "scaledtanh":
        return lambda x: b.op("mul", b.op("tanh", b.op("mul", x, scalar(b, bt, like))), scalar(b, a, like))
    if n == "thresholdedrelu":
        return lambda x: b.op("where", b.op("greater", x, scalar(b, a, like)), x, scalar(b, 0.0, like))
    if n == "softsign":
        return lambda x: b.op("div", x, b.op("add", b.op("abs", x), scalar(b, 1.0, like)))
    raise GradientError(f"recurrent activation {name!r} has no gradient rule")


def _activations(b: Builder, op: Op, dirs: int, like: Value) -> list[Callable[[Value], Value]]:
    """The op's activations bound to alpha/beta, consumed in order like the reference does."""
    a = op.attrs
    names = a["activations"] or _DEFAULT_ACTS[op.opname] * dirs
    alphas, betas = a["activation_alpha"] or (), a["activation_beta"] or ()
    fns, ia, ib = [], 0, 0
    for name in names:
        _, al, be, n = _ACTS[name.lower()]
        if n >= 1 and ia < len(alphas):
            al, ia = alphas[ia], ia + 1
        if n >= 2 and ib < len(betas):
            be, ib = betas[ib], ib + 1
        fns.append(_activation(b, name, float(al), float(be), like))
    return fns


# -- the unrolled recurrence ---------------------------------------------------------------------

def _unroll(b: Builder, op: Op) -> list[Value]:
    """The op's results recomputed step by step with primitive ops (same types as op.results)."""
    kind, a = op.opname, op.attrs
    x, w, r = op.operands[:3]
    bias, lens, h0 = _given(op, 3), _given(op, 4), _given(op, 5)
    c0, peep = (_given(op, 6), _given(op, 7)) if kind == "lstm" else (None, None)
    layout = a["layout"]
    if layout:
        x = b.op("transpose", x, perm=[1, 0, 2])
        h0 = None if h0 is None else b.op("transpose", h0, perm=[1, 0, 2])
        c0 = None if c0 is None else b.op("transpose", c0, perm=[1, 0, 2])
    seq, batch, width = shape_of(x)
    dirs, gh, _ = shape_of(w)
    hs = a["hidden_size"]
    fns = _activations(b, op, dirs, x)
    per = len(_DEFAULT_ACTS[kind])
    clip = a["clip"]
    cl = (lambda v: v) if clip is None else (lambda v: b.op("clip", v, min=-float(clip), max=float(clip)))
    lbr = kind == "gru" and a["linear_before_reset"]
    x2 = reshape(b, x, [seq * batch, width])
    ys, finals_h, finals_c = [], [], []
    for d in range(dirs):
        f = fns[d * per:(d + 1) * per]
        wd, rT = _row(b, w, d), b.op("transpose", _row(b, r, d), perm=[1, 0])
        rbh = None
        if bias is not None:
            bd = _row(b, bias, d)
            wb, rb = _take(b, bd, 0, 0, gh), _take(b, bd, 0, gh, 2 * gh)
            if lbr:  # the recurrent bias of the h gate is applied inside the reset product
                rbh = _take(b, rb, 0, 2 * hs, 3 * hs)
                rb = b.op("concat", _take(b, rb, 0, 0, 2 * hs), zeros(b, (hs,), x), axis=0)
            xw = b.op("gemm", x2, wd, b.op("add", wb, rb), trans_b=1)
        else:
            xw = b.op("gemm", x2, wd, trans_b=1)
        xws = _steps(b, reshape(b, xw, [seq, batch, gh]), 0)
        h = zeros(b, (batch, hs), x) if h0 is None else _row(b, h0, d)
        c = None
        if kind == "lstm":
            c = zeros(b, (batch, hs), x) if c0 is None else _row(b, c0, d)
            if peep is not None:
                pd = _row(b, peep, d)
                pi, po, pf = (_take(b, pd, 0, k * hs, (k + 1) * hs) for k in range(3))
        h_zero = h0 is None  # skip the recurrent matmul of a known-zero state
        out: list[Value | None] = [None] * seq
        reverse = a["direction"] == "reverse" or d == 1
        for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
            xt = reshape(b, xws[t], [batch, gh])
            full = not (h_zero or (kind == "gru" and not lbr))  # gru: z, r and h use h differently
            hr = b.op("matmul", h, rT) if full else None
            if kind == "rnn":
                new = [f[0](cl(xt if hr is None else b.op("add", xt, hr)))]
            elif kind == "gru":
                xz, xr, xh = b.op("split", xt, axis=1, sizes=[hs] * 3, n_results=3)
                if h_zero:
                    z, rg = f[0](cl(xz)), f[0](cl(xr))
                    hh = f[1](cl(xh if rbh is None else b.op("add", xh, b.op("mul", rg, rbh))))
                else:
                    if lbr:
                        hz, hr_, hh_ = b.op("split", hr, axis=1, sizes=[hs] * 3, n_results=3)
                        if rbh is not None:
                            hh_ = b.op("add", hh_, rbh)
                    else:
                        hz, hr_ = b.op("split", b.op("matmul", h, _take(b, rT, 1, 0, 2 * hs)), axis=1,
                                       sizes=[hs] * 2, n_results=2)
                    z, rg = f[0](cl(b.op("add", xz, hz))), f[0](cl(b.op("add", xr, hr_)))
                    if lbr:
                        inner = b.op("mul", rg, hh_)
                    else:
                        inner = b.op("matmul", b.op("mul", rg, h), _take(b, rT, 1, 2 * hs, 3 * hs))
                    hh = f[1](cl(b.op("add", xh, inner)))
                new = [b.op("add", hh, b.op("mul", z, b.op("sub", h, hh)))]  # (1-z)*hh + z*h
            else:
                gts = xt if hr is None else b.op("add", xt, hr)
                gi, go, gf, gc = b.op("split", gts, axis=1, sizes=[hs] * 4, n_results=4)
                if peep is not None:
                    gi, gf = b.op("add", gi, b.op("mul", pi, c)), b.op("add", gf, b.op("mul", pf, c))
                i = f[0](cl(gi))
                fg = b.op("sub", scalar(b, 1.0, x), i) if a["input_forget"] else f[0](cl(gf))
                c_new = b.op("add", b.op("mul", fg, c), b.op("mul", i, f[1](cl(gc))))
                if peep is not None:
                    go = b.op("add", go, b.op("mul", po, c_new))
                o = f[0](cl(go))
                new = [b.op("mul", o, f[2](c_new)), c_new]
            if lens is not None:  # past a sequence's end: keep the state, output zeros
                valid = reshape(b, b.op("less", b.const(np.array(t, lens.dtype.numpy), name="t"), lens),
                                [batch, 1])
                old = [h] if kind != "lstm" else [h, c]
                new = [b.op("where", valid, n, o_) for n, o_ in zip(new, old)]
                out[t] = b.op("where", valid, new[0], scalar(b, 0.0, x))
            else:
                out[t] = new[0]
            h, h_zero = new[0], False
            if kind == "lstm":
                c = new[1]
        ys.append(reshape(b, b.op("concat", *[reshape(b, o, [1, batch, hs]) for o in out], axis=0),
                          [seq, 1, batch, hs]))
        finals_h.append(reshape(b, h, [1, batch, hs]))
        if c is not None:
            finals_c.append(reshape(b, c, [1, batch, hs]))

    def cat(vs: list[Value], axis: int) -> Value:
        return vs[0] if len(vs) == 1 else b.op("concat", *vs, axis=axis)

    y = cat(ys, 1)
    results = [y, cat(finals_h, 0)] + ([cat(finals_c, 0)] if kind == "lstm" else [])
    if layout:
        results = [b.op("transpose", y, perm=[2, 0, 1, 3])] + [b.op("transpose", s, perm=[1, 0, 2])
                                                              for s in results[1:]]
    return results


@register_vjp("rnn", "gru", "lstm")
def _recurrent(b, op, cts):
    return _grad_through(b, op, _unroll(b, op), cts)


# -- linear attention ----------------------------------------------------------------------------

def _heads(b: Builder, v: Value, heads: int) -> Value:
    """[B, T, H*D] -> [B, H, T, D]."""
    bsz, t, hd = shape_of(v)
    return b.op("transpose", reshape(b, v, [bsz, t, heads, hd // heads]), perm=[0, 2, 1, 3])


def _linear_attention_unroll(b: Builder, op: Op) -> list[Value]:
    """The recurrence of ``linear_attention`` step by step, in the operands' precision (the
    reference runs it in float32; float16/bfloat16 operands are widened to float32 likewise)."""
    a = op.attrs
    q, k, v = op.operands[:3]
    state, decay, beta = _given(op, 3), _given(op, 4), _given(op, 5)
    hq, hkv = a["q_num_heads"], a["kv_num_heads"]
    bsz, t, _ = shape_of(q)
    dk, dv = shape_of(q)[2] // hq, shape_of(v)[2] // hkv
    rep = hq // hkv
    wide = q.dtype.name not in ("f32", "f64")

    def up(x: Value) -> Value:
        return b.op("cast", x, to="f32") if wide and x.dtype.name != "f32" else x

    Q, K, V = _heads(b, up(q), hq), _heads(b, up(k), hkv), _heads(b, up(v), hkv)
    like = Q
    S = zeros(b, (bsz, hkv, dk, dv), like) if state is None else up(state)
    if decay is not None:  # [B, Hkv, T, 1 or dk]
        G = b.op("exp", _heads(b, up(decay), hkv))
    if beta is not None:  # [B, Hkv or 1, T, 1]
        Bt = _heads(b, up(beta), shape_of(beta)[2])
    sc = scalar(b, a["scale"] if a["scale"] else 1 / np.sqrt(dk), like)
    Qs, Ks, Vs = _steps(b, Q, 2), _steps(b, K, 2), _steps(b, V, 2)
    Gs = _steps(b, G, 2) if decay is not None else None
    Bs = _steps(b, Bt, 2) if beta is not None else None
    outs = []
    for i in range(t):
        kt, vt = Ks[i], Vs[i]  # [B, Hkv, 1, dk], [B, Hkv, 1, dv]
        if Gs is not None:
            S = b.op("mul", S, reshape(b, Gs[i], [bsz, hkv, shape_of(Gs[i])[3], 1]))
        if Bs is not None:
            vt = b.op("mul", Bs[i], b.op("sub", vt, b.op("matmul", kt, S)))
        S = b.op("add", S, b.op("mul", reshape(b, kt, [bsz, hkv, dk, 1]), vt))
        qi = reshape(b, Qs[i], [bsz, hkv, rep, dk])  # head h reads state h // rep
        outs.append(reshape(b, b.op("matmul", qi, S), [bsz, hq, 1, dv]))
    y = outs[0] if t == 1 else b.op("concat", *outs, axis=2)
    y = reshape(b, b.op("transpose", b.op("mul", y, sc), perm=[0, 2, 1, 3]), [bsz, t, hq * dv])
    res = [y, S]
    return [r if r.dtype == want.dtype else b.op("cast", r, to=want.dtype) for r, want in zip(res, op.results)]


@register_vjp("linear_attention")
def _linear_attention(b, op, cts):
    return _grad_through(b, op, _linear_attention_unroll(b, op), cts)

"""Sequence ops: the recurrent layers ``rnn``, ``gru`` and ``lstm`` (one op each, the time loop
inside), the stateful depthwise ``causal_conv_with_state``, and the n-gram counter
``tfidf_vectorizer``.

Recurrent ops keep ONNX's conventions (gate order, weight layout [dirs, gates*hidden, input],
``layout`` 0 = [seq, batch, ...] / 1 = [batch, seq, ...]) so backends can map them to fused cell
kernels. Optional operands in the middle of a schema: an operand with zero elements stands for an
absent input (no ``sequence_lens`` while ``initial_h`` is given, say).
"""

from __future__ import annotations

from functools import partial
from typing import Callable

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, INT_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, defop
from ..shape_rules import check_dtype, require_rank, same_dtype
from ..types import UNKNOWN, TensorType
from .attention import present

# -- activations named by ONNX recurrent ops ------------------------------------------------------

def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1 / (1 + np.exp(-x))


# name -> (function of (x, alpha, beta), default alpha, default beta, how many of alpha/beta it takes)
_ACTS: dict[str, tuple[Callable[..., np.ndarray], float, float, int]] = {
    "relu": (lambda x, a, b: np.maximum(x, 0), 0, 0, 0),
    "tanh": (lambda x, a, b: np.tanh(x), 0, 0, 0),
    "sigmoid": (lambda x, a, b: _sigmoid(x), 0, 0, 0),
    "affine": (lambda x, a, b: a * x + b, 1.0, 0.0, 2),
    "leakyrelu": (lambda x, a, b: np.where(x >= 0, x, a * x), 0.01, 0, 1),
    "thresholdedrelu": (lambda x, a, b: np.where(x > a, x, 0), 1.0, 0, 1),
    "scaledtanh": (lambda x, a, b: a * np.tanh(b * x), 1.0, 1.0, 2),
    "hardsigmoid": (lambda x, a, b: np.clip(a * x + b, 0, 1), 0.2, 0.5, 2),
    "elu": (lambda x, a, b: np.where(x >= 0, x, a * (np.exp(x) - 1)), 1.0, 0, 1),
    "softsign": (lambda x, a, b: x / (1 + np.abs(x)), 0, 0, 0),
    "softplus": (lambda x, a, b: np.log1p(np.exp(x)), 0, 0, 0),
}
ACTIVATIONS = frozenset(_ACTS)


def _apply(fn: Callable[..., np.ndarray], a: np.generic, b: np.generic, x: np.ndarray) -> np.ndarray:
    return fn(x, a, b).astype(x.dtype)


def _activation_fns(names: tuple[str, ...], alphas: tuple[float, ...], betas: tuple[float, ...],
                    dtype: np.dtype) -> list[Callable[[np.ndarray], np.ndarray]]:
    """Bind each activation to its alpha/beta; the lists are consumed in order by the activations
    that take parameters (the onnxruntime convention)."""
    fns, ia, ib = [], 0, 0
    for name in names:
        fn, a, b, n = _ACTS[name.lower()]
        if n >= 1 and ia < len(alphas):
            a, ia = alphas[ia], ia + 1
        if n >= 2 and ib < len(betas):
            b, ib = betas[ib], ib + 1
        fns.append(partial(_apply, fn, dtype.type(a), dtype.type(b)))
    return fns


_RNN_ATTRS = {
    "hidden_size": AttrSpec(AttrKind.INT),
    "direction": AttrSpec(AttrKind.STR, "forward", ("forward", "reverse", "bidirectional")),
    "activations": AttrSpec(AttrKind.STRS, None),
    "activation_alpha": AttrSpec(AttrKind.FLOATS, ()),
    "activation_beta": AttrSpec(AttrKind.FLOATS, ()),
    "clip": AttrSpec(AttrKind.FLOAT, None),
    "layout": AttrSpec(AttrKind.INT, 0),
}
_DEFAULT_ACTS = {"rnn": ("Tanh",), "gru": ("Sigmoid", "Tanh"), "lstm": ("Sigmoid", "Tanh", "Tanh")}


def _rnn_infer(kind: str, n_results: int):
    def infer(ctx: InferContext) -> list[TensorType]:
        dt = same_dtype(ctx, 0, 1, 2)
        check_dtype(ctx, 0, FLOAT_TYPES)
        x = require_rank(ctx, 0, 3)
        require_rank(ctx, 1, 3)
        require_rank(ctx, 2, 3)
        a = ctx.attrs
        dirs = 2 if a["direction"] == "bidirectional" else 1
        acts = a["activations"]
        if acts is not None:
            per = len(_DEFAULT_ACTS[kind])
            if len(acts) != per * dirs:
                raise ctx.fail(f"{len(acts)} activations given, {kind} {a['direction']} takes {per * dirs}")
            bad = [n for n in acts if n.lower() not in ACTIVATIONS]
            if bad:
                raise ctx.fail(f"unknown activation(s) {bad}; supported: {sorted(ACTIVATIONS)}")
        if len(ctx.types) > 4 and ctx.types[4].shape != (0,):
            check_dtype(ctx, 4, INT_TYPES)
        h = a["hidden_size"]
        s, b = (UNKNOWN, UNKNOWN) if x is None else ((x[0], x[1]) if a["layout"] == 0 else (x[1], x[0]))
        if a["layout"] == 0:
            y, yh = (s, dirs, b, h), (dirs, b, h)
        else:
            y, yh = (b, s, dirs, h), (b, dirs, h)
        return [TensorType(dt, y)] + [TensorType(dt, yh)] * (n_results - 1)
    return infer


def _run_direction(step, x: np.ndarray, lens: np.ndarray, state: tuple[np.ndarray, ...],
                   reverse: bool) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
    """Run ``step(x_t, state) -> state`` over time (state[0] is h); steps past a batch entry's
    sequence length keep its state and output zeros."""
    seq = x.shape[0]
    ys = np.zeros((seq,) + state[0].shape, dtype=x.dtype)
    for t in (range(seq - 1, -1, -1) if reverse else range(seq)):
        valid = (t < lens)[:, None]
        new = step(x[t], state)
        state = tuple(np.where(valid, n, o) for n, o in zip(new, state))
        ys[t] = np.where(valid, state[0], 0)
    return ys, state


def _recurrent(kind: str, gates: int, cell):
    """The reference for rnn/gru/lstm: layouts, directions, defaults; ``cell`` builds one step."""
    def ref(x, w, r, b=None, seq_lens=None, h0=None, c0=None, p=None, *, hidden_size, direction,
            activations, activation_alpha, activation_beta, clip, layout, **extra):
        b, seq_lens, h0, c0, p = (present(v) for v in (b, seq_lens, h0, c0, p))
        dt = x.dtype
        if layout:
            x = x.swapaxes(0, 1)
            h0 = None if h0 is None else h0.swapaxes(0, 1)
            c0 = None if c0 is None else c0.swapaxes(0, 1)
        seq, batch = x.shape[:2]
        dirs = w.shape[0]
        hs = hidden_size
        names = activations or _DEFAULT_ACTS[kind] * dirs
        fns = _activation_fns(names, activation_alpha, activation_beta, dt)
        per = len(_DEFAULT_ACTS[kind])
        lens = np.full(batch, seq) if seq_lens is None else seq_lens.astype(np.int64)
        ys, finals = [], []
        for d in range(dirs):
            bias = np.zeros(2 * gates * hs, dt) if b is None else b[d]
            state = [np.zeros((batch, hs), dt) if h0 is None else h0[d]]
            if kind == "lstm":
                state.append(np.zeros((batch, hs), dt) if c0 is None else c0[d])
            peep = None if p is None else p[d]
            step = cell(w[d], r[d], bias, peep, fns[d * per:(d + 1) * per], clip, hs, extra)
            reverse = direction == "reverse" or d == 1
            y, st = _run_direction(step, x, lens, tuple(state), reverse)
            ys.append(y)
            finals.append(st)
        y = np.stack(ys, axis=1).astype(dt)  # [seq, dirs, batch, hidden]
        outs = [np.stack([f[i] for f in finals]).astype(dt) for i in range(len(finals[0]))]
        if layout:
            y = y.transpose(2, 0, 1, 3)
            outs = [o.swapaxes(0, 1) for o in outs]
        return (y, *outs)
    return ref


def _clipper(clip: float | None):
    return (lambda v: v) if clip is None else (lambda v: np.clip(v, -clip, clip))


def _rnn_cell(w, r, bias, peep, fns, clip, hs, extra):
    f, cl = fns[0], _clipper(clip)
    wb = bias[:hs] + bias[hs:]
    return lambda xt, st: (f(cl(xt @ w.T + st[0] @ r.T + wb)),)


def _gru_cell(w, r, bias, peep, fns, clip, hs, extra):
    f, g, cl = fns[0], fns[1], _clipper(clip)
    wz, wr, wh = np.split(w, 3)
    rz, rr, rh = np.split(r, 3)
    wbz, wbr, wbh, rbz, rbr, rbh = np.split(bias, 6)
    lbr = extra["linear_before_reset"]

    def step(xt, st):
        h = st[0]
        z = f(cl(xt @ wz.T + h @ rz.T + wbz + rbz))
        rg = f(cl(xt @ wr.T + h @ rr.T + wbr + rbr))
        if lbr:
            hh = g(cl(xt @ wh.T + rg * (h @ rh.T + rbh) + wbh))
        else:
            hh = g(cl(xt @ wh.T + (rg * h) @ rh.T + rbh + wbh))
        return ((1 - z) * hh + z * h,)
    return step


def _lstm_cell(w, r, bias, peep, fns, clip, hs, extra):
    f, g, hfn, cl = fns[0], fns[1], fns[2], _clipper(clip)
    wb = bias[: 4 * hs] + bias[4 * hs:]
    pi, po, pf = (np.zeros(hs, w.dtype),) * 3 if peep is None else np.split(peep, 3)
    coupled = extra["input_forget"]

    def step(xt, st):
        h, c = st
        gates = xt @ w.T + h @ r.T + wb
        gi, go, gf, gc = np.split(gates, 4, axis=-1)  # ONNX gate order: i, o, f, c
        i = f(cl(gi + pi * c))
        fg = 1 - i if coupled else f(cl(gf + pf * c))
        c_new = fg * c + i * g(cl(gc))
        o = f(cl(go + po * c_new))
        return o * hfn(c_new), c_new
    return step


_RNN_OPERANDS = ("x", "w", "r", "b?", "seq_lens?", "h0?")
_DOC = ("{kind} over x ([seq,batch,input], or [batch,seq,input] with layout=1); w [dirs,{g}*hidden,input], "
        "r [dirs,{g}*hidden,hidden], b [dirs,{b}*hidden]; results y [seq,dirs,batch,hidden] and the "
        "final state(s) [dirs,batch,hidden] (batch-major with layout=1)")
defop("rnn", operands=_RNN_OPERANDS, results=("y", "y_h"), attrs=dict(_RNN_ATTRS),
      infer=_rnn_infer("rnn", 2), reference=_recurrent("rnn", 1, _rnn_cell),
      doc=_DOC.format(kind="Elman RNN", g=1, b=2))
defop("gru", operands=_RNN_OPERANDS, results=("y", "y_h"),
      attrs={**_RNN_ATTRS, "linear_before_reset": AttrSpec(AttrKind.INT, 0)},
      infer=_rnn_infer("gru", 2), reference=_recurrent("gru", 3, _gru_cell),
      doc=_DOC.format(kind="GRU (gates z, r, h)", g=3, b=6))
defop("lstm", operands=_RNN_OPERANDS + ("c0?", "p?"), results=("y", "y_h", "y_c"),
      attrs={**_RNN_ATTRS, "input_forget": AttrSpec(AttrKind.INT, 0)},
      infer=_rnn_infer("lstm", 3), reference=_recurrent("lstm", 4, _lstm_cell),
      doc=_DOC.format(kind="LSTM (gates i, o, f, c; peepholes p [dirs,3*hidden])", g=4, b=8))


# -- causal depthwise conv with carried state -----------------------------------------------------

def _causal_conv_infer(ctx: InferContext) -> list[TensorType]:
    dt = same_dtype(ctx, 0, 1)
    check_dtype(ctx, 0, FLOAT_TYPES)
    x = require_rank(ctx, 0, 3)
    w = require_rank(ctx, 1, 3)
    k = UNKNOWN if w is None or not isinstance(w[2], int) else w[2] - 1
    b, c = (UNKNOWN, UNKNOWN) if x is None else (x[0], x[1])
    return [TensorType(dt, x), TensorType(dt, (b, c, k))]


def _causal_conv(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None = None,
                 past_state: np.ndarray | None = None, *, activation: str):
    bias, past_state = present(bias), present(past_state)
    bsz, ch, length = x.shape
    k = w.shape[2]
    pad = np.zeros((bsz, ch, k - 1), x.dtype) if past_state is None else past_state
    padded = np.concatenate([pad, x], axis=2)
    acc = np.zeros((bsz, ch, length), np.float64)
    for j in range(k):
        acc += w[None, :, 0, j, None].astype(np.float64) * padded[:, :, j:j + length]
    if bias is not None:
        acc += bias[None, :, None]
    y = acc.astype(x.dtype)
    if activation in ("silu", "swish"):
        y32 = y.astype(np.float32)
        y = (y32 / (1 + np.exp(-y32))).astype(x.dtype)
    return y, padded[:, :, padded.shape[2] - (k - 1):]


defop("causal_conv_with_state", operands=("x", "w", "bias?", "past_state?"), results=("y", "present_state"),
      attrs={"activation": AttrSpec(AttrKind.STR, "none", ("none", "silu", "swish"))},
      infer=_causal_conv_infer, reference=_causal_conv,
      doc="depthwise causal 1-D conv of x [B,C,L] with w [C,1,K], left-padded by past_state [B,C,K-1] "
          "(zeros if absent); optional silu; present_state is the last K-1 padded inputs")


# -- TF-IDF n-gram counting -----------------------------------------------------------------------

def _tfidf_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, {DType.i32, DType.i64})
    x = require_rank(ctx, 0, 1, 2)
    a = ctx.attrs
    if not a["ngram_indexes"] or len(a["ngram_counts"]) == 0:
        raise ctx.fail("ngram_indexes and ngram_counts must not be empty")
    if not 1 <= a["min_gram_length"] <= a["max_gram_length"]:
        raise ctx.fail("need 1 <= min_gram_length <= max_gram_length")
    n = max(a["ngram_indexes"]) + 1
    shape = None if x is None else ((n,) if len(x) == 1 else (x[0], n))
    return [TensorType(DType.f32, shape)]


def _ngram_table(pool: tuple[int, ...], counts: tuple[int, ...], indexes: tuple[int, ...]) -> dict:
    """(n-gram tuple) -> output index; pool[counts[i]:counts[i+1]] holds the (i+1)-grams."""
    table, k = {}, 0
    bounds = list(counts) + [len(pool)]
    for i in range(len(counts)):
        n = i + 1
        for s in range(bounds[i], bounds[i + 1], n):
            table[tuple(pool[s:s + n])] = indexes[k]
            k += 1
    return table


def _tfidf(x: np.ndarray, *, mode: str, min_gram_length: int, max_gram_length: int, max_skip_count: int,
           ngram_counts: tuple[int, ...], ngram_indexes: tuple[int, ...], pool_int64s: tuple[int, ...],
           weights: tuple[float, ...]) -> np.ndarray:
    table = _ngram_table(pool_int64s, ngram_counts, ngram_indexes)
    rows = x.reshape(1, -1) if x.ndim == 1 else x
    width = max(ngram_indexes) + 1
    freq = np.zeros((rows.shape[0], width), np.int64)
    for r, row in enumerate(rows.tolist()):
        for n in range(min_gram_length, max_gram_length + 1):
            # a unigram is counted once, longer n-grams once per skip distance
            for dist in (range(1, 2) if n == 1 else range(1, max_skip_count + 2)):
                for s in range(len(row) - dist * (n - 1)):
                    idx = table.get(tuple(row[s:s + dist * (n - 1) + 1:dist]))
                    if idx is not None:
                        freq[r, idx] += 1
    w = np.asarray(weights, np.float32) if weights else np.ones(width, np.float32)
    if mode == "TF":
        out = freq.astype(np.float32)
    elif mode == "IDF":
        out = np.where(freq > 0, w, 0).astype(np.float32)
    else:
        out = (freq * w).astype(np.float32)
    return out.reshape(width) if x.ndim == 1 else out


defop("tfidf_vectorizer", operands=("x",),
      attrs={"mode": AttrSpec(AttrKind.STR, "TF", ("TF", "IDF", "TFIDF")),
             "min_gram_length": AttrSpec(AttrKind.INT), "max_gram_length": AttrSpec(AttrKind.INT),
             "max_skip_count": AttrSpec(AttrKind.INT), "ngram_counts": AttrSpec(AttrKind.INTS),
             "ngram_indexes": AttrSpec(AttrKind.INTS), "pool_int64s": AttrSpec(AttrKind.INTS),
             "weights": AttrSpec(AttrKind.FLOATS, ())},
      infer=_tfidf_infer, reference=_tfidf, vjp=NOT_DIFFERENTIABLE,
      doc="count the pool's n-grams (with skips) in each row of integer tokens x [C] or [B,C]; "
          "TF counts, IDF weight-if-present, or TFIDF count*weight, at the n-gram's output index")

"""Attention-shaped ops: scaled dot-product ``attention`` (multi-head, grouped-query, masks, causal
and sliding windows, KV cache, softcap), ``rotary_embedding`` and recurrent ``linear_attention``.

They stay single high-level ops because backends fuse the two matmuls and the softmax between them
(flash-attention style) and keep the KV cache in place; decomposing them would hide that.

Optional operands in the middle of a schema: an operand with zero elements stands for an absent
input (``mask`` absent while ``past_key`` is given, say); only trailing absent inputs are omitted.
"""

from __future__ import annotations

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, DType
from ..registry import InferContext, defop
from ..shape_rules import check_dtype, require_rank, same_dtype
from ..types import UNKNOWN, Dim, TensorType
from .indexing import checked_indices


def present(a: np.ndarray | None) -> np.ndarray | None:
    """``a``, or None when it is missing or the zero-element stand-in for an absent input."""
    return None if a is None or a.size == 0 else a


def _given(ctx: InferContext, i: int) -> TensorType | None:
    if i >= len(ctx.types):
        return None
    t = ctx.types[i]
    return None if t.shape is not None and 0 in t.shape else t


def dim_div(a: Dim, b: int) -> Dim:
    return a // b if isinstance(a, int) else UNKNOWN


def dim_add(a: Dim, b: Dim) -> Dim:
    if isinstance(a, int) and isinstance(b, int):
        return a + b
    if a == 0:
        return b
    if b == 0:
        return a
    return UNKNOWN


def _dim(shape: tuple[Dim, ...] | None, i: int) -> Dim:
    return UNKNOWN if shape is None else shape[i]


# -- attention ------------------------------------------------------------------------------------

def _heads(t: TensorType, heads: int) -> tuple[Dim, Dim, Dim, Dim]:
    """(batch, heads, seq, head_size) of a 3-D [B, S, H*D] or 4-D [B, H, S, D] operand."""
    s = t.shape
    if s is None:
        return UNKNOWN, heads or UNKNOWN, UNKNOWN, UNKNOWN
    if len(s) == 3:
        return s[0], heads, s[1], dim_div(s[2], heads)
    return s[0], s[1], s[2], s[3]


def _attention_infer(ctx: InferContext) -> list[TensorType]:
    dt = same_dtype(ctx, 0, 1, 2)
    check_dtype(ctx, 0, FLOAT_TYPES)
    ranks = {t.rank for t in ctx.types[:3]} - {None}
    if len(ranks) > 1 or ranks - {3, 4}:
        raise ctx.fail("q, k and v must all be 3-D [B,S,H*D] or all 4-D [B,H,S,D]")
    rank = ranks.pop() if ranks else None
    a = ctx.attrs
    if rank == 3 and (a["q_num_heads"] <= 0 or a["kv_num_heads"] <= 0):
        raise ctx.fail("3-D inputs need q_num_heads and kv_num_heads")
    b, hq, sq, _ = _heads(ctx.types[0], a["q_num_heads"])
    _, hkv, skv, dk = _heads(ctx.types[1], a["kv_num_heads"])
    _, _, _, dv = _heads(ctx.types[2], a["kv_num_heads"])
    past_k, past_v = _given(ctx, 4), _given(ctx, 5)
    total = skv
    if past_k is not None:
        require_rank(ctx, 4, 4)
        total = dim_add(_dim(past_k.shape, 2), skv)
    y_shape: tuple[Dim, ...] | None
    if rank == 3:
        y_shape = (b, sq, hq * dv if isinstance(dv, int) else UNKNOWN)
    elif rank == 4:
        y_shape = (b, hq, sq, dv)
    else:
        y_shape = None
    pv_total = total if past_v is None else dim_add(_dim(past_v.shape, 2), skv)
    return [TensorType(dt, y_shape), TensorType(dt, (b, hkv, total, dk)),
            TensorType(dt, (b, hkv, pv_total, dv)), TensorType(dt, (b, hq, sq, total))]


def _to_heads(x: np.ndarray, heads: int) -> np.ndarray:
    if x.ndim == 4:
        return x
    b, s, hd = x.shape
    return x.reshape(b, s, heads, hd // heads).transpose(0, 2, 1, 3)


def _neg_inf_where(allowed: np.ndarray, dtype: np.dtype) -> np.ndarray:
    return np.where(allowed, dtype.type(0), dtype.type(-np.inf))


def _softmax_masked(x: np.ndarray) -> np.ndarray:
    """Softmax over the last axis; a row of only -inf gives zeros rather than NaN."""
    m = np.max(x, axis=-1, keepdims=True)
    m = np.where(np.isneginf(m), np.zeros((), x.dtype), m)
    e = np.exp(x - m)
    s = np.sum(e, axis=-1, keepdims=True)
    return e / np.where(s == 0, np.ones((), x.dtype), s)


def _attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, mask: np.ndarray | None = None,
               past_key: np.ndarray | None = None, past_value: np.ndarray | None = None,
               nonpad_kv_seqlen: np.ndarray | None = None, *, scale: float | None, is_causal: int,
               q_num_heads: int, kv_num_heads: int, softcap: float, qk_matmul_output_mode: int,
               softmax_precision: DType | None, left_window: int, right_window: int):
    dt = q.dtype
    mask, past_key, past_value = present(mask), present(past_key), present(past_value)
    nonpad = present(nonpad_kv_seqlen)
    rank = q.ndim
    Q, K, V = _to_heads(q, q_num_heads), _to_heads(k, kv_num_heads), _to_heads(v, kv_num_heads)
    if scale is None:
        scale = 1 / np.sqrt(Q.shape[3])
    # scale both factors by sqrt(scale), in the input precision, as the ONNX function body does
    s = dt.type(np.sqrt(scale))
    if past_key is not None:
        K = np.concatenate((past_key, K), axis=2)
    if past_value is not None:
        V = np.concatenate((past_value, V), axis=2)
    present_k, present_v = K, V
    sq, skv = Q.shape[2], K.shape[2]
    # the additive bias: user mask (padded with "masked" to the full kv length), causal, window
    bias = np.zeros((sq, skv), dtype=dt)
    if mask is not None:
        pad = skv - mask.shape[-1]
        if pad > 0:
            fill = False if mask.dtype == np.bool_ else -np.inf
            mask = np.pad(mask, [(0, 0)] * (mask.ndim - 1) + [(0, pad)], constant_values=fill)
        bias = bias + (_neg_inf_where(mask, dt) if mask.dtype == np.bool_ else mask.astype(dt))
    # query i (in this block) sits at absolute position i + offset
    if past_key is not None:
        offset: np.ndarray | int = past_key.shape[2]
    elif nonpad is not None:
        offset = (nonpad.reshape(-1) - sq).reshape(-1, 1, 1, 1)
    else:
        offset = 0
    diff = np.arange(sq).reshape(sq, 1) + offset - np.arange(skv).reshape(1, skv)
    if is_causal:
        bias = bias + _neg_inf_where(diff >= 0, dt)
    if left_window >= 0 or right_window >= 0:
        allowed = np.ones(np.shape(diff), dtype=bool)
        if left_window >= 0:
            allowed &= diff <= left_window
        if right_window >= 0:
            allowed &= -diff <= right_window
        bias = bias + _neg_inf_where(allowed, dt)
    if nonpad is not None:
        keep = np.arange(skv) < nonpad.reshape(-1, 1)
        bias = bias + _neg_inf_where(keep, dt).reshape(-1, 1, 1, skv)
    hq, hkv = Q.shape[1], K.shape[1]
    if hq != hkv:  # grouped-query attention: each kv head serves hq / hkv consecutive q heads
        K, V = np.repeat(K, hq // hkv, axis=1), np.repeat(V, hq // hkv, axis=1)
    qk = np.matmul(Q * s, np.swapaxes(K, 2, 3) * s).astype(dt)
    if softcap > 0:
        qk = (np.tanh(qk / dt.type(softcap)) * dt.type(softcap)).astype(dt)
    scores = (qk + bias).astype(dt)
    qk_out = scores if qk_matmul_output_mode == 2 else qk
    if softmax_precision is not None:
        scores = scores.astype(softmax_precision.numpy)
    p = _softmax_masked(scores)
    # a row whose bias masks every key attends to nothing: zero, decided on the bias not the logits
    dead = np.isneginf(np.max(bias, axis=-1, keepdims=True))
    p = np.where(dead, np.zeros((), p.dtype), p)
    if qk_matmul_output_mode == 3:
        qk_out = p
    p = p.astype(dt)
    y = np.matmul(p, V).astype(dt)
    if rank == 3:
        y = y.transpose(0, 2, 1, 3).reshape(y.shape[0], y.shape[2], -1)
    qk_out = np.broadcast_to(qk_out, Q.shape[:3] + (skv,)).astype(dt)
    return y, present_k.astype(dt), present_v.astype(dt), qk_out


defop("attention", operands=("q", "k", "v", "mask?", "past_key?", "past_value?", "nonpad_kv_seqlen?"),
      results=("y", "present_key", "present_value", "qk"),
      attrs={"scale": AttrSpec(AttrKind.FLOAT, None), "is_causal": AttrSpec(AttrKind.INT, 0),
             "q_num_heads": AttrSpec(AttrKind.INT, 0), "kv_num_heads": AttrSpec(AttrKind.INT, 0),
             "softcap": AttrSpec(AttrKind.FLOAT, 0.0), "qk_matmul_output_mode": AttrSpec(AttrKind.INT, 0),
             "softmax_precision": AttrSpec(AttrKind.DTYPE, None),
             "left_window": AttrSpec(AttrKind.INT, -1), "right_window": AttrSpec(AttrKind.INT, -1)},
      infer=_attention_infer, reference=_attention,
      doc="softmax(softcap(q k^T * scale) + bias) v over [B,H,S,D] heads (3-D [B,S,H*D] inputs with "
          "q_num_heads/kv_num_heads); bias = mask (bool or additive) + causal + sliding window + kv "
          "padding (nonpad_kv_seqlen); past_key/past_value are prepended to k/v and returned as "
          "present_key/present_value; ``qk`` is the raw scores (mode 0), softcapped, with bias (2) or "
          "the probabilities (3)")


# -- rotary embedding -----------------------------------------------------------------------------

def _rotary_infer(ctx: InferContext) -> list[TensorType]:
    dt = same_dtype(ctx, 0, 1, 2)
    check_dtype(ctx, 0, FLOAT_TYPES)
    x = require_rank(ctx, 0, 3, 4)
    if x is not None and len(x) == 3 and ctx.attrs["num_heads"] <= 0 and ctx.attrs["rotary_dim"] > 0:
        raise ctx.fail("3-D input with a partial rotary_dim needs num_heads")
    return [TensorType(dt, x)]


def _rotary(x: np.ndarray, cos: np.ndarray, sin: np.ndarray, position_ids: np.ndarray | None = None, *,
            interleaved: int, rotary_dim: int, num_heads: int) -> np.ndarray:
    # work in [B, S, H, D]
    xs = x.transpose(0, 2, 1, 3) if x.ndim == 4 else x
    b, s = xs.shape[:2]
    if x.ndim == 3:
        heads = num_heads or xs.shape[2] // (2 * cos.shape[-1])
        xs = xs.reshape(b, s, heads, -1)
    rd = rotary_dim or xs.shape[3]
    if position_ids is not None:
        ids = checked_indices(position_ids, cos.shape[0])
        cos, sin = cos[ids], sin[ids]
    cos, sin = cos[:, :, None, :], sin[:, :, None, :]
    rot = xs[..., :rd]
    x1, x2 = (rot[..., 0::2], rot[..., 1::2]) if interleaved else (rot[..., : rd // 2], rot[..., rd // 2:])
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    if interleaved:
        rot = np.stack((real, imag), axis=-1).reshape(rot.shape)
    else:
        rot = np.concatenate((real, imag), axis=-1)
    out = np.concatenate((rot, xs[..., rd:]), axis=-1)
    out = out.reshape(x.shape) if x.ndim == 3 else out.transpose(0, 2, 1, 3)
    return out.astype(x.dtype)


defop("rotary_embedding", operands=("x", "cos", "sin", "position_ids?"),
      attrs={"interleaved": AttrSpec(AttrKind.INT, 0), "rotary_dim": AttrSpec(AttrKind.INT, 0),
             "num_heads": AttrSpec(AttrKind.INT, 0)},
      infer=_rotary_infer, reference=_rotary,
      doc="rotate the first ``rotary_dim`` features of each head of x ([B,H,S,D] or [B,S,H*D]) by "
          "angles with the given cos/sin ([B,S,rd/2], or [max_pos,rd/2] indexed by position_ids); "
          "pairs are (i, i + rd/2), or adjacent when ``interleaved``")


# -- linear attention -----------------------------------------------------------------------------

_RULES = ("linear", "gated", "delta", "gated_delta")


def _linear_attention_infer(ctx: InferContext) -> list[TensorType]:
    dt = same_dtype(ctx, 0, 1, 2)
    check_dtype(ctx, 0, FLOAT_TYPES)
    for i in range(3):
        require_rank(ctx, i, 3)
    a = ctx.attrs
    hq, hkv = a["q_num_heads"], a["kv_num_heads"]
    if hq <= 0 or hkv <= 0 or hq % hkv:
        raise ctx.fail(f"q_num_heads ({hq}) must be a positive multiple of kv_num_heads ({hkv})")
    rule = a["update_rule"]
    gated, delta = rule in ("gated", "gated_delta"), rule in ("delta", "gated_delta")
    if gated != (_given(ctx, 4) is not None) or delta != (_given(ctx, 5) is not None):
        raise ctx.fail(f"update_rule {rule!r} needs {'a' if gated else 'no'} decay and "
                       f"{'a' if delta else 'no'} beta operand")
    q, v = ctx.types[0].shape, ctx.types[2].shape
    b, t = _dim(q, 0), _dim(q, 1)
    dk, dv = dim_div(_dim(q, 2), hq), dim_div(_dim(v, 2), hkv)
    state = _given(ctx, 3)
    y = TensorType(dt, (b, t, hq * dv if isinstance(dv, int) else UNKNOWN))
    return [y, TensorType(state.dtype if state is not None else dt, (b, hkv, dk, dv))]


def _linear_attention(q: np.ndarray, k: np.ndarray, v: np.ndarray, past_state: np.ndarray | None = None,
                      decay: np.ndarray | None = None, beta: np.ndarray | None = None, *,
                      q_num_heads: int, kv_num_heads: int, scale: float, update_rule: str):
    past_state, decay, beta = present(past_state), present(decay), present(beta)
    b, t, _ = q.shape
    hq, hkv = q_num_heads, kv_num_heads
    dk, dv = q.shape[2] // hq, v.shape[2] // hkv
    f32 = np.float32  # the recurrence runs in f32 whatever the input precision
    Q = _to_heads(q, hq).astype(f32)
    K = _to_heads(k, hkv).astype(f32)
    V = _to_heads(v, hkv).astype(f32)
    if decay is not None:  # per head [B,T,Hkv] or per key feature [B,T,Hkv*dk]
        g = decay.reshape(b, t, hkv, -1).transpose(0, 2, 1, 3).astype(f32)
    if beta is not None:  # per head [B,T,Hkv] or shared [B,T,1]
        bt = beta.reshape(b, t, beta.shape[2], 1).transpose(0, 2, 1, 3).astype(f32)
    state = np.zeros((b, hkv, dk, dv), f32) if past_state is None else past_state.astype(f32)
    sc = f32(scale if scale else 1 / np.sqrt(dk))
    out = np.zeros((b, hq, t, dv), f32)
    for i in range(t):
        kt, vt = K[:, :, i, :], V[:, :, i, :]
        if decay is not None:
            state = state * np.exp(g[:, :, i, :])[..., None]
        if beta is not None:
            vt = bt[:, :, i, :] * (vt - np.einsum("bhdm,bhd->bhm", state, kt))
        state = state + kt[..., :, None] * vt[..., None, :]
        read = state if hq == hkv else np.repeat(state, hq // hkv, axis=1)
        out[:, :, i, :] = sc * np.einsum("bhd,bhdm->bhm", Q[:, :, i, :], read)
    y = out.transpose(0, 2, 1, 3).reshape(b, t, hq * dv).astype(q.dtype)
    return y, state.astype(q.dtype if past_state is None else past_state.dtype)


defop("linear_attention", operands=("q", "k", "v", "past_state?", "decay?", "beta?"),
      results=("y", "present_state"),
      attrs={"q_num_heads": AttrSpec(AttrKind.INT), "kv_num_heads": AttrSpec(AttrKind.INT),
             "scale": AttrSpec(AttrKind.FLOAT, 0.0),
             "update_rule": AttrSpec(AttrKind.STR, "gated_delta", _RULES)},
      infer=_linear_attention_infer, reference=_linear_attention,
      doc="recurrent linear attention over [B,T,H*D] inputs with a [B,Hkv,dk,dv] state: per step "
          "S = S*exp(decay) (gated), v = beta*(v - S^T k) (delta), S += k v^T, y = scale * q S")

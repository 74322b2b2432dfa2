"""Gradient rules: ``attention``, ``rotary_embedding`` and ``einsum``.

Attention's backward is the flash-attention one written with matmuls: it needs the probabilities
P, which it takes from the op when the forward already returned them (``qk_matmul_output_mode`` 3)
and otherwise recomputes with a second ``attention`` op in mode 3 (the same operands, so every mask,
causal/sliding window, KV padding and softcap form is handled by the op itself; v is narrowed to one
feature per head since P does not depend on it). Then dV = P^T dY, dP = dY V^T, the softmax
backward dS = P * (dP - rowsum(dP * P)), the softcap derivative, and dQ, dK from dS with the same
sqrt(scale) factors as the forward. Grouped-query heads sum their cotangents back onto the shared
kv head; past_key/past_value get the leading rows of the present cotangents; a float mask gets dS.

Rotary embedding is a rotation, so dx is the same op with sin negated; cos and sin get the summed
products of the pair halves (scatter-added into the table when position_ids index it).

Einsum's cotangent for operand i is an einsum of the output cotangent with the other operands into
operand i's labels; labels only operand i has are broadcast back, repeated labels (diagonals) get
an identity factor, and labels broadcast from size 1 are summed.
"""

from __future__ import annotations

import string

import numpy as np

from ..builder import Builder
from ..graph import Value
from ..ops.linalg import parse_einsum
from . import register_vjp
from .conv import transpose
from .util import broadcast_to, reshape, scalar, shape_of, sum_to

# -- attention ------------------------------------------------------------------------------------

def to_heads(b: Builder, x: Value, heads: int) -> Value:
    """[B, S, H*D] -> [B, H, S, D]; 4-D operands are already in heads form."""
    s = shape_of(x)
    if len(s) == 4:
        return x
    return transpose(b, reshape(b, x, [s[0], s[1], heads, s[2] // heads]), [0, 2, 1, 3])


def from_heads(b: Builder, g: Value, like: Value) -> Value:
    """The inverse of ``to_heads`` for an operand shaped like ``like``."""
    if len(shape_of(like)) == 4:
        return g
    return reshape(b, transpose(b, g, [0, 2, 1, 3]), shape_of(like))


def _swap(b: Builder, x: Value) -> Value:
    return transpose(b, x, [0, 1, 3, 2])


def _repeat_heads(b: Builder, x: Value, rep: int) -> Value:
    """[B, Hkv, T, D] -> [B, Hkv*rep, T, D], each kv head serving ``rep`` consecutive q heads."""
    if rep == 1:
        return x
    B, H, T, D = shape_of(x)
    e = broadcast_to(b, reshape(b, x, [B, H, 1, T, D]), [B, H, rep, T, D])
    return reshape(b, e, [B, H * rep, T, D])


def _sum_heads(b: Builder, g: Value, rep: int) -> Value:
    if rep == 1:
        return g
    B, H, T, D = shape_of(g)
    return b.op("reduce_sum", reshape(b, g, [B, H // rep, rep, T, D]), axes=[2], keepdims=0)


def _operand(op, i: int) -> Value | None:
    """Optional operand ``i``, None when absent or the zero-element stand-in for an absent one."""
    if i >= len(op.operands):
        return None
    v = op.operands[i]
    return None if 0 in shape_of(v) else v


def _narrow_last(b: Builder, v: Value, n: int) -> Value:
    r = len(shape_of(v))
    return b.op("slice", v, starts=[0], ends=[n], axes=[r - 1], steps=[1])


def _probabilities(b: Builder, op, hkv: int) -> Value:
    """The attention probabilities [B, Hq, Sq, T] of ``op``."""
    if op.attrs["qk_matmul_output_mode"] == 3:
        return op.results[3]
    operands = list(op.operands)
    v = operands[2]
    # P does not depend on v: one feature per kv head keeps the recomputation's P @ V cheap
    operands[2] = _narrow_last(b, v, hkv if len(shape_of(v)) == 3 else 1)
    if _operand(op, 5) is not None:
        operands[5] = _narrow_last(b, operands[5], 1)
    return b.create("attention", operands, {**op.attrs, "qk_matmul_output_mode": 3}).results[3]


def _add(b: Builder, acc: Value | None, v: Value | None) -> Value | None:
    if v is None:
        return acc
    return v if acc is None else b.op("add", acc, v)


@register_vjp("attention")
def _attention(b, op, cts):
    gy, gpk, gpv, gqk = cts
    a = op.attrs
    q, k, v = op.operands[:3]
    mask = _operand(op, 3)
    rank = len(shape_of(q))
    hq = a["q_num_heads"] if rank == 3 else shape_of(q)[1]
    hkv = a["kv_num_heads"] if rank == 3 else shape_of(k)[1]
    rep = hq // hkv
    mode = a["qk_matmul_output_mode"]
    Q = to_heads(b, q, hq)
    kf, vf = op.results[1], op.results[2]  # present key/value: past rows then the new ones
    scale = a["scale"] if a["scale"] is not None else 1 / np.sqrt(shape_of(Q)[3])
    half = scalar(b, float(np.sqrt(scale).astype(q.dtype.numpy)), q)  # the forward scales q and k by it
    Kr = _repeat_heads(b, kf, rep)
    P = _probabilities(b, op, hkv)

    dP = dVr = None
    if gy is not None:
        G = to_heads(b, gy, hq)
        dP = b.op("matmul", G, _swap(b, _repeat_heads(b, vf, rep)))
        dVr = b.op("matmul", _swap(b, P), G)
    if mode == 3:
        dP = _add(b, dP, gqk)
    dS = None
    if dP is not None:  # softmax backward; masked and fully masked entries have P = 0
        pdp = b.op("mul", P, dP)
        dS = b.op("sub", pdp, b.op("mul", P, b.op("reduce_sum", pdp, axes=[3], keepdims=1)))
    dqk = _add(b, dS, gqk if mode != 3 else None)  # modes 0-2 return qk (plus the bias in mode 2)
    dmask = None
    if mask is not None and mask.dtype.is_float:
        dm = _add(b, dS, gqk if mode == 2 else None)
        if dm is not None:
            if shape_of(mask)[-1] != shape_of(dm)[-1]:  # a short mask was padded with -inf
                dm = _narrow_last(b, dm, shape_of(mask)[-1])
            dmask = sum_to(b, dm, mask)

    dQ = dKr = None
    if dqk is not None:
        Qs, Ks = b.op("mul", Q, half), b.op("mul", Kr, half)
        draw = dqk
        if a["softcap"] > 0:  # qk = c * tanh(raw / c)
            raw = b.op("matmul", Qs, _swap(b, Ks))
            t = b.op("tanh", b.op("mul", raw, scalar(b, 1.0 / a["softcap"], raw)))
            draw = b.op("mul", dqk, b.op("sub", scalar(b, 1.0, t), b.op("mul", t, t)))
        dQ = b.op("mul", b.op("matmul", draw, Ks), half)
        dKr = b.op("mul", b.op("matmul", _swap(b, draw), Qs), half)
    dK = _add(b, None if dKr is None else _sum_heads(b, dKr, rep), gpk)
    dV = _add(b, None if dVr is None else _sum_heads(b, dVr, rep), gpv)

    res: list[Value | None] = [None] * len(op.operands)
    res[0] = None if dQ is None else from_heads(b, dQ, q)
    if len(op.operands) > 3:
        res[3] = dmask
    for i_new, i_past, full in ((1, 4, dK), (2, 5, dV)):
        if full is None:
            continue
        past = _operand(op, i_past)
        n_past, T = (shape_of(past)[2] if past is not None else 0), shape_of(full)[2]
        new = b.op("slice", full, starts=[n_past], ends=[T], axes=[2], steps=[1]) if n_past else full
        res[i_new] = from_heads(b, new, op.operands[i_new])
        if past is not None:
            res[i_past] = b.op("slice", full, starts=[0], ends=[n_past], axes=[2], steps=[1])
    return res


# -- rotary embedding -----------------------------------------------------------------------------

def _pairs(b: Builder, x: Value, cos: Value, op) -> tuple[Value, Value]:
    """The two halves (x1, x2) of each rotated pair of ``x``, each [B, S, H, rd/2]."""
    s = shape_of(x)
    if len(s) == 4:
        xs = transpose(b, x, [0, 2, 1, 3])
    else:
        heads = op.attrs["num_heads"] or s[2] // (2 * shape_of(cos)[-1])
        xs = reshape(b, x, [s[0], s[1], heads, s[2] // heads])
    B, S, H, D = shape_of(xs)
    rd = op.attrs["rotary_dim"] or D
    half = rd // 2
    if op.attrs["interleaved"]:
        if rd != D:
            xs = b.op("slice", xs, starts=[0], ends=[rd], axes=[3], steps=[1])
        xs = reshape(b, xs, [B, S, H, half, 2])
        return tuple(reshape(b, b.op("slice", xs, starts=[i], ends=[i + 1], axes=[4], steps=[1]), [B, S, H, half])
                     for i in (0, 1))  # type: ignore[return-value]
    return tuple(b.op("slice", xs, starts=[i * half], ends=[(i + 1) * half], axes=[3], steps=[1])
                 for i in (0, 1))  # type: ignore[return-value]


@register_vjp("rotary_embedding")
def _rotary(b, op, cts):
    g = cts[0]
    x, cos, sin = op.operands[:3]
    pos = op.operands[3] if len(op.operands) > 3 else None
    # the rotation by -angle is the transpose of the rotation by angle
    extra = [pos] if pos is not None else []
    dx = b.op("rotary_embedding", g, cos, b.op("neg", sin), *extra, **op.attrs)
    x1, x2 = _pairs(b, x, cos, op)
    g1, g2 = _pairs(b, g, cos, op)
    # real = cos x1 - sin x2, imag = sin x1 + cos x2, summed over heads
    dcos = b.op("reduce_sum", b.op("add", b.op("mul", g1, x1), b.op("mul", g2, x2)), axes=[2], keepdims=0)
    dsin = b.op("reduce_sum", b.op("sub", b.op("mul", g2, x1), b.op("mul", g1, x2)), axes=[2], keepdims=0)
    res: list[Value | None] = [dx]
    for d, table in ((dcos, cos), (dsin, sin)):
        if pos is None:
            res.append(sum_to(b, d, table))
        else:  # the rows of the table each position read
            idx = reshape(b, pos, list(shape_of(pos)) + [1])
            zeros = b.const(np.zeros(shape_of(table), dtype=table.dtype.numpy), name="zeros")
            res.append(b.op("scatter_nd", zeros, idx, d, reduction="add"))
    if pos is not None:
        res.append(None)
    return res


# -- einsum ---------------------------------------------------------------------------------------

def _explicit_terms(terms: list[str], out: str, ranks: list[int], out_rank: int) -> tuple[list[str], str, list[str]]:
    """The equation with every '...' replaced by letters (right-aligned across operands, as they
    broadcast) and the letters still unused."""
    used = set("".join(terms) + out)
    free = [c for c in string.ascii_letters if c not in used]
    n_ell = max([r - (len(t) - 1) for t, r in zip(terms, ranks) if "." in t] + [0])
    ell, free = "".join(free[:n_ell]), free[n_ell:]

    def fill(t: str, rank: int) -> str:
        return t if "." not in t else t.replace(".", ell[n_ell - (rank - (len(t) - 1)):])
    return [fill(t, r) for t, r in zip(terms, ranks)], fill(out, out_rank), free


@register_vjp("einsum")
def _einsum(b, op, cts):
    g, xs = cts[0], op.operands
    terms, out = parse_einsum(op.attrs["equation"], len(xs))
    terms, out, free = _explicit_terms(terms, out, [len(shape_of(x)) for x in xs], len(shape_of(g)))
    res: list[Value | None] = []
    for i, x in enumerate(xs):
        if not x.dtype.is_float:
            res.append(None)
            continue
        xshape = shape_of(x)
        others = [j for j in range(len(xs)) if j != i]
        ins, in_terms = [g] + [xs[j] for j in others], [out] + [terms[j] for j in others]
        # a label repeated in the term (a diagonal) gets a fresh letter tied to it by an identity
        target, seen, fresh = [], set(), iter(free)
        for pos, label in enumerate(terms[i]):
            if label in seen:
                f = next(fresh)
                ins.append(b.const(np.eye(xshape[pos], dtype=x.dtype.numpy), name="eye"))
                in_terms.append(label + f)
                label = f
            seen.add(label)
            target.append(label)
        avail = set("".join(in_terms))
        present = "".join(t for t in target if t in avail)
        eq = ",".join(in_terms) + "->" + present
        r = ins[0] if len(ins) == 1 and in_terms[0] == present else b.op("einsum", *ins, equation=eq)
        # labels only this operand has are constant along the cotangent: size-1 axes, then expand
        rs = shape_of(r)
        with_ones = [rs[present.index(t)] if t in avail else 1 for t in target]
        r = reshape(b, r, with_ones)
        summed = [p for p, (have, want) in enumerate(zip(with_ones, xshape)) if want == 1 and have != 1]
        if summed:  # labels this operand broadcast from size 1
            r = b.op("reduce_sum", r, axes=summed, keepdims=1)
        res.append(broadcast_to(b, r, xshape))
    return res

"""x86 lowerings of the attention-shaped ops: ``attention``, ``rotary_embedding``,
``linear_attention``.

Attention first writes ``present_key`` / ``present_value`` (past rows then the new rows, in the
[B, H, S, D] layout whatever the input layout) when it has a past, 3-D inputs, or a reader of the
presents; otherwise (a KV cache passed whole as 4-D keys and values) it reads the keys and values
where they are, so a decode step does not copy the cache. It then computes every (batch, q head,
query) row as an independent task: the scores of one row (the additive bias of mask,
causal/sliding window and kv padding built on the fly), a masked softmax, and the weighted sum of
values, over the keys before ``nonpad_kv_seqlen`` only when that is given and the scores are not
an output (padding keys weigh exactly 0: a decode step reads the cache rows written so far). A
row whose bias masks every key gives zeros, decided on the bias as the reference does. Arithmetic
is in f32 (f64 for f64), with the results of the reference's intermediate steps rounded to the
data type where it stores them.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op

from ..llvm_types import F32, F64, I64, const_int, ll_type
from . import dims as dm
from .dims import Dim
from .gemm import masked_load, masked_store, splat
from .loopkit import Loops, compute_type, operand
from .registry import lowering


def _heads(b: ir.IRBuilder, shape: tuple[Dim, ...], heads: int) -> tuple[Dim, Dim, Dim, Dim]:
    """(batch, heads, seq, head size) of a 3-D [B,S,H*D] or 4-D [B,H,S,D] operand."""
    if len(shape) == 3:
        return shape[0], heads, shape[1], dm.div(b, shape[2], heads)
    return tuple(shape)  # type: ignore[return-value]


def _head_index(L: Loops, rank: int, b, h, s, d, H: Dim, S: Dim, D: Dim):
    """Flat index of element (b, h, s, d) of a 3-D [B,S,H*D] or 4-D [B,H,S,D] tensor."""
    HD, SD = dm.mul(L.b, H, D), dm.mul(L.b, S, D)
    if rank == 3:
        return L.lin((b, dm.mul(L.b, S, HD)), (s, HD), (h, D), d)
    return L.lin((b, dm.mul(L.b, H, SD)), (h, SD), (s, D), d)


def _attention_generic(op: Op) -> str | None:
    """Shape-generic attention: every dim may be read at run time (batch, lengths, and the heads
    and head sizes too: a model's reshapes to heads often have computed targets); ranks are needed."""
    for i, x in enumerate(op.operands):
        if x.shape is None:
            return f"attention: operand {i} (%{x.name}) has no known rank"
    return None


def _write_present(k, L: Loops, out_i: int, new_i: int, past, heads: int) -> None:
    """present = concat(past, new) along the sequence."""
    new = k.op.operands[new_i]
    dt = new.dtype
    b = L.b
    B, H, S, D = _heads(b, k.shape(new), heads)
    P = k.shape(past)[2] if past is not None else 0
    PD, TD = dm.mul(b, P, D), dm.mul(b, dm.add(b, P, S), D)
    with L.loop(dm.val(dm.mul(b, B, H)), "bh") as bh:
        if past is not None:  # the past rows of this (b, h) are contiguous in both tensors
            with L.loop(dm.val(PD), "p") as p:
                L.b.store(L.raw(k.arg(4 if out_i == 1 else 5), L.lin((bh, PD), p), dt),
                          L.ptr(k.out(out_i), L.lin((bh, TD), p), dt))
        bb = L.b.sdiv(bh, dm.val(H))
        hh = L.b.srem(bh, dm.val(H))
        with L.loop(dm.val(S), "s") as s:
            with L.loop(dm.val(D), "d") as d:
                src = _head_index(L, len(new.shape), bb, hh, s, d, H, S, D)
                L.b.store(L.raw(k.arg(new_i), src, dt), L.ptr(k.out(out_i), L.lin((bh, TD), (s, D), PD, d), dt))


def _mask_strides(b: ir.IRBuilder, m_shape: tuple[Dim, ...]) -> list[Dim]:
    """Element strides of the mask broadcast right-aligned against (B, Hq, Sq, T): 0 along a dim of
    1 (decided at run time for a dim read then)."""
    m_full = (1,) * (4 - len(m_shape)) + m_shape
    strides: list[Dim] = []
    acc: Dim = 1
    for d in range(3, -1, -1):
        n = m_full[d]
        if isinstance(n, int):
            strides.insert(0, 0 if n == 1 else acc)
        else:
            strides.insert(0, b.select(b.icmp_signed("==", n, const_int(1)), const_int(0), dm.val(acc)))
        acc = dm.mul(b, acc, n)
    return strides


class _Sizes:
    """The dims of one attention call, read through a builder (the kernel, or a row task with its
    own copy of the frame): ints in static code."""

    def __init__(self, kb, op: Op, past_k):
        a, b = op.attrs, kb.b
        q, kk, v = op.operands[:3]
        self.B, self.Hq, self.Sq, self.Dk = _heads(b, kb.shape(q), a["q_num_heads"])
        _, self.Hkv, Skv, _ = _heads(b, kb.shape(kk), a["kv_num_heads"])
        self.Dv = _heads(b, kb.shape(v), a["kv_num_heads"])[3]
        self.P = kb.shape(past_k)[2] if past_k is not None else 0
        self.T = dm.add(b, self.P, Skv)
        self.group = dm.div(b, self.Hq, self.Hkv)


def _sqrt_scale(b: ir.IRBuilder, dt: DType, Dk: ir.Value) -> ir.Value:
    """sqrt(1/sqrt(Dk)) for a head size read at run time, rounded to ``dt`` as the reference rounds
    its constant (f64 square roots are correctly rounded, as numpy's; f16 goes through f32)."""
    sqrt = b.module.declare_intrinsic("llvm.sqrt", [F64])
    s = b.call(sqrt, [b.fdiv(ir.Constant(F64, 1.0), b.call(sqrt, [b.uitofp(Dk, F64)]))])
    if dt is DType.f64:
        return s
    s = b.fptrunc(s, F32)  # bf16 takes the f32 value unrounded, as the reference does
    return s if dt in (DType.f32, DType.bf16) else b.fpext(b.fptrunc(s, ll_type(dt)), F32)


def _weighted_values(kb, probs: ir.Value, vbase: ir.Value, T: Dim, Dv: Dim, out: ir.Value, ct: ir.Type) -> None:
    """``out[d] = sum over j < T, in order, of probs[j] * v[j, d]`` for a run of ``T`` rows of ``Dv``
    values at ``vbase``: ``lanes`` columns at a time, accumulated in a register (masked past Dv)."""
    b = kb.b
    lanes = kb.target.vector_bits // (8 * (8 if ct == F64 else 4))
    vt = ir.VectorType(ct, lanes)
    it = ir.VectorType(I64, lanes)
    step = ir.Constant(it, list(range(lanes)))
    R = Loops(kb, ct)
    acc = R.var(ir.Constant(vt, None))
    with R.loop(dm.val(dm.ceil_div(b, Dv, lanes)), "pv") as c:
        d0 = b.mul(c, const_int(lanes))
        mask = b.icmp_signed("<", step, splat(b, b.sub(dm.val(Dv), d0), it))
        R.set(acc, ir.Constant(vt, None))
        with R.loop(dm.val(T), "pj") as j:
            p = splat(b, b.load(b.gep(probs, [j], source_etype=ct, inbounds=True), typ=ct), vt)
            v = masked_load(b, b.gep(vbase, [b.add(b.mul(j, dm.val(Dv)), d0)], source_etype=ct, inbounds=True),
                            mask, vt)
            R.set(acc, b.fadd(R.get(acc), b.fmul(p, v)))
        masked_store(b, R.get(acc), b.gep(out, [d0], source_etype=ct, inbounds=True), mask)


@lowering("attention", generic=_attention_generic)
def lower_attention(k, op: Op) -> None:
    a = op.attrs
    q = op.operands[0]
    dt = q.dtype
    ct = compute_type(dt)
    mask, past_k, past_v, nonpad = (operand(op, i) for i in (3, 4, 5, 6))
    rank = len(q.shape)
    L = Loops(k, ct)
    live = [bool(r.uses) or any(o is r for o in k.cg.graph.outputs) for r in op.results]
    # without a past, 4-D keys and values are read where they are (a KV cache is not copied per
    # step); a present nothing reads is not written
    direct_k = past_k is None and len(op.operands[1].shape) == 4
    direct_v = past_v is None and len(op.operands[2].shape) == 4
    if live[1] or not direct_k:
        _write_present(k, L, 1, 1, past_k, a["kv_num_heads"])
    if live[2] or not direct_v:
        _write_present(k, L, 2, 2, past_v, a["kv_num_heads"])
    write_qk = live[3]
    Dk = _Sizes(k, op, past_k).Dk
    sqrt_s: float | None = None
    if a["scale"] is not None or isinstance(Dk, int):
        scale = a["scale"] if a["scale"] is not None else 1 / math.sqrt(Dk)
        sqrt_s = float(dt.numpy.type(math.sqrt(scale))) if dt is not DType.bf16 else math.sqrt(scale)
    softcap = a["softcap"]
    mode = a["qk_matmul_output_mode"]
    sm_dt: DType = a["softmax_precision"] or dt
    sm_t = F64 if sm_dt is DType.f64 or dt is DType.f64 else F32
    is_causal, lw, rw = a["is_causal"], a["left_window"], a["right_window"]

    def row(kb, r) -> None:
        R = Loops(kb, ct)
        b = R.b
        z = _Sizes(kb, op, past_k)
        Hq, Sq, Dk, Hkv, Dv, P, T = z.Hq, z.Sq, z.Dk, z.Hkv, z.Dv, z.P, z.T
        bi = b.sdiv(r, dm.val(dm.mul(b, Hq, Sq)))
        hi = b.srem(b.sdiv(r, dm.val(Sq)), dm.val(Hq))
        qi = b.srem(r, dm.val(Sq))
        kvh = b.sdiv(hi, dm.val(z.group))
        scores = R.buffer(T, sm_t)
        yacc = R.buffer(Dv, ct)
        ninf = R.f(-math.inf)
        ssq = R.f(sqrt_s) if sqrt_s is not None else _sqrt_scale(b, dt, Dk)
        if mask is not None:
            m_shape = kb.shape(mask)
            m_len = m_shape[-1] if m_shape else 0
            m_strides = _mask_strides(b, m_shape)
        # position offset of query qi (absolute position = qi + offset)
        if past_k is not None:
            offset = dm.val(P)
        elif nonpad is not None:
            offset = b.sub(R.ld_int(kb.arg(6), bi, nonpad.dtype), dm.val(Sq))
        else:
            offset = R.i(0)
        npad = R.ld_int(kb.arg(6), bi, nonpad.dtype) if nonpad is not None else None
        # keys from nonpad_kv_seqlen on are padding, masked: their weight is exactly 0, so they are
        # not read at all (a KV cache's unwritten rows) unless the scores, which have a value for
        # every key, are an output. (Non-finite padding values would make the reference's NaN*0;
        # skipped here, they cannot.)
        Tn = T if npad is None or write_qk else R.imax(R.imin(npad, dm.val(T)), R.i(0))
        bias_max = R.var(ninf)
        s_max = R.var(R.f(-math.inf, sm_t))
        qk_row = R.lin((r, T))
        TDk, TDv = dm.mul(b, T, Dk), dm.mul(b, T, Dv)
        ksrc = kb.arg(1) if direct_k else kb.out(1)
        with R.loop(dm.val(Tn), "j") as j:
            dot = R.var(R.f(0.0))
            with R.loop(dm.val(Dk), "d") as d:
                qv = b.fmul(R.ld(kb.arg(0), _head_index(R, rank, bi, hi, qi, d, Hq, Sq, Dk), dt), ssq)
                kv = b.fmul(R.ld(ksrc, R.lin((bi, dm.mul(b, Hkv, TDk)), (kvh, TDk), (j, Dk), d), dt), ssq)
                # reassoc on this sum only: it lets the loop vectorise; order changes stay within a few ulps
                R.set(dot, b.fadd(R.get(dot), b.fmul(R.round_to(qv, dt), R.round_to(kv, dt)), flags=("reassoc",)))
            qk = R.round_to(R.get(dot), dt)
            if softcap > 0:
                c = R.f(softcap)
                qk = R.round_to(b.fmul(R.tanh(R.round_to(b.fdiv(qk, c), dt)), c), dt)
            # the additive bias of this (query, key)
            bias = R.f(0.0)
            if mask is not None:
                inside = b.icmp_signed("<", j, dm.val(m_len))
                mi = R.lin((bi, m_strides[0]), (hi, m_strides[1]), (qi, m_strides[2]),
                           R.imin(j, dm.val(dm.sub(b, m_len, 1))))
                if mask.dtype is DType.bool:
                    on = b.icmp_unsigned("!=", R.raw(kb.arg(3), mi, mask.dtype), ir.Constant(ir.IntType(8), 0))
                    mv = b.select(on, R.f(0.0), ninf)
                else:
                    mv = R.round_to(R.ld(kb.arg(3), mi, mask.dtype), dt)
                bias = b.select(inside, mv, ninf)
            allowed = ir.Constant(ir.IntType(1), 1)
            diff = b.sub(b.add(qi, offset), j)
            if is_causal:
                allowed = b.and_(allowed, b.icmp_signed(">=", diff, R.i(0)))
            if lw >= 0:
                allowed = b.and_(allowed, b.icmp_signed("<=", diff, R.i(lw)))
            if rw >= 0:
                allowed = b.and_(allowed, b.icmp_signed("<=", b.neg(diff), R.i(rw)))
            if npad is not None:
                allowed = b.and_(allowed, b.icmp_signed("<", j, npad))
            bias = b.select(allowed, bias, ninf)
            R.set(bias_max, R.fmax(R.get(bias_max), bias))
            sc = R.round_to(b.fadd(qk, bias), dt)
            if write_qk and mode == 2:
                R.st(sc, kb.out(3), R.lin(qk_row, j), dt)
            elif write_qk and mode != 3:
                R.st(qk, kb.out(3), R.lin(qk_row, j), dt)
            sc = R.fcast(sc, sm_t)
            if sm_dt is not dt:
                sc = R.round_to(sc, sm_dt)
            b.store(sc, R.ptr(scores, j, DType.f64 if sm_t == F64 else DType.f32))
            R.set(s_max, R.fmax(R.get(s_max), sc))
        sdt = DType.f64 if sm_t == F64 else DType.f32
        m = R.get(s_max)
        m = b.select(b.fcmp_ordered("==", m, R.f(-math.inf, sm_t)), R.f(0.0, sm_t), m)
        total = R.var(R.f(0.0, sm_t))
        with R.loop(dm.val(Tn), "j2") as j:
            e = R.round_to(R.exp(R.round_to(b.fsub(R.ld(scores, j, sdt, sm_t), m), sm_dt)), sm_dt)
            b.store(e, R.ptr(scores, j, sdt))
            R.set(total, b.fadd(R.get(total), e))
        tot = R.round_to(R.get(total), sm_dt)  # numpy sums f16 in f32, rounds once
        tot = b.select(b.fcmp_ordered("==", tot, R.f(0.0, sm_t)), R.f(1.0, sm_t), tot)
        dead = b.fcmp_ordered("==", R.get(bias_max), ninf)
        with R.loop(dm.val(Dv), "z") as d:
            b.store(R.f(0.0), R.ptr(yacc, d, DType.f64 if ct == F64 else DType.f32))
        cdt = DType.f64 if ct == F64 else DType.f32
        # a head size read at run time keeps the output row in memory, not in registers: the values
        # are then summed a vector of the row at a time over all keys (the same sums, in key order)
        by_lanes = not isinstance(Dv, int) and sm_t == ct and dt in (DType.f32, DType.f64)
        vsrc = kb.arg(2) if direct_v else kb.out(2)
        with R.loop(dm.val(Tn), "j3") as j:
            p = R.round_to(b.fdiv(R.ld(scores, j, sdt, sm_t), tot), sm_dt)
            p = b.select(dead, R.f(0.0, sm_t), p)
            if write_qk and mode == 3:
                R.st(R.fcast(p, ct), kb.out(3), R.lin(qk_row, j), dt)
            p = R.round_to(R.fcast(p, ct), dt)
            if by_lanes:  # the probabilities, for the pass over the values below
                b.store(p, R.ptr(scores, j, sdt))
            else:
                vrow = R.lin((bi, dm.mul(b, Hkv, TDv)), (kvh, TDv), (j, Dv))
                with R.loop(dm.val(Dv), "e") as d:
                    yp = R.ptr(yacc, d, cdt)
                    b.store(b.fadd(b.load(yp, typ=ct), b.fmul(p, R.ld(vsrc, R.lin(vrow, d), dt))), yp)
        if by_lanes:
            vbase = R.ptr(vsrc, R.lin((bi, dm.mul(b, Hkv, TDv)), (kvh, TDv)), dt)
            _weighted_values(kb, scores, vbase, Tn, Dv, yacc, ct)
        with R.loop(dm.val(Dv), "w") as d:
            R.st(R.ld(yacc, d, cdt), kb.out(0), _head_index(R, rank, bi, hi, qi, d, Hq, Sq, Dv), dt)
        R.done()

    z = _Sizes(k, op, past_k)
    k.parallel_for(dm.val(dm.mul(k.b, z.B, dm.mul(k.b, z.Hq, z.Sq))), row, "row")


# -- rotary embedding -------------------------------------------------------------------------------

def _rotary_generic(op: Op) -> str | None:
    """Shape-generic rotary embedding: the batch, sequence and table lengths may be read at run time;
    the heads, head size and table width are static."""
    x, cos = op.operands[:2]
    if x.shape is None or cos.shape is None:
        return "rotary_embedding: the ranks of x and cos must be known"
    static = (2,) if len(x.shape) == 3 else (1, 3)
    if not all(isinstance(x.shape[i], int) for i in static) or not isinstance(cos.shape[-1], int):
        return f"rotary_embedding: the heads, head size and cos/sin width must be static ({x.type}, {cos.type})"
    return None


@lowering("rotary_embedding", generic=_rotary_generic)
def lower_rotary(k, op: Op) -> None:
    x, cos = op.operands[0], op.operands[1]
    pos = operand(op, 3)
    dt = x.dtype
    a = op.attrs
    shape = k.shape(x)
    half_c = cos.shape[-1]
    if len(shape) == 4:
        B, H, S, D = shape
    else:
        B, S, HD = shape
        H = a["num_heads"] or HD // (2 * half_c)
        D = HD // H
    rd = a["rotary_dim"] or D
    half = rd // 2
    L = Loops(k, compute_type(dt))

    def token(kb, t) -> None:  # one (batch, position): all heads
        R = Loops(kb, L.ct)
        b = R.b
        S = kb.shape(x)[2 if len(shape) == 4 else 1]
        bi, si = b.sdiv(t, dm.val(S)), b.srem(t, dm.val(S))
        crow = R.lin((kb.checked_index(R.ld_int(kb.arg(3), t, pos.dtype), kb.shape(cos)[0]), half_c)) \
            if pos is not None else R.lin((t, half_c))
        with R.loop(H, "h") as h:
            base = R.lin((bi, dm.mul(b, S, H * D)), (si, H * D), (h, D)) if len(shape) == 3 else \
                R.lin((bi, dm.mul(b, S, H * D)), (h, dm.mul(b, S, D)), (si, D))
            with R.loop(half, "i") as i:
                c = R.ld(kb.arg(1), R.lin(crow, i), cos.dtype)
                s = R.ld(kb.arg(2), R.lin(crow, i), cos.dtype)
                i1, i2 = (R.lin((i, 2)), R.lin((i, 2), 1)) if a["interleaved"] else (i, R.lin(i, half))
                x1 = R.ld(kb.arg(0), R.lin(base, i1), dt)
                x2 = R.ld(kb.arg(0), R.lin(base, i2), dt)
                real = b.fsub(R.round_to(b.fmul(c, x1), dt), R.round_to(b.fmul(s, x2), dt))
                imag = b.fadd(R.round_to(b.fmul(s, x1), dt), R.round_to(b.fmul(c, x2), dt))
                R.st(real, kb.out(0), R.lin(base, i1), dt)
                R.st(imag, kb.out(0), R.lin(base, i2), dt)
            with R.loop(D, "r", start=rd) as i:
                kb.b.store(R.raw(kb.arg(0), R.lin(base, i), dt), R.ptr(kb.out(0), R.lin(base, i), dt))

    k.parallel_for(dm.val(dm.mul(k.b, B, S)), token, "tok")


# -- linear attention ---------------------------------------------------------------------------------

@lowering("linear_attention")
def lower_linear_attention(k, op: Op) -> None:
    q, kk, v = op.operands[:3]
    past, decay, beta = operand(op, 3), operand(op, 4), operand(op, 5)
    a = op.attrs
    B, T, _ = q.shape
    hq, hkv = a["q_num_heads"], a["kv_num_heads"]
    dk, dv = q.shape[2] // hq, v.shape[2] // hkv
    group = hq // hkv
    sc = float(np.float32(a["scale"] if a["scale"] else 1 / math.sqrt(dk)))  # f32, as the reference
    g_per = decay.shape[2] // hkv if decay is not None else 0  # 1 (per head) or dk (per key feature)
    n_beta = beta.shape[2] if beta is not None else 0
    st_dt = op.results[1].dtype
    f32 = DType.f32

    def head(kb, bh) -> None:  # one (batch, kv head): its state through all steps
        R = Loops(kb, F32)
        b = R.b
        bi, h = b.sdiv(bh, R.i(hkv)), b.srem(bh, R.i(hkv))
        S = R.buffer(dk * dv, F32)
        vt = R.buffer(dv, F32)
        with R.loop(dk * dv, "i") as i:
            init = R.ld(kb.arg(3), R.lin((bh, dk * dv), i), past.dtype) if past is not None else R.f(0.0)
            b.store(init, R.ptr(S, i, f32))
        with R.loop(T, "t") as t:
            krow = R.lin((bi, T * hkv * dk), (t, hkv * dk), (h, dk))
            vrow = R.lin((bi, T * hkv * dv), (t, hkv * dv), (h, dv))
            if decay is not None:
                grow = R.lin((bi, T * hkv * g_per), (t, hkv * g_per), (h, g_per))
                with R.loop(dk, "gd") as d:
                    g = R.exp(R.ld(kb.arg(4), R.lin(grow, d) if g_per > 1 else grow, decay.dtype))
                    with R.loop(dv, "gm") as m:
                        p = R.ptr(S, R.lin((d, dv), m), f32)
                        b.store(b.fmul(b.load(p, typ=F32), g), p)
            with R.loop(dv, "vm") as m:
                b.store(R.ld(kb.arg(2), R.lin(vrow, m), v.dtype), R.ptr(vt, m, f32))
            if beta is not None:
                bt = R.ld(kb.arg(5), R.lin((bi, T * n_beta), (t, n_beta), (h if n_beta > 1 else 0, 1)), beta.dtype)
                with R.loop(dv, "bm") as m:
                    acc = R.var(R.f(0.0))
                    with R.loop(dk, "bd") as d:
                        R.set(acc, b.fadd(R.get(acc), b.fmul(R.ld(S, R.lin((d, dv), m), f32),
                                                             R.ld(kb.arg(1), R.lin(krow, d), kk.dtype))))
                    p = R.ptr(vt, m, f32)
                    b.store(b.fmul(bt, b.fsub(b.load(p, typ=F32), R.get(acc))), p)
            with R.loop(dk, "ud") as d:
                kd = R.ld(kb.arg(1), R.lin(krow, d), kk.dtype)
                with R.loop(dv, "um") as m:
                    p = R.ptr(S, R.lin((d, dv), m), f32)
                    b.store(b.fadd(b.load(p, typ=F32), b.fmul(kd, R.ld(vt, m, f32))), p)
            with R.loop(group, "qh") as g:
                qh = R.lin((h, group), g)
                qrow = R.lin((bi, T * hq * dk), (t, hq * dk), (qh, dk))
                yrow = R.lin((bi, T * hq * dv), (t, hq * dv), (qh, dv))
                with R.loop(dv, "ym") as m:
                    acc = R.var(R.f(0.0))
                    with R.loop(dk, "yd") as d:
                        R.set(acc, b.fadd(R.get(acc), b.fmul(R.ld(kb.arg(0), R.lin(qrow, d), q.dtype),
                                                             R.ld(S, R.lin((d, dv), m), f32))))
                    R.st(b.fmul(R.f(sc), R.get(acc)), kb.out(0), R.lin(yrow, m), q.dtype)
        with R.loop(dk * dv, "o") as i:
            R.st(R.ld(S, i, f32), kb.out(1), R.lin((bh, dk * dv), i), st_dt)
        R.done()

    k.parallel_for(B * hkv, head, "head")

"""x86 lowerings of the integer ops of the quantized-graph contract: ``qconv``, ``qmatmul``,
``requantize``, ``qadd``, ``qmul`` and ``qlut``, bit-exact against their references in ir/ops/quant.py.

The dot products use AVX-512 VNNI (``vpdpbusd``: 64 u8 x i8 products summed in groups of four into
16 i32 lanes). It multiplies an *unsigned* byte by a signed one, so activations are shifted by 128
to u8 (``x ^ 0x80``) and the constant ``(x_zero_point + 128) * sum(w)`` per output channel is taken
out of the bias at compile time: ``sum((x - zp) * w) = sum((x + 128) * w) - (zp + 128) * sum(w)``.
Weights are packed once at compile time, four reduction steps per i32 (zero-padded).

- ``qconv`` (lanes over output pixels, so a tile stores straight into NCHW): each task owns a block
  of NR output pixels of one image and one group; it packs their im2col panel as u8 in
  ``[tap][channel/4][pixel][4]`` order (four channels of one tap interleaved, so the inner copy over
  a row of output pixels is contiguous; at stride 1 sixteen pixels per step, one 16-byte load per
  channel and a byte interleave), then runs every block of MR output channels over it with
  MR x NR/16 accumulators. Depthwise / tiny-reduction convolutions use a direct loop nest instead.
- ``qmatmul`` (lanes over N): the weight is packed in NR-wide panels ``[K/4][NR][4]``; each task
  owns one panel and walks the rows of ``a`` (packed per MR rows as u8 with K padded to 4).
- a ``requantize`` reading a qconv/qmatmul is fused into its epilogue where the x86
  ``fuse-requantize`` pass groups them (``requant_epilogue.py``); the others, ``qadd``, ``qmul``
  and ``qlut`` are elementwise loops (``quant_rescale.py``).
- depthwise convolutions have their own kernel (``qconv_depthwise.py``).

Without VNNI the same kernels emulate ``vpdpbusd`` with widening multiplies (exact, slower).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from nnc.ir import Op, TargetError

from ..llvm_types import I8, I32, I64, PTR, VOID, const_int, for_range
from . import dims as dm
from .gemm_microkernel import masked_load, masked_store
from .qconv_depthwise import depthwise_supported, lower_depthwise
from .registry import batch_only, lowering
from .requant_epilogue import RequantSpec, splat, store_result
from .vnni import dpbusd, intrinsic

V16 = ir.VectorType(I32, 16)
U8_SHIFT = 0x80808080 - (1 << 32)  # xor with this maps four i8 to four u8 (x + 128); as a signed i32


_fn = intrinsic


def _splat(b: ir.IRBuilder, x: ir.Value, vt: ir.VectorType = V16) -> ir.Value:
    return splat(b, x, vt)


_dpbusd = dpbusd


def _gep(b: ir.IRBuilder, p: ir.Value, i: ir.Value | int, t: ir.Type) -> ir.Value:
    return b.gep(p, [const_int(i) if isinstance(i, int) else i], source_etype=t, inbounds=True)


def _heap(b: ir.IRBuilder, nbytes: int) -> ir.Value:
    return b.call(_fn(b.module, "malloc", PTR, [I64]), [const_int(nbytes + 64)])


def _free(b: ir.IRBuilder, p: ir.Value) -> None:
    b.call(_fn(b.module, "free", VOID, [PTR]), [p])


def _imin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def _imax(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed(">", x, y), x, y)


@dataclass(frozen=True)
class _Tile:
    rows: int  # accumulator rows (broadcast operand)
    nv: int  # 16-lane vectors per row (vector operand)


def _tile_loop(kb, vnni: bool, tile: _Tile, nk4: int, vec_ptr, bcast_ptr, vec_is_u8: bool,
               xor_bcast: bool, init: list[ir.Value] | None = None) -> list[list[ir.Value]]:
    """Run ``nk4`` VNNI steps of a rows x nv tile; return the accumulators.

    ``vec_ptr(b, k4, v)`` points at 16 i32 of the vector operand, ``bcast_ptr(b, k4, r)`` at the i32
    broadcast to row r; ``init``: per row the accumulators' start (default 0). Accumulators live in
    allocas that LLVM promotes to registers."""
    b = kb.b
    entry = b.function.entry_basic_block
    saved = b.block
    b.position_at_start(entry)
    accs = [[b.alloca(V16) for _ in range(tile.nv)] for _ in range(tile.rows)]
    b.position_at_end(saved)
    zero = ir.Constant(V16, [0] * 16)
    for r, row in enumerate(accs):
        for a in row:
            b.store(zero if init is None else init[r], a)
    with for_range(b, nk4, "k4") as k4:
        vecs = []
        for v in range(tile.nv):
            ld = b.load(vec_ptr(b, k4, v), typ=V16)
            ld.align = 4
            vecs.append(ld)
        for r in range(tile.rows):
            s = b.load(bcast_ptr(b, k4, r), typ=I32)
            if xor_bcast:
                s = b.xor(s, ir.Constant(I32, U8_SHIFT))
            sv = _splat(b, s)
            for v in range(tile.nv):
                cur = b.load(accs[r][v], typ=V16)
                u, sg = (vecs[v], sv) if vec_is_u8 else (sv, vecs[v])
                b.store(_dpbusd(b, vnni, cur, u, sg), accs[r][v])
    return [[b.load(a, typ=V16) for a in row] for row in accs]


# -- qconv ----------------------------------------------------------------------------------------

V16I8 = ir.VectorType(I8, 16)
V64I8 = ir.VectorType(I8, 64)
_LANE = ir.Constant(V16I8, list(range(16)))
# the 64 bytes of four 16-byte channel rows, interleaved: word i = (row0[i], row1[i], row2[i], row3[i])
_INTERLEAVE = ir.Constant(ir.VectorType(I32, 64), [16 * j + i for i in range(16) for j in range(4)])


def _pack_run(b: ir.IRBuilder, panel_words, xg, src0, col0, lo, hi, nch: int, plane: int) -> None:
    """Panel words ``[col0 + ow]`` for ``lo <= ow < hi`` of a stride-1 tap: word ``ow`` is the bytes
    (+128) of channels ``0..nch-1`` at ``xg[src0 + ow + j*plane]``, 0 for channels past ``nch``.

    Sixteen words per step: one 16-byte load per channel, one byte interleave (a ``vpermb`` with
    VBMI); the last partial step under a lane mask (no byte outside the run is read or written)."""
    zero = ir.Constant(V16I8, [0] * 16)
    flip = ir.Constant(V16I8, [-128] * 16)

    def step(ow, mask16, mask64) -> None:
        rows = []
        for j in range(4):
            if j >= nch:
                rows.append(zero)
                continue
            p = _gep(b, xg, b.add(b.add(src0, ow), const_int(j * plane)), I8)
            v = b.load(p, typ=V16I8, align=1) if mask16 is None else masked_load(b, p, mask16, V16I8)
            rows.append(b.xor(v, flip))
        pair = ir.Constant(ir.VectorType(I32, 32), list(range(32)))
        ab = b.shuffle_vector(rows[0], rows[1], pair)
        cd = b.shuffle_vector(rows[2], rows[3], pair)
        abcd = b.shuffle_vector(ab, cd, ir.Constant(ir.VectorType(I32, 64), list(range(64))))
        words = b.shuffle_vector(abcd, ir.Constant(V64I8, None), _INTERLEAVE)
        dst = _gep(b, panel_words, b.add(col0, ow), I32)
        if mask64 is None:
            b.store(words, dst, align=4)
        else:
            masked_store(b, words, dst, mask64)

    n = b.sub(hi, lo)
    n16 = b.mul(b.sdiv(n, const_int(16)), const_int(16))
    with for_range(b, b.add(lo, n16), "owv", start=lo, step=16) as ow:
        step(ow, None, None)
    rem = b.sub(n, n16)
    with b.if_then(b.icmp_signed(">", rem, const_int(0))):
        m16 = b.icmp_signed("<", _LANE, _splat(b, b.trunc(rem, I8), V16I8))
        lanes64 = ir.Constant(V64I8, [i // 4 for i in range(64)])
        m64 = b.icmp_signed("<", lanes64, _splat(b, b.trunc(rem, I8), V64I8))
        step(b.add(lo, n16), m16, m64)

def _conv_geometry(op: Op):
    from nnc.ir.ops.conv import fill, resolve_pads, window_count
    x, w = op.operands[0], op.operands[1]
    n = len(x.shape) - 2
    ks = tuple(w.shape[2:])
    s, d = fill(op.attrs["strides"], n, 1), fill(op.attrs["dilations"], n, 1)
    p = resolve_pads(op.attrs["auto_pad"], x.shape[2:], ks, s, d, op.attrs["pads"])
    out = [window_count(x.shape[2 + i], ks[i], s[i], d[i], p[i], p[n + i]) for i in range(n)]
    return n, ks, s, d, p, out


def _const_of(module, v) -> np.ndarray | None:
    p = v.producer
    return module.constants.get(p.attrs["ref"]) if p is not None and p.opname == "const" else None


def qconv_path(op: Op, module) -> str:
    """Which kernel runs this qconv: ``depthwise`` (qconv_depthwise.py), ``vnni`` (the packed
    im2col kernel) or ``direct`` (the plain loop nest: 1-D/3-D, non-constant weights, dilated or
    wide-stride depthwise, tiny reductions). Only the first two can fuse a requantize."""
    w = op.operands[1]
    wv = _const_of(module, w)
    const_bias = len(op.operands) == 2 or _const_of(module, op.operands[2]) is not None
    geometry = _conv_geometry(op)
    if depthwise_supported(op, geometry, wv, const_bias):
        return "depthwise"
    if geometry[0] == 2 and wv is not None and const_bias and w.shape[1] * math.prod(geometry[1]) >= 16:
        return "vnni"
    return "direct"


@lowering("qconv", generic=batch_only)
def lower_qconv(k, op: Op, requant: RequantSpec | None = None) -> None:
    """``requant``: the requantize reading the result, fused (the output is then its int8 tensor)."""
    mod = k.cg.module
    wv = _const_of(mod, op.operands[1])
    bias_v = _const_of(mod, op.operands[2]) if len(op.operands) > 2 else None
    geometry = _conv_geometry(op)
    path = qconv_path(op, mod)
    if requant is not None and path == "direct":
        raise TargetError(f"x86: {op.where()}: no kernel fuses a requantize into this qconv")
    if path == "depthwise":
        lower_depthwise(k, op, geometry, wv, requant)
    elif path == "vnni":
        _qconv_vnni(k, op, wv, bias_v, *geometry[1:], requant=requant)
    else:
        _qconv_direct(k, op, *geometry[1:])


def _qconv_tile(P: int) -> tuple[int, int]:
    """(vectors per row, rows) of the qconv register tile for a plane of ``P`` output pixels: 6
    channels x 64 pixels where 64-pixel blocks waste no more lanes than 32-pixel ones and the plane
    still has at least 16 of them (tasks per image for the threads), else 12 x 32. Both keep 24
    accumulators; the wider tile halves the weight broadcasts per output and the per-block packing
    overhead (MobileNetV2 INT8, 1 thread: the stem 0.88x, the 56x56 / 112x112 pointwise convs
    0.9-0.97x; at 14x14, where a 64-pixel block wastes 31 % of its lanes, it was 1.1x)."""
    if P >= 16 * 64 and (P % 64 == 0 or P % 64 > 32):
        return 4, 6
    return 2, 12


def _qconv_vnni(k, op: Op, wv: np.ndarray, bias_v: np.ndarray | None, ks, s, d, p, out,
                requant: RequantSpec | None = None) -> None:
    x = op.operands[0]
    N = k.shape(x)[0]  # read at run time in shape-generic code; the rest is static (batch_only)
    C, H, W = x.shape[1:]
    M, Cg, KH, KW = wv.shape
    G = op.attrs["group"]
    Mg = M // G
    OH, OW = out
    P = OH * OW
    zp = op.attrs["x_zero_point"]
    C4 = -(-Cg // 4)
    taps = KH * KW
    K4 = taps * C4
    vnni = k.target.has("avx512vnni")
    NV, MR = _qconv_tile(P)
    NR = 16 * NV
    nblocks = -(-P // NR)
    # weights: per group, per MR-row block: [K4][MR] i32 holding w[m, 4*c4 .. 4*c4+3, kh, kw]
    wpad = np.zeros((M, taps, C4 * 4), np.int8)
    wpad[:, :, :Cg] = wv.reshape(M, Cg, taps).transpose(0, 2, 1)
    wk = wpad.reshape(M, K4 * 4)
    mblocks = -(-Mg // MR)
    packed = np.zeros((G, mblocks, K4, MR, 4), np.int8)
    for g in range(G):
        for mb in range(mblocks):
            rows = wk[g * Mg + mb * MR: g * Mg + min(Mg, (mb + 1) * MR)]
            packed[g, mb, :, :len(rows)] = rows.reshape(len(rows), K4, 4).transpose(1, 0, 2)
    corr = -(zp + 128) * wv.reshape(M, -1).astype(np.int64).sum(axis=1)
    if bias_v is not None:
        corr = corr + bias_v.astype(np.int64)
    woff = k.packed_constant(f"{op.operands[1].name}.vnni", packed.reshape(-1), replaces=k.arg(1))
    coff = k.packed_constant(f"{op.operands[1].name}.corr", corr.astype(np.int32))
    if len(op.operands) > 2:
        k.cg.unread_args.add(id(k.arg(2)))
    fill_word = ((zp + 128) & 0xFF) * 0x01010101
    fill_word = fill_word - (1 << 32) if fill_word >= 1 << 31 else fill_word

    def task(kb, t: ir.Value) -> None:
        b = kb.b
        xin, yo = kb.local(k.arg(0)), kb.local(k.out(0))
        wbase, cbase = kb.weights_ptr(woff), kb.weights_ptr(coff)
        img = b.udiv(t, const_int(G * nblocks))
        rest = b.urem(t, const_int(G * nblocks))
        g = b.udiv(rest, const_int(nblocks))
        p0 = b.mul(b.urem(rest, const_int(nblocks)), const_int(NR))
        p_end = _imin(b, b.add(p0, const_int(NR)), const_int(P))
        oh_start = b.udiv(p0, const_int(OW))
        oh_end = b.add(b.udiv(b.sub(p_end, const_int(1)), const_int(OW)), const_int(1))
        panel = _heap(b, K4 * NR * 4)
        # -- pack the im2col panel: u8 words [tap][c4][pixel] ------------------------------------
        xg = _gep(b, xin, b.add(b.mul(img, const_int(C * H * W)), b.mul(g, const_int(Cg * H * W))), I8)
        fillv = ir.Constant(I32, fill_word)

        def _pack_rows(b, panel, xg, c4, nch, tap, kh, kw, lo, hi) -> None:
            """Panel words [tap][c4][pixel] of the block: four channels' bytes (+128) per word, the
            zero point (+128) where the window reads padding, 0 for channels past Cg."""
            dst_row = _gep(b, panel, b.mul(b.add(b.mul(const_int(tap), const_int(C4)), c4), const_int(NR)), I32)
            cbase = b.mul(c4, const_int(4 * H * W))
            with for_range(b, oh_end, "oh", start=oh_start) as oh:
                rowpix = b.mul(oh, const_int(OW))
                ow0 = _imax(b, b.sub(p0, rowpix), const_int(0))
                ow1 = _imin(b, b.sub(p_end, rowpix), const_int(OW))
                base_l = b.sub(rowpix, p0)  # panel column of output column 0 of this row
                ih = b.sub(b.add(b.mul(oh, const_int(s[0])), const_int(kh * d[0])), const_int(p[0]))
                row_ok = b.and_(b.icmp_signed(">=", ih, const_int(0)), b.icmp_signed("<", ih, const_int(H)))
                vlo = _imin(b, _imax(b, ow0, const_int(lo)), ow1)
                vhi = _imax(b, _imin(b, ow1, const_int(hi)), vlo)
                vlo = b.select(row_ok, vlo, ow1)
                vhi = b.select(row_ok, vhi, ow1)
                for a_, z_ in ((ow0, vlo), (vhi, ow1)):  # padded columns read the zero point
                    with for_range(b, z_, "pad", start=a_) as ow:
                        b.store(fillv, _gep(b, dst_row, b.add(base_l, ow), I32))
                rowbase = b.add(cbase, b.mul(_imax(b, ih, const_int(0)), const_int(W)))
                if s[1] == 1:  # consecutive output columns read consecutive bytes: 16 at a time
                    _pack_run(b, panel_words=dst_row, xg=xg, src0=b.sub(b.add(rowbase, const_int(kw * d[1])),
                                                                         const_int(p[1])),
                              col0=base_l, lo=vlo, hi=vhi, nch=nch, plane=H * W)
                    return
                with for_range(b, vhi, "ow", start=vlo) as ow:
                    iw = b.sub(b.add(b.mul(ow, const_int(s[1])), const_int(kw * d[1])), const_int(p[1]))
                    src = b.add(rowbase, iw)
                    word = ir.Constant(I32, 0)
                    for j in range(nch):
                        byte = b.load(_gep(b, xg, b.add(src, const_int(j * H * W)), I8), typ=I8)
                        part = b.zext(b.xor(byte, ir.Constant(I8, -128)), I32)
                        word = b.or_(word, b.shl(part, ir.Constant(I32, 8 * j)) if j else part)
                    b.store(word, _gep(b, dst_row, b.add(base_l, ow), I32))

        for kh in range(KH):
            for kw in range(KW):
                tap = kh * KW + kw
                # output columns whose input column is inside [0, W)
                lo = max(0, -(-(p[1] - kw * d[1]) // s[1]))
                hi = min(OW, (W - 1 + p[1] - kw * d[1]) // s[1] + 1) if W - 1 + p[1] - kw * d[1] >= 0 else 0
                hi = max(hi, lo)
                # full groups of four channels in a run-time loop, a partial last group unrolled
                if Cg // 4:
                    with for_range(b, Cg // 4, "c4") as c4:
                        _pack_rows(b, panel, xg, c4, 4, tap, kh, kw, lo, hi)
                if Cg % 4:
                    _pack_rows(b, panel, xg, const_int(Cg // 4), Cg % 4, tap, kh, kw, lo, hi)
        # -- the channel blocks ---------------------------------------------------------------------
        remaining = b.sub(p_end, p0)
        ybase = b.add(b.mul(img, const_int(M * P)), b.mul(g, const_int(Mg * P)))

        def run_block(mb: ir.Value, rows: int) -> None:
            wblk = _gep(b, wbase, b.mul(b.add(b.mul(g, const_int(mblocks)), mb), const_int(K4 * MR * 4)), I8)

            def vec_ptr(bb, k4, v):
                return _gep(bb, panel, bb.add(bb.mul(k4, const_int(NR)), const_int(16 * v)), I32)

            def bcast_ptr(bb, k4, r):
                return _gep(bb, wblk, bb.add(bb.mul(k4, const_int(MR)), const_int(r)), I32)

            m0 = b.add(b.mul(g, const_int(Mg)), b.mul(mb, const_int(MR)))
            # the accumulators start at their channel's bias and zero-point correction
            corr_rows = [_splat(b, b.load(_gep(b, cbase, b.add(m0, const_int(r)), I32), typ=I32)) for r in range(rows)]
            accs = _tile_loop(kb, vnni, _Tile(rows, NV), K4, vec_ptr, bcast_ptr, True, False, init=corr_rows)
            for r in range(rows):
                m = b.add(m0, const_int(r))
                row = b.add(ybase, b.mul(b.add(b.mul(mb, const_int(MR)), const_int(r)), const_int(P)))
                # one output channel per row: its multiplier and shift
                mv, sv = requant.channel_params(k, kb, m) if requant is not None else (None, None)
                for v in range(NV):
                    at = b.add(row, b.add(p0, const_int(16 * v)))
                    store_result(b, accs[r][v], yo, at, b.sub(remaining, const_int(16 * v)), requant, mv, sv)

        full = Mg // MR
        if full:
            with for_range(b, full, "mb") as mb:
                run_block(mb, MR)
        if Mg % MR:
            run_block(const_int(full), Mg % MR)
        _free(b, panel)

    k.parallel_for(dm.mul(k.b, N, G * nblocks), task, name="qconv")


def _qconv_direct(k, op: Op, ks, s, d, p, out) -> None:
    """Any qconv (depthwise above all): out[n, m] = bias[m] + sum over taps and the group's
    channels of (x - zp) * w, with the inner loop over a row of output pixels (vectorisable)."""
    x, w = op.operands[0], op.operands[1]
    nsp = len(ks)
    if nsp != 2:
        ks, s, d, out = tuple(ks) + (1,) * (2 - nsp), tuple(s) + (1,) * (2 - nsp), tuple(d) + (1,) * (2 - nsp), \
            list(out) + [1] * (2 - nsp)
        p = tuple(p[:nsp]) + (0,) * (2 - nsp) + tuple(p[nsp:]) + (0,) * (2 - nsp)
    N, C = k.shape(x)[0], x.shape[1]
    H, W = (tuple(x.shape[2:]) + (1, 1))[:2]
    M, Cg = w.shape[:2]
    KH, KW = ks
    G = op.attrs["group"]
    Mg = M // G
    OH, OW = out
    zp = op.attrs["x_zero_point"]
    has_bias = len(op.operands) > 2

    def task(kb, t: ir.Value) -> None:  # one (image, output channel)
        b = kb.b
        xin, wt, yo = kb.local(k.arg(0)), kb.local(k.arg(1)), kb.local(k.out(0))
        img, m = b.udiv(t, const_int(M)), b.urem(t, const_int(M))
        g = b.udiv(m, const_int(Mg))
        ybase = b.mul(t, const_int(OH * OW))
        init = b.load(_gep(b, kb.local(k.arg(2)), m, I32), typ=I32) if has_bias else ir.Constant(I32, 0)
        with for_range(b, OH * OW, "i") as i:
            b.store(init, _gep(b, yo, b.add(ybase, i), I32))
        with for_range(b, Cg, "c") as c:
            xc = b.add(b.mul(img, const_int(C)), b.add(b.mul(g, const_int(Cg)), c))
            xbase = b.mul(xc, const_int(H * W))
            for kh in range(KH):
                for kw in range(KW):
                    wi = b.add(b.mul(b.add(b.mul(m, const_int(Cg)), c), const_int(KH * KW)), const_int(kh * KW + kw))
                    wval = b.sext(b.load(_gep(b, wt, wi, I8), typ=I8), I32)
                    lo = max(0, -(-(p[1] - kw * d[1]) // s[1]))
                    hi = max(lo, min(OW, (W - 1 + p[1] - kw * d[1]) // s[1] + 1)) if W - 1 + p[1] - kw * d[1] >= 0 \
                        else lo
                    with for_range(b, OH, "oh") as oh:
                        ih = b.sub(b.add(b.mul(oh, const_int(s[0])), const_int(kh * d[0])), const_int(p[0]))
                        ok = b.and_(b.icmp_signed(">=", ih, const_int(0)), b.icmp_signed("<", ih, const_int(H)))
                        with b.if_then(ok):
                            xrow = b.add(xbase, b.mul(ih, const_int(W)))
                            yrow = b.add(ybase, b.mul(oh, const_int(OW)))
                            with for_range(b, hi, "ow", start=lo) as ow:
                                iw = b.sub(b.add(b.mul(ow, const_int(s[1])), const_int(kw * d[1])), const_int(p[1]))
                                xv = b.sext(b.load(_gep(b, xin, b.add(xrow, iw), I8), typ=I8), I32)
                                yp = _gep(b, yo, b.add(yrow, ow), I32)
                                prod = b.mul(b.sub(xv, ir.Constant(I32, zp)), wval)
                                b.store(b.add(b.load(yp, typ=I32), prod), yp)

    k.parallel_for(dm.mul(k.b, N, M), task, name="qconv_direct")


# -- qmatmul --------------------------------------------------------------------------------------

def _qmatmul_generic(op: Op) -> str | None:
    a = op.operands[0]
    if a.shape is None or not isinstance(a.shape[-1], int):
        return "qmatmul: the reduction dim of a must be static"
    if not all(v.type.is_static for v in op.operands[1:]):
        return "qmatmul: the weight and bias must have static shapes"
    return None


@lowering("qmatmul", generic=_qmatmul_generic)
def lower_qmatmul(k, op: Op, requant: RequantSpec | None = None) -> None:
    """``requant``: the requantize reading the result, fused (lanes are output columns, so each lane
    takes its column's multiplier and shift)."""
    a, w = op.operands[0], op.operands[1]
    wv = k.cg.module.constants.get(w.producer.attrs["ref"]) if w.producer is not None and \
        w.producer.opname == "const" else None
    bias_v = None
    if len(op.operands) > 2:
        bp = op.operands[2].producer
        bias_v = k.cg.module.constants.get(bp.attrs["ref"]) if bp is not None and bp.opname == "const" else None
        if bias_v is None:
            wv = None
    K, Nn = w.shape
    static_rows = all(isinstance(d, int) for d in a.shape[:-1])
    zp = op.attrs["a_zero_point"]
    vnni = k.target.has("avx512vnni")
    if wv is None:
        raise TargetError("qmatmul on x86 needs a constant weight (and bias)")
    NV = 2
    NR = 16 * NV
    MR = 12
    K4 = -(-K // 4)
    npanels = -(-Nn // NR)
    wpad = np.zeros((K4 * 4, npanels * NR), np.int8)
    wpad[:K, :Nn] = wv
    # [panel][K4][NR][4]
    packed = wpad.reshape(K4, 4, npanels, NR).transpose(2, 0, 3, 1)
    corr = -(zp + 128) * wv.astype(np.int64).sum(axis=0)
    if bias_v is not None:
        corr = corr + bias_v.astype(np.int64)
    corr_pad = np.zeros(npanels * NR, np.int32)
    corr_pad[:Nn] = corr
    woff = k.packed_constant(f"{w.name}.vnni", np.ascontiguousarray(packed).reshape(-1), replaces=k.arg(1))
    coff = k.packed_constant(f"{w.name}.corr", corr_pad)
    if len(op.operands) > 2:
        k.cg.unread_args.add(id(k.arg(2)))

    def task(kb, t: ir.Value) -> None:  # one NR-wide panel of the output columns, every row
        b = kb.b
        ain, yo = kb.local(k.arg(0)), kb.local(k.out(0))
        wpanel = _gep(b, kb.weights_ptr(woff), b.mul(t, const_int(K4 * NR * 4)), I8)
        cbase = _gep(b, kb.weights_ptr(coff), b.mul(t, const_int(NR)), I32)
        n0 = b.mul(t, const_int(NR))
        remaining = b.sub(const_int(Nn), n0)
        arows = _heap(b, MR * K4 * 4)  # MR rows of a as u8, K padded to 4 with zeros

        def run_rows(m0: ir.Value, rows: int) -> None:
            for r in range(rows):
                src = b.mul(b.add(m0, const_int(r)), const_int(K))
                dst = _gep(b, arows, const_int(r * K4 * 4), I8)
                with for_range(b, K, "kk") as kk:
                    v = b.load(_gep(b, ain, b.add(src, kk), I8), typ=I8)
                    b.store(b.xor(v, ir.Constant(I8, -128)), _gep(b, dst, kk, I8))
                for kk in range(K, K4 * 4):
                    b.store(ir.Constant(I8, 0), _gep(b, dst, kk, I8))

            def vec_ptr(bb, k4, v):
                return _gep(bb, wpanel, bb.add(bb.mul(k4, const_int(NR)), const_int(16 * v)), I32)

            def bcast_ptr(bb, k4, r):
                return _gep(bb, arows, bb.add(const_int(r * K4), k4), I32)

            accs = _tile_loop(kb, vnni, _Tile(rows, NV), K4, vec_ptr, bcast_ptr, False, False)
            for v in range(NV):
                cv = b.load(_gep(b, cbase, const_int(16 * v), I32), typ=V16)
                cv.align = 4
                mv, sv = (requant.lane_params(k, kb, b.add(n0, const_int(16 * v)), b.sub(remaining, const_int(16 * v)))
                          if requant is not None else (None, None))
                for r in range(rows):
                    at = b.add(b.mul(b.add(m0, const_int(r)), const_int(Nn)), b.add(n0, const_int(16 * v)))
                    store_result(b, b.add(accs[r][v], cv), yo, at, b.sub(remaining, const_int(16 * v)), requant,
                                 mv, sv)

        if static_rows:
            Mtot = math.prod(a.shape[:-1])
            full = Mtot // MR
            if full:
                with for_range(b, full, "mb") as mb:
                    run_rows(b.mul(mb, const_int(MR)), MR)
            if Mtot % MR:
                run_rows(const_int(full * MR), Mtot % MR)
        else:  # rows read at run time: full MR-row tiles, then the last rows one at a time
            rows = dm.val(dm.prod(b, kb.shape(a)[:-1]))
            full = b.udiv(rows, const_int(MR))
            with for_range(b, full, "mb") as mb:
                run_rows(b.mul(mb, const_int(MR)), MR)
            with for_range(b, rows, "mr", start=b.mul(full, const_int(MR))) as m:
                run_rows(m, 1)
        _free(b, arows)

    k.parallel_for(npanels, task, name="qmatmul")

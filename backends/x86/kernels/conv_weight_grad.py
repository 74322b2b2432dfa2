"""``conv_weight_grad`` (a conv's weight gradient) as a GEMM whose contraction runs over the pixels.

``dw^T[(c, t), m] = sum over pixels q = (n, o) of xpad[n, c, o*s + t*d] * dy[n, m, o]``: the rows of
A are (input channel, kernel tap) pairs, its columns the N*OH*OW output pixels of the batch, B is
the output cotangent with one row per pixel and one column per output channel. The image is first
copied into a zero-padded buffer (one task per image), so a row of A is a strided walk through one
padded plane: the microkernel (gemm_microkernel.py) reads A in place through a table of each
pixel's offset (``a_stride`` apart from row to row, as conv_channel_vectors.py does for the forward
conv), never an im2col matrix. Rows are MR channels at one tap (a plane apart), or, with fewer than
8 channels (an RGB stem), the KW taps of one kernel row (a dilation apart). Each task owns a range
of output channels (or, with too few for the threads, of input channels), packs its columns of B
per slice of KC pixels (dy is [N, M, P]: a transposing copy) and accumulates dw^T in a task-local
buffer over all slices; the buffer is then transposed (16 x 16 in registers) into dw[M, C*K].

The path is for f32 on AVX-512 and one group, 1-D or 2-D; anything else runs a loop nest over
(m, c, tap) that sums like the reference.
"""

from __future__ import annotations

import math

from llvmlite import ir

from nnc.ir import DType, Op
from nnc.ir.ops.conv import fill

from ..llvm_types import F32, I64, PTR, const_int, for_range, ll_type
from .conv import _decompose, tap_input
from .conv_channel_vectors import _pad_input, _padded_dims, _transpose_out
from .gemm import Blocking, Epilogue, blocking, gep, heap_buffer, heap_free, imin, microkernel
from .linalg import entry_alloca
from .registry import lowering

LANES = 16


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _geometry(op: Op):
    x = op.operands[0]
    n = len(x.shape) - 2
    a = op.attrs
    return (n, tuple(a["kernel_shape"]), fill(a["strides"], n, 1), fill(a["dilations"], n, 1),
            fill(a["pads"], 2 * n, 0))


@lowering("conv_weight_grad")
def lower_conv_weight_grad(k, op: Op) -> None:
    n, ks, s, d, p = _geometry(op)
    if (op.results[0].dtype == DType.f32 and k.target.vector_bits == 512 and op.attrs["group"] == 1
            and n in (1, 2)):
        if n == 1:  # a 1-D conv is a 2-D one of height 1
            ks, s, d, p = (1,) + ks, (1,) + s, (1,) + d, (0, p[0], 0, p[1])
        return _pixel_gemm(k, op, ks, s, d, p)
    _loops(k, op, n, ks, s, d, p)


def _pixel_gemm(k, op: Op, ks, s, d, p) -> None:
    x, dy = op.operands
    N, C = x.shape[:2]
    H, W = ([1] + list(x.shape[2:]))[-2:]
    M = dy.shape[1]
    OH, OW = ([1] + list(dy.shape[2:]))[-2:]
    KH, KW = ks
    KK, P = KH * KW, OH * OW
    R, Kred = C * KK, N * P
    Hp, Wp = _padded_dims(H, W, ks, s, d, p, OH, OW)
    plane = Hp * Wp
    image = -(-C * plane // LANES) * LANES  # per image, so two images' zeroing never overlap
    threads = max(1, getattr(k.cg, "threads", 1))
    by_channel = C >= 8
    if by_channel:
        blk = blocking(k.target.vector_bits, False, C, M)
        if C % blk.MR and C % 8 == 0:
            # 8 x 2 leaves no row of a tile empty where 12 x 2 pads the channels (64 = 6 x 12 - 8):
            # 4.4 against 4.9-5.4 ms on ResNet-18's 64-channel 3x3 layer, as fast or faster on the
            # 128-512-channel ones (one process, alternating, batch 8, 2 threads)
            blk = Blocking(F32, LANES, 8, 2 * LANES, blk.KC, blk.MC, blk.NC)
    else:  # rows are the taps of one kernel row
        nv = 1 if M <= LANES else 2
        blk = Blocking(F32, LANES, KW, nv * LANES, 256, KW, nv * LANES)
    MR, NR, KC = blk.MR, blk.NR, blk.KC
    kc_max = min(KC, Kred)
    panels = -(-M // NR)
    tn = min(threads, panels)
    nchunk = -(-panels // tn) * NR
    tn = -(-M // nchunk)
    # too few output channels for the threads: split the input channels too (each task then packs
    # the whole of its columns of B)
    unit = MR if by_channel else 1
    units = _ceil(C, unit)
    tr = max(1, min(threads // tn, units))
    cchunk = _ceil(units, tr) * unit
    tr = _ceil(C, cchunk)
    et = F32
    mk = microkernel(k.cg.ll, blk, Epilogue(), f"{k.fn.name}.wgrad_micro{k._tasks + 1}",
                     a_stride=plane if by_channel else d[1])
    b = k.b
    # MR planes of slack: a last partial tile of channels reads (and drops) rows past the end
    xp, xraw = heap_buffer(b, (N * image + MR * plane + LANES) * 4)

    def pad(kb, img):
        bb = kb.b
        src = gep(bb, kb.arg(0), bb.mul(img, const_int(C * H * W)), et)
        _pad_input(bb, src, gep(bb, kb.shared[0], bb.mul(img, const_int(image)), et), C, H, W, p, Hp, Wp)

    k.parallel_for(N, pad, name="wgpad", shared=[xp])

    # B of every pixel fits L2 (up to 1 MiB per task: ResNet's 7x7 and 14x14 layers): packed whole
    # first, then each C tile runs all its slices back to back and stays in L1, instead of dw^T
    # (megabytes at 256-512 channels) being read and written once per slice
    resident = Kred * nchunk * 4 <= 1 << 20
    span = Kred if resident else kc_max

    def body(kb, t):
        bb = kb.b
        ni, ri = bb.srem(t, const_int(tn)), bb.sdiv(t, const_int(tn))
        m0 = bb.mul(ni, const_int(nchunk))
        m1 = imin(bb, bb.add(m0, const_int(nchunk)), const_int(M))
        c0 = bb.mul(ri, const_int(cchunk))
        c1 = imin(bb, bb.add(c0, const_int(cchunk)), const_int(C))
        xpad = kb.shared[0]
        tab, traw = heap_buffer(bb, span * 8)
        gtab, graw = heap_buffer(bb, span * 8)
        bbuf, braw = heap_buffer(bb, span * nchunk * 4)
        ct, craw = heap_buffer(bb, R * nchunk * 4)
        null = ir.Constant(PTR, None)

        def prepare(pc, kc, at):
            """Offset tables and packed B of the pixels [pc, pc + kc), at element ``at`` of the buffers."""
            with for_range(bb, kc, "wgtab") as kk:
                img, pix = _decompose(bb, bb.add(pc, kk), (N, P))
                oh, ow = _decompose(bb, pix, (OH, OW))
                off = bb.add(bb.mul(img, const_int(image)),
                             bb.add(bb.mul(oh, const_int(s[0] * Wp)), bb.mul(ow, const_int(s[1]))))
                bb.store(off, gep(bb, tab, bb.add(at, kk), I64))
                bb.store(bb.add(bb.mul(img, const_int(M * P)), pix), gep(bb, gtab, bb.add(at, kk), I64))
            _pack_dy(bb, blk, gep(bb, bbuf, bb.mul(at, const_int(nchunk)), et), kb.arg(1), gep(bb, gtab, at, I64),
                     P, m0, m1, kc)

        def tiles(jr, call):
            """``call(a, cp, ldc, mrem)`` for every row tile of the task against the panel at ``jr``."""
            if by_channel:
                with for_range(bb, KK, "wgt") as tap:
                    i, j = bb.sdiv(tap, const_int(KW)), bb.srem(tap, const_int(KW))
                    toff = bb.add(bb.mul(i, const_int(d[0] * Wp)), bb.mul(j, const_int(d[1])))
                    with for_range(bb, c1, "wgc", start=c0, step=MR) as cb:
                        a = gep(bb, xpad, bb.add(bb.mul(cb, const_int(plane)), toff), et)
                        row = bb.add(bb.mul(cb, const_int(KK)), tap)
                        cp = gep(bb, ct, bb.add(bb.mul(row, const_int(nchunk)), jr), et)
                        call(a, cp, const_int(KK * nchunk), imin(bb, const_int(MR), bb.sub(c1, cb)))
            else:
                with for_range(bb, bb.mul(bb.sub(c1, c0), const_int(KH)), "wgr") as ci:
                    c, i = bb.add(c0, bb.sdiv(ci, const_int(KH))), bb.srem(ci, const_int(KH))
                    a = gep(bb, xpad, bb.add(bb.mul(c, const_int(plane)), bb.mul(i, const_int(d[0] * Wp))), et)
                    row = bb.add(bb.mul(c, const_int(KK)), bb.mul(i, const_int(KW)))
                    cp = gep(bb, ct, bb.add(bb.mul(row, const_int(nchunk)), jr), et)
                    call(a, cp, const_int(nchunk), const_int(MR))

        def micro(pc, kc, at, jr, a, cp, ldc, mrem):
            bp = gep(bb, gep(bb, bbuf, bb.mul(at, const_int(nchunk)), et), bb.mul(jr, kc), et)
            nrem = imin(bb, const_int(NR), bb.sub(bb.sub(m1, m0), jr))
            first = bb.icmp_signed("==", pc, const_int(0))
            last = bb.icmp_signed(">=", bb.add(pc, kc), const_int(Kred))
            bb.call(mk, [kc, a, bp, cp, ldc, mrem, nrem, first, last, null, gep(bb, tab, at, I64)])

        def slice_len(pc):
            return imin(bb, const_int(KC), bb.sub(const_int(Kred), pc))

        if resident:
            with for_range(bb, Kred, "wgk", step=KC) as pc:
                prepare(pc, slice_len(pc), pc)
            with for_range(bb, bb.sub(m1, m0), "wgj", step=NR) as jr:
                def all_slices(a, cp, ldc, mrem):
                    with for_range(bb, Kred, "wgs", step=KC) as pc:
                        micro(pc, slice_len(pc), pc, jr, a, cp, ldc, mrem)
                tiles(jr, all_slices)
        else:
            with for_range(bb, Kred, "wgk", step=KC) as pc:
                kc = slice_len(pc)
                prepare(pc, kc, const_int(0))
                with for_range(bb, bb.sub(m1, m0), "wgj", step=NR) as jr:
                    tiles(jr, lambda a, cp, ldc, mrem: micro(pc, kc, const_int(0), jr, a, cp, ldc, mrem))
        rows0 = bb.mul(c0, const_int(KK))
        _transpose_out(bb, blk, gep(bb, ct, bb.mul(rows0, const_int(nchunk)), et), nchunk, kb.out(0), R, m0, m1,
                       rows0, bb.mul(bb.sub(c1, c0), const_int(KK)))
        for raw in (traw, graw, braw, craw):
            heap_free(bb, raw)

    k.parallel_for(tn * tr, body, name="wgrad", shared=[xp])
    heap_free(b, xraw)


def _pack_dy(b, blk: Blocking, buf, dy, gtab, P: int, m0, m1, kc) -> None:
    """``buf[jp*kc*NR + k*NR + j] = dy[gtab[k] + (m0 + jp*NR + j)*P]`` (0 for channels >= m1): the
    slice's pixels as rows of NR-wide panels of output channels."""
    et, NR = F32, blk.NR
    zero = ir.Constant(et, 0.0)
    with for_range(b, b.sub(m1, m0), "wgpj", step=NR) as jr:
        dst = gep(b, buf, b.mul(jr, kc), et)
        with for_range(b, NR, "wgpc") as j:
            m = b.add(b.add(m0, jr), j)
            live = b.icmp_signed("<", m, m1)
            src = gep(b, dy, b.mul(b.select(live, m, m0), const_int(P)), et)
            with b.if_else(live) as (then, other):
                with then:
                    with for_range(b, kc, "wgpk") as kk:
                        v = b.load(gep(b, src, b.load(gep(b, gtab, kk, I64), typ=I64), et), typ=et)
                        b.store(v, gep(b, dst, b.add(b.mul(kk, const_int(NR)), j), et))
                with other:
                    with for_range(b, kc, "wgpz") as kk:
                        b.store(zero, gep(b, dst, b.add(b.mul(kk, const_int(NR)), j), et))


def _loops(k, op: Op, n: int, ks, s, d, p) -> None:
    """dw[m, c, t] = sum over images and output positions of dy[n, m, o] * x[n, g*cg + c, o*s + t*d - pad]."""
    x, dy = op.operands
    out = op.results[0]
    dt = out.dtype
    t = ll_type(dt)
    acc_t = F32 if dt == DType.f16 else t
    G = op.attrs["group"]
    N, C = x.shape[:2]
    M = dy.shape[1]
    cg, mg = C // G, M // G
    insp, outsp = tuple(x.shape[2:]), tuple(dy.shape[2:])
    Pin, P, KK = math.prod(insp), math.prod(outsp), math.prod(ks)

    def widen(b, v):
        return v if acc_t == t else b.fpext(v, acc_t)

    def body(kb, m):
        b = kb.b
        g = b.sdiv(m, const_int(mg))
        acc = entry_alloca(b, acc_t)
        with for_range(b, cg * KK, "wlr") as ct:
            c, tap = b.sdiv(ct, const_int(KK)), b.srem(ct, const_int(KK))
            tt = _decompose(b, tap, ks)
            b.store(ir.Constant(acc_t, 0.0), acc)
            with for_range(b, N, "wln") as img:
                xb = gep(b, kb.arg(0), b.mul(b.add(b.mul(img, const_int(C)), b.add(b.mul(g, const_int(cg)), c)),
                                             const_int(Pin)), t)
                gb = gep(b, kb.arg(1), b.mul(b.add(b.mul(img, const_int(M)), m), const_int(P)), t)
                with for_range(b, P, "wlp") as pix:
                    valid, idx = tap_input(b, _decompose(b, pix, outsp), tt, insp, s, d, p)
                    with b.if_then(valid):
                        xv = widen(b, b.load(gep(b, xb, idx, t), typ=t))
                        gv = widen(b, b.load(gep(b, gb, pix, t), typ=t))
                        b.store(b.fadd(b.load(acc, typ=acc_t), b.fmul(xv, gv)), acc)
            r = b.load(acc, typ=acc_t)
            b.store(r if acc_t == t else b.fptrunc(r, t), gep(b, kb.out(0), b.add(b.mul(m, const_int(cg * KK)), ct), t))

    k.parallel_for(M, body, name="wgradl")

"""Conv as a GEMM whose vectors run over output channels: ``Y^T[P, M] = cols^T[P, K] @ W^T[K, M]``.

conv.py's GEMM vectorises over output pixels, so a plane of 7x7 = 49 or 14x14 = 196 pixels fills
ceil(P/16) vectors and pads the rest (77% and 88% useful lanes), and its implicit im2col gathers
wherever a vector of columns crosses an output row. Here the roles swap. The microkernel's rows
(the broadcast values) are MR consecutive output pixels of one output row (MR divides the output
width, so no row is padded), its vector columns are output channels, and the filters are the B
operand, packed at compile time. A row of an A panel (one input channel and tap of the
contraction) is MR pixels of one input row: one masked vector load at stride 1, a masked
double-width load and a shuffle at stride 2, zeros where the tap falls in the padding.

Each task (an image and a range of output channels) computes C^T block by block: a block of pixels
gets all K slices into a task-local buffer ``[pixels][channels]`` (bias in the microkernel), then is
transposed into the NCHW output, where a fused group's epilogue runs on it while it is in cache.
"""

from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from ..llvm_types import F32, I1, I32, PTR, const_int, for_range
from .gemm import (
    Blocking,
    Epilogue,
    gep,
    heap_buffer,
    heap_free,
    imin,
    masked_load,
    masked_store,
    microkernel,
    pack_b_const,
    splat,
)
from .linalg import const_array

LANES = 16  # f32 in a zmm register: the path is for AVX-512 only


@dataclass(frozen=True)
class Plan:
    blk: Blocking
    MC: int  # pixels per block (a multiple of MR)
    tn: int  # tasks along the output channels (per image)
    nchunk: int  # output channels per task (a multiple of NR)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _pixel_rows(ow: int) -> int | None:
    """MR: the largest divisor of the output width that makes a tall enough register tile."""
    return next((r for r in range(14, 5, -1) if ow % r == 0), None)


def plan(target, threads: int, M: int, K: int, KK: int, P: int, OW: int, stride: tuple[int, ...]) -> Plan | None:
    """The blocking for a conv this path runs faster than conv.py's GEMM, else None.

    It pays where output rows are short (7, 14, 28 pixels: the other GEMM pads its vectors of
    pixels and gathers across rows) and the contraction is deep enough (K >= 256) that the
    transpose of C^T, about a cycle per output element, stays a few percent of the work. Measured
    by bench/conv_peak.py on ResNet-50's shapes: a 1x1 conv of a 28-pixel row, or any conv of
    56-pixel rows, is as fast or faster on the other path."""
    if target.vector_bits != 512 or stride[-1] not in (1, 2) or K < 256 or OW > (28 if KK > 1 else 14):
        return None
    mr = _pixel_rows(OW)
    if mr is None:
        return None
    # 7x4 = 28 accumulators spill (the 4 filter vectors and a broadcast need registers too): 7x3, 14x2
    nv = 3 if mr <= 8 else 2
    nr = nv * LANES
    kc = max(64, 8192 // nr // 32 * 32)  # the KC x NR filter panel: 32 KiB, in L1
    tn = max(1, min(threads, _ceil(M, nr)))
    nchunk = _ceil(_ceil(M, tn), nr) * nr
    # the A block (MC x KC) and the C^T block (MC x nchunk) stay in L2
    mc = min(P, max(mr, min(65536 // kc, 65536 // nchunk) // mr * mr))
    return Plan(Blocking(F32, LANES, mr, nr, min(kc, K), mc, nchunk), mc, tn, nchunk)


def emit(k, op, plan_: Plan, ks, s, d, p) -> None:
    x, w = op.operands[0], op.operands[1]
    out = op.results[0]
    N, C, H, W = x.shape
    M = w.shape[0]
    OH, OW = out.shape[2:]
    P, KK = OH * OW, ks[0] * ks[1]
    K = C * KK
    blk, MC, tn, nchunk = plan_.blk, plan_.MC, plan_.tn, plan_.nchunk
    MR, NR, KC = blk.MR, blk.NR, blk.KC
    et = F32
    mpad = -(-M // NR) * NR
    warr = const_array(k, w)
    woff = k.packed_constant(f"{w.name}.packed_cv", pack_b_const(warr.reshape(M, K).T.copy(), blk),
                             replaces=k.arg(1))
    has_bias = len(op.operands) > 2
    epi = Epilogue(bias=lambda kb: kb.arg(2), bias_rs=0, bias_cs=1) if has_bias else Epilogue()
    # the name marks the path in the LLVM IR (tests look for it; the alias scopes keep it once inlined)
    mk = microkernel(k.cg.ll, blk, epi, f"{k.fn.name}.chanvec_micro{k._tasks + 1}")
    tile = getattr(k, "tile_epilogue", None)
    if getattr(tile, "inner", P) != P:
        tile = None
    if tile is not None:
        k.tile_epilogue_applied = True
    pack = _packer(C, H, W, OW, ks, s, d, p, blk)

    def body(kb, t):
        b = kb.b
        img = b.sdiv(t, const_int(tn))
        n0 = b.mul(b.srem(t, const_int(tn)), const_int(nchunk))
        n1 = imin(b, b.add(n0, const_int(nchunk)), const_int(M))
        xbase = gep(b, kb.arg(0), b.mul(img, const_int(C * H * W)), et)
        ybase = gep(b, kb.out(0), b.mul(img, const_int(M * P)), et)
        wbase = kb.weights_ptr(woff)
        bias = gep(b, kb.arg(2), n0, et) if has_bias else ir.Constant(PTR, None)
        abuf, araw = heap_buffer(b, MC * KC * 4)
        cbuf, craw = heap_buffer(b, MC * nchunk * 4)
        with for_range(b, P, "cvp", step=MC) as p0:
            mcur = imin(b, const_int(MC), b.sub(const_int(P), p0))
            with for_range(b, K, "cvk", step=KC) as pc:
                kc = imin(b, const_int(KC), b.sub(const_int(K), pc))
                pack(kb, abuf, xbase, p0, mcur, pc, kc)
                first = b.icmp_signed("==", pc, const_int(0))
                last = b.icmp_signed(">=", b.add(pc, kc), const_int(K))
                bslice = gep(b, wbase, b.mul(pc, const_int(mpad)), et)
                with for_range(b, b.sub(n1, n0), "cvj", step=NR) as jr:
                    col = b.add(n0, jr)
                    bp = gep(b, bslice, b.mul(col, kc), et)
                    nrem = imin(b, const_int(NR), b.sub(n1, col))
                    bp_bias = gep(b, bias, jr, et) if has_bias else bias
                    with for_range(b, mcur, "cvi", step=MR) as ir_:
                        ap = gep(b, abuf, b.mul(ir_, kc), et)
                        cp = gep(b, cbuf, b.add(b.mul(ir_, const_int(nchunk)), jr), et)
                        b.call(mk, [kc, ap, bp, cp, const_int(nchunk), const_int(MR), nrem, first, last, bp_bias])
            # C^T block -> Y[n0:n1, p0:p0+mcur]: a vector of 16 channels of one pixel is read
            # contiguously and its lanes go to 16 output rows (reading along the pixels instead
            # strides by the buffer's row of ``nchunk`` floats: 4 KiB apart, one L1 set)
            with for_range(b, b.sub(n1, n0), "cvt", step=LANES) as j:
                rows = [gep(b, ybase, b.add(b.mul(b.add(n0, b.add(j, const_int(r))), const_int(P)), p0), et)
                        for r in range(LANES)]
                nlive = b.sub(b.sub(n1, n0), j)
                with b.if_else(b.icmp_signed(">=", nlive, const_int(LANES))) as (whole, part):
                    with whole:
                        with for_range(b, mcur, "cvtp") as q:
                            v = b.load(gep(b, cbuf, b.add(b.mul(q, const_int(nchunk)), j), et), typ=blk.vt, align=4)
                            for r in range(LANES):
                                b.store(b.extract_element(v, const_int(r, I32)), gep(b, rows[r], q, et))
                    with part:
                        with for_range(b, nlive, "cvtr") as r:
                            yrow = gep(b, ybase, b.add(b.mul(b.add(n0, b.add(j, r)), const_int(P)), p0), et)
                            with for_range(b, mcur, "cvtq") as q:
                                x_ = b.load(gep(b, cbuf, b.add(b.mul(q, const_int(nchunk)), b.add(j, r)), et), typ=et)
                                b.store(x_, gep(b, yrow, q, et))
            if tile is not None:
                yblk = gep(b, ybase, b.add(b.mul(n0, const_int(P)), p0), et)
                tile(kb, b.add(b.mul(img, const_int(M)), n0), p0, b.sub(n1, n0), mcur, yblk, P)
        heap_free(b, araw)
        heap_free(b, craw)

    k.parallel_for(N * tn, body, name="convcv")


def _packer(C, H, W, OW, ks, s, d, p, blk: Blocking):
    """``buf[ip*kc*MR + kk*MR + r] = x[c, oh*s - pad + i*d, (ow0 + r)*s - pad + j*d]`` for the pixel
    panels ``ip`` of the block starting at pixel ``p0`` (panel ip: output row oh, columns ow0..+MR)
    and contraction rows ``pc + kk`` = (c, i, j); 0 in the padding."""
    MR, L = blk.MR, blk.lanes
    KK, KW = ks[0] * ks[1], ks[1]
    st = s[-1]
    et = F32
    ivt = ir.VectorType(I32, L)
    wide = ir.VectorType(et, 2 * L)
    lane_in_tile = ir.Constant(ir.VectorType(I1, L), [r < MR for r in range(L)])
    iota_s = ir.Constant(ivt, [r * st for r in range(L)])
    pick = ir.Constant(ivt, [2 * r for r in range(L)])

    def pack(kb, buf, xbase, p0, mcur, pc, kc):
        b = kb.b
        npan = b.sdiv(mcur, const_int(MR))
        with for_range(b, kc, "cvpk") as kk:
            kidx = b.add(pc, kk)
            c = b.sdiv(kidx, const_int(KK))
            tap = b.srem(kidx, const_int(KK))
            i, j = b.sdiv(tap, const_int(KW)), b.srem(tap, const_int(KW))
            chan = gep(b, xbase, b.mul(c, const_int(H * W)), et)
            ioff = b.sub(b.mul(i, const_int(d[0])), const_int(p[0]))
            joff = b.sub(b.mul(j, const_int(d[1])), const_int(p[1]))
            with for_range(b, npan, "cvpp") as ip:
                pix = b.add(p0, b.mul(ip, const_int(MR)))
                oh, ow0 = b.sdiv(pix, const_int(OW)), b.srem(pix, const_int(OW))
                ih = b.add(b.mul(oh, const_int(s[0])), ioff)
                iw0 = b.add(b.mul(ow0, const_int(st)), joff)
                row_ok = b.icmp_unsigned("<", ih, const_int(H))
                pos = b.add(splat(b, b.trunc(iw0, I32), ivt), iota_s)
                ok = b.and_(b.icmp_unsigned("<", pos, ir.Constant(ivt, [W] * L)), lane_in_tile)
                ok = b.and_(ok, splat(b, row_ok, ir.VectorType(I1, L)))
                # the address of lane 0 may lie before the row (padding): a plain, not inbounds, GEP
                src = b.gep(chan, [b.add(b.mul(ih, const_int(W)), iw0)], source_etype=et)
                if st == 1:
                    v = masked_load(b, src, ok, blk.vt)
                else:  # lane r at 2r of a double-width load: the odd lanes are never read
                    wmask = b.shuffle_vector(ok, ir.Constant(ok.type, None),
                                             ir.Constant(ir.VectorType(I32, 2 * L),
                                                         [r // 2 if r % 2 == 0 else L for r in range(2 * L)]))
                    v = b.shuffle_vector(masked_load(b, src, wmask, wide), ir.Constant(wide, None), pick)
                dst = gep(b, buf, b.add(b.mul(ip, b.mul(kc, const_int(MR))), b.mul(kk, const_int(MR))), et)
                masked_store(b, v, dst, lane_in_tile)
    return pack

"""Conv as a GEMM whose vectors run over output channels: ``Y^T[P, M] = cols^T[P, K] @ W^T[K, M]``.

conv.py's GEMM vectorises over output pixels, so a plane of 7x7 = 49 or 14x14 = 196 pixels fills
ceil(P/16) vectors and pads the rest (77% and 88% useful lanes), and its implicit im2col gathers
wherever a vector of columns crosses an output row. Here the roles swap. The microkernel's rows (the
broadcast values) are MR consecutive output pixels of one output row (MR divides the output width,
so no row is padded), its vector columns are output channels, and the filters are the B operand,
packed at compile time (filters that are an input, a training step's parameters or a gradient's
flipped filters, once per call into the same layout). Each task first copies its image into a
zero-padded buffer (unless the conv has no padding), so no tap needs a bounds check. A row of A (one
input channel and tap (c, i, j) of the contraction) is then MR pixels of one padded input row, at a
tabulated offset: a spatial filter's microkernel broadcasts them in place through that table (its
rows overlap, so packing would copy each input pixel KH*KW times), a 1x1 conv packs them into panels
first (one masked load each; a double-width load and a shuffle at stride 2).

Each task (an image and a range of output channels or of pixels) computes C^T block by block: a
block of pixels gets all K slices into a task-local buffer ``[pixels][channels]`` (bias in the
microkernel), then is transposed (16 x 16 at a time, in registers) into the NCHW output, where a
fused group's epilogue runs on it while it is in cache.

The blocking is a ``Plan``; as a schedule of kind ``chanvec`` (schedule.py) it is what ``nnc tune``
searches: ``plan`` gives the default, ``schedule_of`` turns a plan into its schedule and
``plan_from_schedule`` a schedule (from a tuning database) back into the plan of one conv, or a
``ScheduleError`` when the conv cannot run it (a tile that does not divide the output row, a task
with no channels or pixels...). The default schedule gives back the default plan exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from llvmlite import ir

from ..llvm_types import F32, I1, I32, I64, PTR, const_int, for_range
from ..schedule import Schedule, ScheduleError
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
    pack_b_once,
    splat,
)
from .transpose2d import transpose16

if TYPE_CHECKING:
    import numpy as np

LANES = 16  # f32 in a zmm register: the path is for AVX-512 only


@dataclass(frozen=True)
class Plan:
    blk: Blocking
    MC: int  # pixels per block (a multiple of MR)
    tn: int  # tasks along the output channels (per image)
    nchunk: int  # output channels per task (a multiple of NR)
    tp: int = 1  # tasks along the pixels (per image)
    pchunk: int = 0  # pixels per task (a multiple of MR)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def _pixel_rows(ow: int, lo: int, hi: int) -> int | None:
    """The largest divisor of the output width in [lo, hi] (a register tile of that many pixels)."""
    return next((r for r in range(hi, lo - 1, -1) if ow % r == 0), None)


def plan(target, threads: int, M: int, K: int, KK: int, P: int, OW: int, stride: tuple[int, ...]) -> Plan | None:
    """The blocking for a conv this path runs faster than conv.py's GEMM, else None.

    It pays where output rows are short (7, 14, 28 pixels: the other GEMM pads its vectors of
    pixels and gathers across rows) and the contraction deep enough that the transpose of C^T
    stays a few percent of the work (K >= 256), and for spatial filters up to 112-pixel rows and
    K >= 128, whose A rows are read in place (no packing) while the other GEMM's im2col gathers.
    Measured by bench/conv_peak.py on ResNet-50's shapes (and SqueezeNet-like 3x3 convs of K =
    144): 1x1 convs of 28- and 56-pixel rows (the image read in place as B) are as fast or faster
    on the other path."""
    if target.vector_bits != 512 or stride[-1] not in (1, 2):
        return None
    if not (K >= 256 and OW <= 14 or KK > 1 and K >= 128 and OW <= 112):
        return None
    tall, short = _pixel_rows(OW, 9, 14), _pixel_rows(OW, 6, 8)
    # 7x4 = 28 accumulators spill (the 4 filter vectors and a broadcast need registers too): tiles
    # of 9-14 pixels take 2 channel vectors, of 6-8 pixels 3, or 2 when 3 would pad the channels by
    # more than 3% (160 = 5 x 32); a width with both takes the tile that pads the channels least
    # (48 channels: 8 x 3, not 14 x 2)
    pad2, pad3 = _ceil(M, 2 * LANES) * 2 * LANES, _ceil(M, 3 * LANES) * 3 * LANES
    if short is not None and (tall is None or pad3 < 0.97 * pad2):
        mr, nv = short, 2 if pad2 < 0.97 * pad3 else 3
    elif tall is not None:
        mr, nv = tall, 2
    else:
        return None
    nr = nv * LANES
    kc = max(64, 8192 // nr // 32 * 32)  # the KC x NR filter panel: 32 KiB, in L1
    # threads split the output channels, each packing the whole image; with few channels the
    # packing would be done twice for little work each, so they split the pixels instead
    tn = tp = 1
    if threads > 1 and M <= 128 and P // mr >= 2 * threads:
        tp = threads
    else:
        tn = max(1, min(threads, _ceil(M, nr)))
    nchunk, pchunk = chunks(M, P, mr, nv, tn, tp)
    # the A block (MC x KC) and the C^T block (MC x nchunk) stay in L2
    mc = min(pchunk, max(mr, min(65536 // kc, 65536 // nchunk) // mr * mr))
    return _plan(mr, nv, min(kc, K), mc, tn, tp, M, P)


def chunks(M: int, P: int, mr: int, nv: int, tn: int, tp: int) -> tuple[int, int]:
    """(output channels, output pixels) of one task when an image is split into ``tn`` x ``tp`` tasks."""
    nr = nv * LANES
    return _ceil(_ceil(M, tn), nr) * nr, _ceil(_ceil(P, mr), tp) * mr


def _plan(mr: int, nv: int, kc: int, mc: int, tn: int, tp: int, M: int, P: int) -> Plan:
    nchunk, pchunk = chunks(M, P, mr, nv, tn, tp)
    return Plan(Blocking(F32, LANES, mr, nv * LANES, kc, mc, nchunk), mc, tn, nchunk, tp, pchunk)


def schedule_of(plan_: Plan) -> Schedule:
    """The ``chanvec`` schedule of a plan."""
    blk = plan_.blk
    return Schedule("chanvec", mr=blk.MR, nv=blk.nv, kc=blk.KC, mc=plan_.MC, tn=plan_.tn, tp=plan_.tp)


def plan_from_schedule(sched: Schedule, vector_bits: int, M: int, K: int, P: int, OW: int,
                       stride: tuple[int, ...], where: str) -> Plan:
    """The plan a ``chanvec`` schedule asks for, for a conv of ``M`` output channels, contraction
    ``K``, ``P`` output pixels in rows of ``OW`` (``where`` names the kernel in errors)."""
    def bad(why: str) -> ScheduleError:
        return ScheduleError(f"{where}: the chanvec schedule {sched.text()} does not fit: {why}")

    if vector_bits != 512:
        raise bad("the channel-vector conv is for AVX-512 targets only")
    if stride[-1] not in (1, 2):
        raise bad(f"the row stride is {stride[-1]} (the path packs rows at stride 1 or 2)")
    if OW % sched.mr:
        raise bad(f"a tile of {sched.mr} pixels does not divide the {OW}-pixel output rows")
    if sched.kc > K:
        raise bad(f"kc {sched.kc} is deeper than the contraction ({K})")
    nchunk, pchunk = chunks(M, P, sched.mr, sched.nv, sched.tn, sched.tp)
    if sched.mc > pchunk:
        raise bad(f"mc {sched.mc} is more pixels than a task has ({pchunk})")
    if (sched.tn - 1) * nchunk >= M or (sched.tp - 1) * pchunk >= P:
        raise bad(f"some of the {sched.tn} x {sched.tp} tasks of an image would have no channels or pixels")
    return _plan(sched.mr, sched.nv, sched.kc, sched.mc, sched.tn, sched.tp, M, P)


def emit(k, op, plan_: Plan, warr: np.ndarray | None, ks, s, d, p) -> None:
    """The conv ``op`` along ``plan_``; ``warr``: its filters when they are a constant, else None
    (an input, e.g. a training step's parameters: packed once per call into the same layout)."""
    x, w = op.operands[0], op.operands[1]
    out = op.results[0]
    N, C, H, W = x.shape
    M = w.shape[0]
    OH, OW = out.shape[2:]
    P, KK = OH * OW, ks[0] * ks[1]
    K = C * KK
    blk, MC, tn, nchunk, tp, pchunk = plan_.blk, plan_.MC, plan_.tn, plan_.nchunk, plan_.tp, plan_.pchunk
    MR, NR, KC = blk.MR, blk.NR, blk.KC
    et = F32
    mpad = -(-M // NR) * NR
    if warr is not None:
        woff = k.packed_constant(f"{w.name}.packed_cv", pack_b_const(warr.reshape(M, K).T.copy(), blk),
                                 replaces=k.arg(1))
        shared, wraw = [], None
    else:
        wbuf, wraw = pack_b_once(k, blk, lambda kb: kb.arg(1), K, M)
        shared = [wbuf]
    has_bias = len(op.operands) > 2
    epi = Epilogue(bias=lambda kb: kb.arg(2), bias_rs=0, bias_cs=1) if has_bias else Epilogue()
    # a spatial filter reads A in place (its rows overlap: packing would copy each input KH*KW
    # times); a 1x1 conv packs A, whose rows lie a whole channel plane apart
    indirect = KK > 1
    # the name marks the path in the LLVM IR (tests look for it; the alias scopes keep it once inlined)
    mk = microkernel(k.cg.ll, blk, epi, f"{k.fn.name}.chanvec_micro{k._tasks + 1}",
                     a_stride=s[-1] if indirect else None)
    tile = getattr(k, "tile_epilogue", None)
    if getattr(tile, "inner", P) != P:
        tile = None
    if tile is not None:
        k.tile_epilogue_applied = True
    Hp, Wp = _padded_dims(H, W, ks, s, d, p, OH, OW)
    direct = (Hp, Wp) == (H, W) and p[0] == p[1] == 0
    tabulate = _tabulator(Hp, Wp, ks, d)
    pack = _packer(Wp, OW, s, blk)

    def body(kb, t):
        b = kb.b
        img, n0, n1, pstart, pend = task_ranges(b, t, tn, tp, nchunk, M, pchunk, P)
        xbase = gep(b, kb.arg(0), b.mul(img, const_int(C * H * W)), et)
        ybase = gep(b, kb.out(0), b.mul(img, const_int(M * P)), et)
        wbase = kb.weights_ptr(woff) if warr is not None else kb.shared[0]
        bias = gep(b, kb.arg(2), n0, et) if has_bias else ir.Constant(PTR, None)
        tab, traw = heap_buffer(b, KC * 8)
        cbuf, craw = heap_buffer(b, MC * nchunk * 4)
        raws = [craw, traw]
        if not indirect:
            abuf, araw = heap_buffer(b, MC * KC * 4)
            raws.append(araw)
        if direct:  # no padding (a 1x1 conv): the image itself is the padded copy
            xp = xbase
        else:
            xp, xraw = heap_buffer(b, (-(-C * Hp * Wp // LANES) * LANES) * 4)
            raws.append(xraw)
            _pad_input(b, xbase, xp, C, H, W, p, Hp, Wp)
        with for_range(b, pend, "cvp", start=pstart, step=MC) as p0:
            mcur = imin(b, const_int(MC), b.sub(pend, p0))
            with for_range(b, K, "cvk", step=KC) as pc:
                kc = imin(b, const_int(KC), b.sub(const_int(K), pc))
                tabulate(kb, tab, pc, kc)
                if not indirect:
                    pack(kb, abuf, xp, tab, p0, mcur, kc)
                first = b.icmp_signed("==", pc, const_int(0))
                last = b.icmp_signed(">=", b.add(pc, kc), const_int(K))
                bslice = gep(b, wbase, b.mul(pc, const_int(mpad)), et)
                with for_range(b, b.sub(n1, n0), "cvj", step=NR) as jr:
                    col = b.add(n0, jr)
                    bp = gep(b, bslice, b.mul(col, kc), et)
                    nrem = imin(b, const_int(NR), b.sub(n1, col))
                    bp_bias = gep(b, bias, jr, et) if has_bias else bias
                    with for_range(b, mcur, "cvi", step=MR) as ir_:
                        cp = gep(b, cbuf, b.add(b.mul(ir_, const_int(nchunk)), jr), et)
                        args = [kc, None, bp, cp, const_int(nchunk), const_int(MR), nrem, first, last, bp_bias]
                        if indirect:  # the panel's first input pixel; the table adds (c, i, j)
                            pix = b.add(p0, ir_)
                            oh, ow0 = b.sdiv(pix, const_int(OW)), b.srem(pix, const_int(OW))
                            args[1] = gep(b, xp, b.add(b.mul(oh, const_int(s[0] * Wp)),
                                                       b.mul(ow0, const_int(s[-1]))), et)
                            args.append(tab)
                        else:
                            args[1] = gep(b, abuf, b.mul(ir_, kc), et)
                        b.call(mk, args)
            _transpose_out(b, blk, cbuf, nchunk, ybase, P, n0, n1, p0, mcur)
            if tile is not None:
                yblk = gep(b, ybase, b.add(b.mul(n0, const_int(P)), p0), et)
                tile(kb, b.add(b.mul(img, const_int(M)), n0), p0, b.sub(n1, n0), mcur, yblk, P)
        for raw in raws:
            heap_free(b, raw)

    k.parallel_for(N * tn * tp, body, name="convcv", shared=shared)
    if wraw is not None:
        heap_free(k.b, wraw)


def task_ranges(b, t, tn: int, tp: int, nchunk: int, M: int, chunk: int, n: int):
    """(image, first and end output channel, first and end item) of task ``t`` when each image is
    split into ``tn`` chunks of ``nchunk`` channels x ``tp`` chunks of ``chunk`` items (of ``n``)."""
    img = b.sdiv(t, const_int(tn * tp))
    n0 = b.mul(b.srem(t, const_int(tn)), const_int(nchunk))
    start = b.mul(b.srem(b.sdiv(t, const_int(tn)), const_int(tp)), const_int(chunk))
    end = imin(b, b.add(start, const_int(chunk)), const_int(n))
    return img, n0, imin(b, b.add(n0, const_int(nchunk)), const_int(M)), start, end


def _transpose_out(b, blk: Blocking, cbuf, ldc: int, ybase, P: int, n0, n1, p0, mcur) -> None:
    """C^T block ``cbuf[q*ldc + j]`` -> ``Y[(n0 + j)*P + p0 + q]`` for j < n1 - n0, q < mcur.

    16 pixels x 16 channels at a time through registers (16 loads, 64 shuffles, 16 stores); the
    ragged edges (fewer than 16 pixels or channels left) element by element."""
    et, L = F32, LANES
    nl = b.sub(n1, n0)
    n16 = b.mul(b.sdiv(nl, const_int(L)), const_int(L))
    q16 = b.mul(b.sdiv(mcur, const_int(L)), const_int(L))

    def scalar(j0, j1, q0, q1):
        with for_range(b, b.sub(j1, j0), "cvtj") as jj:
            j = b.add(j0, jj)
            yrow = gep(b, ybase, b.add(b.mul(b.add(n0, j), const_int(P)), p0), et)
            with for_range(b, q1, "cvtq", start=q0) as q:
                x_ = b.load(gep(b, cbuf, b.add(b.mul(q, const_int(ldc)), j), et), typ=et)
                b.store(x_, gep(b, yrow, q, et))

    with for_range(b, n16, "cvtb", step=L) as j:
        with for_range(b, q16, "cvtc", step=L) as q:
            src = gep(b, cbuf, b.add(b.mul(q, const_int(ldc)), j), et)
            rows = [b.load(gep(b, src, r * ldc, et), typ=blk.vt, align=4) for r in range(L)]
            ydst = gep(b, ybase, b.add(b.mul(b.add(n0, j), const_int(P)), b.add(p0, q)), et)
            for r, vec in enumerate(transpose16(b, rows)):
                b.store(vec, gep(b, ydst, r * P, et), align=4)
        scalar(j, b.add(j, const_int(L)), q16, mcur)  # the pixels past the last 16
    scalar(n16, nl, const_int(0), mcur)  # the channels past the last 16


def _padded_dims(H, W, ks, s, d, p, OH, OW) -> tuple[int, int]:
    """Rows and row pitch of the zero-padded copy of a channel: every tap of every output inside,
    and room for the last vector load of a row (MR lanes, at stride 2 the double-width load)."""
    Hp = max(H + p[0], (OH - 1) * s[0] + (ks[0] - 1) * d[0] + 1)
    Wp = max(W + p[1], (OW - 1) * s[1] + (ks[1] - 1) * d[1] + 1)
    return Hp, Wp


def _pad_input(b, xbase, xp, C, H, W, p, Hp, Wp) -> None:
    """xp[c, h + pad_top, w + pad_left] = x[c, h, w], zeros elsewhere."""
    et, L = F32, LANES
    vt = ir.VectorType(et, L)
    n = C * Hp * Wp
    with for_range(b, -(-n // L) * L, "cvz", step=L) as i:
        b.store(ir.Constant(vt, None), gep(b, xp, i, et), align=4)
    with for_range(b, C * H, "cvch") as ch:
        c, h = b.sdiv(ch, const_int(H)), b.srem(ch, const_int(H))
        src = gep(b, xbase, b.mul(ch, const_int(W)), et)
        dst = gep(b, xp, b.add(b.mul(c, const_int(Hp * Wp)), b.add(b.mul(b.add(h, const_int(p[0])), const_int(Wp)),
                                                                    const_int(p[1]))), et)
        with for_range(b, W, "cvcw", step=L) as w_:
            live = b.icmp_signed("<", b.add(splat(b, w_, ir.VectorType(I64, L)),
                                             ir.Constant(ir.VectorType(I64, L), list(range(L)))),
                                 ir.Constant(ir.VectorType(I64, L), [W] * L))
            masked_store(b, masked_load(b, gep(b, src, w_, et), live, vt), gep(b, dst, w_, et), live)


def _tabulator(Hp, Wp, ks, d):
    """``tab[kk]`` = the offset in the padded input of contraction row ``pc + kk`` = (c, i, j):
    ``c*Hp*Wp + i*d*Wp + j*d``, computed once per K slice."""
    KK, KW = ks[0] * ks[1], ks[1]

    def tabulate(kb, tab, pc, kc):
        b = kb.b
        with for_range(b, kc, "cvtab") as kk:
            kidx = b.add(pc, kk)
            c, tap = b.sdiv(kidx, const_int(KK)), b.srem(kidx, const_int(KK))
            i, j = b.sdiv(tap, const_int(KW)), b.srem(tap, const_int(KW))
            off = b.add(b.mul(c, const_int(Hp * Wp)), b.add(b.mul(i, const_int(d[0] * Wp)), b.mul(j, const_int(d[1]))))
            b.store(off, gep(b, tab, kk, I64))
    return tabulate


def _packer(Wp, OW, s, blk: Blocking):
    """``buf[ip*kc*MR + kk*MR + r] = xp[tab[kk] + oh*s*Wp + (ow0 + r)*s]`` for the pixel panels ``ip``
    of the block starting at pixel ``p0`` (panel ip: output row oh, columns ow0..ow0+MR): a panel
    row is one load (a double-width load and a shuffle at stride 2) and one store, both under a
    constant mask of MR lanes."""
    MR, L = blk.MR, blk.lanes
    st = s[-1]
    et = F32
    wide = ir.VectorType(et, 2 * L)
    in_tile = ir.Constant(ir.VectorType(I1, L), [r < MR for r in range(L)])
    even = ir.Constant(ir.VectorType(I1, 2 * L), [r % 2 == 0 and r // 2 < MR for r in range(2 * L)])
    pick = ir.Constant(ir.VectorType(I32, L), [2 * r for r in range(L)])

    def pack(kb, buf, xp, tab, p0, mcur, kc):
        b = kb.b
        with for_range(b, b.sdiv(mcur, const_int(MR)), "cvpp") as ip:
            pix = b.add(p0, b.mul(ip, const_int(MR)))
            oh, ow0 = b.sdiv(pix, const_int(OW)), b.srem(pix, const_int(OW))
            base = gep(b, xp, b.add(b.mul(oh, const_int(s[0] * Wp)), b.mul(ow0, const_int(st))), et)
            dst = gep(b, buf, b.mul(ip, b.mul(kc, const_int(MR))), et)
            with for_range(b, kc, "cvpk") as kk:
                src = gep(b, base, b.load(gep(b, tab, kk, I64), typ=I64), et)
                if st == 1:
                    v = masked_load(b, src, in_tile, blk.vt)
                else:
                    v = b.shuffle_vector(masked_load(b, src, even, wide), ir.Constant(wide, None), pick)
                masked_store(b, v, gep(b, dst, b.mul(kk, const_int(MR)), et), in_tile)
    return pack

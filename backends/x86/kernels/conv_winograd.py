"""3x3 stride-1 conv by Winograd's minimal filtering F(2x2, 3x3): 16 multiplies per 2x2 output tile
per (input, output channel) instead of 36.

``Y = A^T [ (G g G^T) . (B^T d B) ] A`` per 4x4 input patch ``d`` (tiles overlap by 2 columns and
rows). The filter transform ``U = G g G^T`` is done at compile time (numpy); for each of the 16
points xi of the 4x4 tile ``U_xi`` (C x M) is the B operand of a GEMM, packed like the
channel-vector conv's filters (conv_channel_vectors.py), vectors over output channels. Its factors
are 1 and 1/2 only, so on small integers (|x| <= 2, ``nnc tune``'s bit-exact check) every value is
a multiple of 1/4 far below 2^22 and the result is exact; F(4x4, 3x3) would need 1/6 and 1/24.

A task is (image, a chunk of output channels, a range of tile rows); it goes block by block, a
block being ``tb`` whole tile rows, so its output pixels are one contiguous range of the plane:

1. the block's input rows are copied into a zero-padded buffer (only its 2*tb + 2 rows), then the
   input transform ``V_xi[c][t] = (B^T d B)_xi`` runs vectorised over 16 tiles of a tile row (their
   4 input columns are a stride-2 deinterleave of 34 consecutive floats);
2. 16 GEMMs ``M_xi[t][k] = sum_c V_xi[c][t] U_xi[c][k]`` through the shared microkernel reading A in
   place through an offset table (row c of A is ``mr`` consecutive tiles of channel c);
3. the output transform ``A^T M A`` (+ bias), vectorised over 16 output channels, writes the block's
   ``[pixels][channels]`` (the pixels past an odd OH/OW are skipped);
4. the channel-vector conv's 16x16 transpose into NCHW, and a fused group's tile epilogue.

The blocking is a ``Plan``, as a schedule of kind ``winograd`` what ``nnc tune`` searches. Where it
is the default: see ``plan``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from ..llvm_types import F32, I1, I32, I64, PTR, const_int, for_range
from ..schedule import Schedule, ScheduleError
from .conv_channel_vectors import _transpose_out, task_ranges
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

LANES = 16
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]])
MIN_TILES, MIN_CHANNELS = 49, 16  # the default rule (``plan``)
L2_BUDGET = 768 * 1024  # bytes of the 16 V and 16 M buffers of a block (L2 is 1 MiB per core here)


@dataclass(frozen=True)
class Plan:
    blk: Blocking  # MR tiles x NR output channels, KC input channels; NC = nchunk
    tb: int  # tile rows per block
    tn: int  # tasks along the output channels (per image)
    nchunk: int  # output channels per task (a multiple of NR)
    tp: int  # tasks along the tile rows (per image)
    tchunk: int  # tile rows per task


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def tiles(OH: int, OW: int) -> tuple[int, int]:
    """(tile rows, tiles per row) of an OH x OW output plane."""
    return _ceil(OH, 2), _ceil(OW, 2)


def runs(n: int, ks, s, d, group: int, f64: bool, const_filters: bool, static_batch: bool,
         vector_bits: int) -> bool:
    """Whether this path can run a conv: 2-D f32, 3x3, stride and dilation 1, one group, constant
    filters (transformed at compile time), AVX-512."""
    return (n == 2 and tuple(ks) == (3, 3) and tuple(s) == (1, 1) and tuple(d) == (1, 1) and group == 1
            and not f64 and const_filters and static_batch and vector_bits == 512)


def plan(threads: int, M: int, C: int, OH: int, OW: int) -> Plan | None:
    """The default plan where this path wins over the other two, else None: 49 or more 2x2 tiles
    (outputs of 13x13 and up), at least 16 input and output channels, and at most a quarter of the
    tiles' outputs past the plane (not a single output row or column).

    Time of the default plan over today's other default (chanvec) for 3x3 pad-1 convs at batch 1,
    the median ratio of 15-30 alternating rounds (each the best of 5 runs) on the loaded 2-core
    development machine (AMD EPYC, AVX-512; the other core was mostly busy, so the 2-thread runs
    are not faster than the 1-thread ones), 1 / 2 threads:

        64@56x56 0.55 / 0.53    128@28x28 0.51 / 0.51    256@14x14 0.50 / 0.50
        DenseNet 128->32: @56 0.58-0.61 / 0.56, @28 0.59 / 0.59, @14 0.72 / 0.67
        32@56 0.62 / 0.61, 64@14 0.65 / 0.62, 16@56 0.81 / 0.79
        left out: 512@7x7 0.63 / 0.63 warm but 0.88 / 0.99 with the caches flushed between runs
        (its 16 MB of transformed filters stream from memory, 16/9 of the filters' bytes, as in a
        model); 128->32@7x7 0.91 warm, 1.05 flushed; 8@56 1.04; 3->64@224 1.77 (too few channels
        for the transforms to pay)

    In the models (the same build with these convs on their old schedules, alternating runs):
    ResNet-18 0.77 (1 and 2 threads), ResNet-50 0.90, DenseNet-121 0.87 (1 thread)."""
    TH, TW = tiles(OH, OW)
    # (and not where a quarter of the tiles' outputs fall past the plane, e.g. one output row: the
    # multiplies saved would be eaten by the waste; not measured)
    if TH * TW < MIN_TILES or min(C, M) < MIN_CHANNELS or 4 * OH * OW < 3 * 4 * TH * TW:
        return None
    nv = 3 if _ceil(M, 48) * 48 < 0.97 * _ceil(M, 32) * 32 else 2
    tn = tp = 1
    if threads > 1:
        if TH >= 2 * threads:
            tp = threads
        else:
            tn = max(1, min(threads, _ceil(M, nv * LANES)))
    nchunk, tchunk = chunks(M, TH, nv, tn, tp)
    # blocks of tb tile rows whose 16 V and 16 M buffers fit L2, and tiles of mr that pad a task's
    # blocks least; ties: the tile first in ``mrs``, then the larger blocks. Tiles of 7 or 8 were as
    # fast as 14 (64@56, 128@28: within 1%) or faster (256@14: 0.49 against 0.55 of the old path's
    # time), the block size mattered within 2% (1-7 tile rows)
    tbmax = max(1, min(tchunk, L2_BUDGET // (16 * TW * (C + nchunk) * 4)))
    mrs = (7, 8, 6) if nv == 3 else (7, 8, 6, 10, 12, 14)

    def padded(tb: int, mr: int) -> int:
        sizes = [min(tb, tchunk - r) * TW for r in range(0, tchunk, tb)]
        return sum(_ceil(n, mr) * mr for n in sizes)

    _, pref, tb = min((padded(tb, mr), i, -tb) for tb in range(1, tbmax + 1) for i, mr in enumerate(mrs))
    return _plan(mrs[pref], nv, min(C, 128), -tb, tn, tp, M, TH, TW)


def chunks(M: int, TH: int, nv: int, tn: int, tp: int) -> tuple[int, int]:
    """(output channels, tile rows) of one task when an image is split into ``tn`` x ``tp`` tasks."""
    nr = nv * LANES
    return _ceil(_ceil(M, tn), nr) * nr, _ceil(TH, tp)


def _plan(mr: int, nv: int, kc: int, tb: int, tn: int, tp: int, M: int, TH: int, TW: int) -> Plan:
    nchunk, tchunk = chunks(M, TH, nv, tn, tp)
    return Plan(Blocking(F32, LANES, mr, nv * LANES, kc, tb * TW, nchunk), tb, tn, nchunk, tp, tchunk)


def schedule_of(plan_: Plan) -> Schedule:
    blk = plan_.blk
    return Schedule("winograd", mr=blk.MR, nv=blk.nv, kc=blk.KC, tb=plan_.tb, tn=plan_.tn, tp=plan_.tp)


def plan_from_schedule(sched: Schedule, M: int, C: int, OH: int, OW: int, where: str) -> Plan:
    """The plan a ``winograd`` schedule asks for, for a conv of ``M`` output channels, ``C`` input
    channels and an OH x OW output (``where`` names the kernel in errors)."""
    def bad(why: str) -> ScheduleError:
        return ScheduleError(f"{where}: the winograd schedule {sched.text()} does not fit: {why}")

    TH, TW = tiles(OH, OW)
    if sched.kc > C:
        raise bad(f"kc {sched.kc} is deeper than the input channels ({C})")
    nchunk, tchunk = chunks(M, TH, sched.nv, sched.tn, sched.tp)
    if sched.tb > tchunk:
        raise bad(f"tb {sched.tb} is more tile rows than a task has ({tchunk})")
    if (sched.tn - 1) * nchunk >= M or (sched.tp - 1) * tchunk >= TH:
        raise bad(f"some of the {sched.tn} x {sched.tp} tasks of an image would have no channels or tile rows")
    return _plan(sched.mr, sched.nv, sched.kc, sched.tb, sched.tn, sched.tp, M, TH, TW)


def transformed_filters(warr: np.ndarray, blk: Blocking) -> np.ndarray:
    """``U_xi = (G g G^T)_xi`` as C x M matrices packed for the microkernel, xi = 0..15 one after another."""
    u = np.einsum("ai,mcij,bj->abcm", G, warr.astype(np.float64), G).astype(np.float32)  # [4, 4, C, M]
    return np.concatenate([pack_b_const(np.ascontiguousarray(u[i, j]), blk) for i in range(4) for j in range(4)])


def emit(k, op, plan_: Plan, warr: np.ndarray, p) -> None:
    """The conv ``op`` (3x3, stride 1, constant filters ``warr``, pads ``p``) along ``plan_``."""
    x = op.operands[0]
    out = op.results[0]
    N, C, H, W = x.shape
    M = warr.shape[0]
    OH, OW = out.shape[2:]
    P = OH * OW
    TH, TW = tiles(OH, OW)
    blk, tb, tn, nchunk, tp, tchunk = plan_.blk, plan_.tb, plan_.tn, plan_.nchunk, plan_.tp, plan_.tchunk
    MR, NR, KC = blk.MR, blk.NR, blk.KC
    et, vt = F32, blk.vt
    mpad = _ceil(M, NR) * NR
    woff = k.packed_constant(f"{op.operands[1].name}.packed_wino", transformed_filters(warr, blk),
                             replaces=k.arg(1))
    has_bias = len(op.operands) > 2
    mk = microkernel(k.cg.ll, blk, Epilogue(), f"{k.fn.name}.winograd_micro{k._tasks + 1}", a_stride=1)
    tile = getattr(k, "tile_epilogue", None)
    if getattr(tile, "inner", P) != P:
        tile = None
    if tile is not None:
        k.tile_epilogue_applied = True
    TBs = tb * TW  # tiles of a full block: the row pitch of a V_xi channel
    R, Wp = 2 * tb + 2, 32 * _ceil(TW, 16) + 2  # rows and pitch of the block's padded input
    # the 16 V_xi (M_xi) are written (read) together: an odd number of cache lines apart, so that
    # they fall in different L1 sets (C*TBs floats apart, often a multiple of 4 KiB, they would all
    # share one set: a 1.4x slower 128->32 conv at 56x56)
    VS, MS = _odd_lines(C * TBs + MR), _odd_lines(TBs * nchunk)
    pt, pl = p[0], p[1]

    def body(kb, t):
        b = kb.b
        img, n0, n1, ty_start, ty_end = task_ranges(b, t, tn, tp, nchunk, M, tchunk, TH)
        nl = b.sub(n1, n0)
        xbase = gep(b, kb.arg(0), b.mul(img, const_int(C * H * W)), et)
        ybase = gep(b, kb.out(0), b.mul(img, const_int(M * P)), et)
        ubase = kb.weights_ptr(woff)
        xb, xraw = heap_buffer(b, C * R * Wp * 4)
        vb, vraw = heap_buffer(b, 16 * VS * 4)
        mb, mraw = heap_buffer(b, 16 * MS * 4)
        ob, oraw = heap_buffer(b, 2 * TBs * 2 * nchunk * 4)
        tab, traw = heap_buffer(b, KC * 8)
        bb, braw = heap_buffer(b, nchunk * 4)
        with for_range(b, KC, "wtab") as kk:
            b.store(b.mul(kk, const_int(TBs)), gep(b, tab, kk, I64))
        with for_range(b, nchunk, "wbias", step=LANES) as j:  # the task's bias, zero-padded to the chunk
            live = b.icmp_signed("<", b.add(splat(b, j, ir.VectorType(I64, LANES)), _iota(I64)),
                                 splat(b, nl, ir.VectorType(I64, LANES)))
            bv = masked_load(b, gep(b, kb.arg(2), b.add(n0, j), et), live, vt) if has_bias else ir.Constant(vt, None)
            b.store(bv, gep(b, bb, j, et), align=4)
        with for_range(b, ty_end, "wblk", start=ty_start, step=tb) as ty0:
            tbcur = imin(b, const_int(tb), b.sub(ty_end, ty0))
            tcur = b.mul(tbcur, const_int(TW))
            _pad_rows(b, xbase, xb, C, H, W, pt, pl, R, Wp, b.sub(b.mul(ty0, const_int(2)), const_int(pt)))
            _input_transform(b, xb, vb, C, R, Wp, TW, TBs, VS, tbcur)
            with for_range(b, 16, "wxi") as xi:
                with for_range(b, C, "wk", step=KC) as pc:
                    kc = imin(b, const_int(KC), b.sub(const_int(C), pc))
                    first = b.icmp_signed("==", pc, const_int(0))
                    last = b.icmp_signed(">=", b.add(pc, kc), const_int(C))
                    aslice = gep(b, vb, b.add(b.mul(xi, const_int(VS)), b.mul(pc, const_int(TBs))), et)
                    bslice = gep(b, ubase, b.add(b.mul(xi, const_int(C * mpad)), b.mul(pc, const_int(mpad))), et)
                    cxi = gep(b, mb, b.mul(xi, const_int(MS)), et)
                    with for_range(b, nl, "wj", step=NR) as jr:
                        bp = gep(b, bslice, b.mul(b.add(n0, jr), kc), et)
                        nrem = imin(b, const_int(NR), b.sub(nl, jr))
                        with for_range(b, tcur, "wi", step=MR) as ir_:
                            cp = gep(b, cxi, b.add(b.mul(ir_, const_int(nchunk)), jr), et)
                            b.call(mk, [kc, gep(b, aslice, ir_, et), bp, cp, const_int(nchunk),
                                        imin(b, const_int(MR), b.sub(tcur, ir_)), nrem, first, last,
                                        ir.Constant(PTR, None), tab])
            _output_transform(b, mb, ob, bb, nchunk, MS, TW, OH, OW, ty0, tbcur, nl)
            p0 = b.mul(ty0, const_int(2 * OW))
            npix = b.sub(imin(b, b.mul(b.add(ty0, tbcur), const_int(2 * OW)), const_int(P)), p0)
            _transpose_out(b, blk, ob, nchunk, ybase, P, n0, n1, p0, npix)
            if tile is not None:
                yblk = gep(b, ybase, b.add(b.mul(n0, const_int(P)), p0), et)
                tile(kb, b.add(b.mul(img, const_int(M)), n0), p0, nl, npix, yblk, P)
        for raw in (xraw, vraw, mraw, oraw, traw, braw):
            heap_free(b, raw)

    k.parallel_for(N * tn * tp, body, name="convwino")


def _odd_lines(n: int) -> int:
    """``n`` floats rounded up to a whole, odd number of 64-byte lines."""
    lines = _ceil(n, 16)
    return (lines + 1 - lines % 2) * 16


def _iota(t: ir.Type, n: int = LANES) -> ir.Constant:
    return ir.Constant(ir.VectorType(t, n), list(range(n)))


def _pad_rows(b, xbase, xb, C, H, W, pt, pl, R, Wp, h0) -> None:
    """xb[c, r, pl + w] = x[c, h0 + r, w] for the rows inside the image, zeros elsewhere."""
    et, vt = F32, ir.VectorType(F32, LANES)
    n = C * R * Wp
    with for_range(b, n // LANES * LANES, "wz", step=LANES) as i:
        b.store(ir.Constant(vt, None), gep(b, xb, i, et), align=4)
    for i in range(n // LANES * LANES, n):
        b.store(ir.Constant(et, 0.0), gep(b, xb, i, et))
    lo = imin(b, b.sub(const_int(0), h0), const_int(R))  # the first row inside: max(0, -h0), at most R
    lo = b.select(b.icmp_signed("<", lo, const_int(0)), const_int(0), lo)
    hi = imin(b, b.sub(const_int(H), h0), const_int(R))
    with for_range(b, C, "wpc") as c:
        with for_range(b, hi, "wpr", start=lo) as r:
            src = gep(b, xbase, b.add(b.mul(c, const_int(H * W)), b.mul(b.add(h0, r), const_int(W))), et)
            dst = gep(b, xb, b.add(b.mul(c, const_int(R * Wp)), b.add(b.mul(r, const_int(Wp)), const_int(pl))), et)
            with for_range(b, W // LANES * LANES, "wpw", step=LANES) as w0:
                b.store(b.load(gep(b, src, w0, et), typ=vt, align=4), gep(b, dst, w0, et), align=4)
            if W % LANES:
                w0 = W // LANES * LANES
                live = ir.Constant(ir.VectorType(I1, LANES), [i < W % LANES for i in range(LANES)])
                masked_store(b, masked_load(b, gep(b, src, w0, et), live, vt), gep(b, dst, w0, et), live)


def _input_transform(b, xb, vb, C, R, Wp, TW, TBs, VS, tbcur) -> None:
    """V_xi[c][tyl*TW + tx] = (B^T d B)_xi of the 4x4 patch at padded rows 2*tyl.., columns 2*tx..,
    16 tiles at a time (the last group of a row under a constant mask)."""
    et, L = F32, LANES
    with for_range(b, C, "wvc") as c:
        with for_range(b, tbcur, "wvr") as tyl:
            rowp = gep(b, xb, b.add(b.mul(c, const_int(R * Wp)), b.mul(tyl, const_int(2 * Wp))), et)
            vrow = gep(b, vb, b.add(b.mul(c, const_int(TBs)), b.mul(tyl, const_int(TW))), et)
            with for_range(b, TW // L * L, "wvt", step=L) as tx0:
                _transform_group(b, rowp, vrow, tx0, Wp, VS, None)
            if TW % L:
                live = ir.Constant(ir.VectorType(I1, L), [i < TW % L for i in range(L)])
                _transform_group(b, rowp, vrow, const_int(TW // L * L), Wp, VS, live)


def _transform_group(b, rowp, vrow, tx0, Wp, VS, live) -> None:
    """The 16 V_xi vectors of the 16 tiles from ``tx0`` (the lanes of ``live`` only, if given)."""
    et, L = F32, LANES
    wide = ir.VectorType(et, 2 * L)
    even = ir.Constant(ir.VectorType(I32, L), [2 * i for i in range(L)])
    odd = ir.Constant(ir.VectorType(I32, L), [2 * i + 1 for i in range(L)])
    d = []
    for r in range(4):
        a = b.load(gep(b, rowp, b.add(b.mul(tx0, const_int(2)), const_int(r * Wp)), et), typ=wide, align=4)
        a2 = b.load(gep(b, rowp, b.add(b.mul(tx0, const_int(2)), const_int(r * Wp + 2)), et), typ=wide, align=4)
        d.append([b.shuffle_vector(a, a, even), b.shuffle_vector(a, a, odd),
                  b.shuffle_vector(a2, a2, even), b.shuffle_vector(a2, a2, odd)])
    t = [[b.fsub(d[0][j], d[2][j]) for j in range(4)], [b.fadd(d[1][j], d[2][j]) for j in range(4)],
         [b.fsub(d[2][j], d[1][j]) for j in range(4)], [b.fsub(d[1][j], d[3][j]) for j in range(4)]]
    for i in range(4):
        ti = t[i]
        vs = [b.fsub(ti[0], ti[2]), b.fadd(ti[1], ti[2]), b.fsub(ti[2], ti[1]), b.fsub(ti[1], ti[3])]
        for j in range(4):
            q = gep(b, vrow, b.add(tx0, const_int((4 * i + j) * VS)), et)
            if live is None:
                b.store(vs[j], q, align=4)
            else:
                masked_store(b, vs[j], q, live)


def _output_transform(b, mb, ob, bb, nchunk, MS, TW, OH, OW, ty0, tbcur, nl) -> None:
    """ob[pixel][j] = (A^T M A)[pixel] + bias[j] for the block's tiles, 16 channels at a time."""
    et, L = F32, LANES
    vt = ir.VectorType(et, L)
    with for_range(b, tbcur, "wor") as tyl:
        two_rows = b.icmp_signed("<", b.add(b.mul(b.add(ty0, tyl), const_int(2)), const_int(1)), const_int(OH))
        with for_range(b, TW, "wot") as tx:
            tile = b.add(b.mul(tyl, const_int(TW)), tx)
            q0 = b.add(b.mul(tyl, const_int(2 * OW)), b.mul(tx, const_int(2)))  # the tile's first pixel
            two_cols = b.icmp_signed("<", b.add(b.mul(tx, const_int(2)), const_int(1)), const_int(OW)) \
                if OW % 2 else None
            with for_range(b, nl, "woj", step=L) as j:
                src = gep(b, mb, b.add(b.mul(tile, const_int(nchunk)), j), et)
                m = [b.load(gep(b, src, xi * MS, et), typ=vt, align=4) for xi in range(16)]
                s0 = [b.fadd(b.fadd(m[j_], m[4 + j_]), m[8 + j_]) for j_ in range(4)]
                s1 = [b.fsub(b.fsub(m[4 + j_], m[8 + j_]), m[12 + j_]) for j_ in range(4)]
                bias = b.load(gep(b, bb, j, et), typ=vt, align=4)
                ys = [[b.fadd(b.fadd(b.fadd(s[0], s[1]), s[2]), bias), b.fadd(b.fsub(b.fsub(s[1], s[2]), s[3]), bias)]
                      for s in (s0, s1)]

                def put(y, q):
                    b.store(y, gep(b, ob, b.add(b.mul(q, const_int(nchunk)), j), et), align=4)

                def row(ya, yb, q):
                    put(ya, q)
                    if two_cols is None:
                        put(yb, b.add(q, const_int(1)))
                    else:
                        with b.if_then(two_cols):
                            put(yb, b.add(q, const_int(1)))

                row(ys[0][0], ys[0][1], q0)
                with b.if_then(two_rows):
                    row(ys[1][0], ys[1][1], b.add(q0, const_int(OW)))

"""Depthwise convs (one input channel per group, any channel multiplier) on x86.

f32 channels go through window_vector.py: vectors of output columns, border windows under
compile-time masks, DW_ROWS output rows per step sharing their input loads and the filter's weights
(each tap row's weights serve all the rows while in registers), FMAs over DW_CHAINS chains. Other
dtypes, and a tuning database's ``dwconv`` schedule (``flat`` 0 or 1), take the older loops: a
direct loop per output row with the interior columns' taps unrolled (LLVM vectorises it) and the
border per tap, or, for small stride-1 planes, a zero-padded copy of the channel walked as one flat
loop. A fused group's epilogue runs on each output channel's plane while it is in cache.
"""

from __future__ import annotations

from llvmlite import ir

from nnc.ir import Op

from ..llvm_types import F32, const_int, for_range, ll_type
from ..schedule import Schedule, ScheduleError, choose, record
from . import window_vector as wv
from .dims import mul as dim_mul
from .gemm import fmuladd, gep, splat


def depthwise(k, op: Op, ks, s, d, p) -> None:
    """One input channel per group: a direct loop per (image, output channel) and output row.

    Rows and columns whose taps all lie inside the image (known at compile time) take one loop over
    the output columns with every tap unrolled, accumulating in registers (LLVM vectorises it over
    the columns); the border keeps the per-tap loops with their padding bounds hoisted. Either way
    each output is ``bias + x*w`` summed tap by tap in kernel order. A fused group's epilogue
    (gemm.py's ``tile_epilogue``) runs on each output channel's plane as soon as it is complete (one
    call per plane: a call per row cost more than the epilogue itself on 7x7 and 14x14 planes)."""
    x, w = op.operands[0], op.operands[1]
    out = op.results[0]
    G = op.attrs["group"]
    N = k.shape(x)[0]
    C, H, W = x.shape[1:]
    M = w.shape[0]
    mg = M // G
    OH, OW = out.shape[2:]
    KH, KW = ks
    et = ll_type(out.dtype)
    has_bias = len(op.operands) > 2
    tile = getattr(k, "tile_epilogue", None)
    if getattr(tile, "inner", OH * OW) != OH * OW:
        tile = None
    if tile is not None:
        k.tile_epilogue_applied = True

    def inside(o, n_in, kk, st, dl, pad):  # output positions whose every tap is inside [0, n_in)
        ok = [q for q in range(o) if q * st - pad >= 0 and q * st - pad + (kk - 1) * dl < n_in]
        return (ok[0], ok[-1] + 1) if ok else (0, 0)
    rlo, rhi = inside(OH, H, KH, s[0], d[0], p[0])
    clo, chi = inside(OW, W, KW, s[1], d[1], p[1])
    # f32: every output in explicit vectors, borders under masks (window_vector.py); otherwise, and
    # where a tuning db says so, the direct loops or, for small planes (rows too short to vectorise,
    # mostly border), a zero-padded copy
    window = wv.Window((OH, OW), (H, W), (KH, KW), (s[0], s[1]), (d[0], d[1]), (p[0], p[1]))
    vector = et == F32 and wv.applies(window)
    flat = tuple(s) == (1, 1) and OW < 32 and (H + p[0] + p[2]) * (W + p[1] + p[3]) <= 8192
    sched, key, source = choose(k, op, "dwconv", Schedule("dwconv"))
    if sched.flat != -1:
        if sched.flat == 1 and not flat_allowed(s, (H, W), p):
            raise ScheduleError(f"tuning db: kernel {key} asks for a padded copy of a plane it does not fit "
                                f"(stride {tuple(s)}, plane {H}x{W})")
        flat, vector = bool(sched.flat), False
    record(k, op, key, sched, source)
    lanes = k.target.vector_bits // 32

    def body(kb, t):
        b = kb.b
        nimg = b.sdiv(t, const_int(M))
        m = b.srem(t, const_int(M))
        cin = b.sdiv(m, const_int(mg))
        xin = gep(b, kb.arg(0), b.mul(b.add(b.mul(nimg, const_int(C)), cin), const_int(H * W)), et)
        yo = gep(b, kb.out(0), b.mul(t, const_int(OH * OW)), et)
        wm = gep(b, kb.arg(1), b.mul(m, const_int(KH * KW)), et)
        bias = b.load(gep(b, kb.arg(2), m, et), typ=et) if has_bias else ir.Constant(et, 0.0)
        wts = [[b.load(gep(b, wm, i * KW + j, et), typ=et) for j in range(KW)] for i in range(KH)]

        def per_tap(oh, row, c0, c1):
            """Columns [c0, c1) of output row ``oh``: bias, then each tap over its valid columns."""
            if c1 <= c0:
                return
            with for_range(b, c1, "dinit", start=c0) as ow:
                b.store(bias, gep(b, row, ow, et))
            for i in range(KH):
                ih = b.add(b.mul(oh, const_int(s[0])), const_int(i * d[0] - p[0]))
                ok = b.and_(b.icmp_signed(">=", ih, const_int(0)), b.icmp_signed("<", ih, const_int(H)))
                with b.if_then(ok):
                    xrow = gep(b, xin, b.mul(ih, const_int(W)), et)
                    for j in range(KW):
                        off = j * d[1] - p[1]  # iw = ow*s + off must lie in [0, W)
                        lo = max(c0, (-off + s[1] - 1) // s[1])
                        hi = min(c1, (W - 1 - off) // s[1] + 1) if W - 1 - off >= 0 else 0
                        if hi <= lo:
                            continue
                        with for_range(b, hi, "dow", start=lo) as ow:
                            iw = b.add(b.mul(ow, const_int(s[1])), const_int(off))
                            xv = b.load(gep(b, xrow, iw, et), typ=et)
                            q = gep(b, row, ow, et)
                            b.store(b.fadd(b.load(q, typ=et), b.fmul(xv, wts[i][j])), q)

        if vector:
            _depthwise_vector(kb, window, xin, yo, bias, wts, lanes)
        elif flat:
            _depthwise_flat(kb, xin, yo, bias, wts, (H, W), (OH, OW), (KH, KW), d, p, et, tile, t)
            return
        else:
            _depthwise_rows(kb, xin, yo, bias, wts, (rlo, rhi), (clo, chi), per_tap)
        if tile is not None:  # the channel's plane is contiguous and still in L1: one pass over it
            tile(kb, t, const_int(0), const_int(1), const_int(OH * OW), yo, OH * OW)

    def _depthwise_rows(kb, xin, yo, bias, wts, rows, cols, per_tap):
        """The direct loops: interior columns of interior rows in one loop over the columns with
        every tap unrolled (LLVM vectorises it), the border per tap."""
        b = kb.b
        (rlo, rhi), (clo, chi) = rows, cols
        with for_range(b, OH, "doh") as oh:
            row = gep(b, yo, b.mul(oh, const_int(OW)), et)
            if chi > clo and rhi > rlo:
                full = b.and_(b.icmp_signed(">=", oh, const_int(rlo)), b.icmp_signed("<", oh, const_int(rhi)))
                with b.if_else(full) as (then, other):
                    with then:
                        per_tap(oh, row, 0, clo)
                        ih0 = b.sub(b.mul(oh, const_int(s[0])), const_int(p[0]))
                        xrows = [gep(b, xin, b.mul(b.add(ih0, const_int(i * d[0])), const_int(W)), et)
                                 for i in range(KH)]
                        with for_range(b, chi, "dvec", start=clo) as ow:
                            iw0 = b.sub(b.mul(ow, const_int(s[1])), const_int(p[1]))
                            acc = bias
                            for i in range(KH):
                                for j in range(KW):
                                    xv = b.load(gep(b, xrows[i], b.add(iw0, const_int(j * d[1])), et), typ=et)
                                    acc = b.fadd(acc, b.fmul(xv, wts[i][j]))
                            b.store(acc, gep(b, row, ow, et))
                        per_tap(oh, row, chi, OW)
                    with other:
                        per_tap(oh, row, 0, OW)
            else:
                per_tap(oh, row, 0, OW)

    k.parallel_for(dim_mul(k.b, N, M), body, name="dwconv")


DW_ROWS, DW_CHAINS = 4, 2


def _depthwise_vector(kb, window, xin, yo, bias, wts, lanes: int) -> None:
    """One f32 channel in vectors of output columns (window_vector.py), DW_ROWS output rows at a
    time (they share the input rows their windows overlap on, and the weights): per vector the taps
    accumulate in fused multiply-adds in kernel order over DW_CHAINS chains (tap rows alternate
    between them), whose sums then add up, then the bias; taps wholly in the padding are skipped,
    partly padded ones read zeros."""
    vt = ir.VectorType(F32, lanes)

    def reduce(b, row_taps):
        chains: list[dict[int, ir.Value]] = [{} for _ in row_taps]
        by_tap_row: dict[int, list] = {}  # tap row -> [(output row, j, vector)]
        for q, taps in enumerate(row_taps):
            for (i, j), v in taps:
                by_tap_row.setdefault(i, []).append((q, j, v))
        for i in sorted(by_tap_row):  # a tap row's weights serve every output row while in registers
            for q, j, v in by_tap_row[i]:
                w = splat(b, wts[i][j], vt)
                acc, c = chains[q], i % DW_CHAINS
                acc[c] = b.fmul(v, w) if c not in acc else fmuladd(b, v, w, acc[c])
        return [b.fadd(wv.tree(b, list(acc.values()), lambda b, x, y: b.fadd(x, y)), splat(b, bias, vt))
                for acc in chains]
    wv.plane(kb, window, xin, yo, F32, lanes, ir.Constant(F32, 0.0), reduce, rows_per_step=DW_ROWS,
             group_reduce=True)


def flat_allowed(s, insp, p) -> bool:
    """Whether a depthwise channel may run over a zero-padded copy (a stack buffer of 8192 elements)."""
    return tuple(s) == (1, 1) and (insp[0] + p[0] + p[2]) * (insp[1] + p[1] + p[3]) <= 8192


def _depthwise_flat(kb, xin, yo, bias, wv, insp, outsp, ks, d, p, et, tile, t) -> None:
    """A stride-1 depthwise channel on a small plane: copy it into a zero-padded stack buffer of
    row pitch ``Wp``; then every output, as a flat index ``f = oh*Wp + ow`` over that pitch, reads its
    taps at the constant offsets ``i*dh*Wp + j*dw``: one loop with no bounds that vectorises over
    whole rows at once (the ``Wp - OW`` columns between rows are computed and dropped); then the
    rows are copied out (and the fused epilogue runs on each)."""
    b = kb.b
    (H, W), (OH, OW), (KH, KW) = insp, outsp, ks
    Hp, Wp = H + p[0] + p[2], W + p[1] + p[3]
    n_flat = (OH - 1) * Wp + OW
    with b.goto_entry_block():  # static allocas (the entry block), not one per call of a loop
        xp = b.alloca(et, size=const_int(Hp * Wp))
        yp = b.alloca(et, size=const_int(n_flat))
    with for_range(b, Hp * Wp, "dz") as i:
        b.store(ir.Constant(et, 0.0), gep(b, xp, i, et))
    with for_range(b, H, "dcp") as h:
        src = gep(b, xin, b.mul(h, const_int(W)), et)
        dst = gep(b, xp, b.add(b.mul(b.add(h, const_int(p[0])), const_int(Wp)), const_int(p[1])), et)
        with for_range(b, W, "dcw") as w_:
            b.store(b.load(gep(b, src, w_, et), typ=et), gep(b, dst, w_, et))
    with for_range(b, n_flat, "dflat") as f:
        acc = bias
        for i in range(KH):
            for j in range(KW):
                xv = b.load(gep(b, xp, b.add(f, const_int(i * d[0] * Wp + j * d[1])), et), typ=et)
                acc = b.fadd(acc, b.fmul(xv, wv[i][j]))
        b.store(acc, gep(b, yp, f, et))
    with for_range(b, OH, "dout") as oh:
        row = gep(b, yo, b.mul(oh, const_int(OW)), et)
        src = gep(b, yp, b.mul(oh, const_int(Wp)), et)
        with for_range(b, OW, "dow") as ow:
            b.store(b.load(gep(b, src, ow, et), typ=et), gep(b, row, ow, et))
    if tile is not None:
        tile(kb, t, const_int(0), const_int(1), const_int(OH * OW), yo, OH * OW)

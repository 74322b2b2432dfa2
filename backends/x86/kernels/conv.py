"""Convolutions: ``conv`` (N-D, grouped, strided, dilated, padded), ``conv_transpose``, ``col2im``
and ``deform_conv``.

f32/f64 ``conv`` is a GEMM per (image, group): ``Y[Mg, P] = W[Mg, Cg*K] @ cols[Cg*K, P]``. The
filters are constants, packed at compile time into the microkernel's A layout (gemm.py). The
columns are never materialised: a 1x1 stride-1 unpadded conv reads the image as B directly, and any
other conv packs B panels straight from the image (implicit im2col: each KC x NR panel is gathered
with per-column base coordinates computed once per block, zeros where a tap falls in the padding).
Short output rows (7-28 pixels) with a deep contraction take conv_channel_vectors.py instead, whose
vectors run over output channels, so a 7x7 or 14x14 plane pads nothing; its plan is then the
default schedule (kind chanvec), and a tuning database's schedule for the conv picks the path by
its kind (gemm: this GEMM, chanvec: that one, winograd: conv_winograd.py's F(2x2, 3x3), the default
of 3x3 stride-1 convs with constant filters, 49 or more 2x2 output tiles and 16 or more channels).
Depthwise convs (one input channel per group) are conv_depthwise.py's. Everything else (integer and half
dtypes, conv_transpose, col2im, deform_conv) is a straightforward loop nest that accumulates like
the reference. In shape-generic code conv and conv_transpose take a batch read at
run time (a run-time GEMM batch or task count); channels and spatial dims stay static.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op
from nnc.ir.ops.conv import fill, resolve_pads

from ..llvm_types import F16, F32, I1, I32, I64, PTR, const_int, for_range, ll_type
from ..schedule import ScheduleError, choose, gemm_default, record
from . import conv_channel_vectors as channel_vectors
from . import conv_winograd as winograd
from .conv_depthwise import depthwise
from .dims import mul as dim_mul
from .gemm import (
    Custom,
    Epilogue,
    Packed,
    RunDim,
    Strided,
    blocking,
    emit_gemm,
    from_schedule,
    gep,
    heap_free,
    masked_gather,
    masked_load,
    pack_a_const,
    pack_a_once,
    splat,
)
from .linalg import const_array, entry_alloca
from .registry import batch_only, lowering


def _geometry(op: Op):
    x, w = op.operands[0], op.operands[1]
    n = len(x.shape) - 2
    ks = tuple(w.shape[2:])
    s = fill(op.attrs["strides"], n, 1)
    d = fill(op.attrs["dilations"], n, 1)
    p = resolve_pads(op.attrs.get("auto_pad", "NOTSET"), x.shape[2:], ks, s, d, op.attrs["pads"])
    return n, ks, s, d, p


def _acc_t(dt: DType) -> ir.Type:
    return F32 if dt == DType.f16 else ll_type(dt)


def _decompose(b: ir.IRBuilder, flat: ir.Value, dims) -> list[ir.Value]:
    """Row-major multi-index of ``flat`` over the static ``dims``."""
    out = []
    for dsz in reversed(dims):
        out.append(b.srem(flat, const_int(dsz, flat.type)))
        flat = b.sdiv(flat, const_int(dsz, flat.type))
    return out[::-1]


@lowering("conv", generic=batch_only)
def lower_conv(k, op: Op) -> None:
    x, w = op.operands[0], op.operands[1]
    out = op.results[0]
    n, ks, s, d, p = _geometry(op)
    G = op.attrs["group"]
    N, C = k.shape(x)[:2]
    M = w.shape[0]
    cg, mg = C // G, M // G
    insp, outsp = tuple(x.shape[2:]), tuple(out.shape[2:])
    if out.dtype in (DType.f32, DType.f64):
        if cg == 1 and n == 2 and mg >= 1 and G > 1:
            return depthwise(k, op, ks, s, d, p)
        return _conv_gemm(k, op, n, ks, s, d, p)
    _conv_loops(k, op, N, C, M, G, insp, outsp, ks, s, d, p)


def _conv_gemm(k, op: Op, n, ks, s, d, p) -> None:
    x, w = op.operands[0], op.operands[1]
    out = op.results[0]
    G = op.attrs["group"]
    N, C = k.shape(x)[:2]
    M = w.shape[0]
    cg, mg = C // G, M // G
    insp, outsp = tuple(x.shape[2:]), tuple(out.shape[2:])
    Pin, P, KK = math.prod(insp), math.prod(outsp), math.prod(ks)
    Kdim = cg * KK
    f64 = out.dtype == DType.f64
    blk = blocking(k.target.vector_bits, f64, mg, P)
    warr = const_array(k, w)
    # short output rows and a deep contraction: vectors over output channels instead. That plan is
    # then the default schedule (kind chanvec); a tuning db's schedule picks the path by its kind.
    # Filters that are an input (a training step's parameters) are packed once per call
    chanvec = n == 2 and G == 1 and not f64 and isinstance(N, int)
    cvp = channel_vectors.plan(k.target, max(1, getattr(k.cg, "threads", 1)), M, Kdim, KK, P, outsp[-1],
                               s) if chanvec else None
    # 3x3 stride-1 convs with constant filters: Winograd F(2x2, 3x3) where its rule says it wins
    wino = winograd.runs(n, ks, s, d, G, f64, warr is not None, isinstance(N, int), k.target.vector_bits)
    wp = winograd.plan(max(1, getattr(k.cg, "threads", 1)), mg, cg, *outsp) if wino else None
    default = winograd.schedule_of(wp) if wp is not None else \
        gemm_default(blk) if cvp is None else channel_vectors.schedule_of(cvp)
    sched, key, source = choose(k, op, "gemm", default, accepts=("gemm", "chanvec", "winograd"))
    where = f"tuning db: kernel {key} (conv {op.results[0].name})"
    if sched.kind == "winograd":
        if not wino:
            raise ScheduleError(f"{where}: a winograd schedule needs a 2-D f32 3x3 conv of stride and dilation 1, "
                                f"one group, constant filters, a static batch and AVX-512")
        wp = winograd.plan_from_schedule(sched, mg, cg, *outsp, where)
        winograd.emit(k, op, wp, warr, p)
        record(k, op, key, sched, source)
        return
    if sched.kind == "chanvec":
        if not chanvec:
            raise ScheduleError(f"{where}: a chanvec schedule needs a 2-D f32 conv of one group and a static "
                                f"batch")
        cvp = channel_vectors.plan_from_schedule(sched, k.target.vector_bits, M, Kdim, P, outsp[-1], s, where)
        channel_vectors.emit(k, op, cvp, warr, ks, s, d, p)
        record(k, op, key, sched, source)
        return
    if source == "db":
        blk = from_schedule(sched, f64)
    araw = None

    def gidx(kb, bi):
        return kb.b.srem(bi, const_int(G))

    def nidx(kb, bi):
        return kb.b.sdiv(bi, const_int(G))

    if warr is not None:
        mats = warr.reshape(G, mg, Kdim)
        packed = [pack_a_const(mats[g], blk) for g in range(G)]
        per = packed[0].size
        woff = k.packed_constant(f"{w.name}.packed_a", np.concatenate(packed), replaces=k.arg(1))  # raw never read
        aop = Packed(woff, (lambda kb, bi: kb.b.mul(gidx(kb, bi), const_int(per))) if G > 1 else None)
    elif isinstance(N, int) and N > 1:
        # weights that are an input (a training step's parameters, a gradient's flipped filters):
        # packed once here, not by every image's tasks
        aptr, araw = pack_a_once(k, blk, lambda kb: kb.arg(1), mg, Kdim, G)
        per = Kdim * (-(-mg // blk.MR) * blk.MR)
        aop = Packed(0, (lambda kb, bi: kb.b.mul(gidx(kb, bi), const_int(per))) if G > 1 else None, shared=0)
    else:
        aop = Strided(lambda kb: kb.arg(1), Kdim, 1,
                      (lambda kb, bi: kb.b.mul(gidx(kb, bi), const_int(mg * Kdim))) if G > 1 else None)

    def xoff(kb, bi):
        b = kb.b
        return b.mul(b.add(b.mul(nidx(kb, bi), const_int(C)), b.mul(gidx(kb, bi), const_int(cg))), const_int(Pin))

    pointwise = KK == 1 and all(v == 1 for v in s) and not any(p)
    if pointwise:
        bop = Strided(lambda kb: kb.arg(0), Pin, 1, xoff)
    else:
        bop = Custom(_im2col_packer(n, insp, outsp, ks, s, d, p, xoff), scratch=4 * n * blk.NC)
    cop = Strided(lambda kb: kb.out(0), P, 1, lambda kb, bi: kb.b.mul(
        kb.b.add(kb.b.mul(nidx(kb, bi), const_int(M)), kb.b.mul(gidx(kb, bi), const_int(mg))), const_int(P)))
    epi = Epilogue()
    if len(op.operands) > 2:
        epi = Epilogue(bias=lambda kb: kb.arg(2), bias_rs=1, bias_cs=0,
                       bias_offset=(lambda kb, bi: kb.b.mul(gidx(kb, bi), const_int(mg))) if G > 1 else None)
    # a batch read at run time (shape-generic code): the task grid is the one of a single image
    # (hint 1), which a batch of one needs; every image's tasks then go to the pool at once
    batch = N * G if isinstance(N, int) else RunDim(lambda kb: dim_mul(kb.b, kb.shape(x)[0], G), hint=1)
    emit_gemm(k, blk, mg, P, Kdim, aop, bop, cop, epi, batch=batch, name="conv", grid=(sched.tm, sched.tn),
              order=sched.order, shared=(aptr,) if araw is not None else ())
    if araw is not None:
        heap_free(k.b, araw)
    record(k, op, key, dataclasses.replace(sched, tm=k.gemm_grid[0], tn=k.gemm_grid[1]), source)


def _im2col_packer(n, insp, outsp, ks, s, d, p, xoff):
    """Pack B[kk, col] = x[c, o*s - pad + t*d] (0 in the padding) straight from the image.

    Per NC block, a table of every column's base coordinate per spatial axis (``o*s - pad``, i32;
    a huge negative past the last column so it reads as padding) is built once in scratch. Each
    panel row is then filled a vector (``lanes`` columns) at a time: the tap offset is added to the
    table's coordinates, bounds-checked and turned into input indices as vectors; where those
    indices are consecutive and all inside the image (most of a stride-1 conv) one plain vector
    load copies them, elsewhere a masked gather reads the valid lanes and zeros the padding."""
    Pin = math.prod(insp)
    KK = math.prod(ks)
    instr = [math.prod(insp[i + 1:]) for i in range(n)]

    def pack(kb, buf, scratch, bi, k0, kc, n0, n_end, blk):
        b = kb.b
        et, NR, L, vt = blk.et, blk.NR, blk.lanes, blk.vt
        xbase = gep(b, kb.arg(0), xoff(kb, bi), et)
        npan = b.sdiv(b.add(b.sub(n_end, n0), const_int(NR - 1)), const_int(NR))
        ncols = b.mul(npan, const_int(NR))
        with for_range(b, ncols, "tab") as j:
            col = b.add(n0, j)
            ok = b.icmp_signed("<", col, n_end)
            for i, o in enumerate(_decompose(b, col, outsp)):
                base = b.trunc(b.sub(b.mul(o, const_int(s[i])), const_int(p[i])), I32)
                base = b.select(ok, base, ir.Constant(I32, -(1 << 30)))
                b.store(base, gep(b, scratch, b.add(b.mul(const_int(i), const_int(blk.NC)), j), I32))
        ivt = ir.VectorType(I32, L)
        # consecutive columns within an output row step the input by the last axis' stride: runs
        # at stride 1 are one vector load, at stride 2 one masked double-width load and a shuffle
        stride = s[-1] if s[-1] in (1, 2) else 1
        step = ir.Constant(ivt, [stride * i for i in range(L)])
        even = ir.Constant(ir.VectorType(I1, 2 * L), [i % 2 == 0 for i in range(2 * L)])
        pick = ir.Constant(ir.VectorType(I32, L), [2 * i for i in range(L)])
        lane_bits = ir.IntType(L)
        with for_range(b, kc, "ik") as kk:
            kidx = b.add(k0, kk)
            c = b.sdiv(kidx, const_int(KK))
            taps = _decompose(b, b.srem(kidx, const_int(KK)), ks)
            chan = gep(b, xbase, b.mul(c, const_int(Pin)), et)
            toff = [splat(b, b.trunc(b.mul(t, const_int(d[i])), I32), ivt) for i, t in enumerate(taps)]
            with for_range(b, npan, "ip") as jp:
                dst = gep(b, buf, b.add(b.mul(jp, b.mul(kc, const_int(NR))), b.mul(kk, const_int(NR))), et)
                for v in range(blk.nv):
                    j0 = b.add(b.mul(jp, const_int(NR)), const_int(v * L))
                    valid = None
                    idx = ir.Constant(ivt, None)
                    for i in range(n):
                        base = b.load(gep(b, scratch, b.add(const_int(i * blk.NC), j0), I32), typ=ivt, align=4)
                        pos = b.add(base, toff[i])
                        ok = b.icmp_unsigned("<", pos, ir.Constant(ivt, [insp[i]] * L))
                        valid = ok if valid is None else b.and_(valid, ok)
                        idx = b.add(idx, b.mul(pos, ir.Constant(ivt, [instr[i]] * L)))
                    first = b.extract_element(idx, ir.Constant(I32, 0))
                    seq = b.icmp_signed("==", idx, b.add(splat(b, first, ivt), step))
                    dense = b.icmp_signed("==", b.bitcast(b.and_(valid, seq), lane_bits),
                                          ir.Constant(lane_bits, (1 << L) - 1))
                    q = gep(b, dst, v * L, et)
                    with b.if_else(dense) as (then, other):
                        with then:
                            src = gep(b, chan, b.sext(first, I64), et)
                            if stride == 1:
                                b.store(b.load(src, typ=vt, align=4), q, align=4)
                            else:  # the even lanes of a 2L-wide masked load (never reads past the last)
                                wide = masked_load(b, src, even, ir.VectorType(et, 2 * L))
                                b.store(b.shuffle_vector(wide, ir.Constant(wide.type, None), pick), q, align=4)
                        with other:
                            ptrs = b.gep(chan, [idx], source_etype=et, inbounds=True)
                            ptrs.type = ir.VectorType(PTR, L)  # llvmlite types a vector GEP as a scalar ptr
                            b.store(masked_gather(b, ptrs, valid, vt), q, align=4)
    return pack


def _loop_acc(b, acc_t, fl, s, x, y):
    return b.fadd(s, b.fmul(x, y)) if fl else b.add(s, b.mul(x, y))


def tap_input(b, o, taps, insp, s, d, p) -> tuple[ir.Value, ir.Value]:
    """(inside, flat input index) of kernel tap ``taps`` at output position ``o`` (per-axis lists):
    input position ``o*s - pad + t*d`` on every axis, inside the image or not (then in the padding)."""
    valid = ir.Constant(I1, 1)
    idx = const_int(0)
    for i in range(len(insp)):
        pos = b.add(b.mul(o[i], const_int(s[i])), b.sub(b.mul(taps[i], const_int(d[i])), const_int(p[i])))
        valid = b.and_(valid, b.icmp_unsigned("<", pos, const_int(insp[i])))
        idx = b.add(b.mul(idx, const_int(insp[i])), pos)
    return valid, idx


def _conv_loops(k, op: Op, N, C, M, G, insp, outsp, ks, s, d, p) -> None:
    """Any dtype, any rank: y[n, m, o] = sum_{c, t} x[n, g*cg + c, o*s - pad + t*d] * w[m, c, t]."""
    out = op.results[0]
    dt = out.dtype
    t, acc_t = ll_type(dt), _acc_t(dt)
    fl = dt.is_float
    cg, mg = C // G, M // G
    Pin, P, KK = math.prod(insp), math.prod(outsp), math.prod(ks)
    has_bias = len(op.operands) > 2

    def widen(b, v):
        return b.fpext(v, acc_t) if t == F16 else v

    def body(kb, nm):
        b = kb.b
        nimg, m = b.sdiv(nm, const_int(M)), b.srem(nm, const_int(M))
        g = b.sdiv(m, const_int(mg))
        xb = gep(b, kb.arg(0), b.mul(b.add(b.mul(nimg, const_int(C)), b.mul(g, const_int(cg))), const_int(Pin)), t)
        wb = gep(b, kb.arg(1), b.mul(m, const_int(cg * KK)), t)
        acc = entry_alloca(b, acc_t)
        with for_range(b, P, "cp") as pix:
            o = _decompose(b, pix, outsp)
            init = widen(b, b.load(gep(b, kb.arg(2), m, t), typ=t)) if has_bias else \
                ir.Constant(acc_t, 0.0 if fl else 0)
            b.store(init, acc)
            with for_range(b, cg, "cc") as c:
                with for_range(b, KK, "ct") as tap:
                    valid, idx = tap_input(b, o, _decompose(b, tap, ks), insp, s, d, p)
                    with b.if_then(valid):
                        xv = widen(b, b.load(gep(b, xb, b.add(b.mul(c, const_int(Pin)), idx), t), typ=t))
                        wv = widen(b, b.load(gep(b, wb, b.add(b.mul(c, const_int(KK)), tap), t), typ=t))
                        b.store(_loop_acc(b, acc_t, fl, b.load(acc, typ=acc_t), xv, wv), acc)
            r = b.load(acc, typ=acc_t)
            b.store(b.fptrunc(r, t) if t == F16 else r, gep(b, kb.out(0), b.add(b.mul(nm, const_int(P)), pix), t))

    k.parallel_for(dim_mul(k.b, N, M), body, name="conv")


@lowering("conv_transpose", generic=batch_only)
def lower_conv_transpose(k, op: Op) -> None:
    """Gather form: y[n, g*mg + m, o] = sum over input pixels i and taps t with i*s + t*d - pad = o."""
    x, w = op.operands[0], op.operands[1]
    out = op.results[0]
    dt = out.dtype
    t, acc_t = ll_type(dt), _acc_t(dt)
    n = len(x.shape) - 2
    G = op.attrs["group"]
    N, C = k.shape(x)[:2]
    mg = w.shape[1]
    M = mg * G
    cg = C // G
    ks, insp, outsp = tuple(w.shape[2:]), tuple(x.shape[2:]), tuple(out.shape[2:])
    s, d, p = fill(op.attrs["strides"], n, 1), fill(op.attrs["dilations"], n, 1), fill(op.attrs["pads"], 2 * n, 0)
    Pin, P, KK = math.prod(insp), math.prod(outsp), math.prod(ks)
    has_bias = len(op.operands) > 2

    def widen(b, v):
        return b.fpext(v, acc_t) if t == F16 else v

    def body(kb, nm):
        b = kb.b
        nimg, m = b.sdiv(nm, const_int(M)), b.srem(nm, const_int(M))
        g, ml = b.sdiv(m, const_int(mg)), b.srem(m, const_int(mg))
        acc = entry_alloca(b, acc_t)
        with for_range(b, P, "tp") as pix:
            o = _decompose(b, pix, outsp)
            b.store(widen(b, b.load(gep(b, kb.arg(2), m, t), typ=t)) if has_bias else ir.Constant(acc_t, 0.0), acc)
            with for_range(b, KK, "tt") as tap:
                tt = _decompose(b, tap, ks)
                valid = ir.Constant(I1, 1)
                idx = const_int(0)
                for i in range(n):
                    num = b.sub(b.add(o[i], const_int(p[i])), b.mul(tt[i], const_int(d[i])))
                    q = b.sdiv(num, const_int(s[i]))
                    valid = b.and_(valid, b.icmp_signed("==", b.srem(num, const_int(s[i])), const_int(0)))
                    valid = b.and_(valid, b.icmp_unsigned("<", num, const_int(insp[i] * s[i])))
                    idx = b.add(b.mul(idx, const_int(insp[i])), q)
                with b.if_then(valid):
                    with for_range(b, cg, "tc") as c:
                        ci = b.add(b.mul(g, const_int(cg)), c)
                        xv = widen(b, b.load(gep(b, kb.arg(0), b.add(b.mul(b.add(b.mul(nimg, const_int(C)), ci),
                                                                             const_int(Pin)), idx), t), typ=t))
                        wi = b.add(b.mul(b.add(b.mul(ci, const_int(mg)), ml), const_int(KK)), tap)
                        wv = widen(b, b.load(gep(b, kb.arg(1), wi, t), typ=t))
                        b.store(b.fadd(b.load(acc, typ=acc_t), b.fmul(xv, wv)), acc)
            r = b.load(acc, typ=acc_t)
            b.store(b.fptrunc(r, t) if t == F16 else r, gep(b, kb.out(0), b.add(b.mul(nm, const_int(P)), pix), t))

    k.parallel_for(dim_mul(k.b, N, M), body, name="convt")


@lowering("col2im")
def lower_col2im(k, op: Op) -> None:
    """Scatter-add each column block back into a zeroed image, taps outermost (the reference's order)."""
    x = op.operands[0]
    out = op.results[0]
    dt = out.dtype
    t = ll_type(dt)
    fl = dt.is_float
    image, block = tuple(op.attrs["image_shape"]), tuple(op.attrs["block_shape"])
    n = len(image)
    s, d, p = fill(op.attrs["strides"], n, 1), fill(op.attrs["dilations"], n, 1), fill(op.attrs["pads"], 2 * n, 0)
    blocks = tuple((image[i] + p[i] + p[n + i] - ((block[i] - 1) * d[i] + 1)) // s[i] + 1 for i in range(n))
    N, CK, L = x.shape
    KK = math.prod(block)
    C = CK // KK
    P = math.prod(image)
    b = k.b
    zero = ir.Constant(t, 0.0 if fl else 0)
    with for_range(b, N * C * P, "cz") as i:
        b.store(zero, gep(b, k.out(0), i, t))
    with for_range(b, N * C, "cnc") as nc:
        with for_range(b, KK, "ctap") as tap:
            tt = _decompose(b, tap, block)
            with for_range(b, L, "cl") as blkidx:
                bl = _decompose(b, blkidx, blocks)
                valid = ir.Constant(I1, 1)
                idx = const_int(0)
                for i in range(n):
                    pos = b.add(b.mul(bl[i], const_int(s[i])), b.sub(b.mul(tt[i], const_int(d[i])), const_int(p[i])))
                    valid = b.and_(valid, b.icmp_unsigned("<", pos, const_int(image[i])))
                    idx = b.add(b.mul(idx, const_int(image[i])), pos)
                with b.if_then(valid):
                    xi = b.add(b.mul(b.add(b.mul(nc, const_int(KK)), tap), const_int(L)), blkidx)
                    xv = b.load(gep(b, k.arg(0), xi, t), typ=t)
                    q = gep(b, k.out(0), b.add(b.mul(nc, const_int(P)), idx), t)
                    old = b.load(q, typ=t)
                    b.store(b.fadd(old, xv) if fl else b.add(old, xv), q)


@lowering("deform_conv")
def lower_deform_conv(k, op: Op) -> None:
    """Per output pixel: taps sampled bilinearly at their learned offsets (corners outside the image
    count zero), optionally masked, times the weights; accumulated in f32 for halves."""
    x, w = op.operands[0], op.operands[1]
    out = op.results[0]
    dt = out.dtype
    t, acc_t = ll_type(dt), _acc_t(dt)
    N, C, H, W = x.shape
    M, cg, KH, KW = w.shape
    G, og = op.attrs["group"], op.attrs["offset_group"]
    mg, cog = M // G, C // og
    OH, OW = out.shape[2:]
    s, d, p = fill(op.attrs["strides"], 2, 1), fill(op.attrs["dilations"], 2, 1), fill(op.attrs["pads"], 4, 0)
    K, P = KH * KW, OH * OW
    has_bias, has_mask = len(op.operands) > 3, len(op.operands) > 4

    def widen(b, v):
        return b.fpext(v, acc_t) if t == F16 else v

    def body(kb, nm):
        b = kb.b
        nimg, m = b.sdiv(nm, const_int(M)), b.srem(nm, const_int(M))
        g = b.sdiv(m, const_int(mg))
        acc = entry_alloca(b, acc_t)
        one = ir.Constant(acc_t, 1.0)
        with for_range(b, P, "dp") as pix:
            oh, ow = b.sdiv(pix, const_int(OW)), b.srem(pix, const_int(OW))
            b.store(widen(b, b.load(gep(b, kb.arg(3), m, t), typ=t)) if has_bias else ir.Constant(acc_t, 0.0), acc)
            with for_range(b, cg, "dc") as c:
                ci = b.add(b.mul(g, const_int(cg)), c)
                ogi = b.sdiv(ci, const_int(cog))
                chan = gep(b, kb.arg(0), b.mul(b.add(b.mul(nimg, const_int(C)), ci), const_int(H * W)), t)
                with for_range(b, K, "dk") as kk:
                    kh, kw = b.sdiv(kk, const_int(KW)), b.srem(kk, const_int(KW))
                    obase = b.add(b.mul(nimg, const_int(og * K * 2)), b.mul(b.add(b.mul(ogi, const_int(K)), kk),
                                                                           const_int(2)))
                    offh = widen(b, b.load(gep(b, kb.arg(2), b.add(b.mul(obase, const_int(P)), pix), t), typ=t))
                    offw = widen(b, b.load(gep(b, kb.arg(2), b.add(b.mul(b.add(obase, const_int(1)), const_int(P)),
                                                                     pix), t), typ=t))
                    ph = b.fadd(b.sitofp(b.add(b.mul(kh, const_int(d[0])), b.sub(b.mul(oh, const_int(s[0])),
                                                                                   const_int(p[0]))), acc_t), offh)
                    pw = b.fadd(b.sitofp(b.add(b.mul(kw, const_int(d[1])), b.sub(b.mul(ow, const_int(s[1])),
                                                                                   const_int(p[1]))), acc_t), offw)
                    floor = b.module.declare_intrinsic("llvm.floor", [acc_t])
                    h0, w0 = b.call(floor, [ph]), b.call(floor, [pw])
                    sample = ir.Constant(acc_t, 0.0)
                    for dh in (0, 1):
                        for dw in (0, 1):
                            hh = b.fadd(h0, ir.Constant(acc_t, float(dh)))
                            ww = b.fadd(w0, ir.Constant(acc_t, float(dw)))
                            fabs = b.module.declare_intrinsic("llvm.fabs", [acc_t])
                            wt = b.fmul(b.fsub(one, b.call(fabs, [b.fsub(ph, hh)])),
                                        b.fsub(one, b.call(fabs, [b.fsub(pw, ww)])))
                            ih, iw = b.fptosi(hh, I64), b.fptosi(ww, I64)
                            ok = b.and_(b.icmp_unsigned("<", ih, const_int(H)), b.icmp_unsigned("<", iw, const_int(W)))
                            ok = b.and_(ok, b.and_(b.fcmp_ordered(">=", hh, ir.Constant(acc_t, 0.0)),
                                                   b.fcmp_ordered(">=", ww, ir.Constant(acc_t, 0.0))))
                            idx = b.select(ok, b.add(b.mul(ih, const_int(W)), iw), const_int(0))
                            v = widen(b, b.load(gep(b, chan, idx, t), typ=t))
                            sample = b.fadd(sample, b.select(ok, b.fmul(v, wt), ir.Constant(acc_t, 0.0)))
                    if has_mask:
                        mi = b.add(b.mul(b.add(b.mul(nimg, const_int(og * K)), b.add(b.mul(ogi, const_int(K)), kk)),
                                         const_int(P)), pix)
                        sample = b.fmul(sample, widen(b, b.load(gep(b, kb.arg(4), mi, t), typ=t)))
                    wv = widen(b, b.load(gep(b, kb.arg(1), b.add(b.mul(b.add(b.mul(m, const_int(cg)), c),
                                                                         const_int(K)), kk), t), typ=t))
                    b.store(b.fadd(b.load(acc, typ=acc_t), b.fmul(sample, wv)), acc)
            r = b.load(acc, typ=acc_t)
            b.store(b.fptrunc(r, t) if t == F16 else r, gep(b, kb.out(0), b.add(b.mul(nm, const_int(P)), pix), t))

    k.parallel_for(N * M, body, name="deform")

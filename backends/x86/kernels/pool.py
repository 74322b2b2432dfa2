"""Pooling: max_pool (optionally with argmax indices), avg_pool, lp_pool and max_unpool.

The window geometry (pads, ceil mode, dilations) comes from the op's own ``_Geometry``, so the kernel
and the reference cannot disagree about where windows sit. For each axis and output position the
range of kernel taps that land inside the input is a compile-time table; the kernel loops over
those taps only (padding never wins a max and adds nothing to a sum), so there are no bounds checks
in the inner loop. The indices form of max_pool scans whole windows, padding included (as
``lowest``), because the reference's argmax does, except in the vectorised interior (row-major
indices, as a gradient reads them), where every tap is inside.
Work is split over N*C planes; the batch N may be read at run time (shape-generic code), the rest
of the shape is static.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op, TargetError
from nnc.ir.ops.pool import _Geometry, _lowest, _unpool_shape

from ..llvm_types import F64, I1, I8, I64, PTR, const_int, for_range, ll_type
from . import dims as dm
from . import window_vector as wv
from .broadcast_loops import vector_lanes, vector_loop
from .data_movement import const_table, itype, load_table, row_major
from .indexing import chunked_dims
from .registry import batch_only, lowering


def _scalar(op: Op, dt: DType) -> ir.Type:
    try:
        return ll_type(dt)
    except NotImplementedError:
        raise TargetError(f"x86: {op.opname} on {dt} is not supported ({op.where()})") from None


def _acc_type(dt: DType) -> ir.Type:
    return F64 if dt is DType.f64 else ir.FloatType()


def slot(b: ir.IRBuilder, ty: ir.Type) -> ir.Value:
    """A stack variable in the entry block, where LLVM promotes it to a register."""
    with b.goto_entry_block():
        return b.alloca(ty)


class _Plan:
    """Per-axis compile-time tables of one pooling call."""

    def __init__(self, k, g: _Geometry, include_pad: bool = False):
        self.g = g
        self.lo, self.hi, self.base, self.count = [], [], [], []
        self.count_np: list[np.ndarray] = []
        for i in range(g.n):
            o = np.arange(g.out[i])
            start = o * g.strides[i] - g.begins[i]  # input coordinate of tap 0
            taps = start[:, None] + np.arange(g.kernel[i])[None, :] * g.dilations[i]
            inside = (taps >= 0) & (taps < g.in_dims[i])
            lo = np.where(inside.any(1), inside.argmax(1), 0)
            hi = np.where(inside.any(1), g.kernel[i] - inside[:, ::-1].argmax(1), 0)
            self.lo.append(const_table(k, lo, name="lo"))
            self.hi.append(const_table(k, hi, name="hi"))
            self.base.append(const_table(k, start, name="base"))
            if include_pad:
                cnt = (taps < g.in_dims[i] + g.ends[i]).sum(1)  # padded coordinate >= 0 always holds
            else:
                cnt = inside.sum(1)
            self.count.append(const_table(k, cnt, name="cnt"))
            self.count_np.append(cnt)
        self.in_strides = row_major(g.in_dims)
        self.in_size = math.prod(g.in_dims)
        self.out_size = math.prod(g.out)


def _windows(kb, p: _Plan, nc: ir.Value, body) -> None:
    """For every output position of plane ``nc``: ``body(kb, out_index, positions)``."""
    b = kb.b
    g = p.g
    ost = row_major(g.out)

    def level(d, flat, pos):
        if d == g.n:
            body(kb, b.add(b.mul(nc, const_int(p.out_size)), flat), pos)
            return
        with for_range(b, g.out[d], f"o{d}") as o:
            level(d + 1, b.add(flat, b.mul(o, const_int(ost[d]))), pos + [o])
    level(0, const_int(0), [])


def _valid_taps(kb, p: _Plan, nc: ir.Value, pos: list[ir.Value], body) -> None:
    """``body(input_index)`` for every tap of the window at ``pos`` that lies inside the input."""
    b = kb.b
    g = p.g

    def level(d, off):
        if d == g.n:
            body(off)
            return
        o = pos[d]
        lo, hi = load_table(b, p.lo[d], o), load_table(b, p.hi[d], o)
        start = load_table(b, p.base[d], o)
        with for_range(b, hi, f"t{d}", start=lo) as t:
            coord = b.add(start, b.mul(t, const_int(g.dilations[d])))
            level(d + 1, b.add(off, b.mul(coord, const_int(p.in_strides[d]))))
    level(0, b.mul(nc, const_int(p.in_size)))


def _planes(k, x, item_bytes: int, plane, name: str = "planes") -> None:
    """``plane(kb, nc)`` for every (image, channel) plane of ``x`` (the batch may be read at run
    time: each task reads it again), split over the threads."""
    C = x.shape[1]
    chunked_dims(k, lambda kb: (dm.mul(kb.b, kb.shape(x)[0], C), item_bytes, None), lambda kb, i, _: plane(kb, i),
                 name=name)


def _plane_ptrs(kb, g: _Geometry, nc: ir.Value, t: ir.Type) -> tuple[ir.Value, ir.Value]:
    """(input plane, output plane) of plane ``nc``."""
    b = kb.b
    return (b.gep(kb.arg(0), [b.mul(nc, const_int(math.prod(g.in_dims)))], source_etype=t, inbounds=True),
            b.gep(kb.out(0), [b.mul(nc, const_int(math.prod(g.out)))], source_etype=t, inbounds=True))


def _float_max(b: ir.IRBuilder, acc: ir.Value, v: ir.Value) -> ir.Value:
    """numpy's max: NaN propagates."""
    keep = b.fcmp_unordered(">=", acc, v)  # true when either is NaN, then pick the NaN below
    return b.select(b.fcmp_unordered("uno", v, v), v, b.select(keep, acc, v))


POOL_ROWS = 4  # output rows per step of the vectorised max_pool: they share the input rows they overlap on


def _max_checked(b: ir.IRBuilder, rows: list, vmax) -> list[ir.Value]:
    """``_separable_max`` of float taps with the machine's max (one instruction; numpy's max, which
    propagates NaN, takes four), checked: when the sum of the tap vectors (one add each, shared by
    all the rows) has a NaN lane, some tap is NaN (or inf meets -inf: a false alarm, harmless) and a
    cold branch computes the rows again with numpy's max."""
    fast = _separable_max(b, rows, vmax)
    vecs = list({id(v): v for taps in rows for _, v in taps}.values())
    total = wv.tree(b, vecs, lambda b, x, y: b.fadd(x, y))
    nan = b.fcmp_unordered("uno", total, total)
    bits = ir.IntType(nan.type.count)
    before = b.block
    with b.if_then(b.icmp_unsigned("!=", b.bitcast(nan, bits), ir.Constant(bits, 0)), likely=False):
        exact = _separable_max(b, rows, _float_max)
        after = b.block
    outs = []
    for f, e in zip(fast, exact):
        phi = b.phi(f.type)
        phi.add_incoming(f, before)
        phi.add_incoming(e, after)
        outs.append(phi)
    return outs


def _separable_max(b: ir.IRBuilder, rows: list, vmax) -> list[ir.Value]:
    """The max of each output row's taps (``window_vector.plane``'s grouped taps) as the max over
    its tap rows of each tap row's max: a tap row that several output rows read (their windows
    overlap) is reduced once for all of them."""
    row_max: dict[tuple[int, ...], ir.Value] = {}
    outs = []
    for taps in rows:
        by_row: dict[int, list[ir.Value]] = {}
        for (i, _), v in taps:
            by_row.setdefault(i, []).append(v)
        parts = []
        for vs in by_row.values():
            key = tuple(id(v) for v in vs)  # the same loaded vectors: the same input row
            if key not in row_max:
                row_max[key] = wv.tree(b, vs, vmax)
            parts.append(row_max[key])
        outs.append(wv.tree(b, parts, vmax))
    return outs


@lowering("max_pool", generic=batch_only)
def lower_max_pool(k, op: Op) -> None:
    x = op.operands[0]
    dt = x.dtype
    t = _scalar(op, dt)
    g = _Geometry(tuple(x.shape), op.attrs)
    p = _Plan(k, g)
    lowest = ir.Constant(t, float(_lowest(dt.numpy)) if dt.is_float else int(_lowest(dt.numpy)))
    with_indices = bool(op.attrs["with_indices"])

    def gt(b, v, acc):  # "v beats acc" as argmax sees it: strictly larger, the first NaN wins
        if dt.is_float:
            return b.and_(b.fcmp_ordered("ord", acc, acc), b.fcmp_unordered(">", v, acc))
        return (b.icmp_signed if dt.is_signed else b.icmp_unsigned)(">", v, acc)

    def plane(kb, nc):
        b = kb.b
        acc = slot(b, t)
        arg = slot(b, I64) if with_indices else None

        def window(kb, oi, pos):
            b.store(lowest, acc)
            if not with_indices:
                def tap(off):
                    v = b.load(b.gep(kb.arg(0), [off], source_etype=t, inbounds=True), typ=t)
                    a = b.load(acc, typ=t)
                    if dt.is_float:
                        b.store(_float_max(b, a, v), acc)
                    else:
                        cmp = b.icmp_signed if dt.is_signed else b.icmp_unsigned
                        b.store(b.select(cmp(">", v, a), v, a), acc)
                _valid_taps(kb, p, nc, pos, tap)
            else:
                _full_window(kb, p, nc, pos, t, lowest, acc, arg, gt, int(op.attrs["storage_order"]))
            b.store(b.load(acc, typ=t), b.gep(kb.out(0), [oi], source_etype=t, inbounds=True))
            if with_indices:
                b.store(b.load(arg, typ=I64), b.gep(kb.out(1), [oi], source_etype=I64, inbounds=True))
        if not vector and fast is None:
            _windows(kb, p, nc, window)
            return
        if fast is not None:  # the argmax in row-major order (what the gradient reads)
            _interior_rows(kb, g, nc, fast, window, dt, t, gt)
            return

        def vmax(b, acc, v):
            if dt.is_float:  # the machine's max, which is not numpy's for NaN: see _max_checked
                return b.select(b.fcmp_ordered(">", acc, v), acc, v)
            cmp = b.icmp_signed if dt.is_signed else b.icmp_unsigned
            return b.select(cmp(">", v, acc), v, acc)

        def reduce(b, rows):
            if dt.is_float:
                return _max_checked(b, rows, vmax)
            return _separable_max(b, rows, vmax)
        xin, yout = _plane_ptrs(kb, g, nc, t)
        wv.plane(kb, g, xin, yout, t, vector_lanes(kb, [dt]), lowest, reduce, rows_per_step=POOL_ROWS,
                 group_reduce=True)
    # plain max: window_vector.py; the indices in row-major order: the unrolled interior of
    # _interior_rows (the rest: per window)
    fast = _interior(g) if with_indices and not op.attrs["storage_order"] else None
    vector = not with_indices and wv.applies(g)
    _planes(k, x, p.in_size * dt.itemsize, plane)


def _interior(g: _Geometry) -> list[tuple[int, int]] | None:
    """Per axis of a 2-D pooling, the range of output positions whose window lies wholly inside the
    input (no padding, no clipping), or None when some axis has none or the pooling is not 2-D."""
    if g.n != 2:
        return None
    ranges = []
    for i in range(2):
        o = np.arange(g.out[i])
        start = o * g.strides[i] - g.begins[i]
        ok = np.nonzero((start >= 0) & (start + (g.kernel[i] - 1) * g.dilations[i] < g.in_dims[i]))[0]
        if ok.size == 0:
            return None
        ranges.append((int(ok[0]), int(ok[-1]) + 1))
    return ranges


def _interior_rows(kb, g: _Geometry, nc: ir.Value, fast, window, dt: DType, t: ir.Type, beats) -> None:
    """max_pool with indices (row-major) of one plane: every output row whose windows are inside the
    input in height runs its interior columns through a loop with the taps unrolled and no bounds
    (LLVM vectorises it over the output columns: plain vector loads at stride 1, interleaved loads
    otherwise; short rows as masked full-width vectors); border windows use the general per-window
    code. The argmax goes into the second result, a tap replacing the running max only when
    ``beats(b, v, acc)`` (the first of equal maxima wins, as in the reference)."""
    b = kb.b
    (rlo, rhi), (clo, chi) = fast
    OH, OW = g.out
    H, W = g.in_dims
    sh, sw = g.strides
    dh, dw = g.dilations
    KH, KW = g.kernel
    xin = b.gep(kb.arg(0), [b.mul(nc, const_int(H * W))], source_etype=t, inbounds=True)
    yout = b.gep(kb.out(0), [b.mul(nc, const_int(OH * OW))], source_etype=t, inbounds=True)

    def border(oh, lo, hi):
        if hi > lo:
            with for_range(b, hi, "pbw", start=lo) as ow:
                window(kb, b.add(b.mul(nc, const_int(OH * OW)), b.add(b.mul(oh, const_int(OW)), ow)), [oh, ow])

    with for_range(b, OH, "poh") as oh:
        inside = b.and_(b.icmp_signed(">=", oh, const_int(rlo)), b.icmp_signed("<", oh, const_int(rhi)))
        with b.if_else(inside) as (then, other):
            with then:
                border(oh, 0, clo)
                ih0 = b.sub(b.mul(oh, const_int(sh)), const_int(g.begins[0]))
                rows = [b.gep(xin, [b.mul(b.add(ih0, const_int(i * dh)), const_int(W))], source_etype=t,
                              inbounds=True) for i in range(KH)]
                yrow = b.gep(yout, [b.mul(oh, const_int(OW))], source_etype=t, inbounds=True)
                # rows shorter than a few vectors (13 columns in SqueezeNet) vectorise masked, at full
                # width; longer rows do better with LLVM's own choice (8-lane strided loads here). At
                # stride 2 masked interleaved loads are slower still: ResNet's stem pooling (55-column
                # interior) took 16 ms masked against 2.6 ms unmasked at batch 8
                lanes = vector_lanes(kb, [dt])
                short = chi - clo < (4 if sw == 1 else 2) * lanes
                loop = vector_loop(b, chi, lanes, "pow", start=clo, predicate=True) if short else \
                    for_range(b, chi, "pow", start=clo)
                with loop as ow:
                    iw0 = b.sub(b.mul(ow, const_int(sw)), const_int(g.begins[1]))
                    acc = arg = None
                    at = b.add(b.mul(b.add(b.mul(nc, const_int(H)), ih0), const_int(W)), iw0)  # tap 0, flat
                    for i in range(KH):
                        for j in range(KW):
                            v = b.load(b.gep(rows[i], [b.add(iw0, const_int(j * dw))], source_etype=t,
                                             inbounds=True), typ=t)
                            tap = b.add(at, const_int(i * dh * W + j * dw))
                            if acc is None:
                                acc, arg = v, tap
                            else:
                                win = beats(b, v, acc)
                                acc, arg = b.select(win, v, acc), b.select(win, tap, arg)
                    b.store(acc, b.gep(yrow, [ow], source_etype=t, inbounds=True))
                    oi = b.add(b.mul(nc, const_int(OH * OW)), b.add(b.mul(oh, const_int(OW)), ow))
                    b.store(arg, b.gep(kb.out(1), [oi], source_etype=I64, inbounds=True))
                border(oh, chi, OW)
            with other:
                border(oh, 0, OW)


def _full_window(kb, p: _Plan, nc, pos, t, lowest, acc, arg, gt, storage_order: int) -> None:
    """The argmax over every tap of the window in kernel order, padding read as ``lowest``."""
    b = kb.b
    g = p.g
    later = [math.prod(g.in_dims[i + 1:]) if storage_order == 0 else math.prod(g.in_dims[:i]) for i in range(g.n)]
    # the reference starts from tap 0, whatever it holds: ties with lowest keep the first tap
    first = b.mul(nc, const_int(p.in_size))
    for d in range(g.n):
        first = b.add(first, b.mul(load_table(b, p.base[d], pos[d]), const_int(later[d])))
    b.store(first, arg)

    def level(d, off, idx, inside):
        if d == g.n:
            safe = b.select(inside, off, const_int(0))
            v = b.load(b.gep(kb.arg(0), [safe], source_etype=t, inbounds=True), typ=t)
            v = b.select(inside, v, lowest)
            a = b.load(acc, typ=t)
            win = gt(b, v, a)
            b.store(b.select(win, v, a), acc)
            b.store(b.select(win, idx, b.load(arg, typ=I64)), arg)
            return
        start = load_table(b, p.base[d], pos[d])
        with for_range(b, g.kernel[d], f"w{d}") as tp:
            coord = b.add(start, b.mul(tp, const_int(g.dilations[d])))
            ok = b.and_(b.icmp_signed(">=", coord, const_int(0)), b.icmp_signed("<", coord, const_int(g.in_dims[d])))
            level(d + 1, b.add(off, b.mul(coord, const_int(p.in_strides[d]))),
                  b.add(idx, b.mul(coord, const_int(later[d]))), b.and_(inside, ok))
    level(0, b.mul(nc, const_int(p.in_size)), b.mul(nc, const_int(p.in_size)), ir.Constant(I1, 1))


def _sum_pool(k, op: Op, include_pad: bool, power: int | None) -> None:
    x = op.operands[0]
    dt = x.dtype
    t = _scalar(op, dt)
    at = _acc_type(dt)
    g = _Geometry(tuple(x.shape), op.attrs)
    pl = _Plan(k, g, include_pad)

    def ext(b, v):  # a scalar or a vector of t, widened to the accumulator's type
        wide = ir.VectorType(at, v.type.count) if isinstance(v.type, ir.VectorType) else at
        return v if v.type == wide else b.fpext(v, wide)

    def plane(kb, nc):
        b = kb.b
        acc = slot(b, at)

        def window(kb, oi, pos):
            b.store(ir.Constant(at, 0.0), acc)

            def tap(off):
                v = ext(b, b.load(b.gep(kb.arg(0), [off], source_etype=t, inbounds=True), typ=t))
                if power is not None:
                    v = _ipow(b, b.call(b.module.declare_intrinsic("llvm.fabs", [at]), [v]), power)
                b.store(b.fadd(b.load(acc, typ=at), v), acc)
            _valid_taps(kb, pl, nc, pos, tap)
            s = b.load(acc, typ=at)
            if power is None:  # the reference divides in float64 (f32 sums / i64 counts)
                cnt = const_int(1)
                for d in range(g.n):
                    cnt = b.mul(cnt, load_table(b, pl.count[d], pos[d]))
                y = b.fdiv(s if at == F64 else b.fpext(s, F64), b.sitofp(cnt, F64))
                y = y if t == F64 else _narrow(b, y, t)
            else:
                y = _root(b, s, power)
                y = y if t == at else b.fptrunc(y, t)
            b.store(y, b.gep(kb.out(0), [oi], source_etype=t, inbounds=True))
        if not vector:
            _windows(kb, pl, nc, window)
            return

        # every window sums its taps inside the input in the same (row-major) order and divides
        # in f64 by its count, as the reference does
        def add(b, taps):
            acc = ext(b, taps[0][1])
            for _, v in taps[1:]:
                acc = b.fadd(acc, ext(b, v))
            return acc

        def mean(b, acc, count):
            f64 = ir.VectorType(F64, len(count))
            q = b.fdiv(acc if at == F64 else b.fpext(acc, f64), ir.Constant(f64, [float(c) for c in count]))
            return q if t == F64 else _narrow(b, q, ir.VectorType(t, len(count)))
        xin, yout = _plane_ptrs(kb, g, nc, t)
        wv.plane(kb, g, xin, yout, t, vector_lanes(kb, [dt]), ir.Constant(t, 0.0), add, mean,
                 (pl.count_np[0], pl.count_np[1]))
    vector = power is None and dt.is_float and wv.applies(g)
    _planes(k, x, pl.in_size * dt.itemsize, plane)


def _narrow(b: ir.IRBuilder, y: ir.Value, t: ir.Type) -> ir.Value:
    """f64 -> t; f64 -> f16 goes through f32 (a direct fptrunc becomes a libcall the JIT lacks)."""
    lanes = t.count if isinstance(t, ir.VectorType) else 0
    if isinstance(t.element if lanes else t, ir.HalfType):
        y = b.fptrunc(y, ir.VectorType(ir.FloatType(), lanes) if lanes else ir.FloatType())
    return b.fptrunc(y, t)


def _ipow(b: ir.IRBuilder, v: ir.Value, p: int) -> ir.Value:
    if p == 1:
        return v
    if p == 2:
        return b.fmul(v, v)
    fn = b.module.declare_intrinsic("llvm.pow", [v.type])
    return b.call(fn, [v, ir.Constant(v.type, float(p))])


def _root(b: ir.IRBuilder, s: ir.Value, p: int) -> ir.Value:
    if p == 1:
        return s
    if p == 2:
        return b.call(b.module.declare_intrinsic("llvm.sqrt", [s.type]), [s])
    fn = b.module.declare_intrinsic("llvm.pow", [s.type])
    return b.call(fn, [s, ir.Constant(s.type, 1.0 / p)])


@lowering("avg_pool", generic=batch_only)
def lower_avg_pool(k, op: Op) -> None:
    _sum_pool(k, op, bool(op.attrs["count_include_pad"]), None)


@lowering("lp_pool", generic=batch_only)
def lower_lp_pool(k, op: Op) -> None:
    _sum_pool(k, op, False, int(op.attrs["p"]))


@lowering("max_unpool")
def lower_max_unpool(k, op: Op) -> None:
    x, ind = op.operands[:2]
    out = op.results[0]
    if len(op.operands) > 2:
        raise TargetError(f"x86: max_unpool with a run-time output_shape ({op.where()})")
    natural = [int(d) for d in _unpool_shape(tuple(x.shape), {**op.attrs, "output_shape": None})]
    shape = list(out.shape)
    t = itype(x.dtype)
    b = k.b
    memset = b.module.declare_intrinsic("llvm.memset", [PTR, I64])
    b.call(memset, [k.out(0), ir.Constant(I8, 0), const_int(out.type.nbytes or 0), ir.Constant(I1, 0)])
    n = x.type.numel or 0
    nat_total, out_total = math.prod(natural), math.prod(shape)
    nst, ost = row_major(natural), row_major(shape)
    with for_range(b, n, "u") as i:  # sequential: a repeated index keeps the last value, as numpy does
        idx = k.checked_index(b.load(b.gep(k.arg(1), [i], source_etype=I64, inbounds=True), typ=I64), nat_total)
        ok = ir.Constant(I1, 1)
        if shape == natural:
            dst = idx
        else:  # the natural layout's coordinates, kept where they fall inside the output
            dst, rem = const_int(0), idx
            for d in range(len(natural)):
                c = b.sdiv(rem, const_int(nst[d]))
                rem = b.srem(rem, const_int(nst[d]))
                ok = b.and_(ok, b.icmp_signed("<", c, const_int(shape[d])))
                dst = b.add(dst, b.mul(c, const_int(ost[d])))
            ok = b.and_(ok, b.icmp_signed("<", dst, const_int(out_total)))
        with b.if_then(ok):
            v = b.load(b.gep(k.arg(0), [i], source_etype=t, inbounds=True), typ=t)
            b.store(v, b.gep(k.out(0), [dst], source_etype=t, inbounds=True))

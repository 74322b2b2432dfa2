"""Reductions and scans: ``reduce_sum/mean/prod/max/min``, ``argmax/argmin``, ``cumsum/cumprod``,
``topk``.

Reductions merge the input dims into alternating kept / reduced groups. When the innermost group is
reduced, each output element is a register accumulation over a contiguous inner loop (float sums
and products carry the ``reassoc`` flag so LLVM vectorises them with partial sums: the result
differs from numpy's pairwise sum by rounding only). When the innermost group is kept, the kernel
accumulates whole output rows in place, which vectorises without reassociation. f16 accumulates in
f32 and integer means in i64 then f64, as the reference does. Independent outer rows are split over
threads with ``k.parallel_for``.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op, TargetError

from ..llvm_types import F32, F64, I1, I64, bf16_to_f32, const_int, f32_to_bf16, for_range, ll_type, storage_type
from . import dims as dm
from .broadcast_loops import tag_loop, vector_lanes
from .dims import Dim
from .elementwise import cast_value
from .gemm_microkernel import elem_bytes, masked_load
from .registry import lowering
from .vecmath import intrinsic
from .window_vector import lane_tree, tree

PARALLEL_MIN_WORK = 1 << 15  # elements: below this, splitting a kernel over threads costs more than it saves


def fold_range(b: ir.IRBuilder, count: int | ir.Value, inits: list[ir.Value],
               step: Callable[[ir.Value, list[ir.Value]], list[ir.Value]], name: str = "r",
               start: int = 0, lanes: int = 0) -> list[ir.Value]:
    """``for i in [start, count): accs = step(i, accs)``; returns the final accumulators (phis, so
    they live in registers and LLVM recognises reductions). ``lanes``: a vector width hint for a
    loop known to vectorise (reassociable sums), see ``broadcast_loops.tag_loop``."""
    count_arg = count
    count = const_int(count) if isinstance(count, int) else count
    pre = b.block
    fn = b.function
    head, body, end = (fn.append_basic_block(f"{name}.{s}") for s in ("head", "body", "end"))
    b.branch(head)
    b.position_at_end(head)
    i = b.phi(I64, name=name)
    i.add_incoming(const_int(start), pre)
    accs = [b.phi(v.type) for v in inits]
    for a, v in zip(accs, inits):
        a.add_incoming(v, pre)
    b.cbranch(b.icmp_signed("<", i, count), body, end)
    b.position_at_end(body)
    new = step(i, list(accs))
    latch = b.block
    for a, v in zip(accs, new):
        a.add_incoming(v, latch)
    i.add_incoming(b.add(i, const_int(1)), latch)
    br = b.branch(head)
    b.position_at_end(end)
    if lanes and not (isinstance(count_arg, int) and count_arg < 2 * lanes):  # (short: see vector_loop)
        tag_loop(br, [body] + fn.blocks[fn.blocks.index(end) + 1:], lanes, parallel=False)
    return list(accs)


def axis_layout(shape: tuple[Dim, ...], axis: int, b: ir.IRBuilder | None = None) -> tuple[Dim, Dim, Dim]:
    """(outer, n, inner) element counts around ``axis`` of a row-major ``shape``; dims read at run
    time (shape-generic code) give products computed with ``b``."""
    if not dm.is_static(*shape):
        return dm.prod(b, shape[:axis]), shape[axis], dm.prod(b, shape[axis + 1:])
    outer = int(np.prod(shape[:axis], dtype=np.int64))
    inner = int(np.prod(shape[axis + 1:], dtype=np.int64))
    return outer, int(shape[axis]), inner


def gep(b: ir.IRBuilder, ptr: ir.Value, idx: ir.Value, t: ir.Type) -> ir.Value:
    return b.gep(ptr, [idx], source_etype=t, inbounds=True)


def load(b: ir.IRBuilder, ptr: ir.Value, idx: ir.Value, t: ir.Type) -> ir.Value:
    return b.load(gep(b, ptr, idx, t), typ=t)


def rows(k, count: Dim, work_per_row: Dim, body: Callable, name: str = "row") -> None:
    """``body(kb, i)`` for each independent row ``i``: over threads when there is enough work, else a
    plain loop in the kernel. Run-time counts decide by a guess (``dims.hint``); ``body`` reads
    run-time dims through its ``kb``."""
    count_hint, work_hint = dm.hint(count, 1 << 10), dm.hint(work_per_row, 1 << 8)
    if count_hint > 1 and count_hint * work_hint >= PARALLEL_MIN_WORK:
        k.parallel_for(count, body, name=name)
        return
    with for_range(k.b, count, name) as i:
        body(k, i)


ELEMENT_CHUNK = 16384  # elements per parallel task of an elementwise pass


def element_chunks(k, n: int, body: Callable) -> None:
    """``body(kb, lo, hi)`` over [0, n) in chunks of ``ELEMENT_CHUNK``, in parallel when there is
    more than one and enough work."""
    count = max(1, -(-n // ELEMENT_CHUNK))

    def task(kb, t):
        b = kb.b
        lo = b.mul(t, const_int(ELEMENT_CHUNK))
        hi = b.add(lo, const_int(ELEMENT_CHUNK))
        hi = b.select(b.icmp_signed("<", hi, const_int(n)), hi, const_int(n))
        body(kb, lo, hi)
    rows(k, count, ELEMENT_CHUNK, task, name="chunk")


# -- combining ---------------------------------------------------------------------------------------
def _reassoc(v: ir.Value) -> ir.Value:
    v.flags.append("reassoc")
    return v


def combine(b: ir.IRBuilder, kind: str, acc: ir.Value, x: ir.Value, dt: DType, reassoc: bool = True) -> ir.Value:
    """acc (+ * max min) x in the accumulator's type; float max/min propagate NaN."""
    fl = isinstance(acc.type, (ir.FloatType, ir.DoubleType, ir.HalfType))
    if kind in ("sum", "mean"):
        if fl:
            return _reassoc(b.fadd(acc, x)) if reassoc else b.fadd(acc, x)
        return b.add(acc, x)
    if kind == "prod":
        if fl:
            return _reassoc(b.fmul(acc, x)) if reassoc else b.fmul(acc, x)
        return b.mul(acc, x)
    if fl:
        return intrinsic(b, "llvm.maximum" if kind == "max" else "llvm.minimum", acc, x)
    cmp = b.icmp_signed if dt.is_signed else b.icmp_unsigned
    return b.select(cmp(">" if kind == "max" else "<", x, acc), x, acc)


def _acc_type(kind: str, dt: DType) -> tuple[ir.Type, DType]:
    if dt in (DType.f16, DType.bf16):  # (bf16 words are widened at the load, rounded at the store)
        return F32, DType.f32
    if kind == "mean" and dt.is_int:
        return I64, DType.u64 if not dt.is_signed else DType.i64
    return ll_type(dt), dt


def identity(kind: str, t: ir.Type, dt: DType) -> ir.Constant:
    fl = isinstance(t, (ir.FloatType, ir.DoubleType, ir.HalfType))
    if kind in ("sum", "mean"):
        return ir.Constant(t, 0.0 if fl else 0)
    if kind == "prod":
        return ir.Constant(t, 1.0 if fl else 1)
    if fl:
        return ir.Constant(t, float("-inf") if kind == "max" else float("inf"))
    if dt is DType.bool:
        return ir.Constant(t, 0 if kind == "max" else 1)
    info = np.iinfo(dt.numpy)
    v = int(info.min if kind == "max" else info.max)
    if v >= 1 << (t.width - 1):  # LLVM integer constants are written signed
        v -= 1 << t.width
    return ir.Constant(t, v)


# -- reduce_* ----------------------------------------------------------------------------------------
def _groups(b: ir.IRBuilder, shape: tuple[Dim, ...], red: set[int]) -> list[tuple[Dim, bool]]:
    """Adjacent dims merged into (size, reduced) groups; size-1 dims are dropped (a run-time dim is
    kept whatever its value, so every builder sees the same groups)."""
    out: list[tuple[Dim, bool]] = []
    for d, n in enumerate(shape):
        if isinstance(n, int) and n == 1:
            continue
        r = d in red
        if out and out[-1][1] == r:
            out[-1] = (dm.mul(b, out[-1][0], n), r)
        else:
            out.append((n, r))
    return out


def _reduce_plan(kb, x, red: set[int]) -> tuple[list[tuple[Dim, bool]], list[Dim], Dim]:
    """(groups, their element strides in x, reduced element count), read through ``kb``."""
    b = kb.b
    shape = kb.shape(x)
    groups = _groups(b, shape, red)
    strides: list[Dim] = []
    acc: Dim = 1
    for n, _ in reversed(groups):
        strides.append(acc)
        acc = dm.mul(b, acc, n)
    strides.reverse()
    if dm.is_static(*shape):
        count: Dim = int(np.prod([shape[a] for a in red], dtype=np.int64))
    else:
        count = dm.prod(b, [shape[a] for a in sorted(red)])
    return groups, strides, count


def _as_float(b: ir.IRBuilder, n: Dim, t: ir.Type) -> ir.Value:
    """A count as a float of type ``t`` (a constant when static)."""
    return ir.Constant(t, float(n)) if isinstance(n, int) else b.sitofp(n, t)


def _reduce_generic(op: Op) -> str | None:
    return "run-time axes" if len(op.operands) > 1 else None


@lowering("reduce_sum", "reduce_mean", "reduce_prod", "reduce_max", "reduce_min", generic=_reduce_generic)
def lower_reduce(k, op: Op) -> None:
    kind = op.opname.split("_", 1)[1]
    x, out = op.operands[0], op.results[0]
    if len(op.operands) > 1:
        raise TargetError(f"x86: {op.opname} with run-time axes is not supported ({op.where()})")
    rank = len(x.shape)
    axes, noop = op.attrs.get("axes"), op.attrs.get("noop_with_empty_axes", 0)
    if axes is not None and len(axes) == 0 and noop:
        _copy(k, out, x)
        return
    red = set(range(rank)) if not axes else {a % rank for a in axes}
    dt = x.dtype
    at, adt = _acc_type(kind, dt)
    out_shape = k.shape(out)
    if dm.is_static(*out_shape) and int(np.prod(out_shape, dtype=np.int64)) == 0:
        return
    groups, strides, count = _reduce_plan(k, x, red)
    if groups and not groups[-1][1] and at == storage_type(dt) and len(groups) > 1:
        _reduce_rows_in_place(k, op, kind, groups, strides, count)
        return

    def split(plan):
        groups, strides, count = plan
        kept = [(n, s) for (n, r), s in zip(groups, strides) if not r]
        redg = [(n, s) for (n, r), s in zip(groups, strides) if r]
        return kept, redg, count

    def finish(b: ir.IRBuilder, v: ir.Value, count: Dim) -> ir.Value:
        if kind == "mean":
            if dt.is_int:
                f = b.sitofp(v, F64) if dt.is_signed else b.uitofp(v, F64)
                q = b.fdiv(f, _as_float(b, count, F64))
                return cast_value(b, q, DType.f64, dt)
            v = b.fdiv(v, _as_float(b, count, at))
        return cast_value(b, v, adt, dt) if adt is not dt else v

    lanes = vector_lanes(k, [dt])
    vector_sums = kind in ("sum", "mean") and dt in (DType.f32, DType.f64) and at == storage_type(dt)

    def reduce_at(b: ir.IRBuilder, redg, xp: ir.Value, base: ir.Value) -> ir.Value:
        def level(lv: int, off: ir.Value, a: ir.Value) -> ir.Value:
            if vector_sums and lv == len(redg) - 1 and isinstance(redg[lv][0], int) \
                    and isinstance(redg[lv][1], int) and redg[lv][1] == 1 and redg[lv][0] >= 2 * lanes:
                return contiguous_sum(b, xp, off, redg[lv][0], at, lanes, a)
            if lv == len(redg):
                v = load(b, xp, off, storage_type(dt))
                v = bf16_to_f32(b, v) if dt is DType.bf16 else v
                return combine(b, kind, a, cast_value(b, v, dt, adt) if adt is not dt else v, dt)
            n, s = redg[lv]
            return fold_range(b, n, [a], lambda i, accs: [level(lv + 1, b.add(off, b.mul(i, dm.val(s))), accs[0])],
                              name=f"red{lv}")[0]
        return level(0, base, identity(kind, at, adt))

    def outputs(kb, plan, b: ir.IRBuilder, lv: int, base: ir.Value, flat: ir.Value) -> None:
        kept, redg, count = plan
        if lv == len(kept):
            r = finish(b, reduce_at(b, redg, kb.arg(0), base), count)
            r = f32_to_bf16(b, r) if dt is DType.bf16 else r
            b.store(r, gep(b, kb.out(0), flat, storage_type(dt)))
            return
        n, s = kept[lv]
        inner = _prod([m for m, _ in kept[lv + 1:]], b)
        with for_range(b, n, f"o{lv}") as i:
            outputs(kb, plan, b, lv + 1, b.add(base, b.mul(i, dm.val(s))), b.add(flat, b.mul(i, dm.val(inner))))

    zero = const_int(0)
    kept, _, _ = split((groups, strides, count))
    if kept and not (isinstance(kept[0][0], int) and kept[0][0] <= 1):
        n0 = kept[0][0]
        inner0 = _prod([m for m, _ in kept[1:]], k.b)

        def row(kb, i):
            b = kb.b
            plan = split(_reduce_plan(kb, x, red))
            s0, inner0 = plan[0][0][1], _prod([m for m, _ in plan[0][1:]], b)
            outputs(kb, plan, b, 1, b.mul(i, dm.val(s0)), b.mul(i, dm.val(inner0)))
        work = max(count, 1) * inner0 if dm.is_static(count, inner0) else dm.hint(count, 64) * dm.hint(inner0, 64)
        rows(k, n0, work, row)
    else:
        outputs(k, split((groups, strides, count)), k.b, 0, zero, zero)


SUM_CHAINS = 4  # independent vector accumulators of a contiguous sum (an add's latency over its throughput)


def contiguous_sum(b: ir.IRBuilder, xp: ir.Value, off: ir.Value, n: int, t: ir.Type, lanes: int,
                   acc: ir.Value) -> ir.Value:
    """``acc`` plus the ``n`` contiguous floats at ``xp[off]``, in explicit vectors: ``SUM_CHAINS``
    accumulators over whole vectors, the tail under a lane mask, then the lanes added in a tree.
    LLVM unrolls a short constant-count scalar loop (a global average pool's 64 pixels) before its
    loop vectoriser sees it and leaves a chain of scalar adds; reassociated like the loop it
    replaces (rounding differs from numpy's pairwise sum, nothing else)."""
    vt = ir.VectorType(t, lanes)
    zero = ir.Constant(vt, [ir.Constant(t, 0.0)] * lanes)
    base = gep(b, xp, off, t)
    full = n // lanes
    chains = max(1, min(SUM_CHAINS, full))

    def vec(i: ir.Value | int) -> ir.Value:
        at = b.mul(i, const_int(lanes)) if isinstance(i, ir.Value) else const_int(i * lanes)
        return b.load(gep(b, base, at, t), typ=vt, align=elem_bytes(t))

    accs = [zero] * chains
    steps = full // chains
    if steps:
        accs = fold_range(b, steps, accs, lambda i, a: [
            _reassoc(b.fadd(a[c], vec(b.add(b.mul(i, const_int(chains)), const_int(c))))) for c in range(chains)],
            name="vsum")
    for v in range(steps * chains, full):
        accs[v % chains] = _reassoc(b.fadd(accs[v % chains], vec(v)))
    rem = n - full * lanes
    if rem:
        mask = ir.Constant(ir.VectorType(I1, lanes), [r < rem for r in range(lanes)])
        accs[0] = _reassoc(b.fadd(accs[0], masked_load(b, gep(b, base, const_int(full * lanes), t), mask, vt, zero)))
    def add(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
        return _reassoc(b.fadd(x, y))
    return add(b, acc, lane_tree(b, tree(b, accs, add), add))


def _prod(dims: list[Dim], b: ir.IRBuilder) -> Dim:
    """The product of ``dims`` (an int when all are static, as numpy computes it)."""
    return int(np.prod(dims, dtype=np.int64)) if dm.is_static(*dims) else dm.prod(b, dims)


def _reduce_rows_in_place(k, op: Op, kind: str, groups, strides, count: Dim) -> None:
    """Innermost dims kept: out[o, :] = combine(out[o, :], x[..., :]) row by row (vectorises)."""
    b = k.b
    dt = op.operands[0].dtype
    t = ll_type(dt)
    n_out = _prod(list(k.shape(op.results[0])), b)
    inner = groups[-1][0]
    ident = identity(kind, t, dt)
    with for_range(b, n_out, "init") as i:
        b.store(ident, gep(b, k.out(0), i, t))
    # output strides of the kept groups
    ostr: list[Dim] = []
    acc: Dim = 1
    for n, r in reversed(groups):
        ostr.append(0 if r else acc)
        acc = dm.mul(b, acc, 1 if r else n)
    ostr.reverse()

    def nest(lv: int, xoff: ir.Value, ooff: ir.Value) -> None:
        if lv == len(groups) - 1:
            with for_range(b, inner, "in") as j:
                op_ = gep(b, k.out(0), b.add(ooff, j), t)
                v = load(b, k.arg(0), b.add(xoff, j), t)
                b.store(combine(b, kind, b.load(op_, typ=t), v, dt), op_)
            return
        with for_range(b, groups[lv][0], f"g{lv}") as i:
            nest(lv + 1, b.add(xoff, b.mul(i, dm.val(strides[lv]))), b.add(ooff, b.mul(i, dm.val(ostr[lv]))))

    nest(0, const_int(0), const_int(0))
    if kind == "mean":
        with for_range(b, n_out, "mean") as i:
            p = gep(b, k.out(0), i, t)
            v = b.load(p, typ=t)
            if dt.is_int:
                f = b.sitofp(v, F64) if dt.is_signed else b.uitofp(v, F64)
                b.store(cast_value(b, b.fdiv(f, _as_float(b, count, F64)), DType.f64, dt), p)
            else:
                b.store(b.fdiv(v, _as_float(b, count, t)), p)


def _copy(k, out, x) -> None:
    memcpy = k.b.module.declare_intrinsic("llvm.memcpy", [k.out(0).type, k.arg(0).type, I64])
    nbytes = dm.mul(k.b, _prod(list(k.shape(x)), k.b), x.dtype.itemsize)
    k.b.call(memcpy, [k.out(0), k.arg(0), dm.val(nbytes), ir.Constant(I1, 0)])


# -- argmax / argmin ---------------------------------------------------------------------------------
@lowering("argmax", "argmin", generic=True)
def lower_arg(k, op: Op) -> None:
    x = op.operands[0]
    axis = op.attrs.get("axis", 0) % len(x.shape)
    outer, n, inner = axis_layout(k.shape(x), axis, k.b)
    dt = x.dtype
    t = ll_type(dt)
    last = bool(op.attrs.get("select_last_index", 0))
    larger = op.opname == "argmax"

    def better(b: ir.IRBuilder, v: ir.Value, best: ir.Value) -> ir.Value:
        # NaN is the extreme for both (numpy); ties go to the first index, or the last if asked
        if dt.is_float:
            v_nan = b.fcmp_unordered("uno", v, v)
            best_nan = b.fcmp_unordered("uno", best, best)
            pred = (">=" if larger else "<=") if last else (">" if larger else "<")
            cmp = b.fcmp_ordered(pred, v, best)
            if last:
                return b.or_(v_nan, b.and_(b.not_(best_nan), cmp))
            return b.and_(b.not_(best_nan), b.or_(v_nan, cmp))
        pred = (">=" if larger else "<=") if last else (">" if larger else "<")
        return (b.icmp_signed if dt.is_signed else b.icmp_unsigned)(pred, v, best)

    def row(kb, o):
        b = kb.b
        _, n, inner = axis_layout(kb.shape(x), axis, b)
        with for_range(b, inner, "in") as i:
            base = b.add(b.mul(o, dm.val(dm.mul(b, n, inner))), i)
            if isinstance(n, int):
                first, start = load(b, kb.arg(0), base, t) if n else ir.Constant(t, 0), 1
            else:  # a run-time axis may be empty: start from the identity of the order (index 0 unless beaten)
                first, start = identity("max" if larger else "min", t, dt), 0

            def step(j, accs):
                v = load(b, kb.arg(0), b.add(base, b.mul(j, dm.val(inner))), t)
                take = better(b, v, accs[0])
                return [b.select(take, v, accs[0]), b.select(take, j, accs[1])]
            _, idx = fold_range(b, n, [first, const_int(0)], step, start=start)
            b.store(idx, gep(b, kb.out(0), b.add(b.mul(o, dm.val(inner)), i), I64))

    rows(k, outer, dm.mul(k.b, n, inner), row)


# -- cumsum / cumprod --------------------------------------------------------------------------------
@lowering("cumsum", "cumprod")
def lower_scan(k, op: Op) -> None:
    if len(op.operands) > 1 or op.attrs.get("axis") is None:
        raise TargetError(f"x86: {op.opname} with a run-time axis is not supported ({op.where()})")
    x = op.operands[0]
    shape = tuple(x.shape)
    axis = op.attrs["axis"] % len(shape)
    outer, n, inner = axis_layout(shape, axis)
    kind = "sum" if op.opname == "cumsum" else "prod"
    dt = x.dtype
    t = ll_type(dt)
    at, adt = _acc_type(kind, dt)
    excl, rev = bool(op.attrs.get("exclusive", 0)), bool(op.attrs.get("reverse", 0))
    if n == 0 or outer * inner == 0:
        return

    def pos(b, j):  # the j-th position visited along the axis
        return b.sub(const_int(n - 1), j) if rev else j

    if inner > 1 and at == t:
        # row by row: out[row_j] = out[row_j-1] (+) x[...], vectorised over the contiguous inner dim
        def block(kb, o):
            b = kb.b
            base = b.mul(o, const_int(n * inner))

            def row_ptr(j):
                return b.add(base, b.mul(pos(b, j), const_int(inner)))
            r0 = row_ptr(const_int(0))
            with for_range(b, inner, "first") as i:
                v = identity(kind, t, dt) if excl else load(b, kb.arg(0), b.add(r0, i), t)
                b.store(v, gep(b, kb.out(0), b.add(r0, i), t))
            with for_range(b, n, "scan", start=1) as j:
                cur, prev = row_ptr(j), row_ptr(b.sub(j, const_int(1)))
                src = prev if excl else cur
                with for_range(b, inner, "in") as i:
                    a = load(b, kb.out(0), b.add(prev, i), t)
                    v = load(b, kb.arg(0), b.add(src, i), t)
                    b.store(combine(b, kind, a, v, dt, reassoc=False), gep(b, kb.out(0), b.add(cur, i), t))
        rows(k, outer, n * inner, block)
        return

    def line(kb, oi):
        b = kb.b
        o, i = b.sdiv(oi, const_int(inner)), b.srem(oi, const_int(inner))
        base = b.add(b.mul(o, const_int(n * inner)), i)

        def step(j, accs):
            p = b.add(base, b.mul(pos(b, j), const_int(inner)))
            v = load(b, kb.arg(0), p, t)
            v = cast_value(b, v, dt, adt) if adt is not dt else v
            nxt = combine(b, kind, accs[0], v, adt, reassoc=False)
            res = accs[0] if excl else nxt
            b.store(cast_value(b, res, adt, dt) if adt is not dt else res, gep(b, kb.out(0), p, t))
            return [nxt]
        fold_range(b, n, [identity(kind, at, adt)], step)

    rows(k, outer * inner, n, line)


# -- topk --------------------------------------------------------------------------------------------
@lowering("topk")
def lower_topk(k, op: Op) -> None:
    if len(op.operands) > 1 or op.attrs.get("k") is None:
        raise TargetError(f"x86: topk with a run-time k is not supported ({op.where()})")
    x = op.operands[0]
    shape = tuple(x.shape)
    axis = op.attrs.get("axis", -1) % len(shape)
    outer, n, inner = axis_layout(shape, axis)
    kk = int(op.attrs["k"])
    dt = x.dtype
    t = ll_type(dt)
    largest = bool(op.attrs.get("largest", 1))
    if kk == 0 or outer * inner == 0:
        return

    def better(b: ir.IRBuilder, v: ir.Value, w: ir.Value) -> ir.Value:
        """v strictly ahead of w in the order (NaN sorts as the largest, as numpy's sort)."""
        if dt.is_float:
            if not largest:
                v, w = w, v
            nan_first = b.and_(b.fcmp_unordered("uno", v, v), b.fcmp_ordered("ord", w, w))
            return b.or_(b.fcmp_ordered(">", v, w), nan_first)
        return (b.icmp_signed if dt.is_signed else b.icmp_unsigned)(">" if largest else "<", v, w)

    def line(kb, oi):
        # insertion into the sorted output row: elements arrive in index order and only move past
        # strictly worse ones, so equal values keep the lower index first
        b = kb.b
        fn = b.function
        o, i = b.sdiv(oi, const_int(inner)), b.srem(oi, const_int(inner))
        xbase = b.add(b.mul(o, const_int(n * inner)), i)
        obase = b.add(b.mul(o, const_int(kk * inner)), i)

        def vp(p):
            return gep(b, kb.out(0), b.add(obase, b.mul(p, const_int(inner))), t)

        def ip(p):
            return gep(b, kb.out(1), b.add(obase, b.mul(p, const_int(inner))), I64)

        with for_range(b, n, "j") as j:
            v = load(b, kb.arg(0), b.add(xbase, b.mul(j, const_int(inner))), t)
            full = b.icmp_signed(">=", j, const_int(kk))
            last = const_int(kk - 1)
            enter = b.or_(b.not_(full), better(b, v, b.load(vp(last), typ=t)))
            ins, skip = fn.append_basic_block("ins"), fn.append_basic_block("skip")
            b.cbranch(enter, ins, skip)
            b.position_at_end(ins)
            start = b.select(full, last, j)
            pre = b.block
            head, body, done = (fn.append_basic_block(s) for s in ("sh.head", "sh.body", "sh.done"))
            b.branch(head)
            b.position_at_end(head)
            p = b.phi(I64)
            p.add_incoming(start, pre)
            has_prev = b.icmp_signed(">", p, const_int(0))
            prev = b.select(has_prev, b.sub(p, const_int(1)), const_int(0))
            pv = b.load(vp(prev), typ=t)
            b.cbranch(b.and_(has_prev, better(b, v, pv)), body, done)
            b.position_at_end(body)
            b.store(pv, vp(p))
            b.store(b.load(ip(prev), typ=I64), ip(p))
            p.add_incoming(prev, body)
            b.branch(head)
            b.position_at_end(done)
            b.store(v, vp(p))
            b.store(j, ip(p))
            b.branch(skip)
            b.position_at_end(skip)

    rows(k, outer * inner, n * kk, line)

"""Kernels of the bounded data-dependent ops (``ir/ops/bounded.py``): ``nonzero_bounded``,
``unique_bounded`` and ``topk_bounded`` (``nms_bounded`` is in ``nms.py``).

Each writes its results into buffers sized by a bound known from the operand shapes, zeroes the
unused tail, and stores the number of valid entries in its ``count`` result (an i64 scalar), which
the host reads after the run (``backends/x86/data_dependent.py``). All are shape-generic: dims
come from ``k.shape``.
"""

from __future__ import annotations

from llvmlite import ir

from nnc.ir import DType, Op, Value

from ..llvm_types import I1, I8, I64, PTR, const_int, for_range
from . import dims as dm
from .dims import Dim
from .loopkit import Loops
from .registry import lowering
from .sorting import key_equal, key_less, merge_sort, sort_key, while_


def zero_fill(k, ptr: ir.Value, n: Dim, v: Value) -> None:
    """Zero ``n`` elements of ``v``'s dtype at ``ptr``."""
    if isinstance(n, int) and n == 0:
        return
    b = k.b
    fn = b.module.declare_intrinsic("llvm.memset", [PTR, I64])
    b.call(fn, [ptr, ir.Constant(I8, 0), dm.val(dm.mul(b, n, v.dtype.itemsize)), ir.Constant(I1, 0)])


def is_nonzero(L: Loops, ptr: ir.Value, i: ir.Value, dt: DType) -> ir.Value:
    """Element ``i`` is not zero (NaN is not zero; -0.0 is)."""
    b = L.b
    x = L.raw(ptr, i, dt)
    if dt is DType.bf16:
        return b.icmp_unsigned("!=", b.and_(x, ir.Constant(x.type, 0x7FFF)), ir.Constant(x.type, 0))
    if dt.is_float:
        return b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0))
    return b.icmp_unsigned("!=", x, ir.Constant(x.type, 0))


def store_i64(b: ir.IRBuilder, ptr: ir.Value, idx: Dim, value: ir.Value) -> None:
    b.store(value, b.gep(ptr, [dm.val(idx)], source_etype=I64, inbounds=True))


@lowering("nonzero_bounded", generic=True)
def lower_nonzero(k, op: Op) -> None:
    """Scan in row-major order; each non-zero element's coordinates go to the next column of the
    i64[rank, bound] result."""
    x = op.operands[0]
    b = k.b
    L = Loops(k)
    shape = k.shape(x)
    rank = len(shape)
    bound = k.shape(op.results[0])[1]
    zero_fill(k, k.out(0), dm.mul(b, rank, bound), op.results[0])
    count = L.var(const_int(0))
    strides = dm.row_major_strides(b, shape)
    with for_range(b, dm.val(dm.prod(b, shape)), "i") as i:
        fn = b.function
        hit, skip = fn.append_basic_block("nz.hit"), fn.append_basic_block("nz.skip")
        b.cbranch(is_nonzero(L, k.arg(0), i, x.dtype), hit, skip)
        b.position_at_end(hit)
        c = L.get(count)
        rest = i
        for d in range(rank):
            coord = b.udiv(rest, dm.val(strides[d])) if d < rank - 1 else rest
            if d < rank - 1:
                rest = b.urem(rest, dm.val(strides[d]))
            store_i64(b, k.out(0), b.add(b.mul(const_int(d), dm.val(bound)), c), coord)
        L.set(count, b.add(c, const_int(1)))
        b.branch(skip)
        b.position_at_end(skip)
    store_i64(b, k.out(1), 0, L.get(count))



def load_i64(b: ir.IRBuilder, ptr: ir.Value, idx: Dim) -> ir.Value:
    return b.load(b.gep(ptr, [dm.val(idx)], source_etype=I64, inbounds=True), typ=I64)


@lowering("unique_bounded", generic=True)
def lower_unique(k, op: Op) -> None:
    """Distinct slices (elements without ``axis``): stable merge sort of the slice indices by their
    contents (lexicographic), groups of equal neighbours, then the outputs in sorted order or in
    order of first occurrence. Scratch: five i64 arrays of the slice count."""
    x = op.operands[0]
    dt = x.dtype
    b = k.b
    L = Loops(k)
    shape = k.shape(x)
    axis = op.attrs["axis"]
    if axis is None:
        outer, n, inner = 1, dm.prod(b, shape), 1
    else:
        a = axis % len(shape)
        outer, n, inner = dm.prod(b, shape[:a]), shape[a], dm.prod(b, shape[a + 1:])
    width, nv = dm.val(dm.mul(b, outer, inner)), dm.val(n)
    y, y_t = k.out(0), op.results[0]
    zero_fill(k, y, dm.prod(b, k.shape(y_t)), y_t)
    for r in (1, 3):
        zero_fill(k, k.out(r), n, op.results[r])
    if isinstance(n, int) and n == 0:
        store_i64(b, k.out(4), 0, const_int(0))
        return

    def elem(j: ir.Value, e: ir.Value) -> ir.Value:  # element e of slice j: [outer, n, inner] layout
        if isinstance(inner, int) and inner == 1 and isinstance(outer, int) and outer == 1:
            return j
        o, i = b.udiv(e, dm.val(inner)), b.urem(e, dm.val(inner))
        return b.add(b.mul(o, dm.val(dm.mul(b, n, inner))), b.add(b.mul(j, dm.val(inner)), i))

    def first_diff(p: ir.Value, q: ir.Value) -> ir.Value:
        """The first element position where slices p and q differ (width when equal)."""
        e = L.var(const_int(0))

        def same() -> ir.Value:
            ev = L.get(e)
            inside = b.icmp_signed("<", ev, width)
            ec = L.imin(ev, b.sub(width, const_int(1)))
            eq = key_equal(b, sort_key(L, k.arg(0), elem(p, ec), dt), sort_key(L, k.arg(0), elem(q, ec), dt), dt)
            return b.and_(inside, eq)
        with while_(b, same, "cmp"):
            L.set(e, b.add(L.get(e), const_int(1)))
        return L.get(e)

    def less(p: ir.Value, q: ir.Value) -> ir.Value:
        e = first_diff(p, q)
        ec = L.imin(e, b.sub(width, const_int(1)))
        lt = key_less(b, sort_key(L, k.arg(0), elem(p, ec), dt), sort_key(L, k.arg(0), elem(q, ec), dt), dt)
        return b.and_(b.icmp_signed("<", e, width), lt)

    perm, scratch, grp, first, counts = (L.buffer(n, I64) for _ in range(5))
    with for_range(b, nv, "j") as j:
        store_i64(b, perm, j, j)
    order = merge_sort(L, perm, scratch, nv, less)
    groups = L.var(const_int(0))
    with for_range(b, nv, "t") as t:  # groups of equal neighbours in sorted order
        j = load_i64(b, order, t)
        prev = load_i64(b, order, L.imax(b.sub(t, const_int(1)), const_int(0)))
        new = b.or_(b.icmp_signed("==", t, const_int(0)), b.icmp_signed("<", first_diff(prev, j), width))
        gv = L.get(groups)
        g = b.select(new, gv, b.sub(gv, const_int(1)))
        L.set(groups, b.select(new, b.add(gv, const_int(1)), gv))
        store_i64(b, first, g, b.select(new, j, load_i64(b, first, g)))  # stable: the lowest index leads
        store_i64(b, counts, g, b.select(new, const_int(1), b.add(load_i64(b, counts, g), const_int(1))))
        store_i64(b, grp, j, g)
    total = L.get(groups)
    pos = scratch  # group -> output position (the sort's other buffer is free again)
    if op.attrs["sorted"]:
        with for_range(b, total, "g") as g:
            store_i64(b, pos, g, g)
    else:  # number the groups by first occurrence
        nxt = L.var(const_int(0))
        with for_range(b, nv, "j") as j:
            g = load_i64(b, grp, j)
            is_first = b.icmp_signed("==", load_i64(b, first, g), j)
            cur = L.get(nxt)
            store_i64(b, pos, g, b.select(is_first, cur, load_i64(b, pos, g)))
            L.set(nxt, b.select(is_first, b.add(cur, const_int(1)), cur))
    with for_range(b, total, "g") as g:
        r, f = load_i64(b, pos, g), load_i64(b, first, g)
        store_i64(b, k.out(1), r, f)
        store_i64(b, k.out(3), r, load_i64(b, counts, g))
        with for_range(b, width, "e") as e:
            b.store(L.raw(k.arg(0), elem(f, e), dt), L.ptr(y, elem(r, e), dt))
    with for_range(b, nv, "j") as j:
        store_i64(b, k.out(2), j, load_i64(b, pos, load_i64(b, grp, j)))
    store_i64(b, k.out(4), 0, total)
    L.done()


@lowering("topk_bounded", generic=True)
def lower_topk(k, op: Op) -> None:
    """TopK with k read from its operand at run time: per row along ``axis``, a stable merge sort of
    the positions (best first; equal values keep the lower index first), the first k written."""
    x = op.operands[0]
    dt = x.dtype
    b = k.b
    L = Loops(k)
    shape = k.shape(x)
    a = op.attrs["axis"] % len(shape)
    outer, n, inner = dm.prod(b, shape[:a]), shape[a], dm.prod(b, shape[a + 1:])
    total = dm.prod(b, shape)
    zero_fill(k, k.out(0), total, op.results[0])
    zero_fill(k, k.out(1), total, op.results[1])
    kk = L.ld_int(k.arg(1), 0, op.operands[1].dtype)
    nv = dm.val(n)
    k.fail_unless(b.and_(b.icmp_signed(">=", kk, const_int(0)), b.icmp_signed("<=", kk, nv)), kk,
                  b.add(nv, const_int(1)))
    store_i64(b, k.out(2), 0, kk)
    if isinstance(n, int) and n == 0:
        return
    largest = bool(op.attrs["largest"])
    perm, scratch = L.buffer(n, I64), L.buffer(n, I64)
    inner_v = dm.val(inner)
    with for_range(b, dm.val(dm.mul(b, outer, inner)), "row") as row:
        o, i = b.udiv(row, inner_v), b.urem(row, inner_v)
        base = b.add(b.mul(o, dm.val(dm.mul(b, n, inner))), i)

        def at(p: ir.Value) -> ir.Value:
            return b.add(base, b.mul(p, inner_v))

        def better(p: ir.Value, q: ir.Value) -> ir.Value:
            u, v = sort_key(L, k.arg(0), at(p), dt), sort_key(L, k.arg(0), at(q), dt)
            return key_less(b, v, u, dt) if largest else key_less(b, u, v, dt)

        with for_range(b, nv, "j") as j:
            store_i64(b, perm, j, j)
        order = merge_sort(L, perm, scratch, nv, better)
        with for_range(b, kk, "r") as r:
            p = load_i64(b, order, r)
            b.store(L.raw(k.arg(0), at(p), dt), L.ptr(k.out(0), at(r), dt))
            store_i64(b, k.out(1), at(r), p)
    L.done()

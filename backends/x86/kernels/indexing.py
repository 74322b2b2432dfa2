"""Gathers and scatters: gather, gather_elements, gather_nd, scatter_elements, scatter_nd; nonzero and
unique are refused here (their result shapes depend on the data: they run as host steps of segmented
execution, ``backends/x86/data_dependent.py``, through their bounded forms in ``bounded.py``).

Indices are i32 or i64 and may be negative (counted from the end, once). An index outside [-n, n-1]
stops the run with the kernel's error code (``KernelBuilder.checked_index``: one compare and a
branch to a cold block), so the caller gets an ``InputError`` naming the op, as from the reference,
and generated code never touches memory outside its tensors.
Gathers copy whole slices with ``memcpy`` (LLVM inlines the small constant-size ones); scatters
first copy ``x`` into the result, then apply the updates in order, because repeated indices must
behave as the reference's sequential loop (later updates win, reductions see earlier ones).
"""

from __future__ import annotations

import math
from typing import Callable, Sequence

from llvmlite import ir

from nnc.ir import DType, Op, TargetError, Value

from ..llvm_types import I64, const_int, for_range, ll_type
from . import dims as dm
from .data_movement import PAR_BYTES, emit_copy_all, itype, memcpy, smin
from .dims import Dim
from .registry import lowering


def load_index(kb, ptr: ir.Value, i: ir.Value, v: Value, dim: int | ir.Value) -> ir.Value:
    """Index ``i`` of the index tensor ``v``, as i64 in [0, dim): a negative one counts from the end;
    one outside [-dim, dim-1] stops the run (``kb.checked_index``)."""
    b = kb.b
    t = ll_type(v.dtype)
    x = b.load(b.gep(ptr, [i], source_etype=t, inbounds=True), typ=t)
    if t.width < 64:
        x = b.sext(x, I64)
    return kb.checked_index(x, dim)


def chunked(k, count: int, item_bytes: int, body, name: str = "rows") -> None:
    """``body(kb, i)`` for i < count; split over the workers in chunks when the work is large."""
    chunked_dims(k, lambda kb: (count, item_bytes, None), lambda kb, i, _: body(kb, i), name)


def chunked_dims(k, setup: Callable, body: Callable, name: str = "rows") -> None:
    """``chunked`` where the count may be a run-time dim: ``setup(kb) -> (count, item_bytes, ctx)``
    reads the dims (again inside each outlined task), ``body(kb, i, ctx)`` does item ``i``. The
    split is decided from the static sizes or their hints; the loop bounds are run-time values."""
    count, item_bytes, ctx = setup(k)
    if isinstance(count, int) and count <= 0:
        return
    item = max(dm.hint(item_bytes, 64), 1)
    if dm.hint(count, 1 << 12) * item < PAR_BYTES or isinstance(count, int) and count < 2:
        with for_range(k.b, dm.val(count), name) as i:
            body(k, i, ctx)
        return
    per = max(1, PAR_BYTES // item)

    def task(kb, c):
        b = kb.b
        n, _, tctx = setup(kb)
        lo = b.mul(c, const_int(per))
        hi = smin(b, b.add(lo, const_int(per)), dm.val(n))
        with for_range(b, hi, name, start=lo) as i:
            body(kb, i, tctx)
    k.parallel_for(dm.val(dm.ceil_div(k.b, count, per)), task, name=name)


def _elem(k, b: ir.IRBuilder, base: ir.Value, i: ir.Value, t: ir.Type) -> ir.Value:
    return b.gep(base, [i], source_etype=t, inbounds=True)


# -- gathers ----------------------------------------------------------------------------------------

def _zero(*dims: Dim) -> bool:
    """Some dim is a static 0: nothing to do (run-time zeros give empty loops)."""
    return any(isinstance(d, int) and d == 0 for d in dims)


@lowering("gather", generic=True)
def lower_gather(k, op: Op) -> None:
    x, ind = op.operands
    axis = op.attrs["axis"] % len(x.shape)
    esz, t = x.dtype.itemsize, itype(x.dtype)

    def setup(kb):
        b, xs = kb.b, kb.shape(x)
        outer, dim, inner = dm.prod(b, xs[:axis]), xs[axis], dm.prod(b, xs[axis + 1:])
        n = dm.prod(b, kb.shape(ind))
        return dm.mul(b, outer, n), dm.mul(b, inner, esz), (dim, inner, n)

    def body(kb, flat, dims):
        b = kb.b
        dim, inner, n = dims
        o, j = b.udiv(flat, dm.val(n)), b.urem(flat, dm.val(n))
        idx = load_index(kb, kb.arg(1), j, ind, dim)
        src = b.mul(b.add(b.mul(o, dm.val(dim)), idx), dm.val(inner))
        dst = b.mul(flat, dm.val(inner))
        if isinstance(inner, int) and inner == 1:
            b.store(b.load(_elem(kb, b, kb.arg(0), src, t), typ=t), _elem(kb, b, kb.out(0), dst, t))
        else:
            memcpy(b, _elem(kb, b, kb.out(0), dst, t), _elem(kb, b, kb.arg(0), src, t),
                   dm.val(dm.mul(b, inner, esz)))
    xs = k.shape(x)
    if not _zero(*xs[:axis], *xs[axis + 1:], *k.shape(ind)):
        chunked_dims(k, setup, body)


def _index_nest(k, layout: Callable, axis: int, body) -> None:
    """Walk ``shape`` row-major, where ``layout(kb) -> (shape, x_strides, ctx)`` (dims may be read at
    run time, again inside outlined tasks); ``body(kb, flat, off, ctx)`` gets the flat position and
    the offset of the same coordinates in a tensor of strides ``x_strides``, with the ``axis``
    coordinate left out."""
    shape, x_strides, ctx = layout(k)
    r = len(shape)

    def level(kb, shape, st, x_strides, ctx, d, flat, off):
        b = kb.b
        if d == r:
            body(kb, flat, off, ctx)
            return
        with for_range(b, dm.val(shape[d]), f"g{d}") as i:
            level(kb, shape, st, x_strides, ctx, d + 1, b.add(flat, b.mul(i, dm.val(st[d]))),
                  off if d == axis else b.add(off, b.mul(i, dm.val(x_strides[d]))))

    zero = const_int(0)
    if r > 1 and math.prod(dm.hint(n) for n in shape) >= PAR_BYTES // 8 and dm.hint(shape[0]) > 1 and axis != 0:
        def task(kb, i):
            b = kb.b
            tshape, txs, tctx = layout(kb)
            st = dm.row_major_strides(b, tshape)
            level(kb, tshape, st, txs, tctx, 1, b.mul(i, dm.val(st[0])), b.mul(i, dm.val(txs[0])))
        k.parallel_for(dm.val(shape[0]), task, name="rows")
    else:
        level(k, shape, dm.row_major_strides(k.b, shape), x_strides, ctx, 0, zero, zero)


@lowering("gather_elements", generic=True)
def lower_gather_elements(k, op: Op) -> None:
    x, ind = op.operands
    axis = op.attrs["axis"] % len(x.shape)
    t = itype(x.dtype)
    if _zero(*k.shape(ind)):
        return

    def layout(kb):
        d = kb.shape(x)
        xs = dm.row_major_strides(kb.b, d)
        return kb.shape(ind), xs, (d[axis], xs[axis])

    def body(kb, flat, off, ctx):
        b = kb.b
        dim, stride = ctx
        idx = load_index(kb, kb.arg(1), flat, ind, dim)
        src = b.add(off, b.mul(idx, dm.val(stride)))
        b.store(b.load(_elem(kb, b, kb.arg(0), src, t), typ=t), _elem(kb, b, kb.out(0), flat, t))
    _index_nest(k, layout, axis, body)


def _nd_offset(kb, ptr: ir.Value, ind: Value, row: ir.Value, depth: int,
               dims: Sequence[Dim], strides: Sequence[Dim]) -> ir.Value:
    """sum over t < depth of wrap(ind[row, t]) * strides[t]."""
    b = kb.b
    off = const_int(0)
    for t_ in range(depth):
        idx = load_index(kb, ptr, b.add(b.mul(row, const_int(depth)), const_int(t_)), ind, dims[t_])
        off = b.add(off, b.mul(idx, dm.val(strides[t_])))
    return off


def _gather_nd_generic(op: Op) -> str | None:
    depth = op.operands[1].type.shape[-1] if op.operands[1].type.shape else None
    return None if isinstance(depth, int) else f"{op.opname} index depth (the last dim of the indices) not static"


@lowering("gather_nd", generic=_gather_nd_generic)
def lower_gather_nd(k, op: Op) -> None:
    x, ind = op.operands
    bd, depth = op.attrs["batch_dims"], ind.shape[-1]
    t, esz = itype(x.dtype), x.dtype.itemsize

    def setup(kb):
        b, d = kb.b, kb.shape(x)
        batch = dm.prod(b, d[:bd])
        per_batch = dm.prod(b, d[bd:])
        rows = dm.prod(b, kb.shape(ind)[bd:-1])  # index tuples per batch entry
        inner = dm.prod(b, d[bd + depth:])
        xs = dm.row_major_strides(b, d[bd:])
        return dm.mul(b, batch, rows), dm.mul(b, inner, esz), (rows, per_batch, inner, d[bd:], xs)

    def body(kb, flat, ctx):
        b = kb.b
        rows, per_batch, inner, dims, xs = ctx
        bi = b.udiv(flat, dm.val(rows))
        src = b.add(b.mul(bi, dm.val(per_batch)), _nd_offset(kb, kb.arg(1), ind, flat, depth, dims, xs))
        memcpy(b, _elem(kb, b, kb.out(0), b.mul(flat, dm.val(inner)), t), _elem(kb, b, kb.arg(0), src, t),
               dm.val(dm.mul(b, inner, esz)))
    d = k.shape(x)
    if not _zero(*d[:bd], *k.shape(ind)[bd:-1], *d[bd + depth:]):
        chunked_dims(k, setup, body)


# -- scatters ---------------------------------------------------------------------------------------

def combine(b: ir.IRBuilder, reduction: str, dt: DType, old: ir.Value, new: ir.Value) -> ir.Value:
    """The reference's ufunc for a scatter reduction, on one element."""
    if dt is DType.bool:  # numpy's add/max are "or" on bools, mul/min are "and"
        return b.or_(old, new) if reduction in ("add", "max") else b.and_(old, new)
    if dt.is_float:
        if reduction == "add":
            return b.fadd(old, new)
        if reduction == "mul":
            return b.fmul(old, new)
        pick_old = b.fcmp_unordered(">" if reduction == "max" else "<", old, new)  # NaN in old stays
        return b.select(b.fcmp_unordered("uno", new, new), new, b.select(pick_old, old, new))
    if reduction == "add":
        return b.add(old, new)
    if reduction == "mul":
        return b.mul(old, new)
    cmp = b.icmp_signed if dt.is_signed else b.icmp_unsigned
    return b.select(cmp(">" if reduction == "max" else "<", old, new), old, new)


def _value_type(op: Op, dt: DType) -> ir.Type:
    if op.attrs["reduction"] == "none":
        return itype(dt)
    try:
        return ll_type(dt)
    except NotImplementedError:
        raise TargetError(f"x86: {op.opname} reduction {op.attrs['reduction']!r} on {dt} ({op.where()})") from None


@lowering("scatter_elements", generic=True)
def lower_scatter_elements(k, op: Op) -> None:
    x, ind, upd = op.operands
    axis = op.attrs["axis"] % len(x.shape)
    red = op.attrs["reduction"]
    b = k.b
    xd = k.shape(x)
    xs = dm.row_major_strides(b, xd)
    t = _value_type(op, x.dtype)
    emit_copy_all(k, x, lambda kb: kb.out(0), lambda kb: kb.arg(0))
    shape = k.shape(ind)
    if _zero(*shape):
        return
    us = dm.row_major_strides(b, k.shape(upd))
    st = dm.row_major_strides(b, shape)

    def level(d, flat_i, flat_u, off):
        if d == len(shape):
            idx = load_index(k, k.arg(1), flat_i, ind, xd[axis])
            dst = _elem(k, b, k.out(0), b.add(off, b.mul(idx, dm.val(xs[axis]))), t)
            new = b.load(_elem(k, b, k.arg(2), flat_u, t), typ=t)
            b.store(new if red == "none" else combine(b, red, x.dtype, b.load(dst, typ=t), new), dst)
            return
        with for_range(b, dm.val(shape[d]), f"s{d}") as i:
            level(d + 1, b.add(flat_i, b.mul(i, dm.val(st[d]))),
                  b.add(flat_u, b.mul(i, dm.val(us[d]))),
                  off if d == axis else b.add(off, b.mul(i, dm.val(xs[d]))))
    zero = const_int(0)
    level(0, zero, zero, zero)  # sequential: repeated indices apply in order


@lowering("scatter_nd", generic=_gather_nd_generic)
def lower_scatter_nd(k, op: Op) -> None:
    x, ind, upd = op.operands
    red = op.attrs["reduction"]
    depth = ind.shape[-1]
    b = k.b
    xd = k.shape(x)
    n_rows = dm.prod(b, k.shape(ind)[:-1])
    inner = dm.prod(b, xd[depth:])
    xs = dm.row_major_strides(b, xd)
    t, esz = _value_type(op, x.dtype), x.dtype.itemsize
    emit_copy_all(k, x, lambda kb: kb.out(0), lambda kb: kb.arg(0))
    if _zero(n_rows, inner):
        return
    with for_range(b, dm.val(n_rows), "sn") as r:  # sequential: later rows see (or overwrite) earlier ones
        off = _nd_offset(k, k.arg(1), ind, r, depth, xd, xs)
        src = b.mul(r, dm.val(inner))
        if red == "none":
            memcpy(b, _elem(k, b, k.out(0), off, t), _elem(k, b, k.arg(2), src, t), dm.val(dm.mul(b, inner, esz)))
        else:
            with for_range(b, dm.val(inner), "sj") as j:
                dst = _elem(k, b, k.out(0), b.add(off, j), t)
                new = b.load(_elem(k, b, k.arg(2), b.add(src, j), t), typ=t)
                b.store(combine(b, red, x.dtype, b.load(dst, typ=t), new), dst)


@lowering("nonzero", "unique")
def lower_data_dependent(k, op: Op) -> None:
    raise TargetError(f"x86: {op.opname} has a data-dependent result shape ({op.where()}): it runs as a host "
                      f"step of segmented execution ({op.opname}_bounded, kernels/bounded.py), never inside a "
                      f"compiled segment")

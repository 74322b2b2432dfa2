"""Strided copies whose sizes and strides may be run-time dims: the data-movement engine of
shape-generic code.

``data_movement.emit_copy`` works from compile-time offset tables; a dim read from the frame has no
table. Every layout op (reshape, transpose, concat, split, slice, expand, tile, constant pad) is
affine per axis, so in shape-generic code it is described as a list of ``Axis`` (size, source
stride, destination stride; ints or i64 values) plus two base offsets, built by a *layout
function* of the kernel builder. The function is called again inside outlined ``parallel_for``
bodies, which must read the dims through their own builder. Axes of static size 1 are dropped and
neighbours contiguous in both tensors are merged where that holds for every run-time value (equal
ints, or a stride that is the very product of the inner stride and size the layout built), so a
contiguous copy becomes one ``memcpy`` of a run-time length. A transpose-like copy goes in
TILE x TILE blocks, and the outermost loop is split over the workers when the static sizes and
hints (``dims.hint``) say the copy is large. The code is correct for any run-time value.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Sequence

from llvmlite import ir

from nnc.ir import DType, Op, Value
from nnc.ir.types import UNKNOWN

from ..llvm_types import I1, I64, PTR, const_int, for_range
from . import dims as dm
from .dims import Dim

PAR_BYTES = 1 << 18  # copies at least this large are split over the workers
TILE = 32  # transpose tile edge (elements)


@dataclass
class Axis:
    """One loop of a strided copy: ``size`` positions, element strides in the source and the result."""

    size: Dim
    src: Dim
    dst: Dim


# kb -> (axes outermost first, source base, destination base), offsets in elements
Layout = Callable[..., tuple[list[Axis], Dim, Dim]]
Ptr = Callable[..., ir.Value]  # kb -> pointer (resolved inside outlined parallel bodies)


def smax(b: ir.IRBuilder, x: Dim, y: Dim) -> Dim:
    if isinstance(x, int) and isinstance(y, int):
        return max(x, y)
    xv, yv = dm.val(x), dm.val(y)
    return b.select(b.icmp_signed(">", xv, yv), xv, yv)


def _is(d: Dim, n: int) -> bool:
    return isinstance(d, int) and d == n


def _const(x) -> int | None:
    if isinstance(x, int):
        return x
    if isinstance(x, ir.Constant) and isinstance(x.type, ir.IntType):
        return int(x.constant)
    return None


def _same(x, y) -> bool:
    """Equal for every run-time value: equal ints, or the very same i64 value."""
    cx, cy = _const(x), _const(y)
    if cx is not None or cy is not None:
        return cx == cy
    return x is y


def _is_product(x: Dim, y: Dim, n: Dim) -> bool:
    """``x == y * n`` for every run-time value: arithmetic on ints, else ``x`` is the ``mul`` that
    ``dims.mul`` made of ``y`` and ``n`` (row-major strides are built that way)."""
    cx, cy, cn = _const(x), _const(y), _const(n)
    if cx is not None and cy is not None and cn is not None:
        return cx == cy * cn
    if cx == 0 and cy == 0:  # broadcast in this tensor along both axes
        return True
    if cy == 1:
        return _same(x, n)
    if cn == 1:
        return _same(x, y)
    if isinstance(x, ir.Instruction) and x.opname == "mul":
        p, q = x.operands
        return (_same(p, y) and _same(q, n)) or (_same(p, n) and _same(q, y))
    return False


def simplify(b: ir.IRBuilder, axes: Sequence[Axis]) -> list[Axis]:
    """Drop axes of static size 1; merge neighbours contiguous in both tensors: with run-time dims,
    where the outer stride is provably the inner stride times the inner size (``_is_product``)."""
    out: list[Axis] = []
    for a in axes:
        if _is(a.size, 1):
            continue
        p = out[-1] if out else None
        if p is not None and _is_product(p.src, a.src, a.size) and _is_product(p.dst, a.dst, a.size):
            out[-1] = Axis(dm.mul(b, p.size, a.size), a.src, a.dst)
            continue
        out.append(a)
    return out or [Axis(1, 1, 1)]


def row_major_axes(b: ir.IRBuilder, sizes: Sequence[Dim], src_strides: Sequence[Dim]) -> list[Axis]:
    """Axes over the index space ``sizes`` written row-major into the result."""
    return [Axis(n, s, d) for n, s, d in zip(sizes, src_strides, dm.row_major_strides(b, sizes))]


def _contiguous(a: Axis) -> bool:
    return _is(a.src, 1) and _is(a.dst, 1)


def emit_strided_copy(k, dst: Ptr, src: Ptr, layout: Layout, dt: DType, parallel: bool = True) -> None:
    """``dst[db + sum(i_d * a_d.dst)] = src[sb + sum(i_d * a_d.src)]`` over the axes ``layout(kb)``
    gives (elements of ``dt``, moved as integers of its size)."""
    t = ir.IntType(8 * dt.itemsize)
    axes, sb, db = _placed(k, layout)
    # a block of rows per task: the rows' bytes as far as they are known, a guess for run-time dims
    row_bytes = math.prod(dm.hint(a.size, 64) for a in axes[1:]) * dt.itemsize
    total = dm.hint(axes[0].size, 1 << 12) * row_bytes
    if not (parallel and total >= PAR_BYTES and not _is(axes[0].size, 1)):
        _copy(k, dst(k), src(k), axes, sb, db, t)
        return
    if len(axes) == 1 and _contiguous(axes[0]):
        rows = max(1, PAR_BYTES // dt.itemsize)  # one contiguous run: chunks of it
    else:
        rows = max(1, PAR_BYTES // max(row_bytes, 1))
        if tile_axis(axes) == 0:  # whole tiles per task
            rows = -(-rows // TILE) * TILE

    def block(kb, j: ir.Value) -> None:
        b = kb.b
        taxes, sb, db = _placed(kb, layout)
        n0 = dm.val(taxes[0].size)
        lo = b.mul(j, const_int(rows))
        hi = b.add(lo, const_int(rows))
        hi = b.select(b.icmp_signed("<", hi, n0), hi, n0)
        _copy(kb, dst(kb), src(kb), taxes, sb, db, t, (lo, hi))

    k.parallel_for(dm.val(dm.ceil_div(k.b, axes[0].size, rows)), block, name="copy")


def _placed(kb, layout: Layout) -> tuple[list[Axis], Dim, Dim]:
    axes, sb, db = layout(kb)
    return simplify(kb.b, axes), sb, db


def tile_axis(axes: Sequence[Axis]) -> int | None:
    """For a transpose-like copy (the innermost axis written contiguously but read with a stride),
    an outer axis read contiguously, to copy together with the innermost one in TILE x TILE blocks
    (both the reads and the writes of a block stay within a few cache lines)."""
    q = axes[-1]
    if len(axes) < 2 or not _is(q.dst, 1) or _const(q.src) in (0, 1) or dm.hint(q.size) < 8:
        return None
    for d in range(len(axes) - 2, -1, -1):
        if _is(axes[d].src, 1) and dm.hint(axes[d].size) >= 8:
            return d
    return None


def _copy(kb, dp: ir.Value, sp: ir.Value, axes: list[Axis], sb: Dim, db: Dim, t: ir.IntType,
          first: tuple[ir.Value, ir.Value] | None = None) -> None:
    """The loop nest; ``first``: the range of the outermost axis (a parallel task's block)."""
    b = kb.b
    size = t.width // 8
    last = len(axes) - 1
    tile = tile_axis(axes)

    def move(s: Dim, o: Dim) -> None:
        x = b.load(b.gep(sp, [dm.val(s)], source_etype=t), typ=t)
        b.store(x, b.gep(dp, [dm.val(o)], source_etype=t))

    def step(a: Axis, i: ir.Value, soff: Dim, doff: Dim) -> tuple[Dim, Dim]:
        return dm.add(b, soff, dm.mul(b, i, a.src)), dm.add(b, doff, dm.mul(b, i, a.dst))

    def level(d: int, soff: Dim, doff: Dim, lo: Dim, hi: Dim) -> None:
        a = axes[d]
        if d == tile:
            tiled(d, soff, doff, lo, hi)
            return
        if d == last and _contiguous(a):
            fn = b.module.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
            b.call(fn, [b.gep(dp, [dm.val(dm.add(b, doff, lo))], source_etype=t),
                        b.gep(sp, [dm.val(dm.add(b, soff, lo))], source_etype=t),
                        dm.val(dm.mul(b, dm.sub(b, hi, lo), size)), ir.Constant(I1, 0)])
            return
        with for_range(b, dm.val(hi), f"s{d}", start=dm.val(lo)) as i:
            s, o = step(a, i, soff, doff)
            if d == last:
                move(s, o)
            else:
                level(d + 1, s, o, 0, axes[d + 1].size)

    def tiled(d: int, soff: Dim, doff: Dim, lo: Dim, hi: Dim) -> None:
        p, q = axes[d], axes[last]
        with for_range(b, dm.val(hi), "pb", start=dm.val(lo), step=TILE) as p0:
            pn = dm.minimum(b, TILE, dm.sub(b, hi, p0))
            with for_range(b, dm.val(q.size), "qb", step=TILE) as q0:
                qn = dm.minimum(b, TILE, dm.sub(b, q.size, q0))

                def block(e: int, s: Dim, o: Dim) -> None:
                    if e < last:  # the axes between the two tiled ones run inside the block loops
                        with for_range(b, dm.val(axes[e].size), f"m{e}") as i:
                            block(e + 1, *step(axes[e], i, s, o))
                        return
                    with for_range(b, dm.val(pn), "pi") as pi:
                        s2, o2 = step(p, b.add(p0, pi), s, o)
                        with for_range(b, dm.val(qn), "qi") as qi:
                            move(*step(q, b.add(q0, qi), s2, o2))
                block(d + 1, soff, doff)

    lo, hi = first if first is not None else (0, axes[0].size)
    level(0, sb, db, lo, hi)


# -- the layout ops' layouts -------------------------------------------------------------------------

def flat_layout(v: Value) -> Layout:
    """All of ``v``'s elements, contiguous in both tensors (reshape: one ``memcpy``)."""
    return lambda kb: ([Axis(dm.prod(kb.b, kb.shape(v)), 1, 1)], 0, 0)


def transpose_layout(x: Value, perm: Sequence[int]) -> Layout:
    def layout(kb):
        d = kb.shape(x)
        st = dm.row_major_strides(kb.b, d)
        return row_major_axes(kb.b, [d[p] for p in perm], [st[p] for p in perm]), 0, 0
    return layout


def _position(kb, values: Sequence[Value], axis: int) -> Dim:
    """Where a part starts along ``axis``: the sum of the earlier parts' sizes."""
    pos: Dim = 0
    for v in values:
        pos = dm.add(kb.b, pos, kb.shape(v)[axis])
    return pos


def concat_layout(op: Op, i: int, axis: int) -> Layout:
    """Operand ``i`` of a concat into its place in the result."""
    def layout(kb):
        b = kb.b
        d = kb.shape(op.operands[i])
        whole = list(d)  # the result's dims: d's own values where they are equal, for merging
        whole[axis] = kb.shape(op.results[0])[axis]
        dst = dm.row_major_strides(b, whole)
        axes = [Axis(n, s, o) for n, s, o in zip(d, dm.row_major_strides(b, d), dst)]
        return axes, 0, dm.mul(b, _position(kb, op.operands[:i], axis), dst[axis])
    return layout


def split_layout(op: Op, i: int, axis: int) -> Layout:
    """Result ``i`` of a split from its place in the operand."""
    def layout(kb):
        b = kb.b
        d = kb.shape(op.operands[0])
        part = list(d)
        part[axis] = kb.shape(op.results[i])[axis]
        st = dm.row_major_strides(b, d)
        return row_major_axes(b, part, st), dm.mul(b, _position(kb, op.results[:i], axis), st[axis]), 0
    return layout


def slice_start(b: ir.IRBuilder, start: int, step: int, n: Dim) -> Dim:
    """The first index a python slice ``start::step`` takes on an axis of ``n`` (negative counts
    from the end, then clamped: to [0, n] going forward, [-1, n-1] going back)."""
    if isinstance(n, int):
        return slice(start, None, step).indices(n)[0]
    if start >= 0:
        return dm.minimum(b, start, n if step > 0 else dm.sub(b, n, 1))
    return smax(b, dm.add(b, n, start), 0 if step > 0 else -1)


def slice_layout(x: Value, out: Value, params: Sequence[tuple[int, int, int, int]]) -> Layout:
    """``params``: (axis, start, end, step) per sliced axis; the result's sizes come from the frame."""
    def layout(kb):
        b = kb.b
        d, o = kb.shape(x), kb.shape(out)
        st = dm.row_major_strides(b, d)
        sizes, src, base = list(d), list(st), 0
        for axis, start, _, step in params:
            sizes[axis] = o[axis]
            src[axis] = dm.mul(b, st[axis], step)
            base = dm.add(b, base, dm.mul(b, slice_start(b, start, step, d[axis]), st[axis]))
        return row_major_axes(b, sizes, src), base, 0
    return layout


def _same_symbol(a, b) -> bool:
    """Two type dims that are one named symbol: equal at run time (inputs bind symbols consistently)."""
    return isinstance(a, str) and a == b and a != UNKNOWN


def expand_layout(x: Value, out: Value) -> Layout:
    """A dim of x that is the result's own symbol is copied, not broadcast (if it is 1, so is the
    result's); another run-time dim of x broadcasts where it is 1, decided by a select."""
    xt, ot = list(x.type.shape), list(out.type.shape)
    lead = len(ot) - len(xt)
    same = [a >= lead and _same_symbol(xt[a - lead], ot[a]) for a in range(len(ot))]

    def layout(kb):
        b = kb.b
        o, d = kb.shape(out), kb.shape(x)
        sizes, src = list(o), [0] * len(o)
        acc: Dim = 1
        for a in range(len(o) - 1, lead - 1, -1):
            n = d[a - lead]
            if same[a]:
                sizes[a], src[a] = n, acc  # x's own value: strides and sizes merge by identity
            elif isinstance(n, int):
                src[a] = 0 if n == 1 and not _is(o[a], 1) else acc
            else:  # a run-time 1 under the result's dim broadcasts
                src[a] = b.select(b.icmp_signed("==", n, const_int(1)), const_int(0), dm.val(acc))
            acc = dm.mul(b, acc, n)
        return row_major_axes(b, sizes, src), 0, 0
    return layout


def tile_layout(x: Value, repeats: Sequence[int]) -> Layout:
    """The result, row-major, is the index space (r0, d0, r1, d1, ...) reading x at (i0, i1, ...)."""
    def layout(kb):
        d = kb.shape(x)
        sizes: list[Dim] = []
        src: list[Dim] = []
        for n, s, rep in zip(d, dm.row_major_strides(kb.b, d), repeats):
            sizes += [rep, n]
            src += [0, s]
        return row_major_axes(kb.b, sizes, src), 0, 0
    return layout

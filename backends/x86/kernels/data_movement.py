"""Data movement: reshape/squeeze/unsqueeze copies, transpose, concat, split, slice, expand, tile,
plus trilu, range and shape (pad, on the same engine, is in ``pad.py``).

Every layout op here is one instance of a single copy engine (``emit_copy``): the result, walked in
row-major order, reads the source at ``base + sum(offsets[d][i_d])`` where ``offsets[d]`` is a
compile-time table of element offsets per result axis (``FILL`` marks positions that take a constant
instead, as constant padding does). The engine folds unit axes away, turns arithmetic tables into
strided loops, merges axes that stay contiguous (a reshape becomes one ``memcpy``), splits the
innermost axis into runs (pad's border | interior | border), tiles the two axes of a transpose for
cache locality, and hands the outermost loop to ``parallel_for`` for large tensors. Elements are moved
as integers of their byte size, so one kernel serves every dtype (bool and f16/bf16 included).
Where some dim is read at run time (shape-generic code) there are no tables: the lowerings describe
the same copies as strided axes for ``strided_copy.py``.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op, Value

from ..llvm_types import I1, I64, PTR, const_int, for_range, ll_type
from . import dims as dm
from . import strided_copy as sc
from . import transpose2d
from .registry import lowering
from .strided_copy import PAR_BYTES, TILE, Ptr, emit_strided_copy

FILL = np.iinfo(np.int64).min  # table entry: "write the fill value here"


def itype(dt: DType) -> ir.IntType:
    """Elements are moved as integers of their byte size."""
    return ir.IntType(8 * dt.itemsize)


def fill_bits(dt: DType, value: float | int | bool | None) -> int:
    """The bit pattern of ``value`` converted to ``dt`` the numpy way (as an unsigned integer)."""
    arr = np.asarray(0 if value is None else value).astype(dt.numpy)
    return int(arr.reshape(1).view(np.dtype(f"u{dt.itemsize}"))[0])


def row_major(shape: Sequence[int]) -> list[int]:
    strides, acc = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d] = acc
        acc *= shape[d]
    return strides


def const_table(k, values: Sequence[int] | np.ndarray, ty: ir.Type = I64, name: str = "tbl") -> ir.GlobalVariable:
    """A read-only global array holding ``values`` (index tables, weights)."""
    mod = k.cg.ll
    arr_t = ir.ArrayType(ty, len(values))
    g = ir.GlobalVariable(mod, arr_t, name=mod.get_unique_name(f"{k.fn.name}.{name}"))
    g.global_constant = True
    g.linkage = "internal"
    conv = float if isinstance(ty, (ir.DoubleType, ir.FloatType)) else int
    g.initializer = ir.Constant(arr_t, [conv(v) for v in values])
    return g


def load_table(b: ir.IRBuilder, table: ir.GlobalVariable, i: ir.Value, ty: ir.Type = I64) -> ir.Value:
    return b.load(b.gep(table, [i], source_etype=ty, inbounds=True), typ=ty)


def memcpy(b: ir.IRBuilder, dst: ir.Value, src: ir.Value, nbytes: ir.Value | int) -> None:
    fn = b.module.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
    n = const_int(nbytes) if isinstance(nbytes, int) else nbytes
    b.call(fn, [dst, src, n, ir.Constant(I1, 0)])


def byte_ptr(b: ir.IRBuilder, base: ir.Value, offset: ir.Value | int) -> ir.Value:
    off = const_int(offset) if isinstance(offset, int) else offset
    return b.gep(base, [off], source_etype=ir.IntType(8), inbounds=True)


def smin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def emit_memcpy(k, dst: Ptr, src: Ptr, nbytes: int, dst_off: int = 0, src_off: int = 0) -> None:
    """Copy ``nbytes`` contiguous bytes; large copies are cut into chunks run in parallel."""
    if nbytes <= 0:
        return
    if nbytes < 4 * PAR_BYTES:
        memcpy(k.b, byte_ptr(k.b, dst(k), dst_off), byte_ptr(k.b, src(k), src_off), nbytes)
        return
    chunk = PAR_BYTES

    def body(kb, i):
        b = kb.b
        off = b.mul(i, const_int(chunk))
        n = smin(b, const_int(chunk), b.sub(const_int(nbytes), off))
        memcpy(b, byte_ptr(b, dst(kb), b.add(off, const_int(dst_off))),
               byte_ptr(b, src(kb), b.add(off, const_int(src_off))), n)
    k.parallel_for(-(-nbytes // chunk), body, name="memcpy")


def emit_copy_all(k, v: Value, dst: Ptr, src: Ptr) -> None:
    """Copy all of ``v``'s bytes (as many as its dims read at run time say, in shape-generic code)."""
    if dm.is_static(*k.shape(v)):
        emit_memcpy(k, dst, src, v.type.nbytes or 0)
    else:
        emit_strided_copy(k, dst, src, sc.flat_layout(v), v.dtype)


# -- the copy engine -----------------------------------------------------------------------------------

class _Axis:
    """One loop of the copy: ``size`` positions; source offsets affine (``stride``) or a table."""

    def __init__(self, size: int, dst_stride: int, stride: int | None = None, table: np.ndarray | None = None):
        self.size, self.dst_stride, self.stride, self.table = size, dst_stride, stride, table

    @property
    def has_fill(self) -> bool:
        return self.table is not None and bool((self.table == FILL).any())


def _affine(t: np.ndarray) -> int | None:
    """The stride of an arithmetic table without fill entries (None if it is not one)."""
    if (t == FILL).any():
        return None
    if len(t) < 2:
        return 0
    d = np.diff(t)
    return int(d[0]) if (d == d[0]).all() else None


def _runs(t: np.ndarray) -> list[tuple[int, int, int | None, int]]:
    """Split a table into maximal runs: (start, length, stride or None for fill, first offset)."""
    runs: list[tuple[int, int, int | None, int]] = []
    i, n = 0, len(t)
    while i < n:
        if t[i] == FILL:
            j = i
            while j < n and t[j] == FILL:
                j += 1
            runs.append((i, j - i, None, 0))
        elif i + 1 < n and t[i + 1] != FILL:
            s = int(t[i + 1] - t[i])
            j = i + 1
            while j + 1 < n and t[j + 1] != FILL and t[j + 1] - t[j] == s:
                j += 1
            runs.append((i, j - i + 1, s, int(t[i])))
            j += 1
        else:
            runs.append((i, 1, 0, int(t[i])))
            j = i + 1
        i = j
    return runs


def emit_copy(k, dst: Ptr, src: Ptr, offsets: Sequence[np.ndarray], dt: DType,
              dst_strides: Sequence[int] | None = None, dst_base: int = 0, src_base: int = 0,
              fill: int = 0, parallel: bool = True) -> None:
    """``dst[dst_base + sum(i_d * dst_strides[d])] = src[src_base + sum(offsets[d][i_d])]`` over the
    index space ``len(offsets[d])``; a ``FILL`` entry writes the bits ``fill`` instead. Offsets and
    strides count elements of ``dt``. ``dst_strides`` default to row-major over the index space."""
    sizes = [len(t) for t in offsets]
    if any(n == 0 for n in sizes):
        return
    dst_strides = list(dst_strides) if dst_strides is not None else row_major(sizes)
    axes: list[_Axis] = []
    for t, ds in zip(offsets, dst_strides):
        t = np.asarray(t, dtype=np.int64)
        s = _affine(t)
        if s is not None:
            src_base += int(t[0])
            if len(t) > 1:
                axes.append(_Axis(len(t), ds, stride=s))
        else:
            axes.append(_Axis(len(t), ds, table=t))
    # merge neighbours that stay contiguous in both source and destination
    merged: list[_Axis] = []
    for a in axes:
        p = merged[-1] if merged else None
        if p is not None and p.stride is not None and a.stride is not None and \
                p.stride == a.stride * a.size and p.dst_stride == a.dst_stride * a.size:
            merged[-1] = _Axis(p.size * a.size, a.dst_stride, stride=a.stride)
        else:
            merged.append(a)
    if not merged:
        merged = [_Axis(1, 1, stride=0)]
    total = math.prod(a.size for a in merged) * dt.itemsize
    if len(merged) == 1 and merged[0].stride == 1 and merged[0].dst_stride == 1:
        emit_memcpy(k, dst, src, total, dst_base * dt.itemsize, src_base * dt.itemsize)
        return
    _Nest(k, dst, src, merged, dt, dst_base, src_base, fill).emit(parallel and total >= PAR_BYTES)


class _Nest:
    def __init__(self, k, dst: Ptr, src: Ptr, axes: list[_Axis], dt: DType, dst_base: int, src_base: int,
                 fill: int):
        self.k, self.dst, self.src, self.axes = k, dst, src, axes
        self.t = itype(dt)
        self.dst_base, self.src_base = dst_base, src_base
        self.fill = ir.Constant(self.t, fill)
        self.tables = {id(a): const_table(k, a.table) for a in axes if a.table is not None}
        self.tile = self._tile_axis()

    def _tile_axis(self) -> int | None:
        """For a transpose-like copy (innermost source stride large, some outer axis with source
        stride 1), the outer axis to tile together with the innermost one."""
        inner = self.axes[-1]
        if inner.stride is None or inner.stride in (0, 1) or inner.size < 8 or inner.dst_stride != 1:
            return None
        for d in range(len(self.axes) - 2, -1, -1):
            a = self.axes[d]
            if a.stride == 1 and a.size >= 8:
                return d
        return None

    def emit(self, parallel: bool) -> None:
        zero = const_int(0)
        outer = self.axes[0]
        if parallel and self.tile == 0:  # the tiled axis is outermost: split over its blocks
            def tiles(kb, i):
                self._tiled(kb, 0, zero, zero, None, fixed=i)
            self.k.parallel_for(-(-outer.size // TILE), tiles, name="tiles")
        elif parallel and len(self.axes) > 1 and outer.size > 1:
            def body(kb, i):
                self._level(kb, 0, zero, zero, None, fixed=i)
            self.k.parallel_for(outer.size, body, name="copy")
        else:
            self._level(self.k, 0, zero, zero, None)

    def _step(self, b: ir.IRBuilder, a: _Axis, i: ir.Value, soff: ir.Value, doff: ir.Value, valid):
        doff = b.add(doff, b.mul(i, const_int(a.dst_stride)))
        if a.stride is not None:
            return b.add(soff, b.mul(i, const_int(a.stride))), doff, valid
        t = load_table(b, self.tables[id(a)], i)
        if a.has_fill:
            ok = b.icmp_signed("!=", t, const_int(int(FILL)))
            valid = ok if valid is None else b.and_(valid, ok)
            t = b.select(ok, t, const_int(0))
        return b.add(soff, t), doff, valid

    def _level(self, kb, d: int, soff: ir.Value, doff: ir.Value, valid, fixed: ir.Value | None = None) -> None:
        b = kb.b
        if d == len(self.axes) - 1:
            self._inner(kb, soff, doff, valid)
            return
        if d == self.tile:
            self._tiled(kb, d, soff, doff, valid)
            return
        a = self.axes[d]
        if fixed is not None:
            s, t, v = self._step(b, a, fixed, soff, doff, valid)
            self._level(kb, d + 1, s, t, v)
            return
        with for_range(b, a.size, f"c{d}") as i:
            s, t, v = self._step(b, a, i, soff, doff, valid)
            self._level(kb, d + 1, s, t, v)

    def _ptrs(self, kb, soff, doff):
        b = kb.b
        s = b.gep(self.src(kb), [b.add(soff, const_int(self.src_base))], source_etype=self.t, inbounds=True)
        d = b.gep(self.dst(kb), [b.add(doff, const_int(self.dst_base))], source_etype=self.t, inbounds=True)
        return s, d

    def _inner(self, kb, soff, doff, valid) -> None:
        b = kb.b
        if valid is not None:  # an outer axis may say "this whole row is fill"
            yes = b.function.append_basic_block("row.copy")
            no = b.function.append_basic_block("row.fill")
            end = b.function.append_basic_block("row.end")
            b.cbranch(valid, yes, no)
            b.position_at_end(no)
            a = self.axes[-1]
            sp, dp = self._ptrs(kb, soff, doff)
            self._loop(b, a.size, dp, a.dst_stride, None, 0)
            b.branch(end)
            b.position_at_end(yes)
            self._inner(kb, soff, doff, None)
            b.branch(end)
            b.position_at_end(end)
            return
        a = self.axes[-1]
        sp, dp = self._ptrs(kb, soff, doff)
        if a.stride is not None:
            self._loop(b, a.size, dp, a.dst_stride, sp, a.stride)
            return
        runs = _runs(a.table)
        if len(runs) <= 4:
            for start, n, stride, first in runs:
                d0 = b.gep(dp, [const_int(start * a.dst_stride)], source_etype=self.t, inbounds=True)
                s0 = None if stride is None else b.gep(sp, [const_int(first)], source_etype=self.t)
                self._loop(b, n, d0, a.dst_stride, s0, stride or 0)
            return
        table = self.tables[id(a)]
        with for_range(b, a.size, "ct") as j:
            t = load_table(b, table, j)
            dq = b.gep(dp, [b.mul(j, const_int(a.dst_stride))], source_etype=self.t, inbounds=True)
            if a.has_fill:
                ok = b.icmp_signed("!=", t, const_int(int(FILL)))
                v = b.load(b.gep(sp, [b.select(ok, t, const_int(0))], source_etype=self.t), typ=self.t)
                b.store(b.select(ok, v, self.fill), dq)
            else:
                b.store(b.load(b.gep(sp, [t], source_etype=self.t), typ=self.t), dq)

    def _loop(self, b: ir.IRBuilder, n: int | ir.Value, dp, dst_stride: int, sp, stride: int) -> None:
        """``dp[j*dst_stride] = sp[j*stride]`` (or the fill value when ``sp`` is None) for j < n."""
        size = self.t.width // 8
        if sp is not None and stride == 1 and dst_stride == 1:
            nb = const_int(n * size) if isinstance(n, int) else b.mul(n, const_int(size))
            memcpy(b, dp, sp, nb)
            return
        with for_range(b, n, "cj") as j:
            v = self.fill if sp is None else \
                b.load(b.gep(sp, [b.mul(j, const_int(stride))], source_etype=self.t), typ=self.t)
            b.store(v, b.gep(dp, [b.mul(j, const_int(dst_stride))], source_etype=self.t, inbounds=True))

    def _tiled(self, kb, d: int, soff, doff, valid, fixed: ir.Value | None = None) -> None:
        """Axis ``d`` (source stride 1) and the innermost axis (destination stride 1) in TILE x TILE
        blocks, so both the reads and the writes of a block stay within a few cache lines; the axes
        between them run inside the block loops."""
        if fixed is not None:
            self._tile_block(kb, d, soff, doff, valid, fixed)
            return
        with for_range(kb.b, -(-self.axes[d].size // TILE), "pb") as pb:
            self._tile_block(kb, d, soff, doff, valid, pb)

    def _tile_block(self, kb, d: int, soff, doff, valid, pb: ir.Value) -> None:
        b = kb.b
        p, q = self.axes[d], self.axes[-1]
        mid = self.axes[d + 1:-1]
        p0 = b.mul(pb, const_int(TILE))
        pn = smin(b, const_int(TILE), b.sub(const_int(p.size), p0))
        with for_range(b, -(-q.size // TILE), "qb") as qb:
            q0 = b.mul(qb, const_int(TILE))
            qn = smin(b, const_int(TILE), b.sub(const_int(q.size), q0))

            def inner(soff2, doff2, valid2, level):
                if level < len(mid):
                    a = mid[level]
                    with for_range(b, a.size, f"m{level}") as i:
                        s, t, v = self._step(b, a, i, soff2, doff2, valid2)
                        inner(s, t, v, level + 1)
                    return
                with for_range(b, pn, "pi") as pi:
                    pp = b.add(p0, pi)
                    s = b.add(soff2, b.mul(pp, const_int(p.stride)))
                    t = b.add(doff2, b.mul(pp, const_int(p.dst_stride)))
                    sp, dp = self._ptrs(kb, b.add(s, b.mul(q0, const_int(q.stride))),
                                        b.add(t, b.mul(q0, const_int(q.dst_stride))))
                    self._loop(b, qn, dp, q.dst_stride, sp, q.stride)
            inner(soff, doff, valid, 0)


# -- lowerings ---------------------------------------------------------------------------------------

def _out(i: int = 0) -> Ptr:
    return lambda kb: kb.out(i)


def _arg(i: int = 0) -> Ptr:
    return lambda kb: kb.arg(i)


def axis_offsets(shape: Sequence[int]) -> list[np.ndarray]:
    """Row-major source offsets of a contiguous tensor, one table per axis."""
    return [np.arange(n, dtype=np.int64) * s for n, s in zip(shape, row_major(shape))]


def static_dims(k, *values: Value) -> bool:
    """Every dim of ``values`` is a compile-time int: the table-driven engine (``emit_copy``)."""
    return all(dm.is_static(*k.shape(v)) for v in values)


def _ranked(op: Op) -> str | None:
    """A result's rank comes from an operand's run-time value (a target shape of unknown length)."""
    return "a result of unknown rank" if any(r.type.shape is None for r in op.results) else None


@lowering("reshape", "squeeze", "unsqueeze", generic=_ranked)
def lower_copy(k, op: Op) -> None:
    # these ops are INPLACE: when the planner gave the result its operand's buffer, nothing moves
    out = op.results[0]
    moved = k.b.icmp_unsigned("!=", k.out(0), k.arg(0))
    with k.b.if_then(moved):
        emit_copy_all(k, out, _out(0), _arg(0))


@lowering("transpose", generic=True)
def lower_transpose(k, op: Op) -> None:
    x = op.operands[0]
    r = len(x.shape)
    perm = op.attrs["perm"]
    perm = list(reversed(range(r))) if perm is None else [p % r for p in perm]
    if not static_dims(k, x):
        emit_strided_copy(k, _out(0), _arg(0), sc.transpose_layout(x, perm), x.dtype)
        return
    if transpose2d.applies(k, tuple(x.shape), perm, x.dtype.itemsize):  # 16 x 16 tiles in registers
        transpose2d.emit(k, tuple(x.shape), perm)
        return
    st = row_major(x.shape)
    emit_copy(k, _out(0), _arg(0), [np.arange(x.shape[p], dtype=np.int64) * st[p] for p in perm], x.dtype)


@lowering("concat", generic=True)
def lower_concat(k, op: Op) -> None:
    out = op.results[0]
    r = len(out.shape)
    axis = op.attrs["axis"] % r
    if not static_dims(k, out, *op.operands):
        for i, v in enumerate(op.operands):
            emit_strided_copy(k, _out(0), _arg(i), sc.concat_layout(op, i, axis), v.dtype)
        return
    ost = row_major(out.shape)
    pos = 0
    for i, v in enumerate(op.operands):
        emit_copy(k, _out(0), _arg(i), axis_offsets(v.shape), v.dtype, dst_strides=ost, dst_base=pos * ost[axis])
        pos += v.shape[axis]


@lowering("split", generic=True)
def lower_split(k, op: Op) -> None:
    x = op.operands[0]
    axis = op.attrs["axis"] % len(x.shape)
    if not static_dims(k, x, *op.results):
        for i in range(len(op.results)):
            emit_strided_copy(k, _out(i), _arg(0), sc.split_layout(op, i, axis), x.dtype)
        return
    st = row_major(x.shape)
    pos = 0
    for i, r in enumerate(op.results):
        offs = [np.arange(n, dtype=np.int64) * s for n, s in zip(r.shape, st)]
        emit_copy(k, _out(i), _arg(0), offs, x.dtype, src_base=pos * st[axis])
        pos += r.shape[axis]


_SLICE_OPERANDS = {"starts": 1, "axes": 3, "steps": 4}  # what a shape-generic slice must know statically


def _slice_generic(op: Op) -> str | None:
    for name, i in _SLICE_OPERANDS.items():
        if op.attrs[name] is None and i < len(op.operands):
            p = op.operands[i].producer
            if p is None or p.opname != "const":
                return f"slice {name} computed at run time"
    return None


def _slice_attrs(k, op: Op) -> tuple[tuple[int, ...], tuple[int, ...] | None, tuple[int, ...] | None]:
    """starts, axes, steps: attributes, or constant operands (the ends, computed at run time, are not
    needed: the result's dims are in the frame)."""
    from nnc.ir import const_value

    got = []
    for name, i in _SLICE_OPERANDS.items():
        v = op.attrs[name]
        if v is None and i < len(op.operands):
            v = tuple(int(e) for e in np.asarray(const_value(k.cg.module, op.operands[i])).reshape(-1))
        got.append(v)
    return got[0], got[1], got[2]


@lowering("slice", generic=_slice_generic)
def lower_slice(k, op: Op) -> None:
    from nnc.ir.ops.shape import _slice_params

    x = op.operands[0]
    a = op.attrs
    if len(op.operands) > 1 or not static_dims(k, x, op.results[0]):
        starts, axes, steps = _slice_attrs(k, op)
        params = _slice_params(len(x.shape), starts, starts, axes, steps)  # ends: unused
        emit_strided_copy(k, _out(0), _arg(0), sc.slice_layout(x, op.results[0], params), x.dtype)
        return
    st = row_major(x.shape)
    idx = [np.arange(n, dtype=np.int64) for n in x.shape]
    for axis, s, e, step in _slice_params(len(x.shape), a["starts"], a["ends"], a["axes"], a["steps"]):
        idx[axis] = np.arange(*slice(s, e, step).indices(x.shape[axis]), dtype=np.int64)
    emit_copy(k, _out(0), _arg(0), [i * s for i, s in zip(idx, st)], x.dtype)


@lowering("expand", generic=_ranked)
def lower_expand(k, op: Op) -> None:
    x, out = op.operands[0], op.results[0]
    if not static_dims(k, x, out):
        emit_strided_copy(k, _out(0), _arg(0), sc.expand_layout(x, out), x.dtype)
        return
    from .elementwise import broadcast_strides

    st = broadcast_strides(x, tuple(out.shape))
    emit_copy(k, _out(0), _arg(0), [np.arange(n, dtype=np.int64) * s for n, s in zip(out.shape, st)], x.dtype)


def _tile_generic(op: Op) -> str | None:
    return "tile repeats computed at run time" if op.attrs["repeats"] is None else None


@lowering("tile", generic=_tile_generic)
def lower_tile(k, op: Op) -> None:
    # tile's result, row-major, is the index space (r0, d0, r1, d1, ...) reading x at (i0, i1, ...)
    x = op.operands[0]
    if not static_dims(k, x):
        emit_strided_copy(k, _out(0), _arg(0), sc.tile_layout(x, op.attrs["repeats"]), x.dtype)
        return
    offs = []
    for n, s, rep in zip(x.shape, row_major(x.shape), op.attrs["repeats"]):
        offs += [np.zeros(rep, dtype=np.int64), np.arange(n, dtype=np.int64) * s]
    emit_copy(k, _out(0), _arg(0), offs, x.dtype)


@lowering("trilu", generic=True)
def lower_trilu(k, op: Op) -> None:
    x = op.operands[0]
    b = k.b
    t = itype(x.dtype)  # zero is all-zero bits in every dtype
    *batch, rows, cols = k.shape(x)
    if x.type.numel == 0:
        return
    if len(op.operands) > 1:  # k known only at run time: a 0-d integer tensor
        kt = ll_type(op.operands[1].dtype)
        kk = b.load(k.arg(1), typ=kt)
        kk = b.sext(kk, I64) if kt.width < 64 else kk
    else:
        kk = const_int(op.attrs["k"] or 0)
    upper = bool(op.attrs["upper"])
    zero = ir.Constant(t, 0)
    with for_range(b, dm.val(dm.mul(b, dm.prod(b, batch), rows)), "tr") as r:
        i = b.srem(r, dm.val(rows))
        with for_range(b, dm.val(cols), "tc") as j:
            diff = b.sub(j, i)
            keep = b.icmp_signed(">=" if upper else "<=", diff, kk)
            flat = b.add(b.mul(r, dm.val(cols)), j)
            v = b.load(b.gep(k.arg(0), [flat], source_etype=t, inbounds=True), typ=t)
            b.store(b.select(keep, v, zero), b.gep(k.out(0), [flat], source_etype=t, inbounds=True))


def _range_generic(op: Op) -> str | None:
    # with static shapes a range of input values is compiled per value, where it folds to a constant
    return "a bf16 range (no bf16 range kernel)" if op.results[0].dtype is DType.bf16 else None


@lowering("range", generic=_range_generic)
def lower_range(k, op: Op) -> None:
    out = op.results[0]
    dt = out.dtype
    b = k.b
    t = ll_type(dt)
    (n,) = k.shape(out)  # the length, worked out on the host from the operands' values
    start = b.load(k.arg(0), typ=t)
    delta = b.load(k.arg(2), typ=t)
    if dt.is_float:  # the reference computes start + i * delta in float64, then rounds once
        f64 = ir.DoubleType()
        s, d = (b.fpext(v, f64) if t != f64 else v for v in (start, delta))
        with for_range(b, dm.val(n), "ri") as i:
            y = b.fadd(s, b.fmul(b.sitofp(i, f64), d))
            b.store(b.fptrunc(y, t) if t != f64 else y, b.gep(k.out(0), [i], source_etype=t, inbounds=True))
        return
    ext = (b.sext if dt.is_signed else b.zext) if t.width < 64 else None
    s, d = (ext(v, I64) if ext else v for v in (start, delta))
    with for_range(b, dm.val(n), "ri") as i:
        y = b.add(s, b.mul(i, d))
        b.store(b.trunc(y, t) if t.width < 64 else y, b.gep(k.out(0), [i], source_etype=t, inbounds=True))


@lowering("shape", generic=True)
def lower_shape(k, op: Op) -> None:
    x: Value = op.operands[0]
    dims = list(k.shape(x)[op.attrs["start"]:op.attrs["end"]])
    for i, d in enumerate(dims):
        k.b.store(dm.val(d), k.b.gep(k.out(0), [const_int(i)], source_etype=I64, inbounds=True))

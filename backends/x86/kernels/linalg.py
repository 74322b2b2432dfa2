"""Matrix products: ``matmul`` (batched, broadcasting, 1-D operands), ``gemm`` and ``einsum``.

f32/f64 matmul and gemm run on the packed microkernel GEMM of gemm.py: a constant operand (a
weight) is packed at compile time into the microkernel's layout and read from the weights blob;
gemm's alpha, beta and bias ``c`` become the microkernel epilogue. A matmul whose B has no batch
dims folds A's batch into M (one big GEMM, as for a linear layer over a sequence). Other dtypes
(ints, f16) use a plain loop nest that accumulates in the reference's accumulator type: ints wrap
in their own width (the same low bits as the reference's i64 sum cast back), halves in f32.
``einsum`` is a general loop nest over the output labels with the contracted labels inside.

matmul and gemm are shape-generic: run-time sizes (``MatmulDims``, read again in every GEMM task)
reach emit_gemm as ``RunDim``s; a constant weight has static dims, so a linear layer over a run-time
batch and sequence still multiplies by the weight packed at compile time.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op, Value
from nnc.ir.ops.linalg import parse_einsum
from nnc.ir.types import UNKNOWN

from ..llvm_types import F16, F32, bf16_to_f32, const_int, f32_to_bf16, for_range, ll_type
from ..schedule import Schedule, choose, gemm_default, record
from . import dims as dm
from .dims import Dim
from .gemm import (
    Blocking,
    Epilogue,
    Packed,
    RunDim,
    Size,
    Strided,
    blocking,
    emit_gemm,
    from_schedule,
    gep,
    pack_a_const,
    pack_b_const,
    size_hint,
)
from .registry import lowering

FAST = (DType.f32, DType.f64)
I16 = ir.IntType(16)


def const_array(k, v: Value) -> np.ndarray | None:
    """The data of a value produced by a ``const`` op (a weight), else None."""
    p = v.producer
    if p is not None and p.opname == "const":
        return np.asarray(k.cg.module.constants[p.attrs["ref"]])
    return None


def _zero(s: Dim) -> bool:
    return isinstance(s, int) and s == 0


@dataclass(frozen=True)
class MatmulDims:
    """A matmul's sizes read through one builder: batch dims, M, K, N, and each operand's element
    strides along the batch dims (0 where broadcast)."""
    batch: tuple[Dim, ...]
    M: Dim
    K: Dim
    N: Dim
    sa: tuple[Dim, ...]
    sb: tuple[Dim, ...]
    nb: Dim


def _batch_strides(b: ir.IRBuilder, bshape: tuple[Dim, ...], batch: tuple[Dim, ...], mat: Dim) -> tuple[Dim, ...]:
    """Element strides of an operand's (broadcast) batch dims over ``batch``; ``mat`` = matrix size.
    A run-time dim of 1 is broadcast (a select at run time); any other value is the batch dim's."""
    full = (1,) * (len(batch) - len(bshape)) + tuple(bshape)
    strides: list[Dim] = [0] * len(batch)
    acc = mat
    for d in range(len(batch) - 1, -1, -1):
        n = full[d]
        if isinstance(n, int):
            strides[d] = 0 if n == 1 else acc
        else:
            strides[d] = b.select(b.icmp_signed("==", n, const_int(1)), const_int(0), dm.val(acc))
        acc = dm.mul(b, acc, n)
    return tuple(strides)


def matmul_dims(kb, op: Op, fold: bool = False) -> MatmulDims:
    """``op``'s sizes through ``kb``. ``fold``: B is shared by the whole batch and A contiguous over
    it, so the batch folds into M (one [batch*M, K] @ [K, N] product)."""
    a, bv = op.operands
    b = kb.b
    sa, sb = kb.shape(a), kb.shape(bv)
    a2 = (1,) + sa if len(sa) == 1 else sa
    b2 = sb + (1,) if len(sb) == 1 else sb
    M, K, N = a2[-2], a2[-1], b2[-1]
    if dm.is_static(*a2[:-2], *b2[:-2]):
        batch: tuple[Dim, ...] = tuple(np.broadcast_shapes(a2[:-2], b2[:-2]))
    else:  # the result's leading dims are the broadcast batch
        batch = kb.shape(op.results[0])[:max(len(a2), len(b2)) - 2]
    nb = dm.prod(b, batch)
    if fold:
        return MatmulDims((), dm.mul(b, M, nb), K, N, (), (), 1)
    return MatmulDims(batch, M, K, N, _batch_strides(b, a2[:-2], batch, dm.mul(b, M, K)),
                      _batch_strides(b, b2[:-2], batch, dm.mul(b, K, N)), nb)


def _dims_through(op: Op, fold: bool) -> Callable[[object], MatmulDims]:
    """``matmul_dims`` per builder, computed once where the first use is in the entry block."""
    cache: dict[object, MatmulDims] = {}

    def dims(kb) -> MatmulDims:
        d = cache.get(kb)
        if d is None:
            d = matmul_dims(kb, op, fold)
            if kb.b.block is kb.b.function.entry_basic_block:
                cache[kb] = d
        return d
    return dims


def batch_offset(dims: Callable[[object], MatmulDims], which: str, static: MatmulDims):
    """An IdxFn: the element offset of flat batch index ``bi`` in operand ``which`` ("sa"/"sb"), or None
    when that operand is the same matrix for every batch item (``static``: the kernel's dims)."""
    if all(_zero(s) for s in getattr(static, which)):
        return None

    def fn(kb, bi):
        d = dims(kb)
        b = kb.b
        off, rem = const_int(0), bi
        for n, s in zip(reversed(d.batch), reversed(getattr(d, which))):
            if not _zero(s):
                off = b.add(off, b.mul(b.srem(rem, dm.val(n)), dm.val(s)))
            rem = b.sdiv(rem, dm.val(n))
        return off
    return fn


def _pack_batched(arr: np.ndarray, bshape: tuple, rows: int, cols: int, pack) -> tuple[np.ndarray, int]:
    """Pack every matrix of a batched constant; return the packed data and the per-matrix stride."""
    mats = arr.reshape(-1, rows, cols)
    packed = [pack(m) for m in mats]
    return np.concatenate(packed), packed[0].size


def _size(d: Dim, at: Callable[[object], Dim], hint: int = 256) -> Size:
    """A static dim as is, a run-time one as a ``RunDim`` read through each builder by ``at``."""
    return d if isinstance(d, int) else RunDim(at, hint)


@lowering("matmul", generic=True)
def lower_matmul(k, op: Op) -> None:
    a, bv = op.operands
    out = op.results[0]
    d0 = matmul_dims(k, op)
    if out.dtype not in FAST or _zero(d0.K):  # an empty contraction: plain loops write the zeros (or C)
        dims = _dims_through(op, False)
        _loop_matmul(k, out.dtype, d0.nb, d0.M, d0.N, d0.K, batch_offset(dims, "sa", d0), batch_offset(dims, "sb", d0),
                     (d0.K, 1), (d0.N, 1))
        return
    # B shared by the whole batch and A contiguous over it: one [batch*M, K] @ [K, N] product
    fold = all(_zero(s) for s in d0.sb) and all(not _zero(s) or d == 1 for s, d in zip(d0.sa, d0.batch))
    dims = _dims_through(op, fold)
    d0 = dims(k)
    a_bshape = () if fold else tuple(a.shape[:-2])
    M = _size(d0.M, lambda kb: dims(kb).M)
    N = _size(d0.N, lambda kb: dims(kb).N)
    K = _size(d0.K, lambda kb: dims(kb).K)
    nb = _size(d0.nb, lambda kb: dims(kb).nb, 16)
    blk, sched, key, source = _schedule(k, op, out.dtype == DType.f64, M, N)
    aop = _operand(k, a, blk, d0.M, d0.K, (K, 1), batch_offset(dims, "sa", d0), a_bshape, "a")
    bop = _operand(k, bv, blk, d0.K, d0.N, (N, 1), batch_offset(dims, "sb", d0), tuple(bv.shape[:-2]), "b")

    def c_offset(kb, bi):
        if isinstance(d0.nb, int) and d0.nb <= 1:
            return const_int(0)
        d = dims(kb)
        return kb.b.mul(bi, dm.val(dm.mul(kb.b, d.M, d.N)))
    emit_gemm_rows(k, blk, M, N, K, aop, bop, Strided(lambda kb: kb.out(0), N, 1, c_offset), Epilogue(), batch=nb,
                   name="matmul", sched=sched)
    _record(k, op, key, sched, source)


def _schedule(k, op: Op, f64: bool, M: Size, N: Size) -> tuple[Blocking, Schedule, str | None, str]:
    """The blocking, the schedule (schedule.py: a tuned one from the table, else the default) and its key."""
    blk = blocking(k.target.vector_bits, f64, size_hint(M), size_hint(N))
    sched, key, source = choose(k, op, "gemm", gemm_default(blk))
    return (from_schedule(sched, f64) if source == "db" else blk), sched, key, source


def _record(k, op: Op, key: str | None, sched: Schedule, source: str) -> None:
    grid = getattr(k, "gemm_grid", (0, 0))
    record(k, op, key, replace(sched, tm=grid[0], tn=grid[1]), source)


def emit_gemm_rows(k, blk: Blocking, M: Size, N: Size, K: Size, a, bop, c: Strided, epi: Epilogue, batch: Size = 1,
                   name: str = "gemm", sched: Schedule | None = None) -> None:
    """``emit_gemm`` for a row count known only at run time, in versions by that count: one row
    (a batch-1 linear layer, a decode step) runs a 1-row microkernel tile, a few rows a 4-row
    tile, more the full tile, so a small run-time M does not pay for 12 padded rows. The versions
    share the packed B (same NR and KC); with M static, or A packed at compile time, one version
    (then ``sched``, a schedule's task grid and loop order, applies: schedule.py)."""
    if isinstance(M, int) or isinstance(a, Packed) or blk.MR <= 1:
        grid = (sched.tm, sched.tn) if sched is not None else None
        emit_gemm(k, blk, M, N, K, a, bop, c, epi, batch=batch, name=name, grid=grid,
                  order=sched.order if sched is not None else "nm")
        return
    b = k.b
    rows = dm.val(M.at(k))
    versions = [(1, replace(blk, MR=1, MC=192))]
    if blk.MR > 4:
        versions.append((4, replace(blk, MR=4, MC=192)))

    def emit(i: int) -> None:
        if i == len(versions):
            emit_gemm(k, blk, M, N, K, a, bop, c, epi, batch=batch, name=name)
            return
        limit, small = versions[i]
        with b.if_else(b.icmp_signed("<=", rows, const_int(limit))) as (then, other):
            with then:
                emit_gemm(k, small, M, N, K, a, bop, c, epi, batch=batch, name=f"{name}{limit}r")
            with other:
                emit(i + 1)
    emit(0)


def _operand(k, v: Value, blk, rows: Dim, cols: Dim, strides: tuple[Size, Size], off, bshape: tuple, which: str,
             transposed: bool = False):
    """Packed at compile time when ``v`` is a constant (its dims are static), else read in place (strided)."""
    arr = const_array(k, v)
    idx = 0 if which == "a" else 1
    if arr is None:
        return Strided(lambda kb: kb.arg(idx), strides[0], strides[1], off)
    # a constant's matrix dims are its own (static) ones, even where the other operand's are '?'
    rows, cols = (arr.shape[-1], arr.shape[-2]) if transposed else (arr.shape[-2], arr.shape[-1])
    arr = arr.reshape(bshape + ((cols, rows) if transposed else (rows, cols)))
    if transposed:
        arr = np.swapaxes(arr, -1, -2)

    def pack(mat):
        return pack_a_const(mat, blk) if which == "a" else pack_b_const(mat, blk)
    data, per = _pack_batched(np.ascontiguousarray(arr), bshape, rows, cols, pack)
    woff = k.packed_constant(f"{v.name}.packed_{which}", data, replaces=k.arg(idx))  # raw copy never read
    if off is None or len(data) == per:
        return Packed(woff)
    mat = rows * cols

    def poff(kb, bi):  # element offset -> packed-matrix offset
        return kb.b.mul(kb.b.sdiv(off(kb, bi), const_int(mat)), const_int(per))
    return Packed(woff, poff)


@lowering("gemm", generic=True)
def lower_gemm(k, op: Op) -> None:
    a, bv = op.operands[:2]
    out = op.results[0]
    ta, tb = bool(op.attrs["trans_a"]), bool(op.attrs["trans_b"])
    alpha, beta = float(op.attrs["alpha"]), float(op.attrs["beta"])
    M, N = k.shape(out)
    K = k.shape(a)[0] if ta else k.shape(a)[1]
    has_c = len(op.operands) == 3 and beta != 0.0
    if has_c:
        s = _bias_strides(k, op.operands[2], out)
    static_c = not has_c or dm.is_static(*s)
    if out.dtype not in FAST or _zero(K) or not static_c:  # an empty contraction: plain loops write the zeros (or C)
        _loop_matmul(k, out.dtype, 1, M, N, K, None, None, (1, M) if ta else (K, 1), (1, K) if tb else (N, 1),
                     alpha=alpha, beta=beta, c_strides=tuple(s) if has_c else None)
        return

    def dim(axis: int, v: Value = out) -> Size:
        return _size(k.shape(v)[axis], lambda kb: kb.shape(v)[axis])
    Ms, Ns, Ks = dim(0), dim(1), dim(0 if ta else 1, a)
    blk, sched, key, source = _schedule(k, op, out.dtype == DType.f64, Ms, Ns)
    aop = _operand(k, a, blk, M, K, (1, Ms) if ta else (Ks, 1), None, (), "a", transposed=ta)
    bop = _operand(k, bv, blk, K, N, (1, Ks) if tb else (Ns, 1), None, (), "b", transposed=tb)
    epi = Epilogue(alpha=alpha, beta=beta)
    if has_c:
        epi = Epilogue(alpha=alpha, beta=beta, bias=lambda kb: kb.arg(2), bias_rs=s[0], bias_cs=s[1])
    emit_gemm_rows(k, blk, Ms, Ns, Ks, aop, bop, Strided(lambda kb: kb.out(0), Ns, 1), epi, name="gemm", sched=sched)
    _record(k, op, key, sched, source)


def _bias_strides(k, c: Value, out: Value) -> list[Dim]:
    """gemm's C broadcast over the [M, N] result: its element strides (0 where broadcast). A run-time
    dim of C named like the result's dim is that dim (no broadcast); another one is decided at run time."""
    if dm.is_static(*k.shape(out)) and dm.is_static(*k.shape(c)):
        from .elementwise import broadcast_strides
        return list(broadcast_strides(c, tuple(out.shape)))
    cs, os_ = list(c.shape), list(out.shape)
    cs = [1] * (2 - len(cs)) + cs
    cdims = (1,) * (2 - len(c.shape)) + k.shape(c)
    strides: list[Dim] = [0, 0]
    acc: Dim = 1
    for d in (1, 0):
        n, o = cs[d], os_[d]
        if isinstance(n, int):
            strides[d] = 0 if n == 1 and o != 1 else acc
        elif n == o and n != UNKNOWN:
            strides[d] = acc
        else:
            strides[d] = k.b.select(k.b.icmp_signed("==", cdims[d], const_int(1)), const_int(0), dm.val(acc))
        acc = dm.mul(k.b, acc, cdims[d])
    return strides


def entry_alloca(b: ir.IRBuilder, t: ir.Type) -> ir.Value:
    """A stack slot in the function's entry block (where mem2reg promotes it), from anywhere."""
    if b.block is b.function.entry_basic_block:
        return b.alloca(t)  # (another builder inserting here would shift b's insertion point)
    eb = ir.IRBuilder(b.function.entry_basic_block)
    eb.position_at_start(b.function.entry_basic_block)
    return eb.alloca(t)


def _acc_type(dt: DType) -> ir.Type:
    return F32 if dt in (DType.f16, DType.bf16) else ll_type(dt)


def _storage(dt: DType) -> ir.Type:
    return I16 if dt == DType.bf16 else ll_type(dt)


def widen(b: ir.IRBuilder, x: ir.Value, dt: DType) -> ir.Value:
    """A loaded element in its accumulator type (halves to f32; bf16 is the top half of an f32)."""
    if dt == DType.f16:
        return b.fpext(x, F32)
    if dt == DType.bf16:
        return bf16_to_f32(b, x)
    return x


def narrow(b: ir.IRBuilder, x: ir.Value, dt: DType) -> ir.Value:
    """An accumulator back to the element type (bf16: round to nearest even, like ml_dtypes)."""
    if dt == DType.f16:
        return b.fptrunc(x, F16)
    if dt == DType.bf16:
        return f32_to_bf16(b, x)
    return x


def _loop_matmul(k, dt: DType, nb: Dim, M: Dim, N: Dim, K: Dim, ao, bo, sa: tuple[Dim, Dim],
                 sb: tuple[Dim, Dim], alpha: float = 1.0, beta: float = 1.0,
                 c_strides: tuple[Dim, Dim] | None = None) -> None:
    """C[bi] = alpha * A[bi] @ B[bi] (+ beta * c) as a plain loop nest (ints, halves)."""
    b = k.b
    t, acc_t = _storage(dt), _acc_type(dt)
    fl = dt.is_float
    v = dm.val

    def wide(x):
        return widen(b, x, dt)

    with for_range(b, nb, "mb") as bi:
        abase = gep(b, k.arg(0), ao(k, bi) if ao else const_int(0), t)
        bbase = gep(b, k.arg(1), bo(k, bi) if bo else const_int(0), t)
        cbase = gep(b, k.out(0), b.mul(bi, v(dm.mul(b, M, N))), t)
        with for_range(b, M, "mm") as m:
            with for_range(b, N, "mn") as n:
                acc = entry_alloca(b, acc_t)
                b.store(ir.Constant(acc_t, 0.0 if fl else 0), acc)
                with for_range(b, K, "mk") as kk:
                    x = wide(b.load(gep(b, abase, b.add(b.mul(m, v(sa[0])), b.mul(kk, v(sa[1]))), t), typ=t))
                    y = wide(b.load(gep(b, bbase, b.add(b.mul(kk, v(sb[0])), b.mul(n, v(sb[1]))), t), typ=t))
                    s = b.load(acc, typ=acc_t)
                    b.store(b.fadd(s, b.fmul(x, y)) if fl else b.add(s, b.mul(x, y)), acc)
                r = b.load(acc, typ=acc_t)
                if alpha != 1.0:
                    r = b.fmul(r, ir.Constant(acc_t, alpha)) if fl else b.mul(r, ir.Constant(acc_t, int(alpha)))
                if c_strides is not None:
                    ci = b.add(b.mul(m, v(c_strides[0])), b.mul(n, v(c_strides[1])))
                    cv = wide(b.load(gep(b, k.arg(2), ci, t), typ=t))
                    if beta != 1.0:
                        cv = b.fmul(cv, ir.Constant(acc_t, beta)) if fl else b.mul(cv, ir.Constant(acc_t, int(beta)))
                    r = b.fadd(r, cv) if fl else b.add(r, cv)
                r = narrow(b, r, dt)
                b.store(r, gep(b, cbase, b.add(b.mul(m, v(N)), n), t))


@lowering("einsum")
def lower_einsum(k, op: Op) -> None:
    terms, out_term = parse_einsum(op.attrs["equation"], len(op.operands))
    out = op.results[0]
    dt = out.dtype
    # expand '...' into one private label per broadcast dim (upper-case-free placeholders)
    n_ell = max((len(v.shape) - (len(t) - t.count(".")) for t, v in zip(terms, op.operands) if "." in t), default=0)
    ell = [chr(0x100 + i) for i in range(n_ell)]
    expanded = []
    for t, v in zip(terms, op.operands):
        if "." in t:
            mine = len(v.shape) - (len(t) - 1)
            t = t.replace(".", "".join(ell[n_ell - mine:]))
        expanded.append(t)
    out_labels = out_term.replace(".", "".join(ell))
    sizes: dict[str, int] = {}
    for t, v in zip(expanded, op.operands):
        for ch, d in zip(t, v.shape):
            sizes[ch] = max(sizes.get(ch, 1), d)
    red = [ch for ch in sizes if ch not in out_labels]
    strides = []
    for t, v in zip(expanded, op.operands):
        st: dict[str, int] = {}
        acc = 1
        for ch, d in reversed(list(zip(t, v.shape))):
            if d != 1:
                st[ch] = st.get(ch, 0) + acc  # a repeated label (diagonal) adds its strides
            acc *= d
        strides.append(st)
    b = k.b
    t_ll, acc_t = _storage(dt), _acc_type(dt)
    fl = dt.is_float
    idx: dict[str, ir.Value] = {}
    ctxs = []
    for ch in out_labels:
        cm = for_range(b, sizes[ch], "eo")
        idx[ch] = cm.__enter__()
        ctxs.append(cm)
    acc = entry_alloca(b, acc_t)
    b.store(ir.Constant(acc_t, 0.0 if fl else 0), acc)
    inner = []
    for ch in red:
        cm = for_range(b, sizes[ch], "er")
        idx[ch] = cm.__enter__()
        inner.append(cm)
    prod = None
    for i, st in enumerate(strides):
        off = const_int(0)
        for ch, s in st.items():
            off = b.add(off, b.mul(idx[ch], const_int(s)))
        x = b.load(gep(b, k.arg(i), off, t_ll), typ=t_ll)
        x = widen(b, x, dt)
        prod = x if prod is None else (b.fmul(prod, x) if fl else b.mul(prod, x))
    s = b.load(acc, typ=acc_t)
    b.store(b.fadd(s, prod) if fl else b.add(s, prod), acc)
    for cm in reversed(inner):
        cm.__exit__(None, None, None)
    r = b.load(acc, typ=acc_t)
    r = narrow(b, r, dt)
    o = const_int(0)
    acc_s = 1
    for ch, d in reversed(list(zip(out_labels, out.shape))):
        o = b.add(o, b.mul(idx[ch], const_int(acc_s)))
        acc_s *= d
    b.store(r, gep(b, k.out(0), o, t_ll))
    for cm in reversed(ctxs):
        cm.__exit__(None, None, None)

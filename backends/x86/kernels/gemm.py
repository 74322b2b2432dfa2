"""A packed, register-blocked GEMM generated in LLVM IR: ``C = epilogue(A @ B)``, f32 or f64.

The classic (GotoBLAS/BLIS) structure. Each task owns a rectangle of C; for every KC-deep slice of
the contraction it packs B into NR-wide panels (``[kc][NR]`` contiguous, zero-padded) and, for every
MC rows, packs A into MR-tall panels (``[kc][MR]``); the microkernel then keeps an MR x NR tile of C
in vector registers (MR rows x NR/lanes vectors), reading one B row (NR/lanes vector loads) and MR
broadcast A values per step, and adds NR/lanes * MR vector FMAs. The B micro-panel stays in L1 while
the A block streams from L2. Constant operands (weights) are packed once at compile time in exactly
that layout (``pack_a_const``/``pack_b_const``) and read from the weights blob; runtime operands are
packed into task-local heap buffers (malloc'd per task: bounded by the blocking, never the arena).
The microkernel and the IR helpers are in gemm_microkernel.py.

Operands are described by small objects (``Strided``, ``Packed``, or a custom packer such as the
implicit-im2col one of conv.py), so matmul, gemm and conv share one driver, ``emit_gemm``, which
splits (batch x M x N) into tasks for ``k.parallel_for``. In shape-generic code the sizes and
strides may be ``RunDim``s, read at run time in the kernel and again in every task; their hints size
the task grid, and the chunking is computed at run time so it is right for any value.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Union

import numpy as np
from llvmlite import ir

from ..llvm_types import F32, F64, I32, PTR, const_int, for_range
from . import dims as dm
from .dims import Dim
from .gemm_grid import task_grid
from .gemm_microkernel import (  # noqa: F401 - the IR helpers are imported from here by other kernels
    fmuladd,
    gep,
    heap_buffer,
    heap_free,
    imin,
    masked_gather,
    masked_load,
    masked_store,
    microkernel,
    splat,
)

IdxFn = Callable[[object, ir.Value], ir.Value]  # (kb, batch index) -> element offset (i64)


@dataclass(frozen=True)
class RunDim:
    """A size or stride known only at run time (shape-generic code): ``at(kb)`` reads it through
    ``kb``, the kernel or a parallel task (each has its own copy of the frame); ``hint`` stands for it
    where a compile-time choice needs a number (the task grid)."""
    at: Callable[[object], Dim]
    hint: int = 256


Size = Union[int, RunDim]


def size_at(kb, d: Size) -> Dim:
    return d if isinstance(d, int) else d.at(kb)


def size_hint(d: Size) -> int:
    return d if isinstance(d, int) else d.hint


@dataclass(frozen=True)
class Blocking:
    et: ir.Type  # F32 or F64
    lanes: int
    MR: int
    NR: int  # a multiple of lanes
    KC: int
    MC: int
    NC: int

    @property
    def nv(self) -> int:
        return self.NR // self.lanes

    @property
    def esize(self) -> int:
        return 8 if self.et == F64 else 4

    @property
    def vt(self) -> ir.VectorType:
        return ir.VectorType(self.et, self.lanes)


def blocking(vector_bits: int, f64: bool, M: int, N: int) -> Blocking:
    """Register and cache blocking for the target's widest vectors.

    Accumulators take MR * NR/lanes registers: 8 x 3 (or 12 x 2) of the 32 zmm registers on
    AVX-512, 6 x 2 of the 16 ymm/xmm registers otherwise. On AVX-512 the tile is 8 x 3 unless 12 x 2
    pads M and N more than 3% less: 8 x 3 loads 11 values per 24 FMAs where 12 x 2 loads 14, and it
    measured 0.77-0.96x of 12 x 2's time on every matmul tried (ConvNeXt's 3136x384x96 0.77,
    784x768x192 0.87, 196x1536x384 0.92; BERT's 128x768x3072 0.96; 1 thread, AMD EPYC znver5), the
    1x1 convs on this path within noise. The KC x NR B micro-panel (32-36 KiB for f32) fits L1; the MC x KC
    A block fits L2. Small M or N shrink the tile so little work is padding."""
    lanes = vector_bits // (64 if f64 else 32)
    mr = 12 if vector_bits == 512 else 6
    nv = 2
    if N <= lanes:
        nv, mr = 1, mr * 2 if vector_bits == 512 else mr
    elif vector_bits == 512 and M > 8:
        def padded(r: int, v: int) -> int:
            return _ceil(M, r) * r * _ceil(N, v * lanes) * v * lanes
        if not padded(12, 2) < 0.97 * padded(8, 3):
            mr, nv = 8, 3
    mr = max(1, min(mr, M))
    kc = (256 if nv <= 2 else 192) // (2 if f64 else 1)
    nr = nv * lanes
    return Blocking(F64 if f64 else F32, lanes, mr, nr, kc, max(mr, (192 // mr) * mr), (1024 // nr) * nr)


def from_schedule(sched, f64: bool) -> Blocking:
    """The blocking a ``schedule.Schedule`` of kind gemm asks for."""
    lanes = sched.vector_bits // (64 if f64 else 32)
    return Blocking(F64 if f64 else F32, lanes, sched.mr, sched.nv * lanes, sched.kc, sched.mc, sched.nc)


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


# -- compile-time packing of constant operands ---------------------------------------------------

def pack_b_const(bm: np.ndarray, blk: Blocking) -> np.ndarray:
    """B[K, N] -> for each KC slice, NR-wide panels [kc][NR] (zero-padded): slice pc at pc*Npad."""
    K, N = bm.shape
    npad = _ceil(N, blk.NR) * blk.NR
    if K == 0:
        return np.zeros(1, bm.dtype)
    # each slice written once, in place (a BERT-base's weights are 340 MB: no temporaries)
    out = np.zeros(K * npad, dtype=bm.dtype)
    for pc in range(0, K, blk.KC):
        kc = min(blk.KC, K - pc)
        panels = out[pc * npad:(pc + kc) * npad].reshape(npad // blk.NR, kc, blk.NR)
        for j in range(0, N, blk.NR):  # panel j // NR: columns j..j+NR of the slice's rows
            w = min(blk.NR, N - j)
            panels[j // blk.NR, :, :w] = bm[pc:pc + kc, j:j + w]
    return out


def pack_a_const(am: np.ndarray, blk: Blocking) -> np.ndarray:
    """A[M, K] -> for each KC slice, MR-tall panels [kc][MR] (zero-padded): slice pc at pc*Mpad."""
    M, K = am.shape
    mpad = _ceil(M, blk.MR) * blk.MR
    if K == 0:
        return np.zeros(1, am.dtype)
    out = np.zeros(K * mpad, dtype=am.dtype)  # as pack_b_const: each slice written once, in place
    for pc in range(0, K, blk.KC):
        kc = min(blk.KC, K - pc)
        panels = out[pc * mpad:(pc + kc) * mpad].reshape(mpad // blk.MR, kc, blk.MR)
        for i in range(0, M, blk.MR):
            h = min(blk.MR, M - i)
            panels[i // blk.MR, :, :h] = am[i:i + h, pc:pc + kc].T
    return out


# -- operands ------------------------------------------------------------------------------------

@dataclass
class Strided:
    """Element (r, c) of the matrix at ``ptr(kb)[offset(kb, batch) + r*rs + c*cs]``."""
    ptr: Callable[[object], ir.Value]
    rs: Size
    cs: Size
    offset: IdxFn | None = None


@dataclass
class Packed:
    """A matrix pre-packed by ``pack_a_const``/``pack_b_const`` at byte offset ``woff`` of the weights
    blob; ``offset`` (elements) selects one of several packed matrices (e.g. per conv group).
    ``shared``: instead, packed at run time in that layout into a buffer of the enclosing kernel
    (``pack_a_once``), passed to the tasks as ``emit_gemm``'s ``shared[shared]``."""
    woff: int
    offset: IdxFn | None = None
    shared: int | None = None


@dataclass
class Custom:
    """B packed by ``pack(kb, buf, scratch, batch, k0, kc, n0, n_end, blk)`` (conv's implicit im2col):
    fill the panels ``buf[jp*kc*NR + k*NR + j]`` with B[k0+k, n0 + jp*NR + j] (0 past ``n_end``);
    ``scratch`` is a task-local buffer of ``scratch`` bytes."""
    pack: Callable
    scratch: int = 0


@dataclass
class Epilogue:
    """``out = act(alpha * acc + beta * bias[r*bias_rs + c*bias_cs])``; bias_cs is 0 or 1."""
    alpha: float = 1.0
    beta: float = 1.0
    bias: Callable[[object], ir.Value] | None = None
    bias_rs: int = 0
    bias_cs: int = 0
    bias_offset: IdxFn | None = None
    act: Callable[[ir.IRBuilder, ir.Value], ir.Value] | None = None

    @property
    def trivial(self) -> bool:
        return self.alpha == 1.0 and self.bias is None and self.act is None


# -- packing at run time -------------------------------------------------------------------------

def _pack_a(b: ir.IRBuilder, blk: Blocking, buf, src, rs: Dim, cs: Dim, m0, m_end, k0, kc) -> None:
    """buf[ip*kc*MR + k*MR + r] = A[m0 + ip*MR + r, k0 + k] (0 for rows >= m_end)."""
    et, MR = blk.et, blk.MR
    zero = ir.Constant(et, 0.0)
    npan = b.sdiv(b.add(b.sub(m_end, m0), const_int(MR - 1)), const_int(MR))
    with for_range(b, npan, "pa") as ip:
        mbase = b.add(m0, b.mul(ip, const_int(MR)))
        dst = gep(b, buf, b.mul(ip, b.mul(kc, const_int(MR))), et)
        rows = []
        for r in range(MR):
            m = b.add(mbase, const_int(r))
            ok = b.icmp_signed("<", m, m_end)
            rows.append((ok, b.mul(b.select(ok, m, m0), dm.val(rs))))
        with for_range(b, kc, "pak") as k:
            kk = b.mul(b.add(k0, k), dm.val(cs))
            for r, (ok, roff) in enumerate(rows):
                x = b.load(gep(b, src, b.add(roff, kk), et), typ=et)
                b.store(b.select(ok, x, zero), gep(b, dst, b.add(b.mul(k, const_int(MR)), const_int(r)), et))


def _pack_b(b: ir.IRBuilder, blk: Blocking, buf, src, rs: Dim, cs: Dim, n0, n_end, k0, kc) -> None:
    """buf[jp*kc*NR + k*NR + j] = B[k0 + k, n0 + jp*NR + j] (0 for columns >= n_end)."""
    et, NR, vt, L = blk.et, blk.NR, blk.vt, blk.lanes
    zero = ir.Constant(et, 0.0)
    npan = b.sdiv(b.add(b.sub(n_end, n0), const_int(NR - 1)), const_int(NR))
    with for_range(b, npan, "pb") as jp:
        nbase = b.add(n0, b.mul(jp, const_int(NR)))
        dst = gep(b, buf, b.mul(jp, b.mul(kc, const_int(NR))), et)
        whole = b.icmp_signed("<=", b.add(nbase, const_int(NR)), n_end)
        if isinstance(cs, int) and cs == 1:
            with b.if_else(whole) as (then, other):
                with then:
                    with for_range(b, kc, "pbk") as k:
                        s = gep(b, src, b.add(b.mul(b.add(k0, k), dm.val(rs)), nbase), et)
                        d = gep(b, dst, b.mul(k, const_int(NR)), et)
                        for v in range(blk.nv):
                            b.store(b.load(gep(b, s, v * L, et), typ=vt, align=4), gep(b, d, v * L, et), align=4)
                with other:
                    _pack_b_cols(b, blk, dst, src, rs, cs, nbase, n_end, k0, kc, zero)
        else:
            _pack_b_cols(b, blk, dst, src, rs, cs, nbase, n_end, k0, kc, zero)


def _pack_b_cols(b, blk, dst, src, rs, cs, nbase, n_end, k0, kc, zero) -> None:
    et, NR = blk.et, blk.NR
    with for_range(b, kc, "pbc") as k:
        krow = b.mul(b.add(k0, k), dm.val(rs))
        with for_range(b, NR, "pbj") as j:
            n = b.add(nbase, j)
            ok = b.icmp_signed("<", n, n_end)
            x = b.load(gep(b, src, b.add(krow, b.mul(b.select(ok, n, nbase), dm.val(cs))), et), typ=et)
            b.store(b.select(ok, x, zero), gep(b, dst, b.add(b.mul(k, const_int(NR)), j), et))


# -- the driver ----------------------------------------------------------------------------------

def _offset(kb, fn: IdxFn | None, bi: ir.Value) -> ir.Value:
    return const_int(0) if fn is None else fn(kb, bi)


def _chunk(b: ir.IRBuilder, n: Dim, parts: int, unit: int) -> Dim:
    """The length of each of ``parts`` chunks of ``n``, in whole ``unit``s; a run-time chunk is at
    least one unit (``n`` may be 0 at run time, and the chunk is a divisor)."""
    chunk = dm.mul(b, dm.ceil_div(b, dm.ceil_div(b, n, parts), unit), unit)
    if isinstance(chunk, int):
        return chunk
    return b.select(b.icmp_signed("<", chunk, const_int(unit)), const_int(unit), chunk)


def emit_gemm(k, blk: Blocking, M: Size, N: Size, K: Size, a, bop, c: Strided, epi: Epilogue,
              batch: Size = 1, name: str = "gemm", grid: tuple[int, int] | None = None, order: str = "nm",
              shared: tuple[ir.Value, ...] = ()) -> None:
    """C[batch][M, N] = epi(A[batch] @ B[batch]); C is row-major with row stride ``c.rs`` (c.cs == 1).

    ``a`` is ``Strided`` or ``Packed``; ``bop`` is ``Strided``, ``Packed`` or ``Custom``. Sizes and
    strides may be ``RunDim``s (shape-generic code); a packed operand's dims are compile-time ints.

    When the kernel builder carries a ``tile_epilogue`` (a fused group's elementwise tail, set by
    fused.py), it runs on every C tile right after the tile's last K slice, while the tile is in L1:
    ``tile_epilogue(kb, row, col, mrem, nrem, cptr, ldc)`` with ``row`` the tile's first row counted
    over the result's leading dims. That needs C to be the op's result in row-major order with rows
    of ``c.rs`` elements (``tile_epilogue.inner``: true of conv, gemm and matmul except with a 1-D
    operand); ``k.tile_epilogue_applied`` then says so.

    ``grid`` (tasks along M and N) replaces the task-grid cost model's choice, and ``order="mn"``
    runs the macro kernel's row tiles outside its column tiles (a tuned schedule, schedule.py); the
    grid used is left in ``k.gemm_grid``.
    """
    static = all(isinstance(d, int) for d in (M, N, K, batch, c.rs))
    tile = getattr(k, "tile_epilogue", None) if static and K > 0 else None
    if getattr(tile, "inner", c.rs) != c.rs:  # e.g. a matrix-vector product: C rows are not result rows
        tile = None
    if tile is not None:
        k.tile_epilogue_applied = True
    tm, tn = task_grid(size_hint(batch), size_hint(M), size_hint(N), size_hint(K), blk,
                       max(1, getattr(k.cg, "threads", 1)), pack_a=not isinstance(a, Packed),
                       pack_b="im2col" if isinstance(bop, Custom) else not isinstance(bop, Packed)) \
        if grid is None or not grid[0] else grid
    k.gemm_grid = (tm, tn)

    def grid(kb) -> tuple[Dim, ...]:
        """(batch, M, N, K, rows and columns per task, tasks along M and N), read through ``kb``."""
        b = kb.b
        nb, m, n, kk = (size_at(kb, d) for d in (batch, M, N, K))
        mchunk, nchunk = _chunk(b, m, tm, blk.MR), _chunk(b, n, tn, blk.NR)
        return nb, m, n, kk, mchunk, nchunk, dm.ceil_div(b, m, mchunk), dm.ceil_div(b, n, nchunk)

    nb0, _, _, K0, mchunk0, nchunk0, tm0, tn0 = grid(k) if not (isinstance(K, int) and K == 0) else (0,) * 8
    kc_max = max(1, min(blk.KC, K)) if isinstance(K, int) else blk.KC
    mc_max = min(blk.MC, mchunk0) if isinstance(mchunk0, int) else blk.MC
    nc_max = min(blk.NC, nchunk0) if isinstance(nchunk0, int) else blk.NC
    mk = microkernel(k.cg.ll, blk, epi, f"{k.fn.name}.micro{k._tasks + 1}")
    et = blk.et

    def body(kb, t):
        b = kb.b
        _, M_, N_, K_, mchunk, nchunk, tm_, tn_ = grid(kb)
        ldc = size_at(kb, c.rs)
        per = dm.mul(b, tm_, tn_)
        bi = b.sdiv(t, dm.val(per))
        rem = b.srem(t, dm.val(per))
        mi, ni = b.sdiv(rem, dm.val(tn_)), b.srem(rem, dm.val(tn_))
        m0 = b.mul(mi, dm.val(mchunk))
        m1 = imin(b, b.add(m0, dm.val(mchunk)), dm.val(M_))
        n0 = b.mul(ni, dm.val(nchunk))
        n1 = imin(b, b.add(n0, dm.val(nchunk)), dm.val(N_))
        cbase = gep(b, c.ptr(kb), _offset(kb, c.offset, bi), et)
        if epi.bias is not None:
            bias = gep(b, epi.bias(kb), _offset(kb, epi.bias_offset, bi), et)
        else:
            bias = ir.Constant(PTR, None)
        if isinstance(a, Packed):
            apacked = kb.shared[a.shared] if a.shared is not None else kb.weights_ptr(a.woff)
            abase = gep(b, apacked, _offset(kb, a.offset, bi), et)
            abuf = araw = None
        else:
            abase = gep(b, a.ptr(kb), _offset(kb, a.offset, bi), et)
            abuf, araw = heap_buffer(b, mc_max * kc_max * blk.esize)
        if isinstance(bop, Packed):
            bbase = gep(b, kb.weights_ptr(bop.woff), _offset(kb, bop.offset, bi), et)
            bbuf = braw = None
            nc_step = nchunk  # packed B: no N blocking needed, panels stream from memory
        else:
            bbase = gep(b, bop.ptr(kb), _offset(kb, bop.offset, bi), et) if isinstance(bop, Strided) else None
            bbuf, braw = heap_buffer(b, kc_max * nc_max * blk.esize)
            nc_step = nc_max
        sraw = None
        if isinstance(bop, Custom) and bop.scratch:
            scratch, sraw = heap_buffer(b, bop.scratch)
        # a packed operand is a constant: its dims are compile-time ints
        mpad = _ceil(M_, blk.MR) * blk.MR if isinstance(a, Packed) else 0
        npad = _ceil(N_, blk.NR) * blk.NR if isinstance(bop, Packed) else 0
        after = None
        if tile is not None:
            row0 = b.sdiv(_offset(kb, c.offset, bi), const_int(c.rs))  # C's rows are whole result rows

            def after(m, n, mrem, nrem, cp):
                tile(kb, b.add(row0, m), n, mrem, nrem, cp, c.rs)
        nblocks = b.sdiv(b.add(b.sub(n1, n0), dm.val(dm.sub(b, nc_step, 1))), dm.val(nc_step))
        with for_range(b, nblocks, "jc") as jc:
            nc0 = b.add(n0, b.mul(jc, dm.val(nc_step)))
            nc1 = imin(b, b.add(nc0, dm.val(nc_step)), n1)
            with for_range(b, K_, "pc", step=blk.KC) as pc:
                kc = imin(b, const_int(blk.KC), b.sub(dm.val(K_), pc))
                if isinstance(bop, Packed):
                    bpan = gep(b, bbase, b.add(b.mul(pc, const_int(npad)), b.mul(nc0, kc)), et)
                elif isinstance(bop, Custom):
                    bop.pack(kb, bbuf, scratch if sraw is not None else None, bi, pc, kc, nc0, nc1, blk)
                    bpan = bbuf
                else:
                    _pack_b(b, blk, bbuf, bbase, size_at(kb, bop.rs), size_at(kb, bop.cs), nc0, nc1, pc, kc)
                    bpan = bbuf
                first = b.icmp_signed("==", pc, const_int(0))
                last = b.icmp_signed(">=", b.add(pc, kc), dm.val(K_))
                mblocks = b.sdiv(b.add(b.sub(m1, m0), const_int(blk.MC - 1)), const_int(blk.MC))
                with for_range(b, mblocks, "ic") as ic:
                    mc0 = b.add(m0, b.mul(ic, const_int(blk.MC)))
                    mc1 = imin(b, b.add(mc0, const_int(blk.MC)), m1)
                    if isinstance(a, Packed):
                        apan = gep(b, abase, b.add(b.mul(pc, const_int(mpad)), b.mul(mc0, kc)), et)
                    else:
                        _pack_a(b, blk, abuf, abase, size_at(kb, a.rs), size_at(kb, a.cs), mc0, mc1, pc, kc)
                        apan = abuf
                    _macro(b, blk, mk, kc, apan, bpan, cbase, ldc, mc0, mc1, nc0, nc1, first, last,
                           bias, epi, after, order)
        for raw in (araw, braw, sraw):
            if raw is not None:
                heap_free(b, raw)

    if isinstance(K, int):
        if K == 0:
            _zero_k(k, blk, M, N, c, epi, batch)
            return
        k.parallel_for(dm.mul(k.b, dm.mul(k.b, nb0, tm0), tn0), body, name=name, shared=shared)
        return
    # a run-time K may be 0: the result is then the epilogue of zeros
    count = dm.mul(k.b, dm.mul(k.b, nb0, tm0), tn0)
    with k.b.if_else(k.b.icmp_signed("==", dm.val(K0), const_int(0))) as (empty, work):
        with empty:
            _zero_k(k, blk, M, N, c, epi, batch)
        with work:
            k.parallel_for(count, body, name=name, shared=shared)


def pack_a_once(k, blk: Blocking, src: Callable[[object], ir.Value], M: int, K: int,
                count: int) -> tuple[ir.Value, ir.Value]:
    """Pack ``count`` run-time matrices ``src[i*M*K:]`` (row-major [M, K], e.g. a conv's weights per
    group when they are an input of the step) once, in ``pack_a_const``'s layout, into a heap buffer
    of the kernel; returns (buffer, pointer to free). One task per (matrix, KC slice). A GEMM reads it
    as ``Packed(0, offset, shared=i)``: without this, every task of a batched GEMM (every image of a
    conv) packed the same weights again."""
    mpad = _ceil(M, blk.MR) * blk.MR
    per = K * mpad
    slices = _ceil(K, blk.KC)
    buf, raw = heap_buffer(k.b, count * per * blk.esize)

    def body(kb, t):
        b = kb.b
        i, pc = b.sdiv(t, const_int(slices)), b.mul(b.srem(t, const_int(slices)), const_int(blk.KC))
        kc = imin(b, const_int(blk.KC), b.sub(const_int(K), pc))
        dst = gep(b, kb.shared[0], b.add(b.mul(i, const_int(per)), b.mul(pc, const_int(mpad))), blk.et)
        _pack_a(b, blk, dst, gep(b, src(kb), b.mul(i, const_int(M * K)), blk.et), K, 1, const_int(0), const_int(M),
                pc, kc)

    k.parallel_for(count * slices, body, name="packa", shared=[buf])
    return buf, raw


def pack_b_once(k, blk: Blocking, src: Callable[[object], ir.Value], K: int, N: int) -> tuple[ir.Value, ir.Value]:
    """``pack_b_const``'s layout of B[K, N] = ``src[n*K + k]`` (the transpose of a row-major [N, K]
    input, e.g. a conv's filters as conv_channel_vectors.py reads them), packed at run time into a
    heap buffer of the kernel, one task per KC slice; returns (buffer, pointer to free)."""
    npad = _ceil(N, blk.NR) * blk.NR
    slices = _ceil(K, blk.KC)
    buf, raw = heap_buffer(k.b, max(1, K * npad) * blk.esize)

    def body(kb, t):
        b = kb.b
        pc = b.mul(t, const_int(blk.KC))
        kc = imin(b, const_int(blk.KC), b.sub(const_int(K), pc))
        _pack_b(b, blk, gep(b, kb.shared[0], b.mul(pc, const_int(npad)), blk.et), src(kb), 1, K, const_int(0),
                const_int(N), pc, kc)

    k.parallel_for(slices, body, name="packb", shared=[buf])
    return buf, raw


def _macro(b, blk, mk, kc, apan, bpan, cbase, ldc, mc0, mc1, nc0, nc1, first, last, bias, epi, after=None,
           order: str = "nm") -> None:
    et = blk.et

    def columns(inner):
        with for_range(b, b.sub(nc1, nc0), "jr", step=blk.NR) as jr:
            bp = gep(b, bpan, b.mul(jr, kc), et)  # instructions in the order of before schedules existed
            n = b.add(nc0, jr)
            inner(n, bp, imin(b, const_int(blk.NR), b.sub(nc1, n)))

    def rows(inner):
        with for_range(b, b.sub(mc1, mc0), "ir", step=blk.MR) as ir_:
            ap = gep(b, apan, b.mul(ir_, kc), et)
            m = b.add(mc0, ir_)
            inner(m, ap, imin(b, const_int(blk.MR), b.sub(mc1, m)))

    def tile(m, ap, mrem, n, bp, nrem):
        cp = gep(b, cbase, b.add(b.mul(m, dm.val(ldc)), n), et)
        bp_tile = bias
        if epi.bias is not None:
            bp_tile = gep(b, bias, b.add(b.mul(m, const_int(epi.bias_rs)), b.mul(n, const_int(epi.bias_cs))), et)
        b.call(mk, [kc, ap, bp, cp, dm.val(ldc), mrem, nrem, first, last, bp_tile])
        if after is not None:
            with b.if_then(last):
                after(m, n, mrem, nrem, cp)

    if order == "mn":
        rows(lambda m, ap, mrem: columns(lambda n, bp, nrem: tile(m, ap, mrem, n, bp, nrem)))
    else:
        columns(lambda n, bp, nrem: rows(lambda m, ap, mrem: tile(m, ap, mrem, n, bp, nrem)))


def _zero_k(k, blk, M: Size, N: Size, c: Strided, epi: Epilogue, batch: Size) -> None:
    """An empty contraction: the result is the epilogue applied to zeros."""
    et = blk.et
    b = k.b
    M, N, batch, ldc = (size_at(k, d) for d in (M, N, batch, c.rs))
    with for_range(b, batch, "zb") as bi:
        cbase = gep(b, c.ptr(k), _offset(k, c.offset, bi), et)
        bias = gep(b, epi.bias(k), _offset(k, epi.bias_offset, bi), et) if epi.bias is not None else None
        with for_range(b, M, "zm") as m:
            with for_range(b, N, "zn") as n:
                x = ir.Constant(et, 0.0)
                if bias is not None:
                    bi_ = b.add(b.mul(m, const_int(epi.bias_rs)), b.mul(n, const_int(epi.bias_cs)))
                    x = b.fmul(b.load(gep(b, bias, bi_, et), typ=et), ir.Constant(et, epi.beta))
                if epi.act is not None:
                    x = b.extract_element(epi.act(b, splat(b, x, blk.vt)), ir.Constant(I32, 0))
                b.store(x, gep(b, cbase, b.add(b.mul(m, dm.val(ldc)), n), et))

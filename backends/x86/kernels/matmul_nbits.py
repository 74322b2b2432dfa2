"""x86 lowering of ``matmul_nbits`` (ir/ops/quant_weights.py): a float matmul whose weight is read as
4- or 8-bit codes and dequantized in registers, never as a float matrix in memory.

Decoding multiplies one row by every weight of the model per token, so it is bound by the bytes of
weights read; this kernel reads the codes (half a byte or one byte per weight) and the block
scales, as one sequential stream. The codes, scales and zero points are repacked at compile time
(``Layout``): the columns in groups of four (N padded with zero columns), and per group and block
one record holding the four columns' scales, their zero points (if any) and then the block's
codes, chunk by chunk, each chunk of 32 codes for the four columns in turn:

- 4 bits: a chunk is 16 bytes, byte j holding code j (low nibble) and code j + 16 (high nibble),
  so one load widened to 16 i32 lanes gives both halves by a shift (no shuffle);
- 8 bits: the 32 codes as they are; symmetric ones stored as ``code - 128``, a signed byte.

Lanes run along the reduction dim K, four columns share each vector of ``a``, and every column has
two accumulators (one per half chunk). 4-bit codes decode to ``(code - zp) * scale``, the f32
weight the reference computes: on AVX-512 by ``vpermps`` from a register holding the block's 16
possible weights (built once per block and column), elsewhere by mask, subtract, convert and
multiply. 8-bit blocks are long (per channel: one block of K), so their codes accumulate
unscaled and the block's sum is scaled. A column's result is one horizontal sum. A block's tail
past K (or past a block size that is not a multiple of 32) reads ``a`` through a mask, so its
padding codes never count. Tasks own 32 output columns each.

That dot-product form suits a few rows (a decode step: one). More rows (a prefill) would decode
every code once per row, so above ``GEMV_ROWS`` rows (checked at run time when the rows are
symbolic) the op runs as the packed GEMM of gemm.py with a custom B packer: each KC x NR panel of
the weight is decoded from the records into the GEMM's task-local panel buffer once and then
serves every row of the task's block. Only that panel (32-36 KiB) is ever float.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from nnc.ir import Op, TargetError
from nnc.ir.ops.quant_weights import unpack_codes

from ..llvm_types import F32, I1, I8, I32, const_int, for_range
from . import dims as dm
from .gemm import Custom, Epilogue, RunDim, Strided, blocking, emit_gemm, fmuladd, masked_load, splat
from .registry import lowering
from .vnni import intrinsic
from .window_vector import lane_tree

V16F = ir.VectorType(F32, 16)
V16I8 = ir.VectorType(I8, 16)
V16I32 = ir.VectorType(I32, 16)
CHUNK = 32  # codes per chunk: two 16-lane vectors
COLS = 4  # columns sharing one load of a
TASK_COLS = 32  # output columns per parallel task
GEMV_ROWS = 4  # up to this many rows, dot products over the codes; more: the packed GEMM


@dataclass(frozen=True)
class Layout:
    """The kernel's copy of a ``matmul_nbits`` weight (module doc): byte offsets in it."""

    N: int
    blocks: int
    bits: int
    block_size: int
    zero_points: bool

    @property
    def chunks(self) -> int:  # chunks of 32 codes per block
        return -(-self.block_size // CHUNK)

    @property
    def chunk_bytes(self) -> int:
        return CHUNK * self.bits // 8

    @property
    def head(self) -> int:  # a record's scales and zero points
        return COLS * 4 + (COLS if self.zero_points else 0)

    @property
    def record(self) -> int:  # bytes per group of columns and block
        return self.head + self.chunks * COLS * self.chunk_bytes

    def column(self, b: ir.IRBuilder, base: ir.Value, col: ir.Value) -> tuple[ir.Value, ir.Value]:
        """(pointer to the scale of column ``col`` in its group's first record, its index in the group)."""
        group, at = b.sdiv(col, const_int(COLS)), b.srem(col, const_int(COLS))
        off = b.add(b.mul(group, const_int(self.blocks * self.record)), b.mul(at, const_int(4)))
        return b.gep(base, [off], source_etype=I8, inbounds=True), at

    def zero_point(self, b: ir.IRBuilder, scale: ir.Value, at: ir.Value) -> ir.Value:
        """The zero point (u8) beside the scale at ``scale`` of the column at ``at`` in its group."""
        return b.gep(scale, [b.add(b.mul(at, const_int(-3)), const_int(COLS * 4))], source_etype=I8, inbounds=True)

    def chunk(self, b: ir.IRBuilder, scale: ir.Value, at: ir.Value, chunk: ir.Value) -> ir.Value:
        """The codes of chunk ``chunk`` (of the record) of the column whose scale is at ``scale``."""
        off = b.add(b.mul(b.add(b.mul(chunk, const_int(COLS)), at), const_int(self.chunk_bytes)),
                    b.sub(const_int(self.head), b.mul(at, const_int(4))))
        return b.gep(scale, [off], source_etype=I8, inbounds=True)


def repack(codes: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, *, bits: int,
           block_size: int) -> np.ndarray:
    """The kernel's copy (u8, ``Layout``) of the codes ``u8[N, blocks, bytes]``, the scales
    ``[N, blocks]`` (as f32) and the zero points ``u8[N, blocks]`` or None."""
    n, nb, _ = codes.shape
    c = unpack_codes(codes, bits).reshape(n, nb, block_size).astype(np.int16)
    if zero_points is None and bits == 8:  # symmetric: store code - 128, a signed byte
        c = c - 128
    chunks = -(-block_size // CHUNK)
    groups = -(-n // COLS)
    padded = np.zeros((groups * COLS, nb, chunks * CHUNK), np.int16)  # zero codes and scales: columns past N
    padded[:n, :, :block_size] = c
    padded = padded.reshape(groups * COLS, nb, chunks, CHUNK)
    if bits == 8:
        chunk = (padded & 0xFF).astype(np.uint8)
    else:
        chunk = ((padded[..., :16] & 0xF) | ((padded[..., 16:] & 0xF) << 4)).astype(np.uint8)
    # [group, column, block, chunk, bytes] -> [group, block, chunk, column, bytes]
    chunk = chunk.reshape(groups, COLS, nb, chunks, -1).transpose(0, 2, 3, 1, 4).reshape(groups, nb, -1)

    def per_record(v: np.ndarray, dtype) -> np.ndarray:  # [N, blocks] -> [group, block, COLS bytes]
        full = np.zeros((groups * COLS, nb), dtype)
        full[:n] = v
        return full.reshape(groups, COLS, nb).transpose(0, 2, 1).copy().view(np.uint8)
    parts = [per_record(scales.astype(np.float32), np.float32)]
    if zero_points is not None:
        parts.append(per_record(zero_points, np.uint8))
    return np.concatenate([*parts, chunk], axis=2).reshape(-1)


def _fadd(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.fadd(x, y)


def _mask(valid: int) -> ir.Constant:
    return ir.Constant(ir.VectorType(I1, 16), [int(i < valid) for i in range(16)])


def _generic(op: Op) -> str | None:
    if not all(v.type.is_static for v in op.operands[1:]):
        return "matmul_nbits: the codes, scales and zero points must have static shapes"
    return None


@lowering("matmul_nbits", generic=_generic)
def lower_matmul_nbits(k, op: Op) -> None:
    a = op.operands[0]
    if a.dtype.name != "f32":
        raise TargetError(f"matmul_nbits on x86 computes in f32, not {a.dtype} ({op.where()})")
    consts = k.cg.module.constants
    prods = [v.producer for v in op.operands[1:]]
    if any(p is None or p.opname != "const" or p.attrs["ref"] not in consts for p in prods):
        raise TargetError(f"matmul_nbits on x86 needs constant codes, scales and zero points ({op.where()})")
    K, bits, bs = op.attrs["K"], op.attrs["bits"], op.attrs["block_size"]
    codes, scales = (consts[p.attrs["ref"]] for p in prods[:2])
    zp = consts[prods[2].attrs["ref"]] if len(prods) > 2 else None
    N, nb, _ = codes.shape
    lay = Layout(N, nb, bits, bs, zp is not None)
    woff = k.packed_constant(f"{op.operands[1].name}.x86", repack(codes, scales, zp, bits=bits, block_size=bs),
                             replaces=[k.arg(i) for i in range(1, len(prods) + 1)])
    full_blocks, tail = (nb, 0) if K % bs == 0 else (nb - 1, K - (nb - 1) * bs)
    ntasks = -(-N // TASK_COLS)

    # 4 bits on AVX-512: vpermps turns a code into its weight, from a table of the block's 16
    # weights built once per block and column (elsewhere: mask, subtract, convert, scale)
    permute = None
    if bits == 4 and k.target.has("avx512f"):
        permute = intrinsic(k.b.module, "llvm.x86.avx512.permvar.sf.512", V16F, [V16F, V16I32])
    post_scale = bits == 8  # one scale per long block: scale the block's sum, not each weight

    def task(kb, t: ir.Value) -> None:
        b = kb.b
        ain, yo = kb.local(k.arg(0)), kb.local(k.out(0))
        wbase = kb.weights_ptr(woff)
        rows = dm.val(dm.prod(b, kb.shape(a)[:-1]))
        n0 = b.mul(t, const_int(TASK_COLS))
        n1 = b.select(b.icmp_signed("<", b.add(n0, const_int(TASK_COLS)), const_int(N)),
                      b.add(n0, const_int(TASK_COLS)), const_int(N))
        entry = b.function.entry_basic_block
        saved = b.block
        b.position_at_start(entry)
        # two accumulators per column (the chunk's two halves): two FMA chains, not one
        accs = [[b.alloca(V16F), b.alloca(V16F)] for _ in range(COLS)]
        blk = [[b.alloca(V16F), b.alloca(V16F)] for _ in range(COLS)] if post_scale else accs
        b.position_at_end(saved)
        zero = ir.Constant(V16F, None)

        def load_a(arow, kpos, valid: int):
            p = b.gep(arow, [kpos], source_etype=F32, inbounds=True)
            if valid >= 16:
                return b.load(p, typ=V16F, align=4)
            return masked_load(b, p, _mask(valid), V16F)

        def decoder(s: ir.Value | None, z: ir.Value | None):
            """From a chunk's code vector (4 bits: i32 lanes, the code in bits 0-3 and higher bits
            ignored; 8 bits: i8 lanes, symmetric ones holding ``code - 128``) to 16 f32 weights
            ``(code - zp) * s`` (the reference's decoded weight), or ``code - zp`` when ``s`` is
            None (the block's sum is scaled instead)."""
            def scaled(v):
                return v if s is None else b.fmul(v, s)
            if bits == 8:
                if z is None:
                    return lambda x: scaled(b.sitofp(x, V16F))
                return lambda x: scaled(b.sitofp(b.sub(b.zext(x, V16I32), z), V16F))
            zv = ir.Constant(V16I32, [8] * 16) if z is None else z
            if permute is not None:  # the block's 16 possible weights in one register
                table = scaled(b.sitofp(b.sub(ir.Constant(V16I32, list(range(16))), zv), V16F))
                return lambda x: b.call(permute, [table, x])
            low = ir.Constant(V16I32, [15] * 16)
            return lambda x: scaled(b.sitofp(b.sub(b.and_(x, low), zv), V16F))

        def weights(wp, dec):  # two 16-lane f32 vectors of decoded weights from a chunk at wp
            if bits == 4:  # lane j: byte j of the chunk, code j in bits 0-3 and code j + 16 in bits 4-7
                x = b.zext(b.load(wp, typ=V16I8, align=1), V16I32)
                return [dec(x), dec(b.lshr(x, ir.Constant(V16I32, [4] * 16)))]
            return [dec(b.load(wp, typ=V16I8, align=1)),
                    dec(b.load(b.gep(wp, [const_int(16)], source_etype=I8, inbounds=True), typ=V16I8, align=1))]

        def chunk(cols, arow, recs, kpos, ch, valid: int, decs) -> None:
            """Chunk ``ch`` of the block (``valid`` real codes of 32) for each column of the group."""
            av = [load_a(arow, kpos, min(valid, 16))]
            if valid > 16:
                av.append(load_a(arow, b.add(kpos, const_int(16)), valid - 16))
            for c in range(cols):
                ws = weights(lay.chunk(b, recs[c], const_int(c), ch), decs[c])
                for h in range(len(av)):
                    b.store(fmuladd(b, ws[h], av[h], b.load(blk[c][h], typ=V16F)), blk[c][h])

        def block(cols, arow, cols_at, bi: ir.Value, valid: int) -> None:
            """Block ``bi`` (``valid`` real codes) of each column: its chunks, its scale."""
            recs = [b.gep(cols_at[c], [b.mul(bi, const_int(lay.record))], source_etype=I8, inbounds=True)
                    for c in range(cols)]
            scales = [splat(b, b.load(recs[c], typ=F32), V16F) for c in range(cols)]
            zps = [None if zp is None else
                   splat(b, b.zext(b.load(lay.zero_point(b, recs[c], const_int(c)), typ=I8), I32), V16I32)
                   for c in range(cols)]
            decs = [decoder(None if post_scale else scales[c], zps[c]) for c in range(cols)]
            if post_scale:
                for c in range(cols):
                    for h in range(2):
                        b.store(zero, blk[c][h])
            kbase = b.mul(bi, const_int(bs))
            if valid // CHUNK:
                with for_range(b, valid // CHUNK, "ch") as ch:
                    chunk(cols, arow, recs, b.add(kbase, b.mul(ch, const_int(CHUNK))), ch, CHUNK, decs)
            if valid % CHUNK:
                last = valid // CHUNK
                chunk(cols, arow, recs, b.add(kbase, const_int(last * CHUNK)), const_int(last), valid % CHUNK, decs)
            if post_scale:
                for c in range(cols):
                    for h in range(2):
                        acc = b.load(accs[c][h], typ=V16F)
                        b.store(fmuladd(b, b.load(blk[c][h], typ=V16F), scales[c], acc), accs[c][h])

        def columns(m: ir.Value, ncol: ir.Value) -> None:
            """Columns ``ncol .. ncol + 3`` (a group; the padding columns past N are computed, not stored)."""
            arow = b.gep(ain, [b.mul(m, const_int(K))], source_etype=F32, inbounds=True)
            cols_at = [lay.column(b, wbase, b.add(ncol, const_int(c)))[0] for c in range(COLS)]
            for c in range(COLS):
                for h in range(2):
                    b.store(zero, accs[c][h])
            if full_blocks:
                with for_range(b, full_blocks, "blk") as bi:
                    block(COLS, arow, cols_at, bi, bs)
            if tail:
                block(COLS, arow, cols_at, const_int(full_blocks), tail)
            for c in range(COLS):
                n = b.add(ncol, const_int(c))
                y = lane_tree(b, b.fadd(b.load(accs[c][0], typ=V16F), b.load(accs[c][1], typ=V16F)), _fadd)
                with b.if_then(b.icmp_signed("<", n, n1)):
                    b.store(y, b.gep(yo, [b.add(b.mul(m, const_int(N)), n)], source_etype=F32, inbounds=True))

        with for_range(b, rows, "m") as m:
            groups = b.sdiv(b.add(b.sub(n1, n0), const_int(COLS - 1)), const_int(COLS))
            with for_range(b, groups, "cg") as cg:
                columns(m, b.add(n0, b.mul(cg, const_int(COLS))))

    def gemv() -> None:
        k.parallel_for(ntasks, task, name="matmul_nbits")

    lead = a.shape[:-1]
    if all(isinstance(d, int) for d in lead):
        rows = int(np.prod(lead, dtype=np.int64))
        (gemv if rows <= GEMV_ROWS else lambda: _gemm(k, op, rows, N, woff, lay))()
        return
    M = RunDim(lambda kb: dm.prod(kb.b, kb.shape(a)[:-1]))
    with k.b.if_else(k.b.icmp_signed("<=", dm.val(M.at(k)), const_int(GEMV_ROWS))) as (then, other):
        with then:
            gemv()
        with other:
            _gemm(k, op, M, N, woff, lay)


def _gemm(k, op: Op, M, N: int, woff: int, lay: Layout) -> None:
    """``a @ w`` as gemm.py's packed GEMM, B's panels decoded from the repacked records (module doc)."""
    K, bits, bs = op.attrs["K"], op.attrs["bits"], op.attrs["block_size"]
    has_zp = lay.zero_points
    blk = blocking(k.target.vector_bits, False, M if isinstance(M, int) else M.hint, N)

    def pack(kb, buf, scratch, bi, k0, kc, n0, n_end, blk) -> None:
        b = kb.b
        NR = blk.NR
        wbase = kb.weights_ptr(woff)
        npan = b.sdiv(b.add(b.sub(n_end, n0), const_int(NR - 1)), const_int(NR))
        with for_range(b, b.mul(npan, const_int(NR)), "pj") as pj:
            col = b.add(n0, pj)
            jp, j = b.sdiv(pj, const_int(NR)), b.srem(pj, const_int(NR))
            dst = b.gep(buf, [b.add(b.mul(jp, b.mul(kc, const_int(NR))), j)], source_etype=F32, inbounds=True)
            inside = b.icmp_signed("<", col, n_end)
            colc = b.select(inside, col, const_int(0))  # past the last column: read column 0, store 0
            first, at = lay.column(b, wbase, colc)

            def scale_at(bi_):
                rec = b.gep(first, [b.mul(bi_, const_int(lay.record))], source_etype=I8, inbounds=True)
                zp = b.zext(b.load(lay.zero_point(b, rec, at), typ=I8), I32) if has_zp else None
                return b.load(rec, typ=F32), zp

            def where(kg):  # (block, pointer to the code's chunk, position in the chunk)
                bi_ = b.sdiv(kg, const_int(bs))
                within = b.sub(kg, b.mul(bi_, const_int(bs)))
                ch, jj = b.sdiv(within, const_int(CHUNK)), b.srem(within, const_int(CHUNK))
                rec = b.gep(first, [b.mul(bi_, const_int(lay.record))], source_etype=I8, inbounds=True)
                return bi_, lay.chunk(b, rec, at, ch), jj

            # 16 codes at a time: k0 and every block start are multiples of 16, so a run of 16
            # lies in one half of one chunk (4 bits: the low or the high nibbles of its 16 bytes)
            groups = b.sdiv(kc, const_int(16)) if bs % 16 == 0 or lay.blocks == 1 else const_int(0)
            with for_range(b, groups, "pg") as pg:
                kk0 = b.mul(pg, const_int(16))
                bi_, cp, jj = where(b.add(k0, kk0))
                half = b.icmp_signed(">=", jj, const_int(16))
                if bits == 4:
                    raw = b.load(cp, typ=V16I8, align=1)
                    nib = b.select(half, b.lshr(raw, ir.Constant(V16I8, [4] * 16)),
                                   b.and_(raw, ir.Constant(V16I8, [15] * 16)))
                    codes = b.zext(nib, V16I32)
                    if not has_zp:  # the implied zero point 8
                        codes = b.sub(codes, ir.Constant(V16I32, [8] * 16))
                else:
                    raw = b.load(b.gep(cp, [jj], source_etype=I8, inbounds=True), typ=V16I8, align=1)
                    codes = b.zext(raw, V16I32) if has_zp else b.sext(raw, V16I32)
                s_, zp = scale_at(bi_)
                if zp is not None:
                    codes = b.sub(codes, splat(b, zp, V16I32))
                vals = b.fmul(b.sitofp(codes, V16F), splat(b, s_, V16F))
                vals = b.select(inside, vals, ir.Constant(V16F, None))
                for lane in range(16):
                    b.store(b.extract_element(vals, ir.Constant(I32, lane)),
                            b.gep(dst, [b.mul(b.add(kk0, const_int(lane)), const_int(NR))], source_etype=F32,
                                  inbounds=True))
            with for_range(b, kc, "pk", start=b.mul(groups, const_int(16))) as kk:
                bi_, cp, jj = where(b.add(k0, kk))
                if bits == 4:
                    hi = b.icmp_signed(">=", jj, const_int(16))
                    byte = b.load(b.gep(cp, [b.srem(jj, const_int(16))], source_etype=I8, inbounds=True), typ=I8)
                    nib = b.select(hi, b.lshr(byte, ir.Constant(I8, 4)), b.and_(byte, ir.Constant(I8, 15)))
                    code = b.zext(nib, I32)
                    if not has_zp:  # the implied zero point 8
                        code = b.sub(code, ir.Constant(I32, 8))
                else:
                    byte = b.load(b.gep(cp, [jj], source_etype=I8, inbounds=True), typ=I8)
                    code = b.zext(byte, I32) if has_zp else b.sext(byte, I32)
                s_, zp = scale_at(bi_)
                if zp is not None:
                    code = b.sub(code, zp)
                v = b.select(inside, b.fmul(b.sitofp(code, F32), s_), ir.Constant(F32, 0.0))
                b.store(v, b.gep(dst, [b.mul(kk, const_int(NR))], source_etype=F32, inbounds=True))

    emit_gemm(k, blk, M, N, K, Strided(lambda kb: kb.arg(0), K, 1), Custom(pack),
              Strided(lambda kb: kb.out(0), N, 1), Epilogue(), name="matmul_nbits_gemm")

"""x86 lowering of ``matmul_nbits`` (ir/ops/quant_weights.py): a float matmul whose weight is read as
4- or 8-bit codes and dequantized in registers, never as a float matrix in memory.

Decoding multiplies one row by every weight of the model per token, so it is bound by the bytes of
weights read; this kernel reads the codes (half a byte or one byte per weight) and the block
scales. Lanes run along the reduction dim K. The codes are repacked at compile time,
per output column and block, in chunks of 32 codes:

- 4 bits: 16 bytes, byte j holding code j (low nibble) and code j + 16 (high nibble), so one
  16-byte load, a mask and a shift give two 16-lane vectors in order (no shuffle);
- 8 bits: the 32 codes as they are.

Without zero points (the symmetric scheme, zero point ``2**(bits-1)``) the stored value is
``code - zero point`` as a signed nibble or byte, widened with arithmetic shifts; with zero points
the codes stay unsigned and each block's zero point is subtracted in i32. A block's products
``(code - zp) * a`` accumulate in a vector, which is scaled once per block into the column's
accumulator (FMA); a column's result is one horizontal sum. Four columns share each vector of
``a``; a block's tail past K (or past a block size that is not a multiple of 32) reads ``a``
through a mask, so its padding codes never count. Tasks own 32 output columns each.

That dot-product form suits a few rows (a decode step: one). More rows (a prefill) would decode
every code once per row, so above ``GEMV_ROWS`` rows (checked at run time when the rows are
symbolic) the op runs as the packed GEMM of gemm.py with a custom B packer: each KC x NR panel of
the weight is decoded from the codes into the GEMM's task-local panel buffer once and then serves
every row of the task's block. Only that panel (32-36 KiB) is ever float.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from nnc.ir import Op, TargetError
from nnc.ir.ops.quant_weights import unpack_codes

from ..llvm_types import F32, I1, I8, I32, const_int, for_range
from . import dims as dm
from .gemm import Custom, Epilogue, RunDim, Strided, blocking, emit_gemm, fmuladd, masked_load, splat
from .registry import lowering

V16F = ir.VectorType(F32, 16)
V16I8 = ir.VectorType(I8, 16)
V16I32 = ir.VectorType(I32, 16)
CHUNK = 32  # codes per chunk: two 16-lane vectors
COLS = 4  # columns sharing one load of a
TASK_COLS = 32  # output columns per parallel task
GEMV_ROWS = 4  # up to this many rows, dot products over the codes; more: the packed GEMM


def repack(codes: np.ndarray, zero_points: np.ndarray | None, *, K: int, bits: int, block_size: int) -> np.ndarray:
    """The kernel's copy of the codes ``b`` (u8[N, blocks, bytes]): per column and block,
    ``ceil(block_size / 32)`` chunks of 32 codes (module doc), padded with zeros."""
    n, nb, _ = codes.shape
    c = unpack_codes(codes, bits).reshape(n, nb, block_size).astype(np.int16)
    if zero_points is None:  # symmetric: store code - 2**(bits-1), signed
        c = c - (1 << (bits - 1))
    chunks = -(-block_size // CHUNK)
    padded = np.zeros((n, nb, chunks * CHUNK), np.int16)
    padded[:, :, :block_size] = c
    padded = padded.reshape(n, nb, chunks, CHUNK)
    if bits == 8:
        return (padded & 0xFF).astype(np.uint8).reshape(-1)
    lo, hi = padded[..., :16] & 0xF, padded[..., 16:] & 0xF
    return (lo | (hi << 4)).astype(np.uint8).reshape(-1)


def _hsum(b: ir.IRBuilder, v: ir.Value) -> ir.Value:
    n = v.type.count
    while n > 1:
        n //= 2
        lo = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n))))
        hi = b.shuffle_vector(v, v, ir.Constant(ir.VectorType(I32, n), list(range(n, 2 * n))))
        v = b.fadd(lo, hi)
    return b.extract_element(v, ir.Constant(I32, 0))


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
    codes = consts[prods[0].attrs["ref"]]
    zp = consts[prods[2].attrs["ref"]] if len(prods) > 2 else None
    N, nb, _ = codes.shape
    chunks = -(-bs // CHUNK)
    chunk_bytes = CHUNK * bits // 8
    col_bytes = nb * chunks * chunk_bytes
    woff = k.packed_constant(f"{op.operands[1].name}.x86", repack(codes, zp, K=K, bits=bits, block_size=bs),
                             replaces=k.arg(1))
    full_blocks, tail = (nb, 0) if K % bs == 0 else (nb - 1, K - (nb - 1) * bs)
    ntasks = -(-N // TASK_COLS)

    def task(kb, t: ir.Value) -> None:
        b = kb.b
        ain, yo, sc = kb.local(k.arg(0)), kb.local(k.out(0)), kb.local(k.arg(2))
        zpp = kb.local(k.arg(3)) if zp is not None else None
        wbase = kb.weights_ptr(woff)
        rows = dm.val(dm.prod(b, kb.shape(a)[:-1]))
        n0 = b.mul(t, const_int(TASK_COLS))
        n1 = b.select(b.icmp_signed("<", b.add(n0, const_int(TASK_COLS)), const_int(N)),
                      b.add(n0, const_int(TASK_COLS)), const_int(N))
        entry = b.function.entry_basic_block
        saved = b.block
        b.position_at_start(entry)
        accs = [b.alloca(V16F) for _ in range(COLS)]
        blk = [b.alloca(V16F) for _ in range(COLS)]
        b.position_at_end(saved)
        zero = ir.Constant(V16F, None)

        def load_a(arow, kpos, valid: int):
            p = b.gep(arow, [kpos], source_etype=F32, inbounds=True)
            if valid >= 16:
                return b.load(p, typ=V16F, align=4)
            return masked_load(b, p, _mask(valid), V16F)

        def weights(wp, zv):  # two 16-lane f32 vectors of (code - zp) from a chunk at wp
            if bits == 4:
                raw = b.load(wp, typ=V16I8, align=1)
                if zv is None:  # signed nibbles
                    halves = [b.ashr(b.shl(raw, ir.Constant(V16I8, [4] * 16)), ir.Constant(V16I8, [4] * 16)),
                              b.ashr(raw, ir.Constant(V16I8, [4] * 16))]
                else:
                    halves = [b.and_(raw, ir.Constant(V16I8, [15] * 16)), b.lshr(raw, ir.Constant(V16I8, [4] * 16))]
            else:
                halves = [b.load(wp, typ=V16I8, align=1),
                          b.load(b.gep(wp, [const_int(16)], source_etype=I8, inbounds=True), typ=V16I8, align=1)]
            if zv is None:
                return [b.sitofp(h, V16F) for h in halves]
            return [b.sitofp(b.sub(b.zext(h, V16I32), zv), V16F) for h in halves]

        def chunk(cols, arow, wcol, kpos, cpos, valid: int, zvs) -> None:
            """One chunk of 32 codes (``valid`` of them real) for each column of the group."""
            av = [load_a(arow, kpos, min(valid, 16))]
            if valid > 16:
                av.append(load_a(arow, b.add(kpos, const_int(16)), valid - 16))
            for c in range(cols):
                wp = b.gep(wcol[c], [b.mul(cpos, const_int(chunk_bytes))], source_etype=I8, inbounds=True)
                ws = weights(wp, zvs[c])
                t = b.load(blk[c], typ=V16F)
                for h in range(len(av)):
                    t = fmuladd(b, ws[h], av[h], t)
                b.store(t, blk[c])

        def block(cols, arow, wcol, ncol, bi: ir.Value, valid: int) -> None:
            """Block ``bi`` (``valid`` real codes) of each column: its chunks, then the scale."""
            zvs = [None] * cols
            if zpp is not None:
                zvs = [splat(b, b.zext(b.load(b.gep(zpp, [b.add(b.mul(b.add(ncol, const_int(c)), const_int(nb)), bi)],
                                                        source_etype=I8, inbounds=True), typ=I8), I32), V16I32)
                       for c in range(cols)]
            for c in range(cols):
                b.store(zero, blk[c])
            kbase = b.mul(bi, const_int(bs))
            cbase = b.mul(bi, const_int(chunks))
            if valid // CHUNK:
                with for_range(b, valid // CHUNK, "ch") as ch:
                    chunk(cols, arow, wcol, b.add(kbase, b.mul(ch, const_int(CHUNK))), b.add(cbase, ch), CHUNK, zvs)
            if valid % CHUNK:
                last = valid // CHUNK
                chunk(cols, arow, wcol, b.add(kbase, const_int(last * CHUNK)), b.add(cbase, const_int(last)),
                      valid % CHUNK, zvs)
            for c in range(cols):
                s = b.load(b.gep(sc, [b.add(b.mul(b.add(ncol, const_int(c)), const_int(nb)), bi)], source_etype=F32,
                                 inbounds=True), typ=F32)
                acc = b.load(accs[c], typ=V16F)
                b.store(fmuladd(b, b.load(blk[c], typ=V16F), splat(b, s, V16F), acc), accs[c])

        def columns(cols: int, m: ir.Value, ncol: ir.Value) -> None:
            arow = b.gep(ain, [b.mul(m, const_int(K))], source_etype=F32, inbounds=True)
            wcol = [b.gep(wbase, [b.mul(b.add(ncol, const_int(c)), const_int(col_bytes))], source_etype=I8,
                          inbounds=True) for c in range(cols)]
            for c in range(cols):
                b.store(zero, accs[c])
            if full_blocks:
                with for_range(b, full_blocks, "blk") as bi:
                    block(cols, arow, wcol, ncol, bi, bs)
            if tail:
                block(cols, arow, wcol, ncol, const_int(full_blocks), tail)
            for c in range(cols):
                y = _hsum(b, b.load(accs[c], typ=V16F))
                b.store(y, b.gep(yo, [b.add(b.mul(m, const_int(N)), b.add(ncol, const_int(c)))], source_etype=F32,
                                 inbounds=True))

        with for_range(b, rows, "m") as m:
            groups = b.sdiv(b.sub(n1, n0), const_int(COLS))
            with for_range(b, groups, "cg") as cg:
                columns(COLS, m, b.add(n0, b.mul(cg, const_int(COLS))))
            with for_range(b, n1, "cr", start=b.add(n0, b.mul(groups, const_int(COLS)))) as n:
                columns(1, m, n)

    def gemv() -> None:
        k.parallel_for(ntasks, task, name="matmul_nbits")

    lead = a.shape[:-1]
    if all(isinstance(d, int) for d in lead):
        rows = int(np.prod(lead, dtype=np.int64))
        (gemv if rows <= GEMV_ROWS else lambda: _gemm(k, op, rows, N, woff, chunks, chunk_bytes, col_bytes))()
        return
    M = RunDim(lambda kb: dm.prod(kb.b, kb.shape(a)[:-1]))
    with k.b.if_else(k.b.icmp_signed("<=", dm.val(M.at(k)), const_int(GEMV_ROWS))) as (then, other):
        with then:
            gemv()
        with other:
            _gemm(k, op, M, N, woff, chunks, chunk_bytes, col_bytes)


def _gemm(k, op: Op, M, N: int, woff: int, chunks: int, chunk_bytes: int, col_bytes: int) -> None:
    """``a @ w`` as gemm.py's packed GEMM, B's panels decoded from the repacked codes (module doc)."""
    K, bits, bs = op.attrs["K"], op.attrs["bits"], op.attrs["block_size"]
    nb = -(-K // bs)
    has_zp = len(op.operands) > 3
    blk = blocking(k.target, False, M if isinstance(M, int) else M.hint, N)

    def pack(kb, buf, scratch, bi, k0, kc, n0, n_end, blk) -> None:
        b = kb.b
        NR = blk.NR
        wbase, sc = kb.weights_ptr(woff), kb.arg(2)
        npan = b.sdiv(b.add(b.sub(n_end, n0), const_int(NR - 1)), const_int(NR))
        with for_range(b, b.mul(npan, const_int(NR)), "pj") as pj:
            col = b.add(n0, pj)
            jp, j = b.sdiv(pj, const_int(NR)), b.srem(pj, const_int(NR))
            dst = b.gep(buf, [b.add(b.mul(jp, b.mul(kc, const_int(NR))), j)], source_etype=F32, inbounds=True)
            inside = b.icmp_signed("<", col, n_end)
            colc = b.select(inside, col, const_int(0))  # past the last column: read column 0, store 0
            cbase = b.gep(wbase, [b.mul(colc, const_int(col_bytes))], source_etype=I8, inbounds=True)
            def scale_at(bi_):
                at = b.add(b.mul(colc, const_int(nb)), bi_)
                zp = b.zext(b.load(b.gep(kb.arg(3), [at], source_etype=I8, inbounds=True), typ=I8), I32) \
                    if has_zp else None
                return b.load(b.gep(sc, [at], source_etype=F32, inbounds=True), typ=F32), zp

            def where(kg):  # (block, byte offset of the code's chunk, position in the chunk)
                bi_ = b.sdiv(kg, const_int(bs))
                within = b.sub(kg, b.mul(bi_, const_int(bs)))
                ch, jj = b.sdiv(within, const_int(CHUNK)), b.srem(within, const_int(CHUNK))
                return bi_, b.mul(b.add(b.mul(bi_, const_int(chunks)), ch), const_int(chunk_bytes)), jj

            # 16 codes at a time: k0 and every block start are multiples of 16, so a run of 16
            # lies in one half of one chunk (4 bits: the low or the high nibbles of its 16 bytes)
            groups = b.sdiv(kc, const_int(16)) if bs % 16 == 0 or nb == 1 else const_int(0)
            with for_range(b, groups, "pg") as pg:
                kk0 = b.mul(pg, const_int(16))
                bi_, off, jj = where(b.add(k0, kk0))
                half = b.icmp_signed(">=", jj, const_int(16))
                if bits == 4:
                    raw = b.load(b.gep(cbase, [off], source_etype=I8, inbounds=True), typ=V16I8, align=1)
                    nib = b.select(half, b.lshr(raw, ir.Constant(V16I8, [4] * 16)),
                                   b.and_(raw, ir.Constant(V16I8, [15] * 16)))
                    codes = b.zext(nib, V16I32)
                    if not has_zp:  # signed nibbles
                        eight = ir.Constant(V16I32, [8] * 16)
                        codes = b.sub(b.xor(codes, eight), eight)
                else:
                    raw = b.load(b.gep(cbase, [b.add(off, jj)], source_etype=I8, inbounds=True), typ=V16I8, align=1)
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
                bi_, off, jj = where(b.add(k0, kk))
                if bits == 4:
                    hi = b.icmp_signed(">=", jj, const_int(16))
                    byte = b.load(b.gep(cbase, [b.add(off, b.srem(jj, const_int(16)))], source_etype=I8,
                                        inbounds=True), typ=I8)
                    nib = b.select(hi, b.lshr(byte, ir.Constant(I8, 4)), b.and_(byte, ir.Constant(I8, 15)))
                    code = b.zext(nib, I32)
                    if not has_zp:  # a signed nibble
                        code = b.sub(b.xor(code, ir.Constant(I32, 8)), ir.Constant(I32, 8))
                else:
                    byte = b.load(b.gep(cbase, [b.add(off, jj)], source_etype=I8, inbounds=True), typ=I8)
                    code = b.zext(byte, I32) if has_zp else b.sext(byte, I32)
                s_, zp = scale_at(bi_)
                if zp is not None:
                    code = b.sub(code, zp)
                v = b.select(inside, b.fmul(b.sitofp(code, F32), s_), ir.Constant(F32, 0.0))
                b.store(v, b.gep(dst, [b.mul(kk, const_int(NR))], source_etype=F32, inbounds=True))

    emit_gemm(k, blk, M, N, K, Strided(lambda kb: kb.arg(0), K, 1), Custom(pack),
              Strided(lambda kb: kb.out(0), N, 1), Epilogue(), name="matmul_nbits_gemm")

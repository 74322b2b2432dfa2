"""Transposes in 16 x 16 register tiles: the in-register transpose itself (shared with the
channel-vector conv's output) and the kernel of a ``transpose`` that is a batched 2-D transpose of
4-byte elements.

A permutation that keeps some leading axes in place and swaps two trailing groups of axes,
``[batch..., A..., B...] -> [batch..., B..., A...]`` (ConvNeXt's NCHW <-> NHWC permutes, attention's
head splits when the head dim moves last...), is ``Y[b, j, i] = X[b, i, j]`` over a rows x cols
matrix per batch. Each task takes 16 rows of one batch entry; per 16 columns it loads 16 row
vectors, transposes them in registers and stores 16 column vectors, the ragged edges under masks.
The general copy engine moves such a transpose an element at a time (3x onnxruntime's time on
96x56x56).
"""

from __future__ import annotations

import math

from llvmlite import ir

from ..llvm_types import I1, I32, const_int, for_range
from .gemm_microkernel import gep, imin, masked_load, masked_store, splat
from .strided_copy import PAR_BYTES

LANES = 16


def transpose16(b: ir.IRBuilder, v: list) -> list:
    """The 16 x 16 transpose of 16 vectors: four butterfly stages of two-source shuffles, stage ``s``
    swapping element (i, j) with (i ^ s, j ^ s) where bit s of i is clear and bit s of j is set."""
    v = list(v)
    n = len(v)
    s = n // 2
    while s:
        lo = ir.Constant(ir.VectorType(I32, n), [j if not j & s else n + j - s for j in range(n)])
        hi = ir.Constant(ir.VectorType(I32, n), [j + s if not j & s else n + j for j in range(n)])
        for i in range(n):
            if not i & s:
                a, c = v[i], v[i + s]
                v[i], v[i + s] = b.shuffle_vector(a, c, lo), b.shuffle_vector(a, c, hi)
        s //= 2
    return v


def as_2d(shape: tuple[int, ...], perm: list[int]) -> tuple[int, int, int] | None:
    """(batch, rows, cols) when ``perm`` maps ``[batch..., A..., B...]`` to ``[batch..., B..., A...]``,
    else None."""
    r = len(shape)
    k = 0
    while k < r and perm[k] == k:
        k += 1
    if k == r:
        return None
    m = perm[k]
    if list(perm[k:]) != list(range(m, r)) + list(range(k, m)):
        return None
    return math.prod(shape[:k]), math.prod(shape[k:m]), math.prod(shape[m:])


def applies(k, shape: tuple[int, ...], perm: list[int], itemsize: int) -> bool:
    dims = as_2d(shape, perm)
    return (itemsize == 4 and k.target.vector_bits == 512 and dims is not None
            and dims[1] >= LANES // 2 and dims[2] >= LANES // 2)


def emit(k, shape: tuple[int, ...], perm: list[int]) -> None:
    """``out = transpose(arg 0, perm)`` for a permutation ``applies`` accepted."""
    batch, rows, cols = as_2d(shape, perm)
    L = LANES
    vt = ir.VectorType(I32, L)
    mt = ir.VectorType(I1, L)
    strips = -(-rows // L)
    iota = ir.Constant(vt, list(range(L)))

    def body(kb, t):
        b = kb.b
        bi = b.sdiv(t, const_int(strips))
        i0 = b.mul(b.srem(t, const_int(strips)), const_int(L))
        src = gep(b, kb.arg(0), b.add(b.mul(bi, const_int(rows * cols)), b.mul(i0, const_int(cols))), I32)
        dst = gep(b, kb.out(0), b.add(b.mul(bi, const_int(rows * cols)), i0), I32)
        nrow = imin(b, const_int(L), b.sub(const_int(rows), i0))
        row_lanes = b.icmp_signed("<", iota, splat(b, b.trunc(nrow, I32), vt))
        with for_range(b, cols, "tc", step=L) as j0:
            ncol = imin(b, const_int(L), b.sub(const_int(cols), j0))
            col_lanes = b.icmp_signed("<", iota, splat(b, b.trunc(ncol, I32), vt))
            vecs = []
            for r in range(L):  # row r of the tile: columns j0.. of input row i0 + r (if it exists)
                live = b.and_(col_lanes, splat(b, b.icmp_signed("<", const_int(r), nrow), mt))
                vecs.append(masked_load(b, gep(b, src, b.add(const_int(r * cols), j0), I32), live, vt))
            for r, v in enumerate(transpose16(b, vecs)):  # output row j0 + r: rows i0.. of column j0 + r
                live = b.and_(row_lanes, splat(b, b.icmp_signed("<", const_int(r), ncol), mt))
                masked_store(b, v, gep(b, dst, b.mul(b.add(j0, const_int(r)), const_int(rows)), I32), live)

    if batch * rows * cols * 4 >= PAR_BYTES and getattr(k.cg, "threads", 1) > 1:
        k.parallel_for(batch * strips, body, name="transpose")
    else:  # too little to pay for waking the workers
        with for_range(k.b, batch * strips, "tstrip") as t:
            body(k, t)

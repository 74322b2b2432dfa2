"""2-D max_pool / avg_pool planes in explicit vectors of output columns, borders included.

A plane's output rows split into the rows whose every tap row lies inside the input (a run-time
loop) and the few border rows above and below (unrolled at compile time, each with only its taps
that land inside). Along a row, the output columns go ``lanes`` at a time: tap (i, j) of columns
ow..ow+lanes is one vector load from input row i at stride 1, or at stride ``s`` one load of ``s``
vectors (``lanes*s`` consecutive inputs, only every s-th lane enabled) and a shuffle that keeps
every s-th. The chunks of columns whose windows all lie inside form a run-time loop of full-width
vectors; the chunks at the borders (and the last, partial one) are unrolled, and each of their taps
loads under a compile-time mask of the lanes whose input column exists, the others reading as
``pad`` (the lowest value for max, 0 for sums): masked-off lanes are never touched. A window thus
reduces exactly its taps inside the input, in row-major tap order, as the reference does.

This replaces per-window loops for the borders and LLVM's loop vectoriser for the interior: on
ResNet's 3x3/2 max_pool (112x112 -> 56x56) the vectoriser turned the strided, masked loads of a
55-column interior into scalar gathers, and the per-window border code cost as much again (the
kernel took 5x onnxruntime's time).
"""

from __future__ import annotations

from typing import Callable

import numpy as np
from llvmlite import ir

from nnc.ir.ops.pool import _Geometry

from ..llvm_types import I1, I32, const_int, for_range
from .gemm_microkernel import masked_load, masked_store

MAX_STRIDE = 4  # wider column strides would load more than 4 vectors of input per vector of taps
MAX_BORDER_ROWS = 8  # border rows are unrolled: more (huge pads) keep the per-window code


def _inside(out: int, stride: int, begin: int, kernel: int, dilation: int, size: int) -> np.ndarray:
    """[out, kernel] booleans: tap k of output o lies inside the input axis."""
    taps = np.arange(out)[:, None] * stride - begin + np.arange(kernel)[None, :] * dilation
    return (taps >= 0) & (taps < size)


def applies(g: _Geometry) -> bool:
    if g.n != 2 or g.strides[1] > MAX_STRIDE:
        return False
    rows = _inside(g.out[0], g.strides[0], g.begins[0], g.kernel[0], g.dilations[0], g.in_dims[0])
    return int((~rows.all(1)).sum()) <= MAX_BORDER_ROWS


def plane(kb, g: _Geometry, nc: ir.Value, t: ir.Type, lanes: int, pad: ir.Constant,
          combine: Callable, finish: Callable | None, counts: tuple[np.ndarray, np.ndarray] | None,
          tree: bool = False) -> None:
    """Pool plane ``nc`` of the op's input into its output.

    ``combine(b, acc, v)`` folds the vector of one tap into the accumulator (acc None: the first);
    ``finish(b, acc, count)`` makes the output vector, ``count`` the per-lane divisors (from
    ``counts``: the per-output-row and per-output-column tap counts, whose product is a window's).
    ``tree``: ``combine`` is associative and commutative (max): taps combine in a balanced tree.
    """
    b = kb.b
    OH, OW = g.out
    H, W = g.in_dims
    sh, sw = g.strides
    dh, dw = g.dilations
    KH, KW = g.kernel
    bh, bw = g.begins
    L = lanes
    vt = ir.VectorType(t, L)
    xin = b.gep(kb.arg(0), [b.mul(nc, const_int(H * W))], source_etype=t, inbounds=True)
    yout = b.gep(kb.out(0), [b.mul(nc, const_int(OH * OW))], source_etype=t, inbounds=True)
    row_in = _inside(OH, sh, bh, KH, dh, H)
    col_in = _inside(OW, sw, bw, KW, dw, W)
    full_rows = np.nonzero(row_in.all(1))[0]
    rlo, rhi = (int(full_rows[0]), int(full_rows[-1]) + 1) if full_rows.size else (OH, OH)
    chunks = list(range(0, OW, L))
    clean = [c0 + L <= OW and bool(col_in[c0:c0 + L].all()) for c0 in chunks]
    run = [i for i, c in enumerate(clean) if c]
    if run and not all(clean[run[0]:run[-1] + 1]):
        run = []  # (cannot happen for windows that move monotonically: then every chunk is unrolled)
    pad_vec = ir.Constant(vt, [pad.constant] * L)
    wide = ir.VectorType(t, L * sw)
    pick = ir.Constant(ir.VectorType(I32, L), [r * sw for r in range(L)])

    def tap(ptr, live: list[bool] | None):
        """The vector of one tap: ``live`` the lanes whose input exists (None: all, the run-time loop)."""
        if sw == 1:
            if live is None:
                return b.load(ptr, typ=vt, align=_bytes(t))
            return masked_load(b, ptr, ir.Constant(ir.VectorType(I1, L), live), vt, pad_vec)
        lanes_on = [q % sw == 0 and (live is None or live[q // sw]) for q in range(L * sw)]
        got = masked_load(b, ptr, ir.Constant(ir.VectorType(I1, L * sw), lanes_on), wide,
                          ir.Constant(wide, [pad.constant] * (L * sw)))
        return b.shuffle_vector(got, ir.Constant(wide, None), pick)

    def chunk(rows: list[tuple[int, ir.Value]], col0: ir.Value, c0: int | None, count_h: int):
        """(output vector, lanes in the row) of columns col0..col0+L of one row; ``c0`` the
        compile-time column of an unrolled chunk (its masks), None in the run-time loop of clean
        chunks. ``rows``: (tap row i, pointer to its input row) of the row's taps inside the input."""
        acc, vals = None, []
        n = L if c0 is None else min(L, OW - c0)
        for _, rp in rows:
            for j in range(KW):
                if c0 is None:
                    live = None
                else:
                    live = [r < n and bool(col_in[c0 + r, j]) for r in range(L)]
                    if not any(live):
                        continue  # every lane reads padding: the tap adds nothing
                ptr = b.gep(rp, [b.add(b.mul(col0, const_int(sw)), const_int(j * dw - bw))], source_etype=t)
                vals.append(tap(ptr, live))
        vals = vals or [pad_vec]
        if tree:  # a max in a balanced tree: the dependency chain is log2(taps) long, not taps
            while len(vals) > 1:
                vals = [combine(b, vals[i], vals[i + 1]) if i + 1 < len(vals) else vals[i]
                        for i in range(0, len(vals), 2)]
            acc = combine(b, None, vals[0])
        else:
            for v in vals:
                acc = combine(b, acc, v)
        if finish is not None:
            if c0 is None:
                cnt = [count_h * KW] * L
            else:
                cnt = [count_h * int(counts[1][min(c0 + r, OW - 1)]) for r in range(L)]
            acc = finish(b, acc, cnt)
        return acc, n

    def row(oh: ir.Value, taps: list[int], count_h: int) -> None:
        ih0 = b.sub(b.mul(oh, const_int(sh)), const_int(bh))
        rows = [(i, b.gep(xin, [b.mul(b.add(ih0, const_int(i * dh)), const_int(W))], source_etype=t))
                for i in taps]
        yrow = b.gep(yout, [b.mul(oh, const_int(OW))], source_etype=t, inbounds=True)

        def unrolled(idx: list[int]) -> None:
            for i in idx:
                c0 = chunks[i]
                acc, n = chunk(rows, const_int(c0), c0, count_h)
                dst = b.gep(yrow, [const_int(c0)], source_etype=t, inbounds=True)
                if n == L:
                    b.store(acc, dst, align=_bytes(t))
                else:
                    masked_store(b, acc, dst, ir.Constant(ir.VectorType(I1, L), [r < n for r in range(L)]))
        if not run:
            unrolled(list(range(len(chunks))))
            return
        unrolled(list(range(run[0])))
        with for_range(b, chunks[run[-1]] + L, "pvc", start=chunks[run[0]], step=L) as c:
            acc, _ = chunk(rows, c, None, count_h)
            b.store(acc, b.gep(yrow, [c], source_etype=t, inbounds=True), align=_bytes(t))
        unrolled(list(range(run[-1] + 1, len(chunks))))

    def count_of_row(oh: int) -> int:
        return int(counts[0][oh]) if counts is not None else 0

    for oh in range(0, rlo):
        row(const_int(oh), [i for i in range(KH) if row_in[oh, i]], count_of_row(oh))
    if rhi > rlo:
        with for_range(b, rhi, "pvr", start=rlo) as oh:
            row(oh, list(range(KH)), KH)
    for oh in range(rhi, OH):
        row(const_int(oh), [i for i in range(KH) if row_in[oh, i]], count_of_row(oh))


def _bytes(t: ir.Type) -> int:
    if isinstance(t, ir.IntType):
        return max(1, t.width // 8)
    return {ir.DoubleType: 8, ir.FloatType: 4}.get(type(t), 2)

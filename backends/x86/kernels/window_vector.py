"""Sliding windows over 2-D planes in explicit vectors of output columns, borders included: the
interior of max_pool / avg_pool and depthwise conv.

A plane's output rows split into the rows whose every tap row lies inside the input (a run-time
loop) and the few border rows above and below (unrolled at compile time, each with only its taps
that land inside). Along a row, the output columns go ``lanes`` at a time: tap (i, j) of columns
ow..ow+lanes is one vector load from input row i at stride 1; at stride ``s`` > 1 the inputs every
tap of the row reads (``s*(lanes-1) + (KW-1)*dilation + 1`` of them) are loaded once as whole
vectors and each tap is a shuffle of that window (MobileNet's 3x3/2 depthwise 96x112x112: 152 ->
96 us against a load of ``s`` misaligned vectors per tap). The chunks of columns whose windows
all lie inside form a run-time loop of full-width vectors; the chunks at the borders (and the last,
partial one) are unrolled, and each of their loads is under a compile-time mask of the lanes whose
input column exists, the others reading as ``pad`` (the lowest value for max, 0 for sums):
masked-off lanes are never touched. The caller's ``reduce`` folds the taps of one vector of outputs
(max in a tree, a sum in row-major tap order, a dot product with a conv's filter).

This replaces per-window loops for the borders and LLVM's loop vectoriser for the interior: on
ResNet's 3x3/2 max_pool (112x112 -> 56x56) the vectoriser turned the strided, masked loads of a
55-column interior into scalar gathers, and the per-window border code cost as much again (the
kernel took 5x onnxruntime's time); ConvNeXt's 7x7 depthwise convs took 2-3.7x.
"""


from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
from llvmlite import ir

from ..llvm_types import I1, I32, const_int, for_range
from .gemm_microkernel import elem_bytes, masked_load, masked_store

MAX_STRIDE = 4  # wider column strides would load more than 4 vectors of input per vector of taps
MAX_BORDER_ROWS = 8  # border rows are unrolled: more (huge pads) keep the per-window code


def _inside(out: int, stride: int, begin: int, kernel: int, dilation: int, size: int) -> np.ndarray:
    """[out, kernel] booleans: tap k of output o lies inside the input axis."""
    taps = np.arange(out)[:, None] * stride - begin + np.arange(kernel)[None, :] * dilation
    return (taps >= 0) & (taps < size)


@dataclass(frozen=True)
class Window:
    """A 2-D window geometry (pool.py's ``_Geometry`` has the same fields)."""
    out: tuple[int, int]
    in_dims: tuple[int, int]
    kernel: tuple[int, int]
    strides: tuple[int, int]
    dilations: tuple[int, int]
    begins: tuple[int, int]  # padding before each axis
    n: int = 2


def applies(g) -> bool:
    if g.n != 2 or g.strides[1] > MAX_STRIDE:
        return False
    rows = _inside(g.out[0], g.strides[0], g.begins[0], g.kernel[0], g.dilations[0], g.in_dims[0])
    return int((~rows.all(1)).sum()) <= MAX_BORDER_ROWS


def plane(kb, g, xin: ir.Value, yout: ir.Value, t: ir.Type, lanes: int, pad: ir.Constant,
          reduce: Callable, finish: Callable | None = None,
          counts: tuple[np.ndarray, np.ndarray] | None = None, rows_per_step: int = 1,
          group_reduce: bool = False) -> None:
    """The plane at ``xin`` (``g.in_dims``, row-major) into the plane at ``yout`` (``g.out``).

    ``reduce(b, taps)`` makes one vector of outputs from its taps, a list of ((i, j), vector) in
    row-major tap order (only the taps with some lane inside the input: the others are all ``pad``;
    at least ``[((0, 0), pad)]``); ``finish(b, acc, count)`` then makes the stored vector, ``count``
    the per-lane tap counts from ``counts`` (the per-output-row and per-output-column tap counts,
    whose product is a window's). ``rows_per_step`` interior output rows go together, sharing the
    loads of the input rows their windows overlap on (a conv's filter: its weights too); with
    ``group_reduce``, ``reduce(b, [taps of each row])`` makes all their vectors at once (and may
    interleave the rows' work, e.g. to use each weight on every row while it is in a register).
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

    def tap(ptr, live: list[bool] | None):
        """The vector of one tap at stride 1: ``live`` the lanes whose input exists (None: all, the
        run-time loop). (At stride > 1 every tap is a shuffle of ``window``.)"""
        if live is None:
            return b.load(ptr, typ=vt, align=elem_bytes(t))
        return masked_load(b, ptr, ir.Constant(ir.VectorType(I1, L), live), vt, pad_vec)

    span = sw * (L - 1) + (KW - 1) * dw + 1  # the inputs a clean chunk's taps of one row read

    def window(rp, col0: ir.Value, c0: int | None) -> ir.Value:
        """The ``span`` inputs of one row under a chunk at stride > 1, loaded once as whole vectors
        and joined: each tap is then one shuffle of it, where loading each tap would load ``sw``
        vectors (misaligned) per tap. In a clean chunk (``c0`` None) only lanes past ``span`` are
        masked off; in an unrolled one also those outside the input row or past the chunk's last
        output's window, which read as ``pad``."""
        base = b.gep(rp, [b.sub(b.mul(col0, const_int(sw)), const_int(bw))], source_etype=t)
        if c0 is None:
            ok = [q < span for q in range(-(-span // L) * L)]
        else:
            n = min(L, OW - c0)
            last = sw * (n - 1) + (KW - 1) * dw
            ok = [q <= last and 0 <= sw * c0 - bw + q < W for q in range(-(-span // L) * L)]
        vecs = []
        for v in range(len(ok) // L):
            p = b.gep(base, [const_int(v * L)], source_etype=t)
            lanes_ok = ok[v * L:(v + 1) * L]
            if all(lanes_ok):
                vecs.append(b.load(p, typ=vt, align=elem_bytes(t)))
            elif not any(lanes_ok):
                vecs.append(pad_vec)
            else:
                vecs.append(masked_load(b, p, ir.Constant(ir.VectorType(I1, L), lanes_ok), vt, pad_vec))
        while len(vecs) > 1:  # concatenate pairwise (shufflevector joins two of one type)
            if len(vecs) % 2:
                vecs.append(ir.Constant(vecs[0].type, None))
            vecs = [b.shuffle_vector(vecs[k], vecs[k + 1], ir.Constant(ir.VectorType(I32, 2 * vecs[k].type.count),
                                                                         list(range(2 * vecs[k].type.count))))
                    for k in range(0, len(vecs), 2)]
        return vecs[0]

    def chunk(group, col0: ir.Value, c0: int | None) -> list[ir.Value]:
        """The output vectors of columns col0..col0+L of the rows of ``group``; ``c0`` the
        compile-time column of an unrolled chunk (its masks), None in the run-time loop of clean
        chunks. ``group``: per output row, (the row's taps inside the input as (tap row i, input row
        pointer), its tap count). A tap's vector is loaded once for all the rows that read it."""
        n = L if c0 is None else min(L, OW - c0)
        loaded: dict[tuple[int, int], ir.Value] = {}
        row_taps = []
        for rows, _ in group:
            taps = []
            for i, rp in rows:
                for j in range(KW):
                    if c0 is None:
                        live = None
                    else:
                        live = [r < n and bool(col_in[c0 + r, j]) for r in range(L)]
                        if not any(live):
                            continue  # every lane reads padding: the tap adds nothing
                    key = (id(rp), j)
                    if key not in loaded:
                        if sw > 1:  # every tap of the row from one window of inputs
                            if (id(rp), "window") not in loaded:
                                loaded[(id(rp), "window")] = window(rp, col0, c0)
                            loaded[key] = b.shuffle_vector(
                                loaded[(id(rp), "window")], ir.Constant(loaded[(id(rp), "window")].type, None),
                                ir.Constant(ir.VectorType(I32, L), [j * dw + sw * r for r in range(L)]))
                        else:
                            ptr = b.gep(rp, [b.add(b.mul(col0, const_int(sw)), const_int(j * dw - bw))],
                                        source_etype=t)
                            loaded[key] = tap(ptr, live)
                    taps.append(((i, j), loaded[key]))
            row_taps.append(taps or [((0, 0), pad_vec)])
        accs = reduce(b, row_taps) if group_reduce else [reduce(b, taps) for taps in row_taps]
        outs = []
        for acc, (_, count_h) in zip(accs, group):
            if finish is not None:
                if c0 is None:
                    cnt = [count_h * KW] * L
                else:
                    cnt = [count_h * int(counts[1][min(c0 + r, OW - 1)]) for r in range(L)]
                acc = finish(b, acc, cnt)
            outs.append(acc)
        return outs

    def rows_at(oh: ir.Value, taps: list[list[int]], count_h: list[int]) -> None:
        """Output rows oh, oh+1, ... (one per entry of ``taps``: the tap rows inside the input of each)."""
        ih0 = b.sub(b.mul(oh, const_int(sh)), const_int(bh))
        inrow: dict[int, ir.Value] = {}  # input rows by offset from ih0, shared by the output rows

        def input_row(off: int) -> ir.Value:
            if off not in inrow:
                inrow[off] = b.gep(xin, [b.mul(b.add(ih0, const_int(off)), const_int(W))], source_etype=t)
            return inrow[off]
        group = [([(i, input_row(q * sh + i * dh)) for i in tq], cq) for q, (tq, cq) in enumerate(zip(taps, count_h))]
        yrows = [b.gep(yout, [b.mul(b.add(oh, const_int(q)), const_int(OW))], source_etype=t, inbounds=True)
                 for q in range(len(taps))]

        def unrolled(idx: list[int]) -> None:
            for i in idx:
                c0 = chunks[i]
                n = min(L, OW - c0)
                for yrow, acc in zip(yrows, chunk(group, const_int(c0), c0)):
                    dst = b.gep(yrow, [const_int(c0)], source_etype=t, inbounds=True)
                    if n == L:
                        b.store(acc, dst, align=elem_bytes(t))
                    else:
                        masked_store(b, acc, dst, ir.Constant(ir.VectorType(I1, L), [r < n for r in range(L)]))
        if not run:
            unrolled(list(range(len(chunks))))
            return
        unrolled(list(range(run[0])))
        with for_range(b, chunks[run[-1]] + L, "pvc", start=chunks[run[0]], step=L) as c:
            for yrow, acc in zip(yrows, chunk(group, c, None)):
                b.store(acc, b.gep(yrow, [c], source_etype=t, inbounds=True), align=elem_bytes(t))
        unrolled(list(range(run[-1] + 1, len(chunks))))

    def border(oh: int) -> None:
        rows_at(const_int(oh), [[i for i in range(KH) if row_in[oh, i]]],
                [int(counts[0][oh]) if counts is not None else 0])

    for oh in range(0, rlo):
        border(oh)
    R = max(1, min(rows_per_step, rhi - rlo))
    mid = rlo + (rhi - rlo) // R * R
    if mid > rlo:
        with for_range(b, mid, "pvr", start=rlo, step=R) as oh:
            rows_at(oh, [list(range(KH))] * R, [KH] * R)
    if rhi > mid:
        with for_range(b, rhi, "pvq", start=mid) as oh:
            rows_at(oh, [list(range(KH))], [KH])
    for oh in range(rhi, OH):
        border(oh)


def tree(b: ir.IRBuilder, vals: list, combine: Callable) -> ir.Value:
    """``combine`` (associative and commutative) over ``vals`` in a balanced tree: a dependency chain
    of log2(n) steps, not n."""
    while len(vals) > 1:
        vals = [combine(b, vals[i], vals[i + 1]) if i + 1 < len(vals) else vals[i] for i in range(0, len(vals), 2)]
    return vals[0]


def lane_tree(b: ir.IRBuilder, v: ir.Value, combine: Callable) -> ir.Value:
    """``combine`` over the lanes of vector ``v`` (a power-of-two count): the upper half onto the
    lower, log2(lanes) steps; the scalar result."""
    w = v.type.count
    while w > 1:
        w //= 2
        lo = b.shuffle_vector(v, ir.Constant(v.type, None), ir.Constant(ir.VectorType(I32, w), list(range(w))))
        hi = b.shuffle_vector(v, ir.Constant(v.type, None), ir.Constant(ir.VectorType(I32, w), list(range(w, 2 * w))))
        v = combine(b, lo, hi)
    return b.extract_element(v, ir.Constant(I32, 0))

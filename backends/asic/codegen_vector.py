"""Code generation for the vector-unit layers of mobile networks: a standalone int8 activation
(``qlut``: one table lookup per element) and the channel-wise product of squeeze-excite (``qmul``:
x [N,C,H,W] times a per-channel int8 scale [N,C,1,1], rescaled in int64).

Both stream their input through the scratchpads in tiles of whole pixels (NHWC rows of C channels),
double-buffered, and store int8 results; their time is the vector unit's ceil(elements / lanes) +
issue overhead per instruction beside the DMA of the tiles (docs/asic.md).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .codegen import apply_table, flat_pieces, load_table
from .config import AsicConfig
from .emitter import DramImage, Emitter


def emit_lut_layer(em: Emitter, cfg: AsicConfig, dram: DramImage, *, x: int, n: int, out: int, in_key: Any,
                   out_key: Any, lut: np.ndarray) -> dict[str, Any]:
    """y = lut[x + 128] over a flat int8 tensor of ``n`` elements, in chunks through the buffer."""
    buf = cfg.sizes()["buf"]
    cols = min(n, 4 * cfg.vector_lanes)
    chunk = max(cols, min(n, buf // 2) // cols * cols)
    slots = [0, chunk]
    table = load_table(em, dram, lut)
    assert table is not None
    for sl, e0, off, rows, c in flat_pieces(n, cols, chunk):
        key = ("buf", "out", sl)
        em.emit("load", reads=[in_key], writes=[key], mem="buf", dst=slots[sl] + off, dst_stride=c,
                src=x + e0 + off, src_stride=c, rows=rows, cols=c, pad_before=0, pad_after=0, pad=0)
        apply_table(em, table, key, slots[sl] + off, rows, c)
        em.emit("store", reads=[key], writes=[out_key], mem="buf", src=slots[sl] + off, src_stride=c,
                dst=out + e0 + off, dst_stride=c, rows=rows, cols=c)
    return {"tiles": {"chunk": chunk}}


def emit_qmul_layer(em: Emitter, cfg: AsicConfig, dram: DramImage, *, x: int, scale: int, N: int, HW: int, C: int,
                    scale_per_image: bool, out: int, keys: tuple[Any, Any, Any],
                    attrs: dict[str, Any]) -> dict[str, Any]:
    """y[n, p, c] = qmul(x[n, p, c], s[n, c]) for x NHWC [N, HW, C] and a per-channel scale row per image
    (``scale_per_image``) or one for all; the row sits in the weight scratchpad, broadcast over the pixels."""
    s = cfg.sizes()
    ih, wh, buf = s["ispad"] // 2, s["wspad"] // 2, s["buf"]
    cb = min(C, wh)
    tp = max(1, min(HW, ih // cb, buf // (2 * cb)))
    n_tile = n_row = 0
    for b in range(N):
        for c0 in range(0, C, cb):
            c = min(C, c0 + cb) - c0
            ws = n_row % 2
            n_row += 1
            em.emit("load", reads=[keys[1]], writes=[("wspad", ws)], mem="wspad", dst=ws * wh, dst_stride=c,
                        src=scale + (b * C if scale_per_image else 0) + c0, src_stride=c, rows=1, cols=c,
                        pad_before=0, pad_after=0, pad=0)
            for p0 in range(0, HW, tp):
                t = min(HW, p0 + tp) - p0
                sl = n_tile % 2
                n_tile += 1
                src = x + (b * HW + p0) * C + c0
                em.emit("load", reads=[keys[0]], writes=[("ispad", sl)], mem="ispad", dst=sl * ih, dst_stride=c,
                        src=src, src_stride=C, rows=t, cols=c, pad_before=0, pad_after=0, pad=0)
                em.emit("vec.qmul", reads=[("ispad", sl), ("wspad", ws)], writes=[("buf", "out", sl)], dst_mem="buf",
                        dst=sl * tp * cb, dst_stride=c, src_mem="ispad", src=sl * ih, src_stride=c, rows=t, cols=c,
                        row=ws * wh, **attrs)
                em.emit("store", reads=[("buf", "out", sl)], writes=[keys[2]], mem="buf", src=sl * tp * cb,
                        src_stride=c, dst=out + (b * HW + p0) * C + c0, dst_stride=C, rows=t, cols=c)
    return {"tiles": {"tp": tp, "cb": cb}}

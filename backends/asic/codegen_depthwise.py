"""Depthwise convolution on the vector unit, reading each input row from DRAM about once.

A depthwise conv has no reduction across channels, so on a weight-stationary array it would use one
column in C (each column needs its own input); it runs on the vector unit instead, ``vector_lanes``
multiply-accumulates per cycle. The layer is cut into channel blocks (columns of the vector tiles)
and, per image, into bands of output rows. A band's input rows (with their halo of kh - 1 rows and
the left/right padding, which holds the input zero point) are loaded once into one half of the input
scratchpad as [rows][padded width][channels]; then each output row takes one ``vec.mac`` per kernel
tap, whose source walks that row of the band with a stride of ``stride_w`` pixels, into the int32
band in the accumulator (initialised with the bias). The band is requantized (and its activation
table applied) into the buffer and stored as whole NHWC pixel rows. Bands alternate halves of the
scratchpad and the accumulator, so the next band loads while this one computes.

Input bytes moved = the input once per channel block x (band rows + halo) / band rows; the channel
block and band height are chosen to minimise max(vector cycles, DMA cycles) within the memories.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from nnc.ir import TargetError

from .codegen import Window, _requant_params, apply_table, load_table
from .config import AsicConfig
from .emitter import DramImage, Emitter
from .isa import ACT_BASE
from .sim.timing import dwconv_steps
from .tiling import untileable_message


def _band_rows(win: Window, toh: int) -> int:
    return (toh - 1) * win.sh + (win.kh - 1) * win.dh + 1


def padded_width(win: Window) -> int:
    """Pixels per band row: left padding, the image row, and the right padding the last window needs."""
    need = (win.OW - 1) * win.sw + (win.kw - 1) * win.dw + 1
    return max(win.pl + win.W, need)


def _acc_head(engine: str, cb: int) -> int:
    """Accumulator words before the two band tiles: two slots of [mult; shift] rows (and, for the array,
    the bias row its columns start from)."""
    return (6 if engine == "array" else 4) * cb


def _dw_cycles(cfg: AsicConfig, win: Window, engine: str, cb: int, toh: int, table: bool) -> float:
    """Estimated busy cycles of the layer's taps on ``engine`` and of its epilogue (requantize and the
    optional table) on the vector unit: the two overlap when the array runs the taps."""
    lanes, ovh, taps = cfg.vector_lanes, cfg.vector_overhead_cycles, win.kh * win.kw
    blocks, bands = math.ceil(win.C / cb), math.ceil(win.OH / toh)
    epi = win.N * blocks * (1 + table) * (math.ceil(win.OH * win.OW * cb / lanes) + bands * ovh)
    if engine == "vector":
        return win.N * blocks * win.OH * taps * (math.ceil(win.OW * cb / lanes) + ovh) + epi
    fill = 2 * cfg.array_rows + cfg.array_cols - 2
    arr = win.N * blocks * (bands * fill + dwconv_steps(cfg, taps, win.OH * win.OW))
    return max(arr, epi)


def choose_dw_tiles(cfg: AsicConfig, win: Window, name: str, table: bool = False) -> tuple[str, int, int]:
    """(engine, channel block, output rows per band) with the least estimated max(compute, DMA) cycles.
    The engine is ``array`` (its depthwise mode: ``array_depthwise``, taps <= rows, a block <= columns)
    or ``vector``."""
    s = cfg.sizes()
    ih, wh, acc_el, buf = s["ispad"] // 2, s["wspad"] // 2, s["acc"] // 4, s["buf"]
    C, taps, wp = win.C, win.kh * win.kw, padded_width(win)
    cands = sorted({C, *(b for b in (2 ** i for i in range(16)) if b < C)}, reverse=True)
    engines = [("vector", c) for c in cands]
    if cfg.array_depthwise and taps <= cfg.array_rows:
        # a block of at most array_cols channels: also the even splits of C (120 = 4 x 30 on 32 columns)
        per = {math.ceil(C / math.ceil(C / b)) for b in range(1, min(C, cfg.array_cols) + 1)}
        engines += [("array", c) for c in sorted(per, reverse=True)]
    best: tuple | None = None
    for engine, cb in engines:
        if taps * cb > wh:
            continue
        fits = [t for t in range(1, win.OH + 1) if _band_rows(win, t) * wp * cb <= ih
                and _acc_head(engine, cb) + 2 * t * win.OW * cb <= acc_el and 2 * t * win.OW * cb <= buf]
        if not fits:
            continue
        toh = fits[-1]
        bands = math.ceil(win.OH / toh)
        busy = _dw_cycles(cfg, win, engine, cb, toh, table)
        rows_in = win.N * bands * _band_rows(win, toh)
        # resident activations (from ACT_BASE) move at the buffer's bandwidth, others at DRAM's
        bpc = cfg.act_bytes_per_cycle if win.addr >= ACT_BASE else cfg.dram_bytes_per_cycle
        dma = (rows_in * win.W * C + win.N * win.OH * win.OW * C) / bpc
        if engine == "vector":  # the bias broadcast into each band: one accumulator row a cycle
            dma += win.N * math.ceil(C / cb) * win.OH * win.OW * math.ceil(cb / cfg.array_cols)
        key = (max(busy, dma), engine == "vector", -cb)
        if best is None or key < best[0]:
            best = (key, engine, cb, toh)
    if best is None:
        cb = 1
        needs = {"input_spad_kib": (2 * _band_rows(win, 1) * wp * cb,
                                    f"2 slots of {_band_rows(win, 1)} padded input rows of {wp}x{cb}"),
                 "weight_spad_kib": (2 * taps * cb, f"2 slots of a {taps}-tap x {cb}-channel depthwise kernel"),
                 "acc_kib": (4 * (4 * cb + 2 * win.OW * cb), f"2 int32 output rows of {win.OW}x{cb} and "
                                                             f"their requantization words"),
                 "buffer_kib": (2 * win.OW * cb, f"2 int8 output rows of {win.OW}x{cb}")}
        raise TargetError(untileable_message(cfg, name, f"depthwise {win.kh}x{win.kw}, {C} channels", needs))
    return best[1], best[2], best[3]


def emit_dw_layer(em: Emitter, cfg: AsicConfig, dram: DramImage, *, name: str, win: Window, out: int,
                  in_key: Any, out_key: Any, pad: int, weights: np.ndarray, bias: np.ndarray | None,
                  mult: Any, shift: Any, zp: int, lo: int, hi: int, lut: np.ndarray | None = None) -> dict[str, Any]:
    """``weights`` [taps, C] int8; ``bias`` int32 [C]; the input zero point ``pad`` fills the padding."""
    C, taps, wp = win.C, win.kh * win.kw, padded_width(win)
    engine, cb, toh = choose_dw_tiles(cfg, win, name, lut is not None)
    s = cfg.sizes()
    ih, wh = s["ispad"] // 2, s["wspad"] // 2
    par = _requant_params(dram, mult, shift, C)
    w_addr = dram.put(weights)
    bias_addr = dram.put(bias.astype(np.int32)) if bias is not None else None
    table = load_table(em, dram, lut)
    band_el = toh * win.OW * cb
    head = _acc_head(engine, cb)
    acc_par, acc_tile, buf_out = [0, head // 2], [head, head + band_el], [0, band_el]
    if engine == "array" and bias_addr is None:
        bias_addr = dram.put(np.zeros(C, np.int32))
    pr = wp - win.pl - win.W
    n_band = 0
    for blk, c0 in enumerate(range(0, C, cb)):
        c = min(C, c0 + cb) - c0
        ws = blk % 2
        em.emit("load", writes=[("wspad", ws)], mem="wspad", dst=ws * wh, dst_stride=c, src=w_addr + c0,
                src_stride=C, rows=taps, cols=c, pad_before=0, pad_after=0, pad=0)
        em.emit("load", writes=[("par", ws)], mem="acc", dst=acc_par[ws], dst_stride=c, src=par + c0 * 4,
                src_stride=C * 4, rows=2, cols=c, pad_before=0, pad_after=0, pad=0)
        if engine == "array":  # the bias row the array's columns start from, after [mult; shift]
            em.emit("load", writes=[("par", ws)], mem="acc", dst=acc_par[ws] + 2 * c, dst_stride=c,
                    src=bias_addr + c0 * 4, src_stride=c * 4, rows=1, cols=c, pad_before=0, pad_after=0, pad=0)
        for n in range(win.N):
            for oh0 in range(0, win.OH, toh):
                t = min(win.OH, oh0 + toh) - oh0
                sl = n_band % 2
                n_band += 1
                ih0 = oh0 * win.sh - win.pt
                for r in range(_band_rows(win, t)):
                    row, dst = ih0 + r, sl * ih + r * wp * c
                    if 0 <= row < win.H:
                        src = win.addr + ((n * win.H + row) * win.W) * C + c0
                        em.emit("load", reads=[in_key], writes=[("ispad", sl)], mem="ispad", dst=dst, dst_stride=c,
                                src=src, src_stride=C, rows=win.W, cols=c, pad_before=win.pl, pad_after=pr, pad=pad)
                    else:
                        em.emit("load", writes=[("ispad", sl)], mem="ispad", dst=dst, dst_stride=c, src=win.addr,
                                src_stride=0, rows=0, cols=c, pad_before=wp, pad_after=0, pad=pad)
                acc = ("acc", sl)
                if engine == "array":
                    em.emit("dwconv", reads=[("ispad", sl), ("wspad", ws), ("par", ws)], writes=[acc], a=sl * ih,
                            row_step=wp * c, w=ws * wh, acc=acc_tile[sl], bias=acc_par[ws] + 2 * c, rows=t,
                            ow=win.OW, cols=c, kh=win.kh, kw=win.kw, sh=win.sh, sw=win.sw, dh=win.dh, dw=win.dw,
                            zp=pad)
                elif bias_addr is not None:
                    em.emit("load", writes=[acc], mem="acc", dst=acc_tile[sl], dst_stride=c, src=bias_addr + c0 * 4,
                            src_stride=0, rows=t * win.OW, cols=c, pad_before=0, pad_after=0, pad=0)
                else:
                    em.emit("vec.mul", reads=[acc], writes=[acc], dst_mem="acc", dst=acc_tile[sl], dst_stride=c,
                            src_mem="acc", src=acc_tile[sl], src_stride=c, rows=t * win.OW, cols=c, imm=0)
                for r in range(t if engine == "vector" else 0):
                    for tap in range(taps):
                        i, j = divmod(tap, win.kw)
                        src = sl * ih + ((r * win.sh + i * win.dh) * wp + j * win.dw) * c
                        em.emit("vec.mac", reads=[("ispad", sl), ("wspad", ws), acc], writes=[acc], dst_mem="acc",
                                dst=acc_tile[sl] + r * win.OW * c, dst_stride=c, src_mem="ispad", src=src,
                                src_stride=win.sw * c, rows=win.OW, cols=c, w=ws * wh + tap * c, zp=pad)
                key = ("buf", "out", sl)
                em.emit("vec.requant", reads=[acc, ("par", ws)], writes=[key], dst_mem="buf", dst=buf_out[sl],
                        dst_stride=c, src_mem="acc", src=acc_tile[sl], src_stride=c, rows=t * win.OW, cols=c,
                        par=acc_par[ws], zp=zp, lo=lo, hi=hi)
                if table is not None:
                    apply_table(em, table, key, buf_out[sl], t * win.OW, c)
                em.emit("store", reads=[key], writes=[out_key], mem="buf", src=buf_out[sl], src_stride=c,
                        dst=out + (n * win.OH + oh0) * win.OW * C + c0, dst_stride=C, rows=t * win.OW, cols=c)
    return {"tiles": {"engine": engine, "cb": cb, "band_rows": toh}}

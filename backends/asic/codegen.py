"""Code generation: one fused layer at a time into instructions.

Activations live in DRAM as NHWC int8 (row-major for other ranks), so a convolution is a GEMM of
P = N*OH*OW output pixels by K = KH*KW*C/group taps by M channels, and its input tile is gathered by
2-D strided DMAs (one per output row segment and kernel tap) that write padding rows for the parts of
a window outside the image (the input's zero point; -128 for max pooling). Weights are laid out at
compile time as [K, mb] blocks of the chosen channel block. Each output tile's bias is DMA-broadcast
into the accumulator, the reduction blocks accumulate on top, and the epilogue (requantize with ReLU
clip, optional residual add) runs on the vector unit into the on-chip buffer before one store, so
int32 partial sums never leave the chip. Depthwise convolution, max pooling, global average pooling
and standalone residual adds run on the vector unit. Every scratchpad is used as two halves so the
load of the next tile overlaps the compute of this one; the emitter turns the slot reuse into tokens.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Iterator

import numpy as np

from nnc.ir import TargetError

from .config import AsicConfig
from .emitter import DramImage, Emitter
from .isa import LUT_ENTRIES
from .tiling import choose_gemm_tiles, untileable_message


@dataclasses.dataclass
class Window:
    """Where the input of a windowed op is and how its windows sit over it (one group's channels)."""
    addr: int
    N: int
    H: int
    W: int
    C: int        # channels per pixel in DRAM (the row pitch of a pixel)
    c0: int       # first channel of this group
    cg: int       # channels per tap in the reduction
    kh: int
    kw: int
    sh: int
    sw: int
    dh: int
    dw: int
    pt: int
    pl: int
    OH: int
    OW: int

    @property
    def P(self) -> int:
        return self.N * self.OH * self.OW


@dataclasses.dataclass
class Epilogue:
    par: int                # DRAM addr of i32 [2, M_total]: multiplier row, shift row
    zp: int
    lo: int
    hi: int
    residual: dict[str, Any] | None = None   # addr, key, a_zp, b_zp, a_mul, b_mul, shift, zp, lo, hi


class _TwoSlots:
    """A two-entry tile cache: which tile each half of a scratchpad holds (LRU replacement)."""

    def __init__(self) -> None:
        self.ids: list[Any] = [None, None]
        self.mru = 1

    def get(self, tid: Any) -> tuple[int, bool]:
        for s in (0, 1):
            if self.ids[s] == tid:
                self.mru = s
                return s, True
        s = 1 - self.mru
        self.ids[s] = tid
        self.mru = s
        return s, False


def window_loads(em: Emitter, win: Window, p0: int, p1: int, k0: int, k1: int, dst: int, dst_stride: int,
                 pad: int, reads: Any, writes: Any) -> None:
    """DMA the im2col rows [p0, p1) x columns [k0, k1) (k = tap * cg + channel) to ``dst``."""
    cg = win.cg
    segs = []
    for t in range(k0 // cg, (k1 - 1) // cg + 1):
        a, b = max(k0, t * cg) - t * cg, min(k1, (t + 1) * cg) - t * cg
        segs.append((t // win.kw, t % win.kw, a, b, t * cg + a - k0))
    plane = win.OH * win.OW
    simple = win.kh == win.kw == 1 and win.sh == win.sw == 1 and win.pt == win.pl == 0 and \
        win.OH == win.H and win.OW == win.W
    p = p0
    while p < p1:
        if simple:
            q = p1
        else:
            n, rem = divmod(p, plane)
            oh, ow0 = divmod(rem, win.OW)
            q = min(p1, p + win.OW - ow0)
        for i, j, a, b, col in segs:
            d = dst + (p - p0) * dst_stride + col
            if simple:
                src = win.addr + p * win.C + win.c0 + a
                em.emit("load", reads=reads, writes=writes, mem="ispad", dst=d, dst_stride=dst_stride, src=src,
                        src_stride=win.C, rows=q - p, cols=b - a, pad_before=0, pad_after=0, pad=pad)
                continue
            count = q - p
            ih = oh * win.sh + i * win.dh - win.pt
            off = j * win.dw - win.pl
            lo = max(ow0, -(off // win.sw)) if off < 0 else ow0  # ceil(-off / sw)
            hi = min(ow0 + count, (win.W - 1 - off) // win.sw + 1) if win.W - 1 - off >= 0 else ow0
            if not 0 <= ih < win.H or hi <= lo:
                em.emit("load", reads=reads, writes=writes, mem="ispad", dst=d, dst_stride=dst_stride, src=win.addr,
                        src_stride=0, rows=0, cols=b - a, pad_before=count, pad_after=0, pad=pad)
                continue
            src = win.addr + ((n * win.H + ih) * win.W + lo * win.sw + off) * win.C + win.c0 + a
            em.emit("load", reads=reads, writes=writes, mem="ispad", dst=d, dst_stride=dst_stride, src=src,
                    src_stride=win.sw * win.C, rows=hi - lo, cols=b - a, pad_before=lo - ow0,
                    pad_after=ow0 + count - hi, pad=pad)
        p = q


def load_table(em: Emitter, dram: DramImage, lut: np.ndarray | None) -> tuple[Any, int] | None:
    """Load a layer's activation table into one half of the vector unit's table memory (alternating by
    layer, so the next layer's table loads while this one is read): (its key, its address), or None."""
    if lut is None:
        return None
    slot = em.layer % 2
    key, addr = ("lut", slot), slot * LUT_ENTRIES
    em.emit("load", writes=[key], mem="lut", dst=addr, dst_stride=LUT_ENTRIES, src=dram.put(lut.astype(np.int8)),
            src_stride=LUT_ENTRIES, rows=1, cols=LUT_ENTRIES, pad_before=0, pad_after=0, pad=0)
    return key, addr


def apply_table(em: Emitter, table: tuple[Any, int], key: Any, addr: int, rows: int, cols: int,
                mem: str = "buf") -> None:
    """The activation in place on an int8 tile (rows x cols, contiguous rows)."""
    em.emit("vec.lut", reads=[key, table[0]], writes=[key], dst_mem=mem, dst=addr, dst_stride=cols, src_mem=mem,
            src=addr, src_stride=cols, rows=rows, cols=cols, table=table[1])


def _requant_params(dram: DramImage, mult: np.ndarray, shift: np.ndarray, M: int) -> int:
    par = np.stack([np.broadcast_to(np.asarray(mult, np.int64).reshape(-1), (M,)),
                    np.broadcast_to(np.asarray(shift, np.int64).reshape(-1), (M,))]).astype(np.int32)
    return dram.put(par)


def weight_blocks(dram: DramImage, weights: list[np.ndarray], mb: int) -> list[list[int]]:
    """Each group's weights as column blocks of ``mb`` channels ([K, mb] row-major), one after another
    in DRAM: their addresses."""
    return [[dram.put(w[:, m0:m0 + mb]) for m0 in range(0, w.shape[1], mb)] for w in weights]


def emit_gemm_layer(em: Emitter, cfg: AsicConfig, dram: DramImage, *, name: str, wins: list[Window] | None,
                    a_addr: int, P: int, K: int, weights: list[np.ndarray], bias: np.ndarray | None,
                    mult: np.ndarray, shift: np.ndarray, epi_zp: int, lo: int, hi: int, pad: int,
                    out: int, in_key: Any, out_key: Any, residual: dict[str, Any] | None = None,
                    lut: np.ndarray | None = None, prefetched: tuple[list[list[int]], Any] | None = None
                    ) -> dict[str, Any]:
    """A conv (``wins`` per group) or matmul (``a_addr`` [P, K] row-major) with its fused epilogue.

    ``weights[g]`` is group g's [K, Mg] int8 matrix; ``bias`` the int32 bias of all M channels with the
    input zero point already folded in; ``lut`` an activation table applied after the requantize.
    ``prefetched``: (the weight blocks' DRAM addresses as ``weight_blocks`` laid them out; (address, bytes)
    -> (where a load of those bytes reads, the keys it waits for)) when weights were prefetched."""
    G = len(weights)
    Mg = weights[0].shape[1]
    M = G * Mg
    tiles = choose_gemm_tiles(cfg, P, K, Mg, residual is not None, name)
    tp, kb, mb = tiles.tp, tiles.kb, tiles.mb
    par = _requant_params(dram, mult, shift, M)
    bias_addr = dram.put(bias.astype(np.int32)) if bias is not None else None
    blocks = prefetched[0] if prefetched else weight_blocks(dram, weights, mb)
    locate = prefetched[1] if prefetched else (lambda addr, n: (addr, []))
    s = cfg.sizes()
    ih, wh = s["ispad"] // 2, s["wspad"] // 2
    # two slots of [mult; shift; bias] rows (the array's columns start from the bias row), then the tiles
    acc_par = [0, 3 * mb]
    acc_tile = [6 * mb, 6 * mb + tp * mb]
    bias_row = bias_addr is not None and tiles.engine == "array"
    buf_out = [0, tp * mb]
    buf_res = [2 * tp * mb, 3 * tp * mb]
    em.emit("config", dataflow=cfg.dataflow)
    table = load_table(em, dram, lut)
    n_p, n_k, n_m = math.ceil(P / tp), math.ceil(K / kb), math.ceil(Mg / mb)
    a_cache, w_cache, par_cache = _TwoSlots(), _TwoSlots(), _TwoSlots()
    tile_no = 0
    for g in range(G):
        pairs = [(i, j) for i in range(n_p) for j in range(n_m)] if tiles.order == "pm" else \
            [(i, j) for j in range(n_m) for i in range(n_p)]
        for i, j in pairs:
            p0, p1 = i * tp, min(P, (i + 1) * tp)
            m0, m1 = j * mb, min(Mg, (j + 1) * mb)
            t, m = p1 - p0, m1 - m0
            col = g * Mg + m0  # first output channel of this tile
            ps, hit = par_cache.get((g, j))
            if not hit:
                em.emit("load", writes=[("par", ps)], mem="acc", dst=acc_par[ps], dst_stride=m, src=par + col * 4,
                        src_stride=M * 4, rows=2, cols=m, pad_before=0, pad_after=0, pad=0)
                if bias_row:
                    em.emit("load", writes=[("par", ps)], mem="acc", dst=acc_par[ps] + 2 * m, dst_stride=m,
                            src=bias_addr + col * 4, src_stride=m * 4, rows=1, cols=m, pad_before=0, pad_after=0,
                            pad=0)
            acs = tile_no % 2
            tile_no += 1
            if bias_addr is not None and not bias_row:
                em.emit("load", writes=[("acc", acs)], mem="acc", dst=acc_tile[acs], dst_stride=m,
                        src=bias_addr + col * 4, src_stride=0, rows=t, cols=m, pad_before=0, pad_after=0, pad=0)
            for kk in range(n_k):
                k0, k1 = kk * kb, min(K, (kk + 1) * kb)
                ks, hit = a_cache.get((g, i, kk))
                if not hit:
                    if wins is not None:
                        window_loads(em, wins[g], p0, p1, k0, k1, ks * ih, k1 - k0, pad, [in_key], [("ispad", ks)])
                    else:
                        em.emit("load", reads=[in_key], writes=[("ispad", ks)], mem="ispad", dst=ks * ih,
                                dst_stride=k1 - k0, src=a_addr + p0 * K + k0, src_stride=K, rows=t, cols=k1 - k0,
                                pad_before=0, pad_after=0, pad=0)
                ws, hit = w_cache.get((g, j, kk))
                if not hit:
                    src, w_keys = locate(blocks[g][j] + k0 * m, (k1 - k0) * m)
                    em.emit("load", reads=w_keys, writes=[("wspad", ws)], mem="wspad",
                            dst=ws * wh, dst_stride=m, src=src, src_stride=m, rows=k1 - k0, cols=m, pad_before=0,
                            pad_after=0, pad=0)
                acc_on = int(kk > 0 or (bias_addr is not None and not bias_row))
                if tiles.engine == "vector":
                    em.emit("vec.gemv", reads=[("ispad", ks), ("wspad", ws), ("acc", acs)], writes=[("acc", acs)],
                            dst_mem="acc", dst=acc_tile[acs], dst_stride=m, src_mem="ispad", src=ks * ih,
                            src_stride=k1 - k0, rows=k1 - k0, cols=m, w=ws * wh, w_stride=m, accumulate=acc_on)
                    continue
                start_bias = bias_row and kk == 0
                em.emit("gemm", reads=[("ispad", ks), ("wspad", ws)] + ([("par", ps)] if start_bias else []),
                        writes=[("acc", acs)], a=ks * ih, a_stride=k1 - k0, w=ws * wh, w_stride=m, acc=acc_tile[acs],
                        acc_stride=m, t=t, k=k1 - k0, m=m, accumulate=acc_on,
                        bias=acc_par[ps] + 2 * m if start_bias else -1)
            _epilogue(em, acs, ps, acc_tile, acc_par, buf_out, buf_res, t, m, epi_zp, lo, hi, residual,
                      out + p0 * M + col, M, out_key, table)
    return {"tiles": dataclasses.asdict(tiles), "groups": G}


def _epilogue(em: Emitter, acs: int, ps: int, acc_tile: list[int], acc_par: list[int], buf_out: list[int],
              buf_res: list[int], t: int, m: int, zp: int, lo: int, hi: int, residual: dict[str, Any] | None,
              dst: int, pitch: int, out_key: Any, table: tuple[Any, int] | None = None) -> None:
    em.emit("vec.requant", reads=[("acc", acs), ("par", ps)], writes=[("buf", "out", acs)], dst_mem="buf",
            dst=buf_out[acs], dst_stride=m, src_mem="acc", src=acc_tile[acs], src_stride=m, rows=t, cols=m,
            par=acc_par[ps], zp=zp, lo=lo, hi=hi)
    if table is not None:
        apply_table(em, table, ("buf", "out", acs), buf_out[acs], t, m)
    if residual is not None:
        r = residual
        em.emit("load", reads=[r["key"]], writes=[("buf", "res", acs)], mem="buf", dst=buf_res[acs], dst_stride=m,
                src=r["addr"] + (dst - r["out"]), src_stride=pitch, rows=t, cols=m, pad_before=0, pad_after=0,
                pad=0)
        em.emit("vec.qadd", reads=[("buf", "out", acs), ("buf", "res", acs)], writes=[("buf", "out", acs)],
                dst_mem="buf", dst=buf_out[acs], dst_stride=m, src_mem="buf", src=buf_res[acs], src_stride=m,
                rows=t, cols=m, a_zp=r["a_zp"], b_zp=r["b_zp"], a_mul=r["a_mul"], b_mul=r["b_mul"],
                shift=r["shift"], zp=r["zp"], lo=r["lo"], hi=r["hi"])
    em.emit("store", reads=[("buf", "out", acs)], writes=[out_key], mem="buf", src=buf_out[acs], src_stride=m,
            dst=dst, dst_stride=pitch, rows=t, cols=m)


def emit_tap_layer(em: Emitter, cfg: AsicConfig, dram: DramImage, *, name: str, win: Window, kind: str,
                   out: int, in_key: Any, out_key: Any, pad: int, weights: np.ndarray | None = None,
                   bias: np.ndarray | None = None, mult: Any = None, shift: Any = None, zp: int = 0,
                   lo: int = -128, hi: int = 127, lut: np.ndarray | None = None) -> dict[str, Any]:
    """Depthwise conv (``kind="dw"``: weights [taps, C]) or max pooling (``"max"``) on the vector unit:
    per kernel tap, gather the shifted input tile and multiply-accumulate (or max) it in place."""
    C, P, taps = win.C, win.P, win.kh * win.kw
    s = cfg.sizes()
    ih, acc_el, buf = s["ispad"] // 2, s["acc"] // 4, s["buf"]
    cb = min(C, 8 * cfg.vector_lanes)
    tp = min(P, ih // cb, (acc_el - 4 * cb) // (2 * cb), buf // (2 * cb))
    needs = {"input_spad_kib": (2 * cb, f"2 slots of one input row of {cb} channels"),
             "acc_kib": (4 * 6 * cb, f"2 int32 rows of {cb} channels and their requantization words"),
             "buffer_kib": (2 * cb, f"2 int8 output rows of {cb} channels")}
    if kind == "dw" and taps * cb > s["wspad"] // 2:
        needs["weight_spad_kib"] = (2 * taps * cb, f"2 slots of a {taps}-tap x {cb}-channel depthwise kernel")
        raise TargetError(untileable_message(cfg, name, f"depthwise {win.kh}x{win.kw}, {C} channels", needs))
    if tp <= 0:
        what = "depthwise" if kind == "dw" else "max-pool"
        raise TargetError(untileable_message(cfg, name, f"{what} {win.kh}x{win.kw}, {C} channels", needs))
    par = _requant_params(dram, mult, shift, C) if kind == "dw" else 0
    w_addr = dram.put(weights) if kind == "dw" else 0
    bias_addr = dram.put(bias.astype(np.int32)) if kind == "dw" and bias is not None else None
    acc_par, acc_tile = [0, 2 * cb], [4 * cb, 4 * cb + tp * cb]
    buf_out = [0, tp * cb]
    wh = s["wspad"] // 2
    table = load_table(em, dram, lut)
    n = 0
    ld = 0
    for c0 in range(0, C, cb):
        c1 = min(C, c0 + cb)
        c = c1 - c0
        ws = (c0 // cb) % 2
        if kind == "dw":
            em.emit("load", writes=[("wspad", ws)], mem="wspad", dst=ws * wh, dst_stride=c, src=w_addr + c0,
                    src_stride=C, rows=taps, cols=c, pad_before=0, pad_after=0, pad=0)
            em.emit("load", writes=[("par", ws)], mem="acc", dst=acc_par[ws], dst_stride=c, src=par + c0 * 4,
                    src_stride=C * 4, rows=2, cols=c, pad_before=0, pad_after=0, pad=0)
        for p0 in range(0, P, tp):
            p1 = min(P, p0 + tp)
            t = p1 - p0
            sl = n % 2
            n += 1
            if kind == "dw":
                if bias_addr is not None:
                    em.emit("load", writes=[("acc", sl)], mem="acc", dst=acc_tile[sl], dst_stride=c,
                            src=bias_addr + c0 * 4, src_stride=0, rows=t, cols=c, pad_before=0, pad_after=0, pad=0)
                else:
                    em.emit("vec.mul", reads=[("acc", sl)], writes=[("acc", sl)], dst_mem="acc", dst=acc_tile[sl],
                            dst_stride=c, src_mem="acc", src=acc_tile[sl], src_stride=c, rows=t, cols=c, imm=0)
            for tap in range(taps):
                ks = ld % 2
                ld += 1
                k0 = tap * win.cg + c0
                window_loads(em, win, p0, p1, k0, k0 + c, ks * ih, c, pad, [in_key], [("ispad", ks)])
                if kind == "dw":
                    em.emit("vec.mac", reads=[("ispad", ks), ("wspad", ws), ("acc", sl)], writes=[("acc", sl)],
                            dst_mem="acc", dst=acc_tile[sl], dst_stride=c, src_mem="ispad", src=ks * ih,
                            src_stride=c, rows=t, cols=c, w=ws * wh + tap * c, zp=pad)
                else:
                    em.emit("vec.max", reads=[("ispad", ks), ("buf", "out", sl)], writes=[("buf", "out", sl)],
                            dst_mem="buf", dst=buf_out[sl], dst_stride=c, src_mem="ispad", src=ks * ih,
                            src_stride=c, rows=t, cols=c, init=int(tap == 0))
            if kind == "dw":
                em.emit("vec.requant", reads=[("acc", sl), ("par", ws)], writes=[("buf", "out", sl)], dst_mem="buf",
                        dst=buf_out[sl], dst_stride=c, src_mem="acc", src=acc_tile[sl], src_stride=c, rows=t,
                        cols=c, par=acc_par[ws], zp=zp, lo=lo, hi=hi)
                if table is not None:
                    apply_table(em, table, ("buf", "out", sl), buf_out[sl], t, c)
            em.emit("store", reads=[("buf", "out", sl)], writes=[out_key], mem="buf", src=buf_out[sl],
                    src_stride=c, dst=out + p0 * C + c0, dst_stride=C, rows=t, cols=c)
    return {"tiles": {"tp": tp, "cb": cb}}


def emit_gap_layer(em: Emitter, cfg: AsicConfig, dram: DramImage, *, x: int, N: int, HW: int, C: int, offset: int,
                   mult: Any, shift: Any, zp: int, lo: int, hi: int, out: int, in_key: Any,
                   out_key: Any) -> dict[str, Any]:
    """Global sum pooling on the vector unit (row sums into the accumulator, which starts at ``offset``:
    minus HW x the input zero point), then requantize."""
    s = cfg.sizes()
    ih = s["ispad"] // 2
    cb = min(C, 8 * cfg.vector_lanes)
    rows = max(1, min(HW, ih // cb))
    par = _requant_params(dram, mult, shift, C)
    start = dram.put(np.full(C, offset, np.int32)) if offset else None
    acc_par, acc_row, buf_out = [0, 2 * cb], [4 * cb, 5 * cb], [0, cb]
    ld = n = 0
    for c0 in range(0, C, cb):
        c1 = min(C, c0 + cb)
        c = c1 - c0
        ps = (c0 // cb) % 2
        em.emit("load", writes=[("par", ps)], mem="acc", dst=acc_par[ps], dst_stride=c, src=par + c0 * 4,
                src_stride=C * 4, rows=2, cols=c, pad_before=0, pad_after=0, pad=0)
        for b in range(N):
            sl = n % 2
            n += 1
            if start is not None:
                em.emit("load", writes=[("acc", sl)], mem="acc", dst=acc_row[sl], dst_stride=c, src=start + c0 * 4,
                        src_stride=C * 4, rows=1, cols=c, pad_before=0, pad_after=0, pad=0)
            for r0 in range(0, HW, rows):
                r = min(HW, r0 + rows) - r0
                ks = ld % 2
                ld += 1
                em.emit("load", reads=[in_key], writes=[("ispad", ks)], mem="ispad", dst=ks * ih, dst_stride=c,
                        src=x + (b * HW + r0) * C + c0, src_stride=C, rows=r, cols=c, pad_before=0, pad_after=0,
                        pad=0)
                em.emit("vec.sum", reads=[("ispad", ks), ("acc", sl)], writes=[("acc", sl)], dst_mem="acc",
                        dst=acc_row[sl], dst_stride=c, src_mem="ispad", src=ks * ih, src_stride=c, rows=r, cols=c,
                        accumulate=int(r0 > 0 or start is not None))
            em.emit("vec.requant", reads=[("acc", sl), ("par", ps)], writes=[("buf", "out", sl)], dst_mem="buf",
                    dst=buf_out[sl], dst_stride=c, src_mem="acc", src=acc_row[sl], src_stride=c, rows=1, cols=c,
                    par=acc_par[ps], zp=zp, lo=lo, hi=hi)
            em.emit("store", reads=[("buf", "out", sl)], writes=[out_key], mem="buf", src=buf_out[sl], src_stride=c,
                    dst=out + b * C + c0, dst_stride=C, rows=1, cols=c)
    return {"tiles": {"rows": rows, "cb": cb}}


def flat_pieces(n: int, cols: int, chunk: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(slot, chunk start, offset in the chunk, rows, cols) covering a flat tensor of ``n`` elements in
    chunks of ``chunk`` (alternating two buffer slots), each a block of whole ``cols``-wide rows and a
    last partial row."""
    for i, e0 in enumerate(range(0, n, chunk)):
        e = min(n, e0 + chunk) - e0
        for rows, c, off in ((e // cols, cols, 0), (1, e % cols, e // cols * cols)):
            if rows and c:
                yield i % 2, e0, off, rows, c


def emit_qadd_layer(em: Emitter, cfg: AsicConfig, *, a: int, b: int, n: int, out: int, keys: tuple[Any, Any, Any],
                    attrs: dict[str, Any]) -> dict[str, Any]:
    """A standalone same-shape residual add over flat int8 tensors of ``n`` elements."""
    buf = cfg.sizes()["buf"]
    cols = min(n, 4 * cfg.vector_lanes)
    chunk = max(cols, min(n, buf // 4) // cols * cols)
    slots = [0, chunk]
    res = [2 * chunk, 3 * chunk]
    for sl, e0, off, rows, c in flat_pieces(n, cols, chunk):
        em.emit("load", reads=[keys[0]], writes=[("buf", "out", sl)], mem="buf", dst=slots[sl] + off,
                dst_stride=c, src=a + e0 + off, src_stride=c, rows=rows, cols=c, pad_before=0, pad_after=0, pad=0)
        em.emit("load", reads=[keys[1]], writes=[("buf", "res", sl)], mem="buf", dst=res[sl] + off, dst_stride=c,
                src=b + e0 + off, src_stride=c, rows=rows, cols=c, pad_before=0, pad_after=0, pad=0)
        em.emit("vec.qadd", reads=[("buf", "out", sl), ("buf", "res", sl)], writes=[("buf", "out", sl)],
                dst_mem="buf", dst=slots[sl] + off, dst_stride=c, src_mem="buf", src=res[sl] + off, src_stride=c,
                rows=rows, cols=c, **attrs)
        em.emit("store", reads=[("buf", "out", sl)], writes=[keys[2]], mem="buf", src=slots[sl] + off,
                src_stride=c, dst=out + e0 + off, dst_stride=c, rows=rows, cols=c)
    return {"tiles": {"chunk": chunk}}

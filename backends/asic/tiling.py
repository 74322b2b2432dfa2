"""Tile and loop-order choice for a GEMM layer (P output rows x K reduction x M output channels).

A candidate is (tp, kb, mb): rows per tile, reduction block, output-channel block. It must fit half
of each scratchpad (so the next tile loads while this one computes): tp*kb int8 in half the input
scratchpad, kb*mb in half the weight scratchpad, two tp*mb int32 tiles plus their requantization
parameters in the accumulator, and two output and two residual tiles in the on-chip buffer. For
each candidate both loop orders (rows outer or channels outer; the reduction is always innermost so
partial sums stay in the accumulator) are costed by the DRAM bytes they move with two-slot tile
caches, and the estimated time max(compute, DMA) picks the winner (ties: fewer bytes).
"""

from __future__ import annotations

import dataclasses
import math

from nnc.ir import TargetError

from .config import AsicConfig, kib_for
from .sim.timing import gemm_folds


@dataclasses.dataclass(frozen=True)
class GemmTiles:
    tp: int
    kb: int
    mb: int
    order: str          # "pm": row tiles outer; "mp": channel blocks outer
    dram_bytes: int     # estimated bytes moved (A, W, outputs)
    compute_cycles: int
    engine: str = "array"   # "vector": a matrix-vector product (P = 1) as vec.gemv on the vector unit


def _sizes(total: int, block: int) -> list[tuple[int, int]]:
    """[(size, count)] of the blocks of ``total`` cut every ``block``."""
    full, rest = divmod(total, block)
    return [(block, full)] + ([(rest, 1)] if rest else [])


def _candidates(total: int, unit: int, extra: tuple[int, ...] = ()) -> list[int]:
    out = {total}
    b = unit
    while b < total:
        out.add(b)
        b *= 2
    out.update(x for x in extra if 0 < x < total)
    return sorted(out)


def _loads(n_outer: int, n_inner: int, n_k: int, operand_outer: bool) -> int:
    """Tile loads of an operand in a loop (outer, inner, k) with a two-slot cache."""
    if operand_outer:  # indexed by (outer, k): reused across the inner loop when its k tiles fit
        return n_outer * n_k if n_k <= 2 else n_outer * n_inner * n_k
    # indexed by (inner, k): the whole inner sweep must fit the cache to survive the next outer step
    return n_inner * n_k if n_inner * n_k <= 2 else n_outer * n_inner * n_k


def _tile_cycles(cfg: AsicConfig, engine: str, t: int, k: int, m: int) -> int:
    if engine == "array":
        return gemm_folds(cfg, t, k, m)[1]
    return math.ceil(k * m / cfg.vector_lanes) + cfg.vector_overhead_cycles


def choose_gemm_tiles(cfg: AsicConfig, P: int, K: int, M: int, residual: bool = False,
                      what: str = "layer") -> GemmTiles:
    """The best tiles on the array, or for a matrix-vector product (P = 1) on the vector unit when its
    ``vector_lanes`` MACs a cycle beat the array's folds (each fold of a weight-stationary array
    streams one row for 2R + C - 1 cycles)."""
    best = _choose(cfg, P, K, M, residual, what, "array")
    if P == 1:
        vec = _choose(cfg, P, K, M, residual, what, "vector")
        key = (lambda g: max(g.compute_cycles, g.dram_bytes / cfg.dram_bytes_per_cycle))
        if key(vec) < key(best):
            return vec
    return best


def _choose(cfg: AsicConfig, P: int, K: int, M: int, residual: bool, what: str, engine: str) -> GemmTiles:
    R, C = cfg.array_rows, cfg.array_cols
    s = cfg.sizes()
    ih, wh, acc_el, buf = s["ispad"] // 2, s["wspad"] // 2, s["acc"] // 4, s["buf"]
    best: tuple | None = None
    bpc = cfg.dram_bytes_per_cycle
    for mb in _candidates(M, C, (C // 2, C // 4)):
        if mb % C and mb != M and mb > C:
            continue
        for kb in _candidates(K, R, (R // 2, R // 4, R // 8)):
            if kb * mb > wh:
                continue
            for tp in _candidates(P, 1, (R, 2 * R, 4 * R)):
                if tp * kb > ih or 2 * tp * mb + 6 * mb > acc_el or (4 if residual else 2) * tp * mb > buf:
                    continue
                n_p, n_k, n_m = math.ceil(P / tp), math.ceil(K / kb), math.ceil(M / mb)
                a_tile, w_tile = P * K / (n_p * n_k), K * M / (n_k * n_m)
                out_bytes = P * M * (2 if residual else 1) + M * 12
                compute = sum(_tile_cycles(cfg, engine, t, k, m) * a * b * c
                              for t, a in _sizes(P, tp) for k, b in _sizes(K, kb) for m, c in _sizes(M, mb))
                for order in ("pm", "mp"):
                    if order == "pm":
                        a_loads, w_loads = _loads(n_p, n_m, n_k, True), _loads(n_p, n_m, n_k, False)
                    else:
                        w_loads, a_loads = _loads(n_m, n_p, n_k, True), _loads(n_m, n_p, n_k, False)
                    traffic = int(a_loads * a_tile + w_loads * w_tile + out_bytes)
                    est = max(compute, traffic / bpc)
                    key = (est, traffic, n_p * n_k * n_m)
                    if best is None or key < best[0]:
                        best = (key, GemmTiles(tp, kb, mb, order, traffic, compute, engine))
    if best is None:
        raise TargetError(untileable_message(cfg, what, f"GEMM {P}x{K}x{M}", _smallest_needs(cfg, K, M, residual)))
    return best[1]


def _smallest_needs(cfg: AsicConfig, K: int, M: int, residual: bool) -> dict[str, tuple[int, str]]:
    """{config field: (bytes it needs, what for)} for the smallest GEMM tile: one row of the smallest
    reduction block ``kb`` and channel block ``mb`` the tiler tries (double-buffered where it is)."""
    R, C = cfg.array_rows, cfg.array_cols
    kb = min(_candidates(K, R, (R // 2, R // 4, R // 8)))
    mb = min(_candidates(M, C, (C // 2, C // 4)))
    return {"input_spad_kib": (2 * kb, f"2 slots of a 1x{kb} int8 input tile"),
            "weight_spad_kib": (2 * kb * mb, f"2 slots of a {kb}x{mb} int8 weight tile"),
            "acc_kib": (4 * (2 * mb + 6 * mb), f"2 int32 1x{mb} output tiles and 6 x {mb} requantization and bias "
                                               "words"),
            "buffer_kib": ((4 if residual else 2) * mb, f"{4 if residual else 2} int8 1x{mb} output/residual tiles")}


def untileable_message(cfg: AsicConfig, what: str, shape: str, needs: dict[str, tuple[int, str]]) -> str:
    """"layer X cannot be tiled" naming each config field too small for the smallest tile and what it
    must be raised to (the fields are in KiB)."""
    # the tiles get the buffer less its resident-activation region
    needs = {f: (b + (cfg.act_buffer_kib * 1024 if f == "buffer_kib" else 0), why) for f, (b, why) in needs.items()}
    short = [f"{f} >= {kib_for(b)} (has {getattr(cfg, f)}; needs {b} B for {why})"
             for f, (b, why) in needs.items() if b > getattr(cfg, f) * 1024]
    if not short:  # each fits alone: the combination (or the candidate grid) fails
        short = [f"{f}: {b} B for {why}" for f, (b, why) in needs.items()]
    return (f"asic: layer {what} ({shape}) cannot be tiled on config {cfg.name!r}: the smallest tile needs "
            + "; ".join(short))

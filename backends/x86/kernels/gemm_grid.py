"""How emit_gemm (gemm.py) splits a product into tasks: a small cost model of packing, streaming
and multiply-adds, simulated over the threads for each candidate grid of M and N chunks.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .gemm import Blocking


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


# rough costs (seconds) for choosing the task grid: one multiply-add in the microkernel, packing one
# element of B (an implicit-im2col gather costs more than a strided copy) or of A, reading one
# pre-packed element (each task streams its share of a packed weight from L3)
_MAC_S, _PACK_B_S, _PACK_IM2COL_S, _PACK_A_S, _READ_S, _TASK_S = 1.5e-11, 1e-10, 3e-10, 1e-10, 1e-10, 3e-6
# a pre-packed B of at least this many bytes is worth splitting however few the multiply-adds: a
# matrix-vector product (an MLP at batch 1) is bound by streaming its weights, and each core then
# streams its own share (and may keep it in its own L2)
STREAMED_SPLIT_BYTES = 1 << 19


def task_grid(batch: int, M: int, N: int, K: int, blk: Blocking, threads: int,
              pack_a: bool = True, pack_b: bool | str = True) -> tuple[int, int]:
    """How many M and N chunks (whole tiles) to split each batch item into.

    One task when there is one thread or little work: every extra task packs its operands again.
    Otherwise the grid whose simulated schedule finishes first: each task costs its (tile-padded)
    multiply-adds, the packing it does (``pack_a``: its rows of A; ``pack_b``: its columns of B,
    "im2col" for conv's gathers) and its reads of pre-packed operands; tasks go to the least-loaded
    thread, largest first (the pool hands them out dynamically). Every chunk of M packs B again and
    every chunk of N streams A again, so the split follows the cheaper of the two, and uneven
    splits (7 column panels over 2 threads) are refined until they balance. (More tasks than that
    for balance under load measured slower: each one packs and streams its operands again.) A
    product with few multiply-adds still splits when it streams a large pre-packed B
    (``STREAMED_SPLIT_BYTES``)."""
    cores = threads
    streamed = 0 if pack_b else batch * K * N * blk.esize
    if cores <= 1 or (2 * batch * M * N * K < 2e6 and streamed < STREAMED_SPLIT_BYTES):
        return 1, 1
    mt, nt = _ceil(M, blk.MR), _ceil(N, blk.NR)
    pb = 0.0 if not pack_b else (_PACK_IM2COL_S if pack_b == "im2col" else _PACK_B_S)
    pa = _PACK_A_S if pack_a else _READ_S
    found: list[tuple[float, int, int, int]] = []
    seen = set()
    for tm in range(1, min(mt, 4 * cores) + 1):
        mchunk = _ceil(mt, tm) * blk.MR
        for tn in range(1, min(nt, 8 * cores) + 1):
            nchunk = _ceil(nt, tn) * blk.NR
            grid = (_ceil(M, mchunk), _ceil(N, nchunk))
            if grid in seen or batch * grid[0] * grid[1] > 64 * cores:
                continue
            seen.add(grid)
            costs = []
            for i in range(grid[0]):
                rows = _ceil(min(mchunk, M - i * mchunk), blk.MR) * blk.MR
                for j in range(grid[1]):
                    cols = _ceil(min(nchunk, N - j * nchunk), blk.NR) * blk.NR
                    # A is used once per NC block of columns; pre-packed B is re-read per MC block of rows
                    a_cost = rows * K * pa * _ceil(cols, blk.NC)
                    b_cost = cols * K * (pb if pb else _READ_S * _ceil(rows, blk.MC))
                    costs.append(rows * cols * K * _MAC_S + a_cost + b_cost + _TASK_S)
            load = [0.0] * cores
            for c in sorted(costs * batch, reverse=True):
                load[load.index(min(load))] += c
            found.append((max(load), len(costs) * batch, grid[0], grid[1]))
    if not found:
        return 1, 1
    _, _, tm, tn = min(found)  # the fastest; on a tie the fewest tasks (each packs again)
    return tm, tn

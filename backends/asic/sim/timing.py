"""The timing layer of the simulator: one in-order queue per engine, dependency tokens, and the cost
of each instruction.

The model walks the program once in order (a token is always pushed by an earlier instruction than
the one that pops it). An instruction starts when its queue is free and every token it pops has
arrived; tokens are pushed when the instruction completes. Costs:

- DMA (load/store): the load and the store engine share the DRAM bandwidth (and the resident
  activations' port): a transfer starts when its engine and its channel are free (``Channel``); the
  engine is busy for bytes / (bandwidth x efficiency / clock) cycles and the data
  lands a fixed latency later (a broadcast load reads its one DRAM row and fills the rows on chip at
  one ``array_cols``-wide row per cycle) (requests are pipelined, so latency is paid per transfer, not per byte);
  in ideal-bandwidth mode both are zero.
- prefetch (weights into the resident region, its own queue): bytes at the DRAM bandwidth, on the
  DRAM channel with the two DMA engines but after them (``simulate_timing``), plus the latency.
- GEMM: per fold of the array, weight-stationary ``2R + C + T - 2`` cycles (T rows streamed, a fold
  being one R x C block of weights), output-stationary ``R + C + T - 2`` (a fold is an R x C block of
  outputs, T the reduction length), as SCALE-Sim v2 counts them.
- dwconv (the array's depthwise mode): column c holds channel c, the rows hold the kernel's taps in
  g = floor(R / taps) groups, one output pixel per group and step, so ``2R + C + ceil(pixels / g) - 2``
  cycles: a weight-stationary fold whose T is the steps.
- vector ops: ceil(elements / lanes) plus a fixed issue overhead (``vec.quant``: ceil(4 x elements /
  lanes), ``QUANT_LANE_OPS`` lane operations per FP32 element).
"""

from __future__ import annotations

import bisect
import collections
import dataclasses
import math
from typing import Callable

import numpy as np

from ..config import AsicConfig
from ..isa import ACT_BASE, QUANT_LANE_OPS, QUEUES, Instr
from .functional import SimError


def gemm_folds(cfg: AsicConfig, t: int, k: int, m: int) -> tuple[int, int]:
    """(folds, cycles) of one GEMM [t,k] x [k,m] on the array."""
    R, C = cfg.array_rows, cfg.array_cols
    if cfg.dataflow == "ws":
        folds = math.ceil(k / R) * math.ceil(m / C)
        return folds, folds * (2 * R + C + t - 2)
    folds = math.ceil(t / R) * math.ceil(m / C)
    return folds, folds * (R + C + k - 2)


def dw_groups(cfg: AsicConfig, taps: int) -> int:
    """Output pixels the array's depthwise mode computes per column and step (taps <= rows)."""
    return max(1, cfg.array_rows // taps)


def dwconv_steps(cfg: AsicConfig, taps: int, pixels: int) -> int:
    return math.ceil(pixels / dw_groups(cfg, taps))


def dwconv_cycles(cfg: AsicConfig, taps: int, pixels: int) -> int:
    """Cycles of one ``dwconv`` on the array: one weight-stationary fold streaming its steps."""
    return 2 * cfg.array_rows + cfg.array_cols - 2 + dwconv_steps(cfg, taps, pixels)


def dma_bytes(ins: Instr) -> int:
    """Bytes the transfer moves between DRAM and SRAM; a broadcast load (``src_stride=0``: one DRAM row
    written to every row, e.g. a bias into the accumulator) reads its row once."""
    a = ins.args
    itemsize = 4 if a["mem"] == "acc" else 1
    if ins.op == "load" and a["src_stride"] == 0 and a["rows"] > 1:
        return a["cols"] * itemsize
    return a["rows"] * a["cols"] * itemsize


def on_chip(ins: Instr) -> bool:
    """Whether a load/store's far side is the buffer's resident-activation region, not DRAM."""
    return ins.args["src" if ins.op == "load" else "dst"] >= ACT_BASE


def _dma_cycles(cfg: AsicConfig, ins: Instr) -> int:
    """DRAM bytes at the sustained bandwidth (resident activations: at ``act_buffer_gbps``); a broadcast
    load also fills its rows on chip, one ``array_cols``-wide row per cycle (the accumulator's write port)."""
    bpc = cfg.act_bytes_per_cycle if on_chip(ins) else cfg.dram_bytes_per_cycle
    cycles = math.ceil(dma_bytes(ins) / bpc)
    a = ins.args
    if ins.op == "load" and a["src_stride"] == 0 and a["rows"] > 1:
        cycles = max(cycles, a["rows"] * math.ceil(a["cols"] / cfg.array_cols))
    return cycles


def cost(cfg: AsicConfig, ins: Instr) -> tuple[int, int]:
    """(cycles the engine is busy, extra cycles until the result is visible)."""
    op = ins.op
    if op in ("load", "store"):
        if cfg.ideal_bandwidth:
            return 0, 0
        return _dma_cycles(cfg, ins), 0 if on_chip(ins) else cfg.dram_latency_cycles
    if op == "gemm":
        a = ins.args
        return gemm_folds(cfg, a["t"], a["k"], a["m"])[1], 0
    if op == "prefetch":
        if cfg.ideal_bandwidth:
            return 0, 0
        return math.ceil(ins.args["bytes"] / cfg.dram_bytes_per_cycle), cfg.dram_latency_cycles
    if op == "dwconv":
        a = ins.args
        return dwconv_cycles(cfg, a["kh"] * a["kw"], a["rows"] * a["ow"]), 0
    if op.startswith("vec."):
        a = ins.args
        ops = QUANT_LANE_OPS if op == "vec.quant" else 1
        return math.ceil(a["rows"] * a["cols"] * ops / cfg.vector_lanes) + cfg.vector_overhead_cycles, 0
    if op == "config":
        return 1, 0
    return 0, 0


class Channel:
    """A bandwidth both DMA engines share (DRAM, or the buffer's resident-activation port): the busy
    intervals of the transfers placed so far; a transfer takes the earliest gap of its length at or
    after the cycle it is ready, so the load and the store engine together never move more bytes than
    the bandwidth."""

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []

    def reserve(self, ready: int, length: int) -> int:
        """Book ``length`` cycles from the earliest free cycle >= ``ready``; return that cycle."""
        if length <= 0:
            return ready
        starts, ends = self.starts, self.ends
        i = bisect.bisect_right(ends, ready)
        t = ready
        while i < len(starts) and starts[i] < t + length:
            t = max(t, ends[i])
            i += 1
        # merge with the neighbours it touches
        lo, hi = i, i
        s, e = t, t + length
        if lo > 0 and ends[lo - 1] >= s:
            lo -= 1
            s = starts[lo]
        if hi < len(starts) and starts[hi] <= e:
            e = ends[hi]
            hi += 1
        starts[lo:hi] = [s]
        ends[lo:hi] = [e]
        return t


def channel_cycles(cfg: AsicConfig, ins: Instr) -> int:
    """Cycles a transfer holds its channel: its far-side bytes at the channel's bandwidth (a broadcast
    load's on-chip fill is not channel time)."""
    bpc = cfg.act_bytes_per_cycle if on_chip(ins) else cfg.dram_bytes_per_cycle
    return math.ceil(dma_bytes(ins) / bpc)


@dataclasses.dataclass
class Timing:
    start: np.ndarray   # cycle each instruction starts
    end: np.ndarray     # cycle its result is visible (tokens pushed)
    busy: np.ndarray    # cycles its engine is occupied
    stall: np.ndarray   # cycles it waited for tokens after its queue was free
    cycles: int         # when the last instruction completes


def simulate_timing(cfg: AsicConfig, instrs: list[Instr], start_cycle: int = 0,
                    not_before: Callable[[Instr], int] | None = None) -> Timing:
    """Times the program; ``not_before(load)`` is the cycle a DRAM load's bytes are there (an input the
    host streams in) or 0. Prefetches have the lowest priority on the DRAM channel: each is booked only
    when an instruction first needs its token (or at the end of the segment), so every transfer program
    order put before that point has its bytes booked first and the prefetch fills the gaps they left."""
    n = len(instrs)
    start = np.zeros(n, np.int64)
    end = np.zeros(n, np.int64)
    busy = np.zeros(n, np.int64)
    stall = np.zeros(n, np.int64)
    free = {q: start_cycle for q in QUEUES}
    channels = {"dram": Channel(), "act": Channel()}
    # tokens: the cycle they arrive; from the prefetch queue, the index of the (maybe unbooked) prefetch
    fifo: dict[tuple[str, str], collections.deque] = collections.defaultdict(collections.deque)
    pending: collections.deque[tuple[int, int]] = collections.deque()   # (prefetch index, its tokens' cycle)
    last = start_cycle

    def settle(upto: int) -> None:
        nonlocal last
        while pending and pending[0][0] <= upto:
            i, tok = pending.popleft()
            ready = free["prefetch"]
            occ, lat = cost(cfg, instrs[i])
            t = channels["dram"].reserve(max(ready, tok), occ)
            start[i], busy[i], stall[i] = t, occ, t - ready
            free["prefetch"] = t + occ
            end[i] = t + occ + lat
            last = max(last, int(end[i]))

    for i, ins in enumerate(instrs):
        if ins.op == "finish":
            settle(i)
            left = {k: len(v) for k, v in fifo.items() if v}
            if left:
                raise SimError(f"instruction {i} (finish): unconsumed tokens {left}")
            t = max(last, *free.values())
            start[i] = end[i] = t
            for q in QUEUES:
                free[q] = t
            continue
        q = ins.queue
        tok = start_cycle
        for src in ins.pop:
            d = fifo[(src, q)]
            if not d:
                raise SimError(f"instruction {i} ({ins.op}, queue {q}) pops a {src}->{q} token nobody pushed")
            v = d.popleft()
            if src == "prefetch":
                settle(v)
                v = end[v]
            tok = max(tok, int(v))
        if ins.op == "prefetch":
            pending.append((i, tok))
            for dst in ins.push:
                fifo[(q, dst)].append(i)
            continue
        ready = free[q]
        t = max(ready, tok)
        if not_before is not None and ins.op == "load" and not on_chip(ins):
            t = max(t, not_before(ins))
        occ, lat = cost(cfg, ins)
        if occ and ins.op in ("load", "store"):
            # wait for the shared channel: the transfer's bytes start moving when it is free
            hold = min(occ, channel_cycles(cfg, ins))
            t = channels["act" if on_chip(ins) else "dram"].reserve(t, hold)
        start[i] = t
        busy[i] = occ
        stall[i] = t - ready
        free[q] = t + occ
        end[i] = t + occ + lat
        last = max(last, end[i])
        for dst in ins.push:
            fifo[(q, dst)].append(end[i])
    settle(n)
    left = {k: len(v) for k, v in fifo.items() if v}
    if left:
        raise SimError(f"unconsumed tokens at the end of the program: {left}")
    return Timing(start, end, busy, stall, int(max(last, *free.values())))

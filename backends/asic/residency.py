"""Which activations stay on the chip: first-fit placement in the buffer's resident-activation region
(``act_buffer_kib``) over the layers' schedule.

A value produced by a chip layer whose every reader is a chip layer (not a host op, not a graph
output) is placed in the region if a free range holds it at the moment its producer runs; it is
freed after its last reader. Layers reach the region through the same DMA instructions as DRAM
(addresses from ``isa.ACT_BASE``), at ``act_buffer_gbps`` and without DRAM latency or energy. A
value placed where earlier values lived also "writes" their dependency keys, so its stores wait for
the last reads of what it overwrites (the emitter's write-after-read tokens). ``reserve`` gives the
weight prefetch (prefetch.py) a range from the top of a free range, leaving room for the activations
made before its reader runs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.ir import Op, Value

from .partition import Layer

ALIGN = 64


class ResidentActivations:
    def __init__(self, size: int, items: list[tuple[int, Any]], alias: dict[int, Value], outputs: list[Value]):
        self.size = size
        self.pinned: set[int] = {id(alias.get(id(v), v)) for v in outputs}   # must be in DRAM
        self.last: dict[int, int] = {}                                        # value id -> last reader index
        for idx, (_, item) in enumerate(items):
            vals = item.operands if isinstance(item, Op) else item.inputs
            for v in vals:
                r = alias.get(id(v), v)
                if isinstance(item, Op):
                    self.pinned.add(id(r))
                else:
                    self.last[id(r)] = idx
        self.free: list[tuple[int, int]] = [(0, size)] if size > 0 else []    # (start, end), sorted
        self.live: dict[Any, tuple[int, int, int]] = {}                       # value id -> (start, end, last)
        self.history: list[tuple[int, int, Any]] = []                         # (start, end, key) ever placed
        self.peak = 0

    def _release(self, idx: int) -> None:
        for vid in [v for v, (_, _, last) in self.live.items() if last < idx]:
            s, e, _ = self.live.pop(vid)
            self.free.append((s, e))
        self.free.sort()
        merged: list[tuple[int, int]] = []
        for s, e in self.free:
            if merged and merged[-1][1] == s:
                merged[-1] = (merged[-1][0], e)
            else:
                merged.append((s, e))
        self.free = merged

    def place(self, layer: Layer, idx: int, key: Any) -> tuple[int, list[Any]] | None:
        """(offset in the region, keys of the values it overwrites) for ``layer``'s output produced at
        schedule position ``idx``, or None when it goes to DRAM."""
        v = layer.output
        self._release(idx)
        if id(v) in self.pinned or v.type.shape is None:
            return None
        n = int(np.prod([int(d) for d in v.type.shape])) * v.type.dtype.itemsize
        return self._fit(n, id(v), self.last.get(id(v), idx), key)

    def reserve(self, nbytes: int, idx: int, last: int, key: Any, least: int,
                keep: int) -> tuple[int, list[Any], int] | None:
        """A range for prefetched weights from schedule position ``idx`` until the layer at ``last`` has
        read them, leaving a free range of ``keep`` bytes (for the activations produced meanwhile):
        ``nbytes`` if that fits, else as many as fit if at least ``least``; (offset, keys of the values it
        overwrites, bytes) or None."""
        self._release(idx)
        best: tuple[int, int] | None = None   # (bytes, index of the free range)
        for i, (s, e) in enumerate(self.free):
            others = max((e2 - s2 for k, (s2, e2) in enumerate(self.free) if k != i), default=0)
            room = (e - s) if others >= keep else (e - s) - keep
            n = min(nbytes, room // ALIGN * ALIGN)
            if n >= max(least, 1) and (best is None or n > best[0]):
                best = (n, i)
            if n == nbytes:
                break
        if best is None:
            return None
        n, i = best
        # from the top of the range: the activations are placed first-fit from the bottom
        e = self.free[i][1]
        s = e - n
        self.free[i] = (self.free[i][0], s)
        self.live[key] = (s, e, last)
        over = [k for (hs, he, k) in self.history if hs < s + n and s < he]
        self.history.append((s, s + n, key))
        self.peak = max(self.peak, s + n)
        return s, over, n

    def _fit(self, nbytes: int, owner: Any, last: int, key: Any) -> tuple[int, list[Any]] | None:
        n = -(-nbytes // ALIGN) * ALIGN
        for i, (s, e) in enumerate(self.free):
            if e - s >= n:
                self.free[i] = (s + n, e)
                self.live[owner] = (s, s + n, last)
                over = [k for (hs, he, k) in self.history if hs < s + n and s < he]
                self.history.append((s, s + n, key))
                self.peak = max(self.peak, s + n)
                return s, over
        return None

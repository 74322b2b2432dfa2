"""The instruction emitter: program order, dependency tokens derived from what each instruction reads
and writes, and the DRAM image.

Code generation names the storage an instruction touches by key (a scratchpad slot such as
``("ispad", 1)``, or a DRAM tensor ``("dram", 7)``). For each instruction the emitter finds, per other
queue, the latest earlier instruction it conflicts with (read-after-write, write-after-read,
write-after-write) and links the two with a token, unless an earlier token between the same queues
already covers it (queues run in order). Tokens therefore always flow from an earlier to a later
instruction and match FIFO-wise, which the timing layer checks.
"""

from __future__ import annotations

from typing import Any, Hashable, Iterable

import numpy as np

from .isa import Instr, make

Key = Hashable


def _shared_mem(key: Key) -> str | None:
    """The on-chip memory whose layout changes from layer to layer, for a slot key."""
    head = key[0] if isinstance(key, tuple) else key
    return {"acc": "acc", "par": "acc", "buf": "buf"}.get(head)


class DramImage:
    """A bump allocator over DRAM with the initial contents (weights, biases, requant parameters)."""

    align = 64

    def __init__(self) -> None:
        self.size = 0
        self.chunks: list[tuple[int, bytes]] = []

    def alloc(self, nbytes: int) -> int:
        addr = self.size
        self.size += -(-max(nbytes, 1) // self.align) * self.align
        return addr

    def put(self, array: np.ndarray) -> int:
        data = np.ascontiguousarray(array).tobytes()
        addr = self.alloc(len(data))
        self.chunks.append((addr, data))
        return addr

    def image(self) -> np.ndarray:
        img = np.zeros(self.size, np.uint8)
        for addr, data in self.chunks:
            img[addr:addr + len(data)] = np.frombuffer(data, np.uint8)
        return img


class Emitter:
    def __init__(self) -> None:
        self.instrs: list[Instr] = []
        self.layer = -1
        # a key -> the keys its writes also count as writing (a resident value over earlier ones' bytes)
        self.also_writes: dict[Key, list[Key]] = {}
        self._reset()

    def _reset(self) -> None:
        self._writer: dict[Key, int] = {}
        self._readers: dict[Key, dict[str, int]] = {}
        self._waited: dict[tuple[str, str], int] = {}
        self._legacy: dict[str, dict[str, int]] = {}   # memory -> queue -> last access by earlier layers
        self._synced: set[tuple[str, str]] = set()     # (memory, queue) already ordered after them
        self._cur_layer = self.layer

    def _new_layer(self) -> None:
        """Layers lay out the accumulator and buffer differently, so a slot key of one layer may overlap
        another's: forget the old keys, and order each queue's first access to such a memory in the new
        layer after every access of the earlier layers (queues are in order, so once is enough)."""
        for k in [k for k in self._writer.keys() | self._readers.keys() if _shared_mem(k)]:
            leg = self._legacy.setdefault(_shared_mem(k), {})  # type: ignore[arg-type]
            w = self._writer.pop(k, None)
            if w is not None:
                q = self.instrs[w].queue
                leg[q] = max(leg.get(q, -1), w)
            for q, i in self._readers.pop(k, {}).items():
                leg[q] = max(leg.get(q, -1), i)
        self._synced = set()
        self._cur_layer = self.layer

    def emit(self, op: str, reads: Iterable[Key] = (), writes: Iterable[Key] = (), waits: Iterable[Key] = (),
             **args: Any) -> Instr:
        """Append an instruction that reads and writes ``reads``/``writes``; it also waits for every
        access to ``waits`` (storage it overwrites whose old contents are dead) without becoming their
        writer."""
        ins = make(op, self.layer, **args)
        j = len(self.instrs)
        q = ins.queue
        need: dict[str, int] = {}

        def dep(i: int | None) -> None:
            if i is None:
                return
            qi = self.instrs[i].queue
            if qi != q and i > need.get(qi, -1):
                need[qi] = i

        reads, writes = list(reads), list(writes)
        writes += [k2 for k in writes for k2 in self.also_writes.get(k, ())]
        if self.layer != self._cur_layer:
            self._new_layer()
        for k in reads + writes:
            mem = _shared_mem(k)
            if mem and (mem, q) not in self._synced:
                self._synced.add((mem, q))
                for i in self._legacy.get(mem, {}).values():
                    dep(i)
        for k in reads:
            dep(self._writer.get(k))
        for k in [*writes, *waits]:
            dep(self._writer.get(k))
            for i in self._readers.get(k, {}).values():
                dep(i)
        pops = []
        for qi, i in sorted(need.items()):
            if i > self._waited.get((qi, q), -1):
                self._waited[(qi, q)] = i
                src = self.instrs[i]
                src.push = src.push + (q,)
                pops.append(qi)
        ins.pop = tuple(pops)
        for k in reads:
            self._readers.setdefault(k, {})[q] = j
        for k in writes:
            self._writer[k] = j
            self._readers[k] = {}
        self.instrs.append(ins)
        return ins

    def finish(self) -> None:
        """End a segment: every queue drains; no token crosses the barrier."""
        if self.instrs and self.instrs[-1].op != "finish":
            self.instrs.append(make("finish", self.layer))
        self._reset()

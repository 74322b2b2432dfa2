"""Where every value lives at run time: an input, an output, the arena, or the weights blob.

The arena offsets come from the memory planner (``passes/plan_memory.py``); constants are packed
into one 64-byte-aligned weights blob at compile time. The generated entry point receives the base
pointers and computes each kernel's argument pointers from this table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nnc.ir import Graph, Module, Value
from nnc.passes.liveness import aligned
from nnc.passes.plan_memory import MemoryPlan, plan_graph


@dataclass(frozen=True)
class Slot:
    kind: str  # "input" | "output" | "arena" | "weights"
    index: int  # input/output position, or byte offset into arena/weights


@dataclass
class StorageMap:
    slots: dict[int, Slot]  # id(value) -> slot
    weights: np.ndarray  # uint8 blob
    weight_offsets: dict[str, int]
    plan: MemoryPlan
    output_copies: list[tuple[int, Value]]  # outputs whose value is stored elsewhere: (output index, value)

    _spare: np.ndarray | None = field(default=None, repr=False)  # capacity behind ``weights``

    def slot(self, v: Value) -> Slot:
        return self.slots[id(v)]

    def add_weights(self, module: Module, name: str, array: np.ndarray) -> int:
        """Append a constant that kernels read but no const op produces (weights pre-packed at
        compile time) to the pool and the blob; return its byte offset in the blob.

        The blob grows by doubling its capacity, so many packed weights stay linear-time."""
        key = module.add_constant(name, np.ascontiguousarray(array))
        data = module.constants[key].reshape(-1).view(np.uint8)
        off = aligned(len(self.weights))
        end = off + aligned(max(data.nbytes, 1))
        if self._spare is None or len(self._spare) < end:
            spare = np.zeros(max(end, 2 * len(self.weights)), dtype=np.uint8)
            spare[:len(self.weights)] = self.weights
            self._spare = spare
        self._spare[off:off + data.nbytes] = data
        self.weights = self._spare[:end]
        self.weight_offsets[key] = off
        return off

    @property
    def arena_bytes(self) -> int:
        return self.plan.arena_bytes


def assign_storage(module: Module, g: Graph) -> StorageMap:
    plan = plan_graph(g)
    slots: dict[int, Slot] = {}
    inputs = [p for p in g.params]
    for i, p in enumerate(inputs):
        slots[id(p)] = Slot("input", i)
    # constants: pack the pool entries that const ops read
    offsets: dict[str, int] = {}
    total = 0
    for op in g.ops:
        if op.opname == "const":
            key = op.attrs["ref"]
            if key not in offsets:
                offsets[key] = total
                total += aligned(max(int(module.constants[key].nbytes), 1))
    blob = np.zeros(max(total, 64), dtype=np.uint8)
    for key, off in offsets.items():
        arr = np.ascontiguousarray(module.constants[key])
        blob[off:off + arr.nbytes] = arr.reshape(-1).view(np.uint8)
    for op in g.ops:
        if op.opname == "const":
            slots[id(op.results[0])] = Slot("weights", offsets[op.attrs["ref"]])
    # outputs: the producing op writes straight into the caller's output array, once
    copies: list[tuple[int, Value]] = []
    for j, v in enumerate(g.outputs):
        if id(v) in slots or v.producer is None:
            copies.append((j, v))  # a parameter, a constant, or a value already returned
        else:
            slots[id(v)] = Slot("output", j)
    for op in g.ops:
        for r in op.results:
            if id(r) not in slots:
                off = plan.offset_of(r)
                if off is None:
                    raise AssertionError(f"%{r.name} has no storage")
                slots[id(r)] = Slot("arena", off)
    return StorageMap(slots, blob, offsets, plan, copies)

"""Where every value lives at run time: an input, an output, the arena, or the weights blob.

The arena offsets come from the memory planner (``passes/plan_memory.py``); constants are packed
into one 64-byte-aligned weights blob at compile time. The generated entry point receives the base
pointers and computes each kernel's argument pointers from this table.
"""

from __future__ import annotations

from dataclasses import dataclass

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

    def slot(self, v: Value) -> Slot:
        return self.slots[id(v)]

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

"""``plan-memory``: place every intermediate buffer at an offset in one arena.

Liveness comes from ``liveness.py`` (in-place reuse only where an op declares it legal). Two greedy
placements are tried, as TFLite and XLA do, and the smaller arena is kept:

- greedy-by-size: largest buffers first, each at the lowest offset that does not collide with an
  already placed buffer whose lifetime overlaps;
- greedy-by-breadth: program points in decreasing order of live bytes; at each, its unplaced
  buffers largest first, placed the same way.

``check_plan`` proves the result: no two buffers that are live at the same time share a byte. The
plan is attached to the module (``module.annotations["memory_plan"]``) for the backend and report.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from nnc.ir import Graph, Module, Value

from .liveness import Buffer, DynamicShapeError, Liveness, analyze_liveness
from .registry import Pass, register_pass


@dataclass
class MemoryPlan:
    graph: str
    offsets: dict[int, int]  # buffer id -> byte offset
    liveness: Liveness
    arena_bytes: int
    strategy: str

    @property
    def lower_bound_bytes(self) -> int:
        return self.liveness.lower_bound

    @property
    def no_reuse_bytes(self) -> int:
        return self.liveness.no_reuse_bytes

    def offset_of(self, value) -> int | None:
        b = self.liveness.buffer_of.get(id(value))
        return None if b is None else self.offsets[b]

    def summary(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "lower_bound_bytes": self.lower_bound_bytes,
                "no_reuse_bytes": self.no_reuse_bytes, "in_place": self.liveness.in_place,
                "buffers": len(self.liveness.buffers), "strategy": self.strategy}


def _place(order: list[Buffer], conflicts: list[list[Buffer]]) -> tuple[dict[int, int], int]:
    """Place ``order`` one by one, each at the lowest offset clear of the already placed buffers
    it conflicts with in time (``Liveness.time_conflicts``)."""
    offsets: dict[int, int] = {}
    top = 0
    for b in order:
        taken = sorted((offsets[o.id], o.size) for o in conflicts[b.id] if o.id in offsets)
        at = 0
        for off, size in taken:
            if at + b.size <= off:
                break
            at = max(at, off + size)
        offsets[b.id] = at
        top = max(top, at + b.size)
    return offsets, top


def greedy_by_size(lv: Liveness, conflicts: list[list[Buffer]] | None = None) -> tuple[dict[int, int], int]:
    return _place(sorted(lv.buffers, key=lambda b: (-b.size, b.start)), conflicts or lv.time_conflicts())


def greedy_by_breadth(lv: Liveness, conflicts: list[list[Buffer]] | None = None) -> tuple[dict[int, int], int]:
    live = lv.live_bytes_at()
    at_point: dict[int, list[Buffer]] = {}
    for b in lv.buffers:
        for t in range(b.start, b.end + 1):
            at_point.setdefault(t, []).append(b)
    order: list[Buffer] = []
    seen: set[int] = set()
    for t in sorted(range(len(live)), key=lambda t: -live[t]):
        for b in sorted(at_point.get(t, []), key=lambda b: -b.size):
            if b.id not in seen:
                seen.add(b.id)
                order.append(b)
    return _place(order, conflicts or lv.time_conflicts())


def plan_graph(g: Graph, allow_in_place: bool = True, nbytes_of: Callable[[Value], int | None] | None = None
               ) -> MemoryPlan:
    """The arena plan of ``g`` (``nbytes_of``: value sizes of one binding of a symbolic graph)."""
    return choose_placement(g.name, analyze_liveness(g, allow_in_place, nbytes_of))


def choose_placement(graph_name: str, lv: Liveness) -> MemoryPlan:
    """The smaller of the two greedy placements of ``lv``'s buffers, checked."""
    conflicts = lv.time_conflicts()
    best = None
    for name, strategy in (("greedy-by-size", greedy_by_size), ("greedy-by-breadth", greedy_by_breadth)):
        offsets, size = strategy(lv, conflicts)
        if best is None or size < best[2]:
            best = (name, offsets, size)
    name, offsets, size = best  # type: ignore[misc]
    plan = MemoryPlan(graph_name, offsets, lv, size, name)
    check_plan(plan)
    return plan


def check_plan(plan: MemoryPlan) -> None:
    """Raise if two buffers live at the same time overlap in the arena."""
    # empty tensors occupy no bytes: they cannot overlap anything
    bufs = sorted((b for b in plan.liveness.buffers if b.size), key=lambda b: plan.offsets[b.id])
    for i, a in enumerate(bufs):
        a0 = plan.offsets[a.id]
        for b in bufs[i + 1:]:
            b0 = plan.offsets[b.id]
            if b0 >= a0 + a.size:
                break
            if a.overlaps_in_time(b):
                raise AssertionError(f"buffers {a.id} and {b.id} overlap in time and in the arena")
        if a0 + a.size > plan.arena_bytes:
            raise AssertionError(f"buffer {a.id} ends past the arena")


@register_pass("plan-memory")
@dataclass
class PlanMemory(Pass):
    in_place: bool = True

    def run(self, module: Module) -> bool:
        try:
            plan = plan_graph(module.main, self.in_place)
        except DynamicShapeError as e:
            self.stats = {"skipped": str(e)}
            module.annotations.pop("memory_plan", None)
            return False
        module.annotations["memory_plan"] = plan
        self.stats = plan.summary()
        return False  # the IR itself is unchanged

"""The shape frame of shape-generic code: where a kernel finds the dims and arena offsets of a run.

A graph with symbolic dims compiles once (docs/dynamic-shapes.md). Its kernels read every dim that
is not a compile-time int, and the entry point every arena offset, from one ``int64`` array passed
at each call, the *frame*. ``FrameLayout`` assigns the slots at compile time: one per non-static
dim of every value (inputs, op results, the values inside fused regions), one per value placed in
the arena. ``FrameLayout.plan`` fills a frame for one binding of the inputs: the concrete type of
every value from ``ir.shape_eval``, then the memory planner over those sizes. That is Python work
of a few milliseconds per *new* input signature (a plan is kept per signature); the machine code is
never touched.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import numpy as np

from nnc.ir import Graph, Module, TensorType, Value
from nnc.ir.errors import TargetError
from nnc.ir.memory_limits import check_allocation
from nnc.ir.shape_eval import ShapeEvaluator, bound_symbols
from nnc.passes.liveness import aligned
from nnc.passes.plan_memory import plan_graph

from .storage import ERROR_RECORD_BYTES


def all_values(graph: Graph) -> Iterator[Value]:
    """Params, then op results in order, descending into regions (fused groups' bodies)."""
    yield from graph.params
    for op in graph.ops:
        for region in op.regions:
            yield from all_values(region)
        yield from op.results


@dataclass
class ShapePlan:
    """One binding's frame: dims, arena offsets, arena size, and the graph's output types."""

    frame: np.ndarray
    arena_bytes: int
    outputs: list[TensorType]
    lower_bound_bytes: int | None  # None: frames from formulas (bounded_frames.py) plan nothing per shape
    symbols: dict[str, int]
    memory: Any = None  # the MemoryPlan (buffers, in-place sharing), when asked for


class FrameLayout:
    """Frame slots of a graph (compile time) and frames for bindings (run time)."""

    def __init__(self, module: Module, graph: Graph, arena_values: Sequence[Value], evaluator: ShapeEvaluator):
        self.module = module
        self.graph = graph
        self.evaluator = evaluator  # the graph's (ShapeEvaluator(module, graph)), made once by the backend
        self.dim_slot: dict[tuple[int, int], int] = {}
        self._dims: list[tuple[Value, int]] = []
        for v in all_values(graph):
            for axis, d in enumerate(v.type.shape or ()):
                if not isinstance(d, int):
                    self.dim_slot[(id(v), axis)] = len(self._dims)
                    self._dims.append((v, axis))
        self.offset_slot: dict[int, int] = {}
        self._arena: list[Value] = list(arena_values)
        for v in self._arena:
            self.offset_slot[id(v)] = len(self._dims) + len(self.offset_slot)
        self.error_slot = len(self._dims) + len(self._arena)  # the error record's arena offset
        self.size = self.error_slot + 1
        # each kernel call site reads its dims from a block of its own (copies of the slots above, in
        # the order the kernel asks for them), so identical kernels have identical code
        self.sites: list[list[int]] = []
        self._site_base: list[int] = []

    @property
    def dim_slots(self) -> list[tuple[Value, int]]:
        """(value, axis) of each dim slot, in slot order (slots 0..n-1)."""
        return list(self._dims)

    @property
    def arena_values(self) -> list[Value]:
        return list(self._arena)

    @property
    def site_blocks(self) -> list[tuple[int, list[int]]]:
        """Each call site's block: its frame offset and the slots it copies."""
        return list(zip(self._site_base, self.sites))

    def add_site(self, slots: list[int]) -> int:
        """A call site's block of dims (global slots, in the kernel's order); its frame offset."""
        base = self.size
        self.sites.append(list(slots))
        self._site_base.append(base)
        self.size += len(slots)
        return base

    def plan(self, args: Sequence[np.ndarray], keep_memory: bool = False) -> ShapePlan:
        """The frame for these inputs (``keep_memory``: with the memory plan, which per-signature
        frames do not keep)."""
        types = self.evaluator.types(args)
        frame = np.zeros(max(self.size, 1), dtype=np.int64)
        for i, (v, axis) in enumerate(self._dims):
            frame[i] = types[id(v)].shape[axis]
        sizes = {}
        for v in self._arena:
            t = types[id(v)]
            sizes[id(v)] = n = t.dtype.itemsize * math.prod(t.shape)
            check_allocation(n, f"x86: %{v.name} ({t})", TargetError)
        plan = plan_graph(self.graph, nbytes_of=lambda v: sizes[id(v)] if id(v) in sizes else types[id(v)].nbytes)
        for v in self._arena:
            frame[self.offset_slot[id(v)]] = plan.offset_of(v)
        arena = plan.arena_bytes
        frame[self.error_slot] = aligned(arena)
        arena = aligned(arena) + ERROR_RECORD_BYTES
        for base, slots in zip(self._site_base, self.sites):
            frame[base:base + len(slots)] = frame[slots]
        check_allocation(arena, "x86: the arena for these input shapes", TargetError)
        return ShapePlan(frame, arena, [types[id(v)] for v in self.graph.outputs], plan.lower_bound_bytes,
                         dict(bound_symbols(self.graph, args)), plan if keep_memory else None)

"""Liveness of intermediate buffers over the scheduled (op-order) graph.

A buffer is an op result that needs memory of its own during execution: not a constant (those
live in the weights), not a graph parameter (the caller owns inputs), not a graph output (returned
to the caller). An op with the ``INPLACE`` trait may write its result into operand 0's buffer when
that operand dies at this op and has the same size; the two values then share one buffer.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from nnc.ir import Graph, Op, TensorType, Trait, Value

ALIGN = 64  # bytes; one cache line, and the widest vector register (AVX-512)


def aligned(n: int) -> int:
    return (n + ALIGN - 1) // ALIGN * ALIGN


@dataclass
class Buffer:
    id: int
    size: int  # aligned bytes
    start: int  # index of the defining op
    end: int  # index of the last op that reads it (>= start)
    values: list[Value] = field(default_factory=list)

    def overlaps_in_time(self, other: "Buffer") -> bool:
        return self.start <= other.end and other.start <= self.end


@dataclass
class Liveness:
    buffers: list[Buffer]
    buffer_of: dict[int, int]  # id(value) -> buffer id
    in_place: int  # how many results reuse their operand's buffer
    n_points: int

    def live_bytes_at(self) -> list[int]:
        live = [0] * max(self.n_points, 1)
        for b in self.buffers:
            for t in range(b.start, b.end + 1):
                live[t] += b.size
        return live

    def time_conflicts(self) -> list[list[Buffer]]:
        """Per buffer id, the buffers live at some common program point: a sweep over start times,
        so the cost is the number of conflicting pairs (small in a long chain of layers) rather
        than the square of the buffer count."""
        out: list[list[Buffer]] = [[] for _ in self.buffers]
        active: list[Buffer] = []
        for b in sorted(self.buffers, key=lambda b: b.start):
            active = [a for a in active if a.end >= b.start]
            for a in active:
                out[a.id].append(b)
                out[b.id].append(a)
            active.append(b)
        return out

    @property
    def lower_bound(self) -> int:
        """The most bytes live at once: no arena can be smaller."""
        return max(self.live_bytes_at(), default=0)

    @property
    def no_reuse_bytes(self) -> int:
        return sum(b.size for b in self.buffers)


class DynamicShapeError(ValueError):
    pass


def analyze_liveness(g: Graph, allow_in_place: bool = True,
                     nbytes_of: Callable[[Value], int | None] | None = None) -> Liveness:
    """Buffers and lifetimes of ``g``'s intermediate values. ``nbytes_of`` gives a value's size when
    the graph's types are symbolic (the sizes of one binding, ``ir.shape_eval``); default: the type's."""
    size = nbytes_of or (lambda v: v.type.nbytes)
    outputs = {id(v) for v in g.outputs}
    last_use: dict[int, int] = {}
    for i, op in enumerate(g.ops):
        for v in op.operands:
            last_use[id(v)] = i
    buffers: list[Buffer] = []
    buffer_of: dict[int, int] = {}
    in_place = 0
    for i, op in enumerate(g.ops):
        if op.opname == "const":
            continue
        for k, r in enumerate(op.results):
            if id(r) in outputs:
                continue
            if not isinstance(r.type, TensorType):
                raise DynamicShapeError(f"%{r.name} is a {r.type}, a value the host holds (a list of arrays, or an "
                                        "optional); memory planning covers tensors only")
            nbytes = size(r)
            if nbytes is None:
                raise DynamicShapeError(f"%{r.name} has a dynamic shape {r.type}; memory planning needs static shapes")
            end = last_use.get(id(r), i)
            reuse = _reusable_operand(op, k, i, last_use, buffer_of, outputs, size) if allow_in_place else None
            if reuse is not None and buffers[reuse].size == aligned(nbytes):
                b = buffers[reuse]
                b.end = max(b.end, end)
                b.values.append(r)
                buffer_of[id(r)] = reuse
                in_place += 1
                continue
            b = Buffer(len(buffers), aligned(nbytes), i, end, [r])
            buffers.append(b)
            buffer_of[id(r)] = b.id
    return Liveness(buffers, buffer_of, in_place, len(g.ops))


def _reusable_operand(op: Op, k: int, i: int, last_use: dict[int, int], buffer_of: dict[int, int],
                      outputs: set[int], size: Callable[[Value], int | None]) -> int | None:
    if k != 0 or not op.operands or not op.opdef.has(Trait.INPLACE):
        return None
    src = op.operands[0]
    if id(src) not in buffer_of or id(src) in outputs or last_use.get(id(src)) != i:
        return None
    if any(v is src for v in op.operands[1:]):  # read again through another operand
        return None
    if size(src) != size(op.results[0]):
        return None
    return buffer_of[id(src)]

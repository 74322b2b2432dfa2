"""Concats written in place: each input is computed straight into its slice of the result.

A ``concat`` along an axis whose leading dims are all 1 (channels of a batch-1 NCHW tensor, the
usual inference case: SqueezeNet's fire modules, Inception's and GoogLeNet's branches) places its
inputs one after another in memory, each a contiguous block of the result. When an input is
produced here, read by nothing but this concat and shares its buffer with no other value, its
producer can write into the block directly, and the concat has nothing left to copy.

``concat_views`` finds those inputs; ``plan_with_views`` plans the arena with each such concat's
buffer live from its earliest input's definition (the inputs' own buffers disappear into it) and
gives every input the result's offset plus its block's. The x86 backend then emits an empty kernel
for the concat (``ConcatViews.concats``). ``check_plan`` still proves that no two buffers live at
once overlap; the views lie inside their concat's buffer by construction.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from nnc.ir import Graph, Op, Value

from .liveness import Buffer, Liveness, analyze_liveness
from .plan_memory import MemoryPlan, choose_placement


@dataclass
class ConcatViews:
    """``views``: id(input) -> (the concat's result, byte offset in it); ``concats``: id(op) of the
    concats whose every input is a view (their kernels copy nothing)."""

    views: dict[int, tuple[Value, int]] = field(default_factory=dict)
    concats: set[int] = field(default_factory=set)


def concat_views(g: Graph) -> ConcatViews:
    outputs = {id(v) for v in g.outputs}
    params = {id(p) for p in g.params}
    uses = Counter(id(v) for op in g.ops for v in op.operands)
    found = ConcatViews()
    for op in g.ops:
        if not _eligible(op, outputs, params, uses, found):
            continue
        off = 0
        for v in op.operands:
            found.views[id(v)] = (op.results[0], off)
            off += v.type.nbytes
        found.concats.add(id(op))
    return found


def _eligible(op: Op, outputs: set[int], params: set[int], uses: Counter, found: ConcatViews) -> bool:
    if op.opname != "concat" or len(op.operands) < 2 or len(op.results) != 1:
        return False
    r = op.results[0]
    if not r.type.is_static or id(r) in outputs or id(r) in found.views:
        return False
    axis = op.attrs["axis"] % len(r.type.shape)
    if any(d != 1 for d in r.type.shape[:axis]):
        return False  # the inputs' blocks would interleave
    for v in op.operands:
        p = v.producer
        if (p is None or p.opname in ("const", "concat") or id(v) in params or id(v) in outputs
                or uses[id(v)] != 1 or not v.type.is_static or v.type.dtype != r.type.dtype):
            return False
    return True


def plan_with_views(g: Graph, cv: ConcatViews) -> tuple[MemoryPlan, dict[int, int]]:
    """The arena plan with ``cv``'s inputs inside their concats' buffers, and the offset of every
    arena value (views included), keyed by id. An input's buffer may hold a chain of values written
    in place (a conv, then its relu over it): the whole buffer moves into the slice, provided the
    input is the chain's last value. A concat with an input that is not drops out of ``cv``."""
    lv = analyze_liveness(g)
    by_concat: dict[int, list[tuple[int, Value, int]]] = {}
    for vid, (r, off) in cv.views.items():
        by_concat.setdefault(id(r), []).append((vid, r, off))
    merged: dict[int, tuple[int, int]] = {}  # input buffer id -> (the result's buffer id, byte offset)
    for items in by_concat.values():
        moves = {}
        for vid, r, off in items:
            bid = lv.buffer_of.get(vid)
            if bid is None or id(lv.buffers[bid].values[-1]) != vid or id(r) in lv.buffer_of and \
                    lv.buffer_of[id(r)] == bid:
                moves = None
                break
            moves[bid] = (lv.buffer_of[id(r)], off)
        if moves is None:  # this concat copies after all
            for vid, _, _ in items:
                del cv.views[vid]
            cv.concats.discard(id(items[0][1].producer))
            continue
        merged.update(moves)
    starts: dict[int, int] = {}
    for bid, (into, _) in merged.items():
        starts[into] = min(starts.get(into, lv.buffers[into].start), lv.buffers[bid].start)
    kept: list[Buffer] = []
    renumber: dict[int, int] = {}
    for b in lv.buffers:
        if b.id in merged:
            continue
        renumber[b.id] = len(kept)
        kept.append(Buffer(len(kept), b.size, starts.get(b.id, b.start), b.end, list(b.values)))
    buffer_of = {vid: renumber[bid] for vid, bid in lv.buffer_of.items() if bid in renumber}
    plan = choose_placement(g.name, Liveness(kept, buffer_of, lv.in_place, lv.n_points))
    offsets = {}
    for vid, bid in lv.buffer_of.items():
        if bid in merged:
            into, off = merged[bid]
            offsets[vid] = plan.offsets[renumber[into]] + off
        else:
            offsets[vid] = plan.offsets[renumber[bid]]
    return plan, offsets

"""Frames from formulas without bounds: arena offsets as formulas of the input dims.

A shape-generic model given no ``max_dims`` plans its arena per input signature: a shape evaluation
and the greedy planner in Python, milliseconds a signature (25-90 ms for BERT-base or GPT-2-small).
``derive_stacked`` removes that from every signature after the first few. It takes one signature's
greedy plan and keeps its *stacking*: for each buffer, the buffers live at the same time that sit
below it. At any dims, a buffer's offset is then the highest end of the buffers beneath it::

    offset(b) = max(0, max(offset(c) + align64(size(c)) for c below b))

Every pair of buffers live at once is ordered (one is below the other), so no two overlap at any
dims: the placement is valid everywhere, not only near the probe, and at the probe it is never
larger than the greedy plan it came from (each greedy offset is at least the end of the buffers
below it). The sizes and every dim slot are formulas of the input dims from
``SymbolicShapeEvaluator`` (``frame_formulas.formulas_at``), checked against the concrete shape
evaluation at other bindings before they are trusted; the model's constraints (a reshape keeps its
element count, a buffer shared in place keeps one size) are checked per signature, and a signature
that breaks one is planned the old way, which then accepts or refuses it.

``StackedFrames.fill`` is generated Python over the dims (ints only): a new signature costs
microseconds. ``used_formula`` gives the report the arena as a formula: the largest sums of buffer
sizes along the stacking chains (exact, or a bound never below the bytes used, and said which).
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from nnc.ir import InputError, TargetError, TensorType
from nnc.ir.memory_limits import check_allocation
from nnc.ir.sym_dims import Expr, polynomial
from nnc.passes.liveness import aligned

from .bounded_frames import dominates, poly_text, py_expr
from .frame import FrameLayout, ShapePlan
from .frame_formulas import formulas_at, in_place_constraints, input_symbols, shape_only_args, show, site_copies
from .storage import ERROR_RECORD_BYTES

_CMP = {"lt": "<", "le": "<=", "gt": ">", "ge": ">=", "eq": "==", "ne": "!="}
TERMS = 4  # chain sums kept per buffer for the report's formula (more are merged into a bound)


class StackedFrames:
    """Per-signature frames of a shape-generic model from one plan's stacking (module docstring)."""

    def __init__(self, layout: FrameLayout, base: ShapePlan):
        """``base``: the per-signature plan of the probe binding, with its memory plan."""
        symbols, inputs = input_symbols(layout)
        ev = layout.evaluator
        if ev.data_dependence:
            raise TargetError(f"x86: {ev.data_dependence}")
        if ev.value_inputs():
            raise TargetError(f"x86: the values of input(s) {', '.join(ev.value_inputs())} decide shapes")
        self.layout = layout
        self.symbols = symbols
        self.inputs = inputs
        found = formulas_at(layout, inputs, base.symbols)
        memory = base.memory
        lv = memory.liveness
        self.constraints = found.constraints + in_place_constraints(memory, found.size_of)
        self.guards = found.guards  # the shape evaluation's branches at the probe: checked per signature
        self.slots = found.slots
        self.outputs = found.outputs
        # each buffer's size (its first value's: in-place sharers are constrained equal) and offset slots
        by_id = {b.id: b for b in lv.buffers}
        self.sizes: dict[int, Expr] = {}
        self.offset_slots: dict[int, list[int]] = {}
        for b in lv.buffers:
            vs = [v for v in b.values if id(v) in layout.offset_slot]
            if not vs:
                continue
            self.sizes[b.id] = found.size_of[id(vs[0])]
            self.offset_slots[b.id] = [layout.offset_slot[id(v)] for v in vs]
        rank = {bid: i for i, bid in enumerate(sorted(
            self.sizes, key=lambda bid: (memory.offsets[bid], by_id[bid].size, bid)))}
        conflicts = lv.time_conflicts()
        self.order = sorted(self.sizes, key=rank.__getitem__)
        self.below = {bid: sorted({c.id for c in conflicts[bid] if c.id in rank and rank[c.id] < rank[bid]},
                                  key=rank.__getitem__) for bid in self.order}
        self.copies = site_copies(layout)
        self.probe = dict(base.symbols)
        self._fill = self._compile()
        self._slot_index = np.array(sorted(self.slots), dtype=np.int64)
        self._copy_dst = np.array([a for a, _ in self.copies], dtype=np.int64)
        self._copy_src = np.array([b for _, b in self.copies], dtype=np.int64)
        self._out_dtypes = [v.type.dtype for v in layout.graph.outputs]
        self.checked_at: list[dict[str, int]] = []
        self.fallbacks = 0  # signatures that broke a constraint and were planned the old way
        self.check(base, base.symbols)

    def _compile(self) -> Any:
        index = {s: i for i, s in enumerate(self.symbols)}
        py = lambda e: py_expr(e, index)  # noqa: E731
        lines = ["def fill(d):",
                 f"    slots = ({''.join(py(self.slots[i]) + ', ' for i in sorted(self.slots))})",
                 f"    checks = ({''.join(f'{py(a)} == {py(b)}, ' for _, a, b in self.constraints)}"
                 f"{''.join(f'{py(a)} {_CMP[op]} {py(b)}, ' for op, a, b in self.guards)})",
                 f"    outs = ({''.join('(' + ''.join(py(x) + ', ' for x in o) + '), ' for o in self.outputs)})"]
        for bid in self.order:
            lines.append(f"    s{bid} = (({py(self.sizes[bid])}) + 63) // 64 * 64")
            lines.append(f"    o{bid} = max((0, {''.join(f'o{c} + s{c}, ' for c in self.below[bid])}))")
        lines.append(f"    top = max((0, {''.join(f'o{b} + s{b}, ' for b in self.order)}))")
        lines.append(f"    offs = ({''.join(f'o{b}, ' for b in self.order)})")
        lines.append("    return slots, checks, outs, offs, top")
        scope: dict[str, Any] = {}
        exec(compile("\n".join(lines), "<nnc stacked frame formulas>", "exec"), scope)  # our own int formulas
        return scope["fill"]

    def plan(self, env: Mapping[str, int]) -> ShapePlan | None:
        """The frame at the input dims ``env``, or None when they break one of the model's
        constraints or the formulas' guards (the caller plans them the old way, which accepts or
        refuses them)."""
        plan, _ = self._frame(env)
        if plan is None:
            self.fallbacks += 1
        return plan

    def _frame(self, env: Mapping[str, int]) -> tuple[ShapePlan | None, bool]:
        """The frame at ``env`` (None where the formulas do not serve) and whether the constraints
        and guards hold there."""
        slots, checks, outs, offs, top = self._fill(tuple(env[s] for s in self.symbols))
        holds = all(checks)
        if not holds or min(slots, default=0) < 0 or any(x < 0 for o in outs for x in o):
            # a constraint the model breaks, or a formula outside the dims it holds for (a split's
            # last part at a length shorter than the probe's parts): the planner decides
            return None, holds
        frame = np.zeros(max(self.layout.size, 1), dtype=np.int64)
        if len(self._slot_index):
            frame[self._slot_index] = slots
        for bid, off in zip(self.order, offs):
            frame[self.offset_slots[bid]] = off
        frame[self.layout.error_slot] = aligned(top)
        arena = aligned(top) + ERROR_RECORD_BYTES
        check_allocation(arena, "x86: the arena for these input shapes", TargetError)
        for dst, src in zip(self._copy_dst, self._copy_src):  # in order: a block copies dim slots
            frame[dst] = frame[src]
        outputs = [TensorType(dt, tuple(int(x) for x in o)) for dt, o in zip(self._out_dtypes, outs)]
        return ShapePlan(frame, arena, outputs, None, dict(env)), holds

    def check(self, want: ShapePlan, env: Mapping[str, int]) -> None:
        """Raise TargetError unless the formulas give ``want``'s dims and output shapes at ``env``
        (``want``: the per-signature plan of those dims)."""
        dims = ", ".join(f"{s}={n}" for s, n in env.items())
        got, holds = self._frame(env)
        if got is None:
            if holds:  # the model runs here, yet a formula gives a negative size
                raise TargetError(f"x86: a dim formula is negative at {dims}, where the model runs")
            return  # a constraint or guard broken there: such dims are planned the old way
        for i, e in self.slots.items():
            if int(got.frame[i]) != int(want.frame[i]):
                v, axis = self.layout.dim_slots[i]
                raise TargetError(f"x86: dim {axis} of %{v.name} is not a formula of the input dims ({show(e)} gives "
                                  f"{int(got.frame[i])} at {dims}, the model {int(want.frame[i])})")
        if [t.shape for t in got.outputs] != [t.shape for t in want.outputs]:
            raise TargetError(f"x86: the output shapes are not formulas of the input dims (at {dims})")
        self.checked_at.append(dict(env))

    def used_formula(self) -> tuple[str, bool]:
        """The bytes the buffers reach (the arena less its 64-byte error record) as ``max`` of
        polynomials of the dims, and whether it is exact. Each term is a sum of buffer sizes along a
        stacking chain; a size that is not a multiple of 64 for all dims counts 63 bytes more (its
        rounding), and where a buffer's chains keep more than ``TERMS`` terms apart the smallest are
        merged into one that bounds them (coefficient by coefficient). Never below the bytes used."""
        exact = True
        ends: dict[int, list[Poly]] = {}
        probe = self.probe
        for bid in self.order:
            own = polynomial(self.sizes[bid])
            if any(c % 64 for c in own.values()):
                own = _plus(own, {(): 63})
                exact = False
            cands = [own] + [_plus(own, p) for c in self.below[bid] for p in ends[c]]
            ends[bid], merged = _few(cands, probe, TERMS)
            exact = exact and not merged
        top, merged = _few([p for bid in self.order for p in ends[bid]], probe, TERMS)
        terms = sorted({poly_text(p) for p in top})
        text = terms[0] if len(terms) == 1 else f"max({', '.join(terms)})" if terms else "0"
        return text, exact and not merged


Poly = dict[tuple[str, ...], int]


def _plus(a: Poly, b: Poly) -> Poly:
    out = dict(a)
    for m, c in b.items():
        out[m] = out.get(m, 0) + c
    return {m: c for m, c in out.items() if c}


def _at(p: Poly, env: Mapping[str, int]) -> int:
    total = 0
    for m, c in p.items():
        for s in m:
            c *= env.get(s, 1)
        total += c
    return total


def _bound(polys: list[Poly]) -> Poly:
    """The coefficient-wise maximum of ``polys``: never below any of them (dims >= 1)."""
    out: Poly = {}
    for p in polys:
        for m, c in p.items():
            out[m] = max(out.get(m, 0), c)
    return out


def _few(polys: list[Poly], probe: Mapping[str, int], k: int) -> tuple[list[Poly], bool]:
    """The undominated of ``polys``, at most ``k``: the largest at the probe (and at twice it) kept,
    the rest merged into their coefficient-wise maximum; whether a merge happened."""
    uniq = list({tuple(sorted(p.items())): p for p in polys}.values())
    twice = {s: 2 * v for s, v in probe.items()}
    uniq.sort(key=lambda p: (_at(p, probe), _at(p, twice)), reverse=True)
    merged = False
    if len(uniq) > 2 * k:
        uniq = uniq[:2 * k - 1] + [_bound(uniq[2 * k - 1:])]
        merged = True
    keep = [p for i, p in enumerate(uniq) if not any(j != i and dominates(q, p) for j, q in enumerate(uniq))]
    if len(keep) > k:
        keep = keep[:k - 1] + [_bound(keep[k - 1:])]
        merged = True
    return keep, merged


def check_points(symbols: list[str], seen: Sequence[Mapping[str, int]]) -> list[dict[str, int]]:
    """Bindings to check the formulas at besides the probe: all ones, and each seen binding's dims
    plus one (distinct, small enough to plan)."""
    pts = [{s: 1 for s in symbols}]
    for env in seen:
        pts.append({s: int(env[s]) + 1 for s in symbols})
    out: list[dict[str, int]] = []
    for p in pts:
        if p not in out:
            out.append(p)
    return out


def derive_stacked(layout: FrameLayout, base: ShapePlan, seen: Sequence[ShapePlan]) -> StackedFrames:
    """``StackedFrames`` from the per-signature plan ``base`` (kept with its memory plan), checked
    against the plans ``seen`` and at ``check_points``; TargetError when a formula disagrees."""
    sf = StackedFrames(layout, base)
    for p in seen:
        sf.check(p, p.symbols)
    for env in check_points(sf.symbols, [base.symbols]):
        try:
            want = layout.plan(shape_only_args(layout, sf.inputs, env))
        except (InputError, TargetError):
            continue  # dims the model refuses: nothing to compare
        sf.check(want, env)
    if len(sf.checked_at) < 2:
        raise TargetError("x86: the formulas could be checked at fewer than two bindings of the input dims")
    return sf

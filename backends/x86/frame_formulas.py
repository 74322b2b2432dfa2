"""The frame of shape-generic code as formulas of the input dims, for a library's C entry point.

A shape-generic model reads its dims and arena offsets from a frame the host fills per input
signature (``frame.py``). A shared library has no Python to fill it, so ``derive`` works the frame
out once, at compile time, as generated-code material:

- every dim slot (and the per-call-site copies of them) as a formula of the input dims, from
  ``ir.sym_dims.SymbolicShapeEvaluator`` (the same shape evaluation, run on dims that carry their
  formulas), so the Shape -> Gather -> Concat -> Reshape arithmetic of attention layers is followed;
- the arena offsets planned once, at the *bounds* the caller gives (``max_dims``). Those offsets
  stay valid for all smaller dims when every buffer's size is monotone in the dims: each buffer then
  fits inside the place planned for it, and two buffers live at once never overlap. That is checked
  on each size formula's form (refused otherwise), and the library also checks each size against
  its planned size at run time;
- the error record's offset, the bytes the arena needs, and each output's shape, as formulas;
- the model's own constraints (a reshape must keep the element count) as equalities to check.

Every formula is checked against ``ShapeEvaluator`` at the corners of the bounds (all ones, all
maxima, each dim alone at 1, the middle); a model whose dims are not such formulas (a dim taken
from tensor data, a table length that clamps a slice inside the bounds) is refused naming the value.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Any, Iterator, Mapping

import numpy as np

from nnc.ir import Graph, InputError, Op, TargetError
from nnc.ir.sym_dims import (
    Expr,
    SymbolicShapeEvaluator,
    SymInt,
    combine,
    const,
    evaluate,
    expr_of,
    is_monotone,
    recording_guards,
    same,
    text,
)
from nnc.passes.liveness import aligned

from .frame import FrameLayout
from .storage import ERROR_RECORD_BYTES


@dataclass
class FrameFormulas:
    symbols: list[str]                      # the input dims, in order of first appearance
    maxima: list[int]                       # their bounds
    inputs: list[list[int | str]]           # per input: a static size or a symbol, per axis
    frame_size: int
    template: list[int]                     # the frame at the bounds (constant slots: the offsets)
    slots: dict[int, Expr]                  # frame slot -> formula, for the slots that vary
    copies: list[tuple[int, int]]           # (destination, source): the call sites' blocks of dims
    error_slot: int
    outputs: list[list[Expr]]               # per output: a formula per axis
    buffers: list[tuple[str, int, Expr, int]]  # arena values: name, offset, bytes formula, bytes at bounds
    constraints: list[tuple[str, Expr, Expr]]  # where, two formulas that must be equal
    arena_bytes: int                        # at the bounds (what a context allocates)
    checked_at: list[dict[str, int]] = field(default_factory=list)

    def arena_at(self, env: Mapping[str, int]) -> tuple[int, int]:
        """(error record offset, arena bytes) at these dims: the record just past the buffers' ends."""
        end = max((off + evaluate(size, env) for _, off, size, _ in self.buffers), default=0)
        return aligned(end), aligned(end) + ERROR_RECORD_BYTES


def input_symbols(layout: FrameLayout) -> tuple[list[str], list[list[int | str]]]:
    symbols: list[str] = []
    inputs: list[list[int | str]] = []
    for p in layout.graph.params:
        axes: list[int | str] = []
        for axis, d in enumerate(p.type.shape or ()):
            if isinstance(d, int):
                axes.append(d)
            elif d == "?":
                raise TargetError(f"x86: input %{p.name} has an unnamed dim (axis {axis}); a library with run-time "
                                  f"dims needs a name for it (an ONNX dim_param) to bound it")
            else:
                axes.append(d)
                if d not in symbols:
                    symbols.append(d)
        if p.type.shape is None:
            raise TargetError(f"x86: input %{p.name} has an unknown rank; a library needs its rank")
        inputs.append(axes)
    return symbols, inputs


def shape_only_args(layout: FrameLayout, inputs: list[list[int | str]], env: Mapping[str, int]) -> list[np.ndarray]:
    # only the shapes are read (no input's value decides a shape here): views of one zero
    return [np.broadcast_to(np.zeros((), p.type.dtype.numpy), tuple(d if isinstance(d, int) else env[d] for d in ax))
            for p, ax in zip(layout.graph.params, inputs)]


def _probe(symbols: list[str], maxima: Mapping[str, int]) -> dict[str, int]:
    """Distinct values inside the bounds where possible (distinct, so no comparison of two dims is
    decided by a coincidence), as large as the bounds allow."""
    used: set[int] = set()
    probe = {}
    for s in symbols:
        v = maxima[s]
        while v in used and v > 2:
            v -= 1
        used.add(v)
        probe[s] = v
    return probe


def derive(layout: FrameLayout, max_dims: Mapping[str, int]) -> FrameFormulas:
    symbols, inputs = input_symbols(layout)
    if not symbols:
        raise TargetError("x86: the model's inputs have no symbolic dims to bound")
    missing = [s for s in symbols if s not in max_dims]
    unknown = sorted(set(max_dims) - set(symbols))
    if unknown:
        raise TargetError(f"x86: max_dims names {', '.join(unknown)}, which no input dim is (the input dims: "
                          f"{', '.join(symbols)})")
    if missing:
        raise TargetError(f"x86: a library with run-time dims plans its arena at their bounds: give a maximum for "
                          f"{', '.join(missing)} (max_dims={{...}}; CLI: "
                          + " ".join(f"--max-dim {s}=SIZE" for s in missing) + ")")
    maxima = {s: int(max_dims[s]) for s in symbols}
    bad = [s for s, v in maxima.items() if v < 1]
    if bad:
        raise TargetError(f"x86: the maximum of {bad[0]} must be at least 1, not {maxima[bad[0]]}")
    evaluator = layout.evaluator
    if evaluator.data_dependence:
        raise TargetError(f"x86: {evaluator.data_dependence}; a library cannot compute that shape before running")
    values = evaluator.value_inputs()
    if values:
        raise TargetError(f"x86: the values of input(s) {', '.join(values)} decide shapes; a library with run-time "
                          f"dims takes shapes, not values, to size its buffers")
    probe = _probe(symbols, maxima)
    found = formulas_at(layout, inputs, probe)
    # the plan at the bounds: its offsets are the library's
    try:
        bound_plan = layout.plan(shape_only_args(layout, inputs, maxima), keep_memory=True)
    except InputError as e:
        raise TargetError(f"x86: the model does not run at the bounds {_text(maxima)}: {e}") from None
    template = [int(x) for x in bound_plan.frame]

    ones = {s: 1 for s in symbols}

    def at_ones(e: Expr) -> int:
        return evaluate(e, ones)

    buffers = []
    for v in layout.arena_values:
        size = found.size_of[id(v)]
        if not is_monotone(size, at_ones):
            raise TargetError(f"x86: the size of %{v.name} is not monotone in the input dims ({show(size)}), so an "
                              f"arena planned at the bounds does not hold it below them; a library needs fixed dims "
                              f"(--dim)")
        buffers.append((v.name, template[layout.offset_slot[id(v)]], size, evaluate(size, maxima)))
    constraints = found.constraints + in_place_constraints(bound_plan.memory, found.size_of)
    ff = FrameFormulas(symbols, [maxima[s] for s in symbols], inputs, layout.size, template, found.slots,
                       site_copies(layout), layout.error_slot, found.outputs, buffers, constraints,
                       bound_plan.arena_bytes)
    _check(layout, ff, maxima, probe)
    return ff


@dataclass
class Found:
    """The formulas ``SymbolicShapeEvaluator`` finds at one probe binding of the input dims."""

    slots: dict[int, Expr]              # frame dim slot -> formula
    outputs: list[list[Expr]]           # per output: a formula per axis
    size_of: dict[int, Expr]            # id(value) -> its bytes, for every value placed in the arena
    constraints: list[tuple[str, Expr, Expr]]  # the model's reshapes: element counts that must agree
    guards: list[tuple[str, Expr, Expr]] = field(default_factory=list)  # branches taken at the probe


def formulas_at(layout: FrameLayout, inputs: list[list[int | str]], probe: Mapping[str, int]) -> Found:
    """Every dim slot, output axis and arena value size of ``layout`` as a formula of the input dims,
    followed from the ``probe`` binding (checked by the caller at other bindings)."""
    sym = SymbolicShapeEvaluator(layout.module, layout.graph)
    shapes = [[d if isinstance(d, int) else SymInt(probe[d], ("sym", d)) for d in ax] for ax in inputs]
    try:
        with recording_guards() as guards:
            types = sym.symbolic_types(shapes)
    except InputError as e:
        raise TargetError(f"x86: the shapes cannot be derived as formulas of the input dims: {e}") from None
    dim_formula: dict[tuple[int, int], Expr] = {}
    slots: dict[int, Expr] = {}
    for i, (v, axis) in enumerate(layout.dim_slots):
        e = expr_of(types[id(v)].shape[axis])
        dim_formula[(id(v), axis)] = e
        slots[i] = e
    outputs = [[expr_of(d) for d in types[id(v)].shape] for v in layout.graph.outputs]
    size_of: dict[int, Expr] = {}
    for v in layout.arena_values:
        size = const(v.type.dtype.itemsize)
        for axis, d in enumerate(v.type.shape or ()):
            size = combine("mul", size, dim_formula[(id(v), axis)] if not isinstance(d, int) else const(d))
        size_of[id(v)] = size
    constraints = []
    for op in _all_ops(layout.graph):
        if op.opname == "reshape":
            n_in = _numel(types[id(op.operands[0])].shape)
            n_out = _numel(types[id(op.results[0])].shape)
            if not same(n_in, n_out):
                constraints.append((op.where(), n_in, n_out))
    return Found(slots, outputs, size_of, constraints, sorted(guards, key=repr))


def in_place_constraints(memory: Any, size_of: Mapping[int, Expr]) -> list[tuple[str, Expr, Expr]]:
    """A result written over its operand (in place): the planner chose it for equal sizes, so they
    must stay equal (a reshape's are, where its own constraint holds; a broadcast's are not)."""
    out = []
    for b in memory.liveness.buffers:
        vs = [v for v in b.values if id(v) in size_of]
        out += [(f"%{v.name} in place of %{vs[0].name}", size_of[id(vs[0])], size_of[id(v)])
                for v in vs[1:] if not same(size_of[id(v)], size_of[id(vs[0])])]
    return out


def site_copies(layout: FrameLayout) -> list[tuple[int, int]]:
    """(destination, source) frame slots: each kernel call site's block of dims."""
    copies = []
    for base, site in layout.site_blocks:
        copies += [(base + j, src) for j, src in enumerate(site)]
    return copies


def _all_ops(g: Graph) -> Iterator[Op]:
    for op in g.ops:
        yield op
        for region in op.regions:
            yield from _all_ops(region)


def _numel(shape: Any) -> Expr:
    n = const(1)
    for d in shape:
        n = combine("mul", n, expr_of(d))
    return n


def _text(env: Mapping[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in env.items())


def _points(symbols: list[str], maxima: Mapping[str, int], probe: Mapping[str, int]) -> list[dict[str, int]]:
    pts = [dict(maxima), {s: 1 for s in symbols}, {s: (maxima[s] + 1) // 2 for s in symbols}, dict(probe)]
    for s in symbols:
        pts.append({**maxima, s: 1})
        pts.append({t: (1 if t == s else maxima[t]) for t in symbols} if len(symbols) > 1 else {s: 2})
    if len(symbols) <= 3:
        pts += [dict(zip(symbols, c)) for c in itertools.product(*[(1, 2, maxima[s]) for s in symbols])]
    out: list[dict[str, int]] = []
    for p in pts:
        p = {s: min(max(v, 1), maxima[s]) for s, v in p.items()}
        if p not in out:
            out.append(p)
    return out


def _check(layout: FrameLayout, ff: FrameFormulas, maxima: Mapping[str, int], probe: Mapping[str, int]) -> None:
    """Every formula against the concrete evaluation at the corners of the bounds."""
    for env in _points(ff.symbols, maxima, probe):
        violated = [w for w, a, b in ff.constraints if evaluate(a, env) != evaluate(b, env)]
        try:
            plan = layout.plan(shape_only_args(layout, ff.inputs, env))
        except InputError as e:
            if violated:
                continue  # the library refuses these dims too (its constraint check)
            raise TargetError(f"x86: at {_text(env)} the model refuses its inputs ({e}) for a reason a library cannot "
                              f"check before running") from None
        if violated:
            raise TargetError(f"x86: {violated[0]}: the sizes the library checks differ at {_text(env)}, where "
                              f"the model runs; a library needs fixed dims (--dim) for this model")
        for i, e in ff.slots.items():
            got, want = evaluate(e, env), int(plan.frame[i])
            if got != want:
                v, axis = layout.dim_slots[i]
                raise TargetError(f"x86: dim {axis} of %{v.name} is not a formula of the input dims the library can "
                                  f"compute ({show(e)} gives {got} at {_text(env)}, the model {want}); a library "
                                  f"needs fixed dims (--dim) for this model")
        for j, (shape, t) in enumerate(zip(ff.outputs, plan.outputs)):
            if [evaluate(e, env) for e in shape] != list(t.shape):
                raise TargetError(f"x86: the shape of output {j} is not a formula of the input dims")
        for name, _, size, at_max in ff.buffers:
            if evaluate(size, env) > at_max:
                raise TargetError(f"x86: %{name} is larger at {_text(env)} than at the bounds")
        assert ff.arena_at(env)[1] <= ff.arena_bytes
        ff.checked_at.append(dict(env))



show = text

"""``remat``: rematerialisation — recompute cheap activations in the backward pass instead of keeping
them alive from the forward pass, to fit a training step into a memory budget.

A training step made by ``autodiff.grad`` holds the forward ops, then the backward ops (their
``loc`` starts with ``grad``). A forward value read by a backward op is *stashed*: it stays live
from its definition to its last backward use, and those stashes are what make training need several
times the memory of inference. This pass drops some stashes: each backward use of a dropped value
reads a clone of its producer, inserted just before the first backward op that needs it; a clone's
operands are themselves stashed-and-kept values, parameters, constants, or (recursively) clones.

Which stashes to drop is a cost-based choice (in the manner of Checkmate/XLA's remat, simplified):
candidates are ranked by recompute FLOPs per byte saved (``passes.cost``), so elementwise and
normalisation results (relu, batch-norm, softmax, adds) go first and convolution/matmul outputs
last; random ops (dropout) are never recomputed. Prefixes of that ranking are tried and each
result is planned with the inference memory planner (``plan_memory.plan_graph``); the pass keeps
the prefix with the least extra FLOPs whose arena fits ``budget`` (bytes, or a fraction of the
arena without remat), or the smallest arena when none fits or no budget is given.

Options: ``remat{budget=0.5}`` or ``remat{budget=64000000}``. Run it after CSE (CSE would merge
the clones back into the originals) and before memory planning. The pass stats (in the compile
report) give the arena before and after, the extra FLOPs and the forward FLOPs.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.ir import Module, Op, Trait, Value
from nnc.ir.graph import Graph

from ..cost import op_flops
from ..plan_memory import plan_graph
from ..registry import Pass, PassError, register_pass

FRACTIONS = (0.0, 0.15, 0.3, 0.45, 0.6, 0.75, 0.9, 1.0)


def backward_start(g: Graph) -> int | None:
    """Index of the first backward op (made by autodiff), or None for a graph without one."""
    for i, op in enumerate(g.ops):
        if op.loc and op.loc.startswith("grad") and op.opname != "const":
            return i
    return None


def _stashed(g: Graph, start: int) -> list[Value]:
    """Forward values read by a backward op, in program order."""
    index = {id(op): i for i, op in enumerate(g.ops)}
    out = []
    for op in g.ops[:start]:
        if op.opname == "const":
            continue
        for r in op.results:
            if any(index[id(u)] >= start for u, _ in r.uses):
                out.append(r)
    return out


def _recomputable(v: Value) -> bool:
    op = v.producer
    return op is not None and not (op.opdef.traits & Trait.RANDOM) and not op.regions


def _closure_flops(v: Value, kept: set[int], forward: set[int]) -> int:
    """FLOPs to recompute ``v`` when every other stashed value is kept: its producer plus, recursively,
    the producers of operands that were not stashed (freed after the forward pass)."""
    seen: set[int] = set()
    total = 0
    todo = [v.producer]
    while todo:
        op = todo.pop()
        if id(op) in seen:
            continue
        seen.add(id(op))
        total += op_flops(op)
        for u in op.operands:
            p = u.producer
            if p is not None and p.opname != "const" and id(p) in forward and id(u) not in kept:
                todo.append(p)
    return total


def rank_candidates(stashed: list[Value], forward: set[int]) -> list[Value]:
    """Cheapest to recompute per byte saved first (recompute cost including the chain of freed
    forward values it needs)."""
    kept = {id(v) for v in stashed}
    cands = [v for v in stashed if _recomputable(v) and v.type.nbytes]
    return sorted(cands, key=lambda v: _closure_flops(v, kept - {id(v)}, forward) / v.type.nbytes)


def rematerialize(g: Graph, drop: set[str]) -> int:
    """Rewrite ``g`` so backward ops read clones of the forward values named in ``drop``; return the
    FLOPs of the clones."""
    start = backward_start(g)
    if start is None or not drop:
        return 0
    forward_ops = {id(op) for op in g.ops[:start]}
    stashed_kept = {id(v) for v in _stashed(g, start) if v.name not in drop}
    memo: dict[int, Value] = {}
    flops = 0

    def available(v: Value) -> bool:
        p = v.producer
        return p is None or p.opname == "const" or id(p) not in forward_ops or id(v) in stashed_kept

    def clone_of(v: Value, before: Op) -> Value:
        nonlocal flops
        if available(v):
            return v
        if id(v) in memo:
            return memo[id(v)]
        p = v.producer
        if not _recomputable(v):
            raise PassError(f"remat: {v.name} is needed in the backward pass but cannot be recomputed")
        operands = [clone_of(u, before) for u in p.operands]
        c = Op(p.opname, operands, dict(p.attrs), [r.type for r in p.results],
               [f"{r.name}.remat" for r in p.results], None, f"grad:remat:{p.loc or p.opname}")
        g.insert(c, g.ops.index(before))
        flops += op_flops(c)
        for r, cr in zip(p.results, c.results):
            memo[id(r)] = cr
        return memo[id(v)]

    for op in list(g.ops[start:]):
        for i, v in enumerate(list(op.operands)):
            if v.name in drop and not available(v):
                op.set_operand(i, clone_of(v, op))
    return flops


def parse_budget(text: str, baseline: int) -> int | None:
    """``"0.5"`` -> half the baseline; ``"64000000"`` / ``"64MB"`` / ``"1.5GiB"`` -> bytes; ``""`` -> None."""
    t = text.strip().upper().replace("_", "")
    if not t:
        return None
    units = {"KIB": 1 << 10, "MIB": 1 << 20, "GIB": 1 << 30, "KB": 10**3, "MB": 10**6, "GB": 10**9, "B": 1}
    for u, mult in units.items():
        if t.endswith(u):
            return int(float(t[: -len(u)]) * mult)
    try:
        x = float(t)
    except ValueError:
        raise PassError(f"remat: memory budget {text!r} is not a number of bytes or a fraction") from None
    if 0 < x <= 1:
        return int(x * baseline)
    return int(x)


@register_pass("remat")
@dataclass
class Remat(Pass):
    """Recompute cheap activations in the backward pass to fit a memory budget."""

    budget: str = ""

    def run(self, module: Module) -> bool:
        g = module.main
        start = backward_start(g)
        if start is None:
            self.stats = {"skipped": "no backward pass in the graph"}
            return False
        baseline = plan_graph(g).arena_bytes
        forward_flops = sum(op_flops(op) for op in g.ops[:start])
        target = parse_budget(self.budget, baseline)
        forward = {id(op) for op in g.ops[:start]}
        ranked = [v.name for v in rank_candidates(_stashed(g, start), forward)]
        best = None  # (meets, arena or flops key, n, arena, flops)
        for frac in FRACTIONS:
            n = round(frac * len(ranked))
            trial = g.clone()
            flops = rematerialize(trial, set(ranked[:n]))
            arena = plan_graph(trial).arena_bytes
            meets = target is not None and arena <= target
            key = (0, flops, arena) if meets else (1, arena, flops)
            if best is None or key < best[0]:
                best = (key, n, arena, flops)
        _, n, arena, flops = best
        changed = n > 0 and arena < baseline
        if changed:
            rematerialize(g, set(ranked[:n]))
        else:
            n, arena, flops = 0, baseline, 0
        self.stats = {"arena_before": baseline, "arena_after": arena, "recomputed": n,
                      "candidates": len(ranked), "extra_flops": flops, "forward_flops": forward_flops,
                      "budget": target, "budget_met": None if target is None else arena <= target}
        return changed

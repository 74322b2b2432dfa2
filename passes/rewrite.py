"""Match/rewrite patterns driven by a worklist.

A ``Pattern`` names the ops it looks at and tries to rewrite one op at a time through a
``Rewriter``; ``apply_patterns`` visits ops in order, and after a successful rewrite revisits the
users of what changed, until nothing matches (a fixpoint) or ``max_rewrites`` is reached.
"""

from __future__ import annotations

from collections import deque
from typing import Iterable, Sequence

from nnc.ir import Builder, Graph, Module, Op, Value


class Rewriter:
    def __init__(self, module: Module, graph: Graph):
        self.module = module
        self.graph = graph
        self.builder = Builder(module, graph)
        self.touched: list[Op] = []

    def builder_before(self, op: Op) -> Builder:
        """A builder inserting just before ``op`` (new ops keep ``op``'s source location)."""
        self.builder.set_insertion_before(op)
        self.builder.loc = op.loc
        return self.builder

    def replace(self, op: Op, new_values: Sequence[Value]) -> None:
        """Redirect every use of ``op``'s results to ``new_values`` and erase ``op``."""
        for old, new in zip(op.results, new_values):
            if old is new:
                continue
            if new.type != old.type:
                raise TypeError(f"replacing %{old.name} ({old.type}) by %{new.name} ({new.type}) changes its type")
            for user, _ in old.uses:
                self.touched.append(user)
            self.graph.replace_all_uses(old, new)
        for v in new_values:
            if v.producer is not None:
                self.touched.append(v.producer)
        self.graph.erase(op)


class Pattern:
    """Override ``opnames`` (or leave empty for every op) and ``rewrite``."""

    opnames: tuple[str, ...] = ()

    def rewrite(self, op: Op, rw: Rewriter) -> bool:
        raise NotImplementedError


def apply_patterns(module: Module, patterns: Iterable[Pattern], max_rewrites: int = 1_000_000) -> int:
    """Apply patterns to every graph until a fixpoint; return the number of rewrites."""
    patterns = list(patterns)
    by_name: dict[str, list[Pattern]] = {}
    generic = [p for p in patterns if not p.opnames]
    for p in patterns:
        for n in p.opnames:
            by_name.setdefault(n, []).append(p)
    total = 0
    for g in module.graphs.values():
        rw = Rewriter(module, g)
        work = deque(g.ops)
        queued = {id(op) for op in work}
        while work and total < max_rewrites:
            op = work.popleft()
            queued.discard(id(op))
            if op not in g.ops:  # erased since it was queued
                continue
            for p in by_name.get(op.opname, []) + generic:
                rw.touched = []
                if p.rewrite(op, rw):
                    total += 1
                    for t in rw.touched:
                        if id(t) not in queued:
                            work.append(t)
                            queued.add(id(t))
                    break
    return total

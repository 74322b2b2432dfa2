"""``cse``: common-subexpression elimination.

Two pure ops with the same name, operands and attributes compute the same thing; the later one is
replaced by the earlier. Constants are equal when they read the same pool entry, or entries with
equal (small) data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Module

from .registry import Pass, register_pass

_SMALL = 1024  # elements: larger constants are compared by pool key only


@register_pass("cse")
@dataclass
class CommonSubexpressionElimination(Pass):
    def run(self, module: Module) -> bool:
        changed = False
        for g in module.graphs.values():
            seen: dict[tuple, list] = {}
            for op in list(g.ops):
                if not op.opdef.is_pure or op.regions:
                    continue
                key = self._key(module, op)
                if key is None:
                    continue
                prior = seen.get(key)
                if prior is None:
                    seen[key] = op.results
                    continue
                for old, new in zip(op.results, prior):
                    g.replace_all_uses(old, new)
                g.erase(op)
                self.note("ops_merged")
                changed = True
        return changed

    def _key(self, module: Module, op) -> tuple | None:
        if op.opname == "const":
            ref = op.attrs["ref"]
            arr = module.constants.get(ref)
            t = op.results[0].type
            if arr is not None and arr.size <= _SMALL:
                return ("const", str(t), arr.tobytes(), str(np.asarray(arr).dtype))
            return ("const-ref", ref)
        attrs = tuple(sorted((k, _hashable(v)) for k, v in op.attrs.items()))
        return (op.opname, tuple(id(v) for v in op.operands), attrs, len(op.results))


def _hashable(v):
    if isinstance(v, float) and v != v:
        return ("nan",)
    return v

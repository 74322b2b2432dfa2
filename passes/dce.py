"""``dce``: remove pure ops whose results nobody reads, and constant-pool entries nothing uses."""

from __future__ import annotations

from dataclasses import dataclass

from nnc.ir import Module

from .registry import Pass, register_pass


@register_pass("dce")
@dataclass
class DeadCodeElimination(Pass):
    """Delete unused pure ops (in reverse order, so whole dead chains go in one run) and unused
    constants from the pool."""

    prune_constants: bool = True

    def run(self, module: Module) -> bool:
        changed = False
        for g in module.graphs.values():
            outputs = {id(v) for v in g.outputs}
            for op in reversed(list(g.ops)):
                if not op.opdef.is_pure:
                    continue
                if any(r.uses or id(r) in outputs for r in op.results):
                    continue
                g.erase(op)
                self.note("ops_removed")
                changed = True
        if self.prune_constants:
            used = {op.attrs["ref"] for g in module.graphs.values() for op in g.walk() if op.opname == "const"}
            used |= {p.binding for g in module.graphs.values() for p in g.params if p.binding}
            for key in [k for k in module.constant_types if k not in used]:
                module.constants.pop(key, None)
                del module.constant_types[key]
                self.note("constants_removed")
                changed = True
        return changed

"""``freeze``: weights become constants.

Graph parameters bound to a pool entry (trainable parameters, as imported with
``weights="param"``) are replaced by ``const`` ops reading the same entry, so inference passes can
fold, fuse and pre-pack them.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.ir import Builder, Module

from .registry import Pass, register_pass


@register_pass("freeze")
@dataclass
class Freeze(Pass):
    def run(self, module: Module) -> bool:
        changed = False
        for g in module.graphs.values():
            bound = [p for p in g.params if p.binding is not None]
            if not bound:
                continue
            b = Builder(module, g)
            b._index = 0  # the constants go first, in parameter order
            for p in bound:
                c = b.const_ref(p.binding, p.name + ".frozen")
                g.replace_all_uses(p, c)
                g.params.remove(p)
                g._names.discard(p.name)
                g.rename(c, p.name)
                self.note("params_frozen")
                changed = True
        return changed

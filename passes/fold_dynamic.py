"""``fold-dynamic``: dynamic parameters whose operands are constants become attributes.

Ops such as ``reshape`` or ``slice`` take their shape-like parameters as operands when the model
computes them at run time (see ``ir/registry.py``). Once those operands are constants (after
import-time folding, ``fold-constants`` or specialisation), this pass writes the values into the
attributes and drops the operands, so backends and later passes see the static form.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.ir import Module, const_value
from nnc.ir.registry import array_to_attr
from nnc.ir.specialize import reinfer

from .registry import Pass, register_pass


@register_pass("fold-dynamic")
@dataclass
class FoldDynamic(Pass):
    def run(self, module: Module) -> bool:
        changed = False
        for g in module.graphs.values():
            for op in g.ops:
                d = op.opdef
                if not d.dynamic:
                    continue
                names = d.operand_names
                dyn = sorted((names.index(o), a) for a, o in d.dynamic.items() if names.index(o) < len(op.operands))
                if not dyn:
                    continue
                first = dyn[0][0]
                if len(op.operands) <= first:
                    continue
                # dynamic operands are trailing; fold them only if every one of them is constant
                values = [const_value(module, op.operands[i]) for i, _ in dyn]
                if any(v is None for v in values):
                    continue
                for (_, attr), v in zip(dyn, values):
                    op.attrs[attr] = array_to_attr(d.attrs[attr].kind, v)
                for i in range(len(op.operands) - 1, first - 1, -1):
                    v = op.operands[i]
                    v.uses.remove((op, i))
                    op.operands.pop()
                self.note("operands_folded", len(dyn))
                changed = True
        if changed:
            # result types were inferred while the operands were unknown ('?' dims): refine them
            reinfer(module)
        return changed

"""``fold-constants``: evaluate ops whose operands are all constants, and fold dynamic attributes.

An op folds when it is pure, its declaration allows folding, and every operand is a ``const`` with
data; its results become new pool entries. Shape queries on values with static shapes fold too,
which is what makes ``shape -> gather -> concat -> reshape`` chains disappear. Results larger than
``max-bytes`` are left alone (folding must not blow up the weights), unless all inputs are weights
anyway (folding then only moves work from every run to compile time).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Builder, Module, const_value
from nnc.ir.interpreter import Interpreter
from nnc.ir.specialize import reinfer

from .registry import Pass, register_pass


@register_pass("fold-constants")
@dataclass
class FoldConstants(Pass):
    max_bytes: int = 1 << 30

    def run(self, module: Module) -> bool:
        changed = False
        interp = Interpreter(module)
        for g in module.graphs.values():
            b = Builder(module, g)
            for op in list(g.ops):
                d = op.opdef
                if op.opname == "const" or not d.is_pure or not d.fold:
                    continue
                arrays = [const_value(module, v) for v in op.operands]
                x = op.operands[0] if op.opname == "shape" else None
                if x is not None and x.type.is_static:  # reads only the shape: a zero-stride stand-in
                    arrays = [np.broadcast_to(np.zeros((), x.type.dtype.numpy), x.type.shape)]
                if any(a is None for a in arrays):
                    continue
                out_bytes = sum((r.type.nbytes or 0) for r in op.results)
                if out_bytes > self.max_bytes:
                    continue
                results = interp.run_op(op, arrays)  # type: ignore[arg-type]
                b.set_insertion_before(op)
                b.loc = op.loc
                folded = []
                for r, a in zip(op.results, results):
                    key = module.add_constant(r.name, np.asarray(a, order="C"))
                    c = b.const_ref(key, r.name + ".folded")
                    g.replace_all_uses(r, c)
                    folded.append((c, r.name))
                g.erase(op)
                for c, name in folded:  # the constant takes over the folded value's name
                    g.rename(c, name)
                self.note("ops_folded")
                changed = True
        if changed:
            reinfer(module)  # types inferred while these values were unknown ('?' dims) can now be exact
        return changed

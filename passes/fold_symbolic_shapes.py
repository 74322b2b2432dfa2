"""``fold-symbolic-shapes``: reshapes whose target is a run-time function of the input dims are
written with copied (``0``) and inferred (``-1``) entries, so their result types name the symbols.

An exporter writes ``x.reshape(b, s, heads, dh)`` of a model with a symbolic batch and sequence as
``Shape -> Gather -> Concat -> Reshape``, and ``flatten(1)`` as a reshape to ``[-1, C*H*W]``; type
inference can only give such results ``?`` dims, which then spread to every value after them.
This pass evaluates the graph's shapes once as formulas of the input symbols
(``ir.sym_names.formula_types``, probing each symbol at a distinct large prime) and, for
each reshape whose result has a ``?`` dim, writes the target as ints, ``0`` where an entry equals the
operand's dim at the same index, and ``-1`` for at most one other entry, keeping the rewrite only
when type inference then gives the formulas' dims exactly. Autodiff needs this (a gradient must
be reshaped back to its operand's exact type); backends get shapes they need not compute from
tensors. Reshapes it cannot express stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nnc.ir import Module
from nnc.ir.errors import TypeInferenceError
from nnc.ir.specialize import reinfer
from nnc.ir.sym_names import expr, formula_types, formulas_equal, input_name
from nnc.ir.types import UNKNOWN

from .registry import Pass, register_pass


def _target(x_dims: list[Any], out_dims: list[Any]) -> list[int] | None:
    attr: list[int] = []
    for j, d in enumerate(out_dims):
        e = expr(d)
        if e[0] == "const":
            if e[1] == 0:
                return None  # a literal 0 would read as "copy"
            attr.append(int(e[1]))
        elif j < len(x_dims) and formulas_equal(e, expr(x_dims[j])):
            attr.append(0)
        else:
            attr.append(-1)
    return attr if attr.count(-1) <= 1 else None


@register_pass("fold-symbolic-shapes")
@dataclass
class FoldSymbolicShapes(Pass):
    def run(self, module: Module) -> bool:
        g = module.main
        if all(getattr(p.type, "is_static", False) for p in g.params):
            return False
        types = formula_types(module, g)
        if types is None:
            return False  # shapes that depend on values: nothing to fold here
        changed = False
        for op in g.ops:
            if op.opname != "reshape" or all(d != UNKNOWN for d in (op.results[0].type.shape or [UNKNOWN])):
                continue
            x, r = op.operands[0], op.results[0]
            x_dims, out_dims = list(types[id(x)].shape), list(types[id(r)].shape)
            attr = _target(x_dims, out_dims)
            if attr is None:
                continue
            want = tuple(input_name(d) for d in out_dims)
            try:
                (got,) = op.opdef.run_infer([x.type], {"shape": attr, "copy_zero": 1}, [None])
            except TypeInferenceError:
                continue
            if got.shape != want or got.shape == r.type.shape:
                continue
            for i in range(len(op.operands) - 1, 0, -1):
                v = op.operands.pop()
                v.uses.remove((op, i))
            op.attrs["shape"], op.attrs["copy_zero"] = tuple(attr), 1
            r.type = got
            self.note("reshapes_folded")
            changed = True
            reinfer(module)  # later reshapes compare against the refined operand types
        return changed

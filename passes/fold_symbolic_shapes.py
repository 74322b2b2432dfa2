"""``fold-symbolic-shapes``: reshapes whose target is a run-time function of the input dims are
written with copied (``0``) and inferred (``-1``) entries, so their result types name the symbols.

An exporter writes ``x.reshape(b, s, heads, dh)`` of a model with a symbolic batch and sequence as
``Shape -> Gather -> Concat -> Reshape``, and ``flatten(1)`` as a reshape to ``[-1, C*H*W]``; type
inference can only give such results ``?`` dims, which then spread to every value after them.
This pass evaluates the graph's shapes once as formulas of the input symbols
(``ir.sym_dims.SymbolicShapeEvaluator``, probing each symbol at a distinct large value) and, for
each reshape whose result has a ``?`` dim, writes the target as ints, ``0`` where an entry equals the
operand's dim at the same index, and ``-1`` for at most one other entry, keeping the rewrite only
when type inference then gives the formulas' dims exactly. Autodiff needs this (a gradient must
be reshaped back to its operand's exact type); backends get shapes they need not compute from
tensors. Reshapes it cannot express stay as they are.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from nnc.ir import Graph, InputError, Module, Op
from nnc.ir.errors import TypeInferenceError
from nnc.ir.specialize import reinfer
from nnc.ir.sym_dims import SymbolicShapeEvaluator, SymInt, const, evaluate, same, symbols_of
from nnc.ir.types import UNKNOWN

from .registry import Pass, register_pass

_PRIMES = (1009, 1013, 1019, 1021, 1031, 1033, 1039, 1049, 1051, 1061, 1063, 1069, 1087, 1091, 1093, 1097)


def _input_shapes(g: Graph) -> list[list[Any]] | None:
    names: dict[str, int] = {}
    shapes = []
    for p in g.params:
        t = p.type
        if getattr(t, "shape", None) is None:
            return None
        dims: list[Any] = []
        for d in t.shape:
            if isinstance(d, int):
                dims.append(d)
                continue
            key = d if d != UNKNOWN else f"?{len(names)}"  # each '?' its own unnamed symbol
            if key not in names:
                if len(names) >= len(_PRIMES):
                    return None
                names[key] = _PRIMES[len(names)]
            dims.append(SymInt(names[key], ("sym", key)))
        shapes.append(dims)
    return shapes


def _expr(d: Any):
    return d.expr if isinstance(d, SymInt) else const(int(d))


def _equal(a, b) -> bool:
    """Two formulas are the same function of the symbols: equal as polynomials, or (with exact
    divisions such as ``(batch*32)//32``) equal at several assignments of distinct primes."""
    if same(a, b):
        return True
    names = sorted(symbols_of(a) | symbols_of(b))
    for shift in range(3):
        env = {n: _PRIMES[(i + 5 * shift) % len(_PRIMES)] for i, n in enumerate(names)}
        if evaluate(a, env) != evaluate(b, env):
            return False
    return True


def _target(op: Op, x_dims: list[Any], out_dims: list[Any]) -> list[int] | None:
    attr: list[int] = []
    for j, d in enumerate(out_dims):
        e = _expr(d)
        if e[0] == "const":
            if e[1] == 0:
                return None  # a literal 0 would read as "copy"
            attr.append(int(e[1]))
        elif j < len(x_dims) and _equal(e, _expr(x_dims[j])):
            attr.append(0)
        else:
            attr.append(-1)
    return attr if attr.count(-1) <= 1 else None


def _named(d: Any) -> Any:
    """The type dim a formula stands for: an int, an input symbol, or '?'."""
    e = _expr(d)
    if e[0] == "const":
        return int(e[1])
    for name in symbols_of(e):
        if not name.startswith("?") and _equal(e, ("sym", name)):
            return name
    return UNKNOWN


@register_pass("fold-symbolic-shapes")
@dataclass
class FoldSymbolicShapes(Pass):
    def run(self, module: Module) -> bool:
        g = module.main
        if all(getattr(p.type, "is_static", False) for p in g.params):
            return False
        shapes = _input_shapes(g)
        if shapes is None:
            return False
        try:
            types = SymbolicShapeEvaluator(module, g).symbolic_types(shapes)
        except (InputError, TypeInferenceError, KeyError, ValueError, TypeError):
            return False  # shapes that depend on values: nothing to fold here
        changed = False
        for op in g.ops:
            if op.opname != "reshape" or all(d != UNKNOWN for d in (op.results[0].type.shape or [UNKNOWN])):
                continue
            x, r = op.operands[0], op.results[0]
            x_dims, out_dims = list(types[id(x)].shape), list(types[id(r)].shape)
            attr = _target(op, x_dims, out_dims)
            if attr is None:
                continue
            want = tuple(_named(d) for d in out_dims)
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

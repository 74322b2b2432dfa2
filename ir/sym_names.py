"""Names for the dims of a symbolic graph: every dim as an int, an input symbol, or a name shared by
the dims computed by one formula.

Type inference alone gives ``?`` to a dim computed at run time (a reshape whose target comes from
``Shape -> Gather -> Concat``, a ``Range`` up to a sequence length). ``SymbolicShapeEvaluator``
knows such a dim as a formula of the input dims. ``named_types`` turns those formulas back into
type dims: a constant is an int, a formula equal to an input symbol is that symbol, and any other
formula (``batch*seq``) gets a synthetic name (``_d0``) shared by every dim with an equal formula,
so two dims that are always equal compare equal. Autodiff uses these types while it decides
which axes were broadcast; ``passes/fold_symbolic_shapes.py`` uses the formulas to rewrite
reshapes.
"""

from __future__ import annotations

from typing import Any

from .errors import InputError, TypeInferenceError
from .graph import Graph, Module
from .sym_dims import Expr, SymbolicShapeEvaluator, SymInt, const, evaluate, same, symbols_of
from .types import UNKNOWN, TensorType

# probe values: distinct primes, so no symbol is probed at 1 or at another's value
PRIMES = (1009, 1013, 1019, 1021, 1031, 1033, 1039, 1049, 1051, 1061, 1063, 1069, 1087, 1091, 1093, 1097)
UNNAMED = "?"  # prefix of the symbols standing for an input's '?' dims (not names a type may use)


def symbolic_input_shapes(g: Graph) -> list[list[Any]] | None:
    """The input shapes as ints and ``SymInt`` probes (each ``?`` its own symbol), or None when
    an input has an unknown rank or there are too many symbols."""
    names: dict[str, int] = {}
    shapes = []
    for p in g.params:
        shape = getattr(p.type, "shape", None)
        if shape is None:
            return None
        dims: list[Any] = []
        for d in shape:
            if isinstance(d, int):
                dims.append(d)
                continue
            key = d if d != UNKNOWN else f"{UNNAMED}{len(names)}"
            if key not in names:
                if len(names) >= len(PRIMES):
                    return None
                names[key] = PRIMES[len(names)]
            dims.append(SymInt(names[key], ("sym", key)))
        shapes.append(dims)
    return shapes


def expr(d: Any) -> Expr:
    return d.expr if isinstance(d, SymInt) else const(int(d))


def formulas_equal(a: Expr, b: Expr) -> bool:
    """Two formulas are the same function of the symbols: equal as polynomials, or (with exact
    divisions such as ``(batch*32)//32``) equal at several assignments of distinct primes."""
    if same(a, b):
        return True
    names = sorted(symbols_of(a) | symbols_of(b))
    for shift in range(3):
        env = {n: PRIMES[(i + 5 * shift) % len(PRIMES)] for i, n in enumerate(names)}
        if evaluate(a, env) != evaluate(b, env):
            return False
    return True


def formula_types(module: Module, g: Graph) -> dict[int, TensorType] | None:
    """``id(value) -> TensorType`` with ints and ``SymInt`` dims for the params and op results of
    ``g``, or None when its shapes depend on values (or cannot be evaluated)."""
    shapes = symbolic_input_shapes(g)
    if shapes is None:
        return None
    try:
        return SymbolicShapeEvaluator(module, g).symbolic_types(shapes)
    except (InputError, TypeInferenceError, KeyError, ValueError, TypeError):
        return None


def input_name(d: Any) -> Any:
    """The type dim a formula stands for: an int, an input symbol, or ``?``."""
    e = expr(d)
    if e[0] == "const":
        return int(e[1])
    for name in symbols_of(e):
        if not name.startswith(UNNAMED) and formulas_equal(e, ("sym", name)):
            return name
    return UNKNOWN


def named_types(module: Module, g: Graph) -> dict[int, TensorType] | None:
    """``id(value) -> TensorType`` of ``g``'s params and op results with every dim named (see the
    module docstring), or None when the formulas are not available."""
    types = formula_types(module, g)
    if types is None:
        return None
    synthetic: list[tuple[Expr, str]] = []

    def name(d: Any) -> Any:
        n = input_name(d)
        if n != UNKNOWN:
            return n
        e = expr(d)
        for f, s in synthetic:
            if formulas_equal(e, f):
                return s
        synthetic.append((e, f"_d{len(synthetic)}"))
        return synthetic[-1][1]

    out: dict[int, TensorType] = {}
    for k, t in types.items():
        if isinstance(t, TensorType) and t.shape is not None:
            out[k] = TensorType(t.dtype, tuple(name(d) for d in t.shape))
    return out

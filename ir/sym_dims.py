"""Dims as formulas of the input dims: the shapes of a symbolic graph, derived once for every binding.

``ShapeEvaluator`` computes concrete shapes for one binding of the inputs. A caller with no Python
at run time (a shared library's C entry point) needs the same shapes as *formulas* of the input
dims. ``SymbolicShapeEvaluator`` gets them by running that same evaluation once on ``SymInt``
dims: ints (so every type-inference rule and reference op computes with them as usual) that also
carry the expression they were computed by. A derived dim is then an ``Expr`` over the input
symbols: ``+ - * // %``, ``max``/``min`` and constants.

Comparisons see only the probe value, so a formula is exact where the branches taken at the
probe are the ones taken at other dims (a dim compared with 1 for broadcasting, a slice clamped
at a table's length). Callers check the formulas against ``ShapeEvaluator`` at other bindings
(``backends/x86/frame_formulas.py`` does, at the corners of the bounds) and refuse the model when
one disagrees. A value computed outside the tracked arithmetic (a float, ``int()``) shows up the
same way: as a constant that is wrong elsewhere.
"""

from __future__ import annotations

import contextvars
import itertools
from typing import Any, Callable, Mapping, Sequence, Union

import numpy as np

from .errors import InputError
from .graph import Op
from .registry import Trait
from .shape_eval import ShapeEvaluator
from .types import TensorType

# An expression: ("sym", name) | ("const", value) | (op, a, b) with op in add mul floordiv mod max min
Expr = Union[tuple[str, str], tuple[str, int], tuple[str, Any, Any]]

_INT_OPS: dict[str, Callable[[int, int], int]] = {
    "add": lambda a, b: a + b, "mul": lambda a, b: a * b, "floordiv": lambda a, b: a // b,
    "mod": lambda a, b: a % b, "max": max, "min": min,
}


def const(v: int) -> Expr:
    return ("const", int(v))


def is_const(e: Expr) -> bool:
    return e[0] == "const"


def combine(op: str, a: Expr, b: Expr) -> Expr:
    """``op(a, b)`` with constants folded and the identities of 0 and 1 applied."""
    if is_const(a) and is_const(b):
        return const(_INT_OPS[op](a[1], b[1]))
    if op in ("add", "mul") and is_const(a):
        a, b = b, a
    if op in ("add", "mul") and is_const(b) and a[0] == op and is_const(a[2]):  # (x + 1) + 2 = x + 3
        return combine(op, a[1], const(_INT_OPS[op](a[2][1], b[1])))
    if op == "add":
        if b == ("const", 0):
            return a
    elif op == "mul":
        if b == ("const", 1):
            return a
        if b == ("const", 0):
            return b
    elif op == "floordiv" and b == ("const", 1):
        return a
    return (op, a, b)


def evaluate(e: Expr, env: Mapping[str, int]) -> int:
    if e[0] == "sym":
        return int(env[e[1]])
    if e[0] == "const":
        return int(e[1])
    return _INT_OPS[e[0]](evaluate(e[1], env), evaluate(e[2], env))


def symbols_of(e: Expr) -> set[str]:
    if e[0] == "sym":
        return {e[1]}
    if e[0] == "const":
        return set()
    return symbols_of(e[1]) | symbols_of(e[2])


def is_monotone(e: Expr, at_ones: Callable[[Expr], int]) -> bool:
    """Whether ``e`` never decreases when a symbol grows (symbols >= 1), judged from its form:
    sums, max/min, products of factors that are >= 0 at all-ones (hence everywhere), division by a
    positive constant. ``at_ones(x)`` evaluates ``x`` with every symbol 1."""
    op = e[0]
    if op in ("sym", "const"):
        return True
    a, b = e[1], e[2]
    if op in ("add", "max", "min"):
        return is_monotone(a, at_ones) and is_monotone(b, at_ones)
    if op == "mul":
        return all(is_monotone(x, at_ones) and at_ones(x) >= 0 for x in (a, b))
    if op == "floordiv":
        return is_monotone(a, at_ones) and is_const(b) and b[1] > 0
    return False  # mod


def text(e: Expr) -> str:
    """A formula as text: ``((batch*sequence)*64)``."""
    if e[0] in ("sym", "const"):
        return str(e[1])
    a, b = text(e[1]), text(e[2])
    if e[0] in ("max", "min"):
        return f"{e[0]}({a}, {b})"
    return f"({a}{ {'add': '+', 'mul': '*', 'floordiv': '//', 'mod': '%'}[e[0]]}{b})"


def polynomial(e: Expr) -> dict[tuple[str, ...], int]:
    """``e`` as a sum of monomials (sorted factor names -> coefficient); a ``//``, ``%``, ``max`` or
    ``min`` term is one opaque factor. Equal polynomials are equal formulas."""
    if e[0] == "const":
        return {(): int(e[1])} if e[1] else {}
    if e[0] == "sym":
        return {(str(e[1]),): 1}
    if e[0] == "add":
        out = dict(polynomial(e[1]))
        for m, c in polynomial(e[2]).items():
            out[m] = out.get(m, 0) + c
        return {m: c for m, c in out.items() if c}
    if e[0] == "mul":
        out = {}
        for (ma, ca), (mb, cb) in itertools.product(polynomial(e[1]).items(), polynomial(e[2]).items()):
            m = tuple(sorted(ma + mb))
            out[m] = out.get(m, 0) + ca * cb
        return {m: c for m, c in out.items() if c}
    return {(text(e),): 1}


def same(a: Expr, b: Expr) -> bool:
    return polynomial(a) == polynomial(b)


def expr_of(v: Any) -> Expr:
    return v.expr if isinstance(v, SymInt) else const(int(v))


_GUARDS: contextvars.ContextVar[set | None] = contextvars.ContextVar("nnc_sym_guards", default=None)
_NEGATE = {"lt": "ge", "ge": "lt", "le": "gt", "gt": "le", "eq": "ne", "ne": "eq"}
_COMPARE: dict[str, Callable[[int, int], bool]] = {
    "lt": lambda a, b: a < b, "le": lambda a, b: a <= b, "gt": lambda a, b: a > b, "ge": lambda a, b: a >= b,
    "eq": lambda a, b: a == b, "ne": lambda a, b: a != b}
Guard = tuple[str, Expr, Expr]  # (comparison, a, b): "a <op> b" held at the probe


class recording_guards:
    """Collect every comparison made on ``SymInt`` dims inside the block (``with recording_guards()
    as guards``): the branches the shape evaluation took at the probe. Formulas derived there hold
    wherever every guard holds (``guards_hold``), as dynamo's guards do for a traced graph."""

    def __enter__(self) -> set[Guard]:
        self._guards: set[Guard] = set()
        self._token = _GUARDS.set(self._guards)
        return self._guards

    def __exit__(self, *exc: Any) -> None:
        _GUARDS.reset(self._token)


def guards_hold(guards: Any, env: Mapping[str, int]) -> bool:
    return all(_COMPARE[op](evaluate(a, env), evaluate(b, env)) for op, a, b in guards)


def _compare(op: str, a: Any, b: Any) -> Any:
    if isinstance(b, (bool, np.bool_)) or not isinstance(b, (int, np.integer)):
        return NotImplemented
    result = _COMPARE[op](int(a), int(b))
    guards = _GUARDS.get()
    if guards is not None:
        ea, eb = expr_of(a), expr_of(b)
        if not (is_const(ea) and is_const(eb)) and ea != eb:  # x == x holds everywhere
            guards.add((op if result else _NEGATE[op], ea, eb))
    return result


class SymInt(int):
    """An int (the probe value) that remembers the expression it was computed by. Comparisons are
    recorded as guards inside ``recording_guards``."""

    expr: Expr
    __hash__ = int.__hash__

    def __lt__(self, o: Any) -> Any:
        return _compare("lt", self, o)

    def __le__(self, o: Any) -> Any:
        return _compare("le", self, o)

    def __gt__(self, o: Any) -> Any:
        return _compare("gt", self, o)

    def __ge__(self, o: Any) -> Any:
        return _compare("ge", self, o)

    def __eq__(self, o: Any) -> Any:  # type: ignore[override]
        return _compare("eq", self, o)

    def __ne__(self, o: Any) -> Any:  # type: ignore[override]
        return _compare("ne", self, o)

    def __bool__(self) -> bool:
        return bool(_compare("ne", self, 0))

    def __new__(cls, value: int, expr: Expr) -> Any:
        if is_const(expr):
            return int(value)
        obj = super().__new__(cls, value)
        obj.expr = expr
        return obj

    def _op(self, other: Any, op: str, swap: bool = False) -> Any:
        if isinstance(other, (bool, np.bool_)) or not isinstance(other, (int, np.integer)):
            return NotImplemented
        a, b = (int(other), int(self)) if swap else (int(self), int(other))
        ea, eb = (expr_of(other), self.expr) if swap else (self.expr, expr_of(other))
        return SymInt(_INT_OPS[op](a, b), combine(op, ea, eb))

    def __add__(self, o: Any) -> Any:
        return self._op(o, "add")

    def __radd__(self, o: Any) -> Any:
        return self._op(o, "add", True)

    def __sub__(self, o: Any) -> Any:
        if isinstance(o, (bool, np.bool_)) or not isinstance(o, (int, np.integer)):
            return NotImplemented
        return self._op(-o if isinstance(o, SymInt) else -int(o), "add")

    def __rsub__(self, o: Any) -> Any:
        return (-self)._op(o, "add", True)

    def __neg__(self) -> Any:
        return SymInt(-int(self), combine("mul", self.expr, const(-1)))

    def __pos__(self) -> Any:
        return self

    def __mul__(self, o: Any) -> Any:
        return self._op(o, "mul")

    def __rmul__(self, o: Any) -> Any:
        return self._op(o, "mul", True)

    def __floordiv__(self, o: Any) -> Any:
        return self._op(o, "floordiv")

    def __rfloordiv__(self, o: Any) -> Any:
        return self._op(o, "floordiv", True)

    def __mod__(self, o: Any) -> Any:
        return self._op(o, "mod")

    def __rmod__(self, o: Any) -> Any:
        return self._op(o, "mod", True)

    def __repr__(self) -> str:
        return f"SymInt({int(self)}, {self.expr!r})"


def sym_max(a: Any, b: Any) -> Any:
    return SymInt(max(int(a), int(b)), combine("max", expr_of(a), expr_of(b)))


def _obj(a: Any) -> np.ndarray:
    return np.asarray(a, dtype=object)


class SymbolicShapeEvaluator(ShapeEvaluator):
    """``ShapeEvaluator`` over ``SymInt`` dims: every value's type, with formulas for its dims."""

    def symbolic_types(self, shapes: Sequence[Sequence[Any]]) -> dict[int, TensorType]:
        """``id(value) -> TensorType`` whose dims are ints and ``SymInt``s, for input shapes made
        of them (in parameter order). The graph must not read the values of its inputs."""
        if self.value_inputs():
            raise InputError(f"the values of input(s) {', '.join(self.value_inputs())} decide shapes")
        types: dict[int, TensorType] = {}
        for p, s in zip(self.graph.params, shapes):
            types[id(p)] = TensorType(p.type.dtype, tuple(s))
        self._walk(self.graph.ops, types, {})
        return types

    def _host_value(self, op: Op, arrays: list[np.ndarray], types: list[TensorType]) -> Any:
        if op.opname == "shape":  # the one op that turns dims into data: keep their formulas
            return _obj(list(types[0].shape)[op.attrs["start"]:op.attrs["end"]])
        if op.opname == "cast" and op.results[0].dtype.is_int and all(a.dtype == object for a in arrays):
            return arrays[0]  # an integer cast of dims keeps them (numpy's astype would drop the formulas)
        if op.opdef.traits & Trait.RANDOM or op.opname == "range":  # values that are not dims
            return super()._host_value(op, [a.astype(np.int64) if a.dtype == object else a for a in arrays], types)
        out = super()._host_value(op, [_obj(a) if a.dtype.kind in "iu" else a for a in arrays], types)
        # a scalar picked out of dims (gather of one index) is a SymInt: keep it in an object array
        if isinstance(out, (tuple, list)):
            return [_keep(a) for a in out]
        return _keep(out)


def _keep(a: Any) -> Any:
    return _obj(a) if isinstance(a, SymInt) else a


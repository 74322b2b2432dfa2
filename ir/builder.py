"""Builder: the one way frontends, passes and tests create ops.

It validates attributes against the schema, runs type inference (using constant operands where an
op's result shape depends on them), names results, and inserts at an insertion point.

    b = Builder(module, graph)
    h = b.op("matmul", x, w, name="h")
    y = b.op("relu", h)
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from .errors import TypeInferenceError
from .graph import Graph, Module, Op, Value
from .registry import get_opdef
from .types import TensorType

CONST = "const"


def const_value(module: Module, v: Value) -> np.ndarray | None:
    """The compile-time value of ``v`` when it is produced by a ``const`` op with data, else None."""
    p = v.producer
    if p is None or p.opname != CONST:
        return None
    return module.constants.get(p.attrs["ref"])


class Builder:
    def __init__(self, module: Module, graph: Graph | None = None, loc: str | None = None):
        self.module = module
        self.graph = graph if graph is not None else module.main
        self.loc = loc
        self._index: int | None = None  # insert position; None = append

    # -- insertion point ----------------------------------------------------------------------
    def set_insertion_before(self, op: Op) -> None:
        self._index = self.graph.ops.index(op)

    def set_insertion_end(self) -> None:
        self._index = None

    def _insert(self, op: Op) -> None:
        self.graph.insert(op, self._index)
        if self._index is not None:
            self._index += 1

    # -- ops ----------------------------------------------------------------------------------
    def create(self, opname: str, operands: Sequence[Value], attrs: dict[str, Any] | None = None,
               names: Sequence[str] | None = None, n_results: int | None = None,
               regions: list[Graph] | None = None, loc: str | None = None) -> Op:
        """Create, infer and insert an op; return it."""
        d = get_opdef(opname)
        loc = loc if loc is not None else self.loc
        where = f" (node {loc!r})" if loc else ""
        lo, hi = d.operand_range()
        if len(operands) < lo or (hi is not None and len(operands) > hi):
            want = f"{lo}" if lo == hi else f"{lo}..{'' if hi is None else hi}"
            raise TypeInferenceError(f"{opname}{where}: takes {want} operands, got {len(operands)}")
        full = d.complete_attrs(dict(attrs or {}), where)
        types = [v.type for v in operands]
        consts = [const_value(self.module, v) for v in operands]
        try:
            result_types = d.run_infer(types, full, consts, n_results, regions or ())
        except TypeInferenceError as e:
            raise TypeInferenceError(f"{e}{where}; operand types: "
                                     f"{', '.join(str(t) for t in types) or 'none'}") from None
        names = list(names) if names else []
        base = names[0] if names else opname
        while len(names) < len(result_types):
            names.append(f"{base}_{len(names)}" if names else base)
        op = Op(opname, list(operands), full, result_types, names[: len(result_types)], regions, loc)
        self._insert(op)
        return op

    def op(self, opname: str, *operands: Value, name: str | None = None, names: Sequence[str] | None = None,
           n_results: int | None = None, loc: str | None = None, regions: list[Graph] | None = None,
           **attrs: Any) -> Any:
        """Create an op; return its result Value, or the list of results for multi-result ops."""
        d = get_opdef(opname)
        op = self.create(opname, operands, attrs, names or ([name] if name else None), n_results,
                         regions=regions, loc=loc)
        if len(d.results) == 1 and not d.variadic_results:
            return op.results[0]
        return op.results

    def const(self, array: Any, name: str | None = None, dtype: Any = None) -> Value:
        """Add ``array`` to the constant pool and return a ``const`` value reading it."""
        arr = np.asarray(array) if dtype is None else np.asarray(array, dtype=dtype)
        key = self.module.add_constant(name or "c", np.asarray(arr, order="C"))
        return self.const_ref(key, name or key)

    def const_ref(self, key: str, name: str | None = None) -> Value:
        """A ``const`` op reading an existing pool entry."""
        t: TensorType = self.module.constant_type(key)
        op = Op(CONST, [], {"ref": key}, [t], [name or key], loc=self.loc)
        self._insert(op)
        return op.results[0]

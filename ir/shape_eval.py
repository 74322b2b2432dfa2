"""Concrete shapes of a graph with symbolic dims, for one binding of its inputs, without copying it.

A backend that compiles shape-generic code (x86: loop bounds and arena offsets read at run time)
still needs, for each new set of input shapes, the size of every intermediate value: to plan the
arena and to give kernels their dims. ``ShapeEvaluator`` works that out by walking the graph once
per binding with the ops' own type inference, on a side table (the graph is never retyped, so one
compiled graph serves concurrent bindings).

Some shapes depend on *values*: a ``Reshape`` whose target is computed as
``Shape -> Gather -> Concat``, a ``Range`` whose limit is a sequence length. At construction the
evaluator finds the values type inference needs (``needed``): the dynamic operands of ops
(reshape's shape, slice's starts...) and the small integer operands of ops whose result dims are
not derivable from operand shapes alone, then everything they are computed from, back to
``shape`` ops (which read only a shape), constants and inputs. Those are computed on the host with
the ops' reference semantics at each binding; they are a handful of tiny integer tensors. A needed
value that depends on the data of a floating tensor makes the graph data-dependent
(``data_dependence`` names it): its shapes cannot be known before its kernels run.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from .builder import const_value
from .dtypes import DType
from .errors import InputError, TypeInferenceError
from .graph import Graph, Module, Op, Value
from .registry import Trait
from .types import UNKNOWN, TensorType

MAX_HOST_ELEMENTS = 1 << 16  # a shape-deciding tensor larger than this is data, not a shape


def _unknown(t: TensorType) -> bool:
    return t.shape is None or any(not isinstance(d, int) for d in t.shape)


def _underived(t: TensorType) -> bool:
    """Some dim of ``t`` is not known from shapes alone: an unknown rank or a ``?`` dim."""
    return t.shape is None or any(d == UNKNOWN for d in t.shape)


class ShapeEvaluator:
    """Per-binding concrete types of every value of ``graph`` (its params and op results, and the
    values inside fused regions)."""

    def __init__(self, module: Module, graph: Graph):
        self.module = module
        self.graph = graph
        self.needed = _needed_values(graph)
        self.data_dependence = self._find_data_dependence()

    def _find_data_dependence(self) -> str | None:
        """Why some needed value cannot be computed from input shapes (and integer inputs), or None."""
        for op in self.graph.ops:
            if op.opname in ("const", "shape"):
                continue
            for r in op.results:
                if id(r) not in self.needed:
                    continue
                if op.opdef.traits & Trait.RANDOM or op.regions and op.opname != "fused":
                    return f"{op.where()} computes a shape from random data or a nested graph"
                for v in op.operands:
                    if v.producer is None and v.dtype.is_float:
                        return f"{op.where()} computes a shape from the data of input %{v.name}"
                    if v.producer is not None and v.dtype.is_float and id(v) not in self.needed:
                        return f"{op.where()} computes a shape from floating-point data %{v.name}"
        return None

    def value_inputs(self) -> list[str]:
        """The graph inputs whose values (not only shapes) decide shapes."""
        return [p.name for p in self.graph.params if id(p) in self.needed]

    def types(self, args: Sequence[np.ndarray]) -> dict[int, TensorType]:
        """``id(value) -> TensorType`` (static) for the inputs ``args`` (arrays in parameter order;
        only the shapes matter, and the values of ``value_inputs``)."""
        g = self.graph
        types: dict[int, TensorType] = {}
        known: dict[int, np.ndarray] = {}
        for p, a in zip(g.params, args):
            types[id(p)] = TensorType(p.type.dtype, tuple(int(d) for d in np.shape(a)))
            if id(p) in self.needed:
                known[id(p)] = np.asarray(a)
        self._walk(g.ops, types, known)
        return types

    def _walk(self, ops: Sequence[Op], types: dict[int, TensorType], known: dict[int, np.ndarray]) -> None:
        for op in ops:
            if op.opname == "const":
                r = op.results[0]
                types[id(r)] = r.type
                if id(r) in self.needed:
                    known[id(r)] = const_value(self.module, r)
                continue
            operand_types = [types[id(v)] for v in op.operands]
            if op.opname == "fused":
                body = op.regions[0]
                for p, t in zip(body.params, operand_types):
                    types[id(p)] = t
                self._walk(body.ops, types, known)
                result_types = [types[id(v)] for v in body.outputs]
            else:
                consts = [known.get(id(v)) for v in op.operands]
                try:
                    result_types = op.opdef.run_infer(operand_types, op.attrs, consts, len(op.results), op.regions)
                except TypeInferenceError as e:  # these inputs do not fit the model (a reshape that cannot split)
                    raise InputError(f"{op.where()}: {e}") from None
            for r, t in zip(op.results, result_types):
                if _unknown(t):
                    raise InputError(f"{op.where()}: the shape of %{r.name} is not known for these input shapes "
                                     f"({t})")
                types[id(r)] = t
            if any(id(r) in self.needed for r in op.results):
                arrays = [known[id(v)] if id(v) in known else np.broadcast_to(np.zeros((), t.dtype.numpy), t.shape)
                          for v, t in zip(op.operands, operand_types)]
                if op.opname == "fused":  # shape arithmetic the fuse pass grouped (equal, where...)
                    out = self._run_region(op.regions[0], arrays, types)
                else:
                    out = self._host_value(op, arrays, operand_types)
                for r, a in zip(op.results, out if isinstance(out, (tuple, list)) else [out]):
                    known[id(r)] = np.asarray(a)

    def _host_value(self, op: Op, arrays: list[np.ndarray], types: list[TensorType]) -> object:
        """``op``'s result(s) on host arrays (``types``: its operands' types)."""
        return _reference(op, arrays)

    def _run_region(self, body: Graph, arrays: list[np.ndarray], types: dict[int, TensorType]) -> list[np.ndarray]:
        env = {id(p): a for p, a in zip(body.params, arrays)}
        for op in body.ops:
            if op.opname == "const":
                env[id(op.results[0])] = const_value(self.module, op.results[0])
                continue
            out = self._host_value(op, [env[id(v)] for v in op.operands], [types[id(v)] for v in op.operands])
            for r, a in zip(op.results, out if isinstance(out, (tuple, list)) else [out]):
                env[id(r)] = np.asarray(a)
        return [env[id(v)] for v in body.outputs]


def _reference(op: Op, arrays: list[np.ndarray]):
    """``op``'s reference semantics on host arrays (dynamic operands become attributes)."""
    d = op.opdef
    attrs = d.attrs_with_dynamic(op.attrs, arrays, static=False)
    dyn = d.dynamic_operand_indices()
    return d.reference(*[a for i, a in enumerate(arrays) if i not in dyn], **attrs)


def _needed_values(g: Graph) -> set[int]:
    """ids of the values whose contents type inference needs, and of everything they come from
    (the walk stops at ``shape`` ops, which need only their operand's shape)."""
    stack: list[Value] = []
    for op in g.ops:
        for i in op.opdef.dynamic_operand_indices():
            if i < len(op.operands):
                stack.append(op.operands[i])
        if op.opname != "const" and any(_underived(r.type) for r in op.results):
            # a range's limit, a one-hot's depth, a constant-of-shape's shape: small integer operands
            # (a result whose dims are ints and named symbols got them from its operands' shapes)
            stack.extend(v for v in op.operands if v.type.rank == 0 or v.type.rank == 1 and
                         not v.dtype.is_float and v.dtype is not DType.bool and
                         (v.type.numel or 0) <= MAX_HOST_ELEMENTS)
    seen: set[int] = set()
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        p = v.producer
        if p is not None and p.opname not in ("const", "shape"):
            stack.extend(p.operands)
    return seen


def bound_symbols(graph: Graph, args: Sequence[np.ndarray]) -> Mapping[str, int]:
    """The sizes the inputs give the graph's named symbolic dims (for reports)."""
    dims: dict[str, int] = {}
    for p, a in zip(graph.params, args):
        for d, n in zip(p.type.shape or (), np.shape(a)):
            if isinstance(d, str) and d != "?":
                dims.setdefault(d, int(n))
    return dims

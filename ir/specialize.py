"""Specialisation: make a graph static for given input shapes (and, optionally, input values).

``specialize(module, shapes, values)`` returns a copy of the module in which each named parameter
has the concrete shape given (symbols bound consistently), parameters listed in ``values`` become
constants, and every result type is re-inferred. Backends that need static shapes (x86, asic) use it
to compile a model with a dynamic batch dim, or an ONNX test whose Reshape target is a run-time input,
for the shapes and values actually seen at run time.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from .builder import Builder, const_value
from .dtypes import DType
from .errors import InputError
from .graph import Graph, Module
from .types import OptionalType, SequenceType, TensorType


def specialize(module: Module, shapes: Mapping[str, tuple[int, ...]],
               values: Mapping[str, np.ndarray] | None = None) -> Module:
    m = module.clone()
    g = m.main
    values = dict(values or {})
    bindings: dict[str, int] = {}
    for p in list(g.params):
        if p.name in values:
            arr = np.asarray(values[p.name])
            why = p.type.matches(DType.from_numpy(arr.dtype), tuple(arr.shape), bindings)
            if why:
                raise InputError(f"input {p.name!r}: {why}")
            b = Builder(m, g)
            b._index = 0
            c = b.const(arr, name=p.name + ".value")
            g.replace_all_uses(p, c)
            g.params.remove(p)
            g._names.discard(p.name)
            g.rename(c, p.name)
        elif p.name in shapes:
            shape = tuple(int(d) for d in shapes[p.name])
            why = p.type.matches(p.type.dtype, shape, bindings)
            if why:
                raise InputError(f"input {p.name!r}: {why}")
            p.type = TensorType(p.type.dtype, shape)
    bind_region_symbols(g, bindings)
    reinfer(m)
    return m


def _bind_type(t: Any, bindings: Mapping[str, int]) -> Any:
    if isinstance(t, TensorType):
        if t.shape is None:
            return t
        return t.with_shape(tuple(bindings.get(d, d) if isinstance(d, str) else d for d in t.shape))
    if isinstance(t, (SequenceType, OptionalType)):
        return type(t)(_bind_type(t.elem, bindings))
    return t


def bind_region_symbols(g: Graph, bindings: Mapping[str, int]) -> None:
    """Give the symbols bound at the graph's inputs their sizes inside the regions of its ops
    (control-flow bodies name the dims of the values they are passed), so that inference of the
    regions' ops agrees with the now static operands."""
    if not bindings:
        return
    for op in g.ops:
        for region in op.regions:
            for p in region.params:
                p.type = _bind_type(p.type, bindings)
            for inner in region.ops:
                for r in inner.results:
                    r.type = _bind_type(r.type, bindings)
            bind_region_symbols(region, bindings)


def input_symbols(module: Module) -> list[str]:
    """The symbolic dims of the main graph's inputs, in order of first appearance."""
    seen: dict[str, None] = {}
    for p in module.main.params:
        if not isinstance(p.type, TensorType):
            continue  # a sequence's element dims are not input dims
        for d in p.type.shape or ():
            if not isinstance(d, int):
                seen.setdefault(str(d), None)
    return list(seen)


def bind_dims(module: Module, dims: Mapping[str, int]) -> Module:
    """A copy with the named symbolic input dims fixed (``{"N": 1}``); other symbols stay. A name
    that is not a symbolic input dim of the model is an ``InputError`` (a size that would change
    nothing is a mistake worth saying)."""
    symbols = input_symbols(module)
    unknown = sorted(set(dims) - set(symbols))
    if unknown:
        have = ", ".join(symbols) if symbols else "none: its input shapes are static"
        raise InputError(f"dims: the model has no symbolic input dim {', '.join(unknown)} (its symbols: {have})")
    m = module.clone()
    bind_region_symbols(m.main, {str(k): int(v) for k, v in dims.items()})
    for p in m.main.params:
        if isinstance(p.type, TensorType) and p.type.shape is not None:
            p.type = TensorType(p.type.dtype, tuple(d if isinstance(d, int) or str(d) not in dims else int(dims[str(d)])
                                                    for d in p.type.shape))
    reinfer(m)
    return m


def reinfer(m: Module) -> None:
    """Recompute every op's result types from its operands (after parameters were retyped, or after
    constant folding made more operands known)."""
    for g in m.graphs.values():
        _reinfer_graph(m, g)


def _reinfer_graph(m: Module, g) -> None:
    for op in g.ops:
        if op.opname == "const":
            continue
        if op.opname == "fused":  # a closed region: its parameters take the operands' types
            body = op.regions[0]
            for p, v in zip(body.params, op.operands):
                p.type = v.type
            _reinfer_graph(m, body)
        else:  # control flow: the body parameters keep their (covering) types; their ops follow them
            for region in op.regions:
                _reinfer_graph(m, region)
        d = op.opdef
        consts = [const_value(m, v) for v in op.operands]
        types = d.run_infer([v.type for v in op.operands], op.attrs, consts, len(op.results), op.regions)
        for r, t in zip(op.results, types):
            r.type = t

"""Compiling per input signature for targets that need static shapes.

A model with symbolic dims or run-time shape inputs (a Reshape whose shape is an input) on such a
target (x86, asic) is compiled at its first run for that run's input shapes and shape-input values,
keeping one executable per distinct signature (``Specializer``); a static model compiles at once.
"""

from __future__ import annotations

import collections
import threading
from typing import Any, Callable, Mapping

import numpy as np

from nnc.ir import Module, TensorType, verify_module
from nnc.ir.interpreter import check_feeds
from nnc.ir.specialize import specialize


def shape_inputs(module: Module) -> list[str]:
    """The inputs whose *values* decide shapes: those feeding a dynamic operand (a reshape's shape,
    a slice's starts...) that is not a constant, or a scalar operand of an op whose result shape
    is unknown although every operand's shape is known (``range``'s limit, a one-hot depth; not
    ``nonzero``'s tensor, whose output size is data, not a parameter). The walk stops at ``shape``
    ops, which read only their operand's shape (known once the input shapes are)."""
    g = module.main
    params = {id(p): p.name for p in g.params if p.binding is None}
    stack = []
    for op in g.ops:
        for i in op.opdef.dynamic_operand_indices():
            if i < len(op.operands):
                stack.append(op.operands[i])
        if op.operands and all(_static(v.type) for v in op.operands) and \
                not all(_static(r.type) for r in op.results):
            stack.extend(v for v in op.operands if v.type.rank == 0)
    seen: set[int] = set()
    found: set[str] = set()
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if id(v) in params:
            found.add(params[id(v)])
        elif v.producer is not None and v.producer.opname not in ("const", "shape"):
            stack.extend(v.producer.operands)
    return [p.name for p in g.params if p.name in found]


def _static(t: Any) -> bool:
    return isinstance(t, TensorType) and t.is_static


def is_static(module: Module) -> bool:
    """Every input is a tensor of static shape and no input's value decides a shape."""
    return all(_static(p.type) for p in module.main.params) and not shape_inputs(module)


class Specializer:
    """The executable of a model with symbolic dims or run-time shape inputs on a static-shape
    target: each run is compiled for its input shapes and the values of its shape inputs
    (``ir.specialize``), once per distinct signature; the most recent ``keep`` are kept."""

    keep = 32

    def __init__(self, module: Module, backend: Callable[[Module], Any]):
        verify_module(module)  # a malformed model fails at compile time, not at its first run
        self.module = module
        self.backend = backend
        self.shape_inputs = shape_inputs(module)
        self.executables: collections.OrderedDict[tuple, Any] = collections.OrderedDict()
        self._lock = threading.Lock()  # two threads meeting a new signature compile it once

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        g = self.module.main
        args = check_feeds(g, feeds, self.module)  # the interpreter's checks: dtypes, shapes, symbols
        arrays = {p.name: a for p, a in zip(g.params, args)}
        values = {n: np.asarray(arrays[n]) for n in self.shape_inputs}
        key = tuple((n, a.dtype.str, a.shape) for n, a in arrays.items()) + \
            tuple((n, a.tobytes()) for n, a in values.items())
        with self._lock:
            exe = self.executables.get(key)
            if exe is None:
                shapes = {n: a.shape for n, a in arrays.items() if n not in values}
                exe = self.backend(specialize(self.module, shapes, values))
                self.executables[key] = exe
                if len(self.executables) > self.keep:
                    self.executables.popitem(last=False)
            else:
                self.executables.move_to_end(key)
        return exe.run({n: a for n, a in feeds.items() if n not in values})

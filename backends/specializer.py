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

from nnc.ir import Module, verify_module
from nnc.ir.interpreter import check_feeds
from nnc.ir.specialize import is_static_type, shape_inputs, specialize


def is_static(module: Module) -> bool:
    """Every input is a tensor of static shape and no input's value decides a shape."""
    return all(is_static_type(p.type) for p in module.main.params) and \
        not shape_inputs(module)


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

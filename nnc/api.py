"""The Python API: import, parse, compile and run models.

    import nnc
    m = nnc.from_onnx("model.onnx")           # -> nnc.ir.Module; str(m) is the text IR
    cm = nnc.compile("model.onnx", target="reference")
    outs = cm.run({"x": x})                   # dict keyed by output name
    y = cm(x)                                 # positional; an array or a tuple
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from nnc.frontends.onnx import import_model
from nnc.ir import InputError, Module, NncError, parse_module

from .targets import get_backend

MODES = ("infer", "train")


def from_onnx(model: Any, weights: str = "const") -> Module:
    """Import an ONNX model (a path, bytes or an ``onnx.ModelProto``) as an nnc ``Module``."""
    return import_model(model, weights=weights)


def parse(text: str, weights: Mapping[str, np.ndarray] | None = None) -> Module:
    """Parse textual IR. ``weights`` supplies the data of constants printed by reference."""
    return parse_module(text, weights)


def load_module(model: Any) -> Module:
    """Anything nnc accepts as a model -> Module: a Module, an ONNX path/ModelProto/bytes, or a
    ``.nnc`` text file (with weights from a sibling ``.npz`` when present)."""
    if isinstance(model, Module):
        return model
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".nnc"):
        path = str(model)
        if not os.path.exists(path):
            from nnc.ir import ModelError

            raise ModelError(f"{path}: no such file")
        weights = None
        npz = path[:-4] + ".npz"
        if os.path.exists(npz):
            with np.load(npz) as z:
                weights = {k: z[k] for k in z.files}
        with open(path) as f:
            return parse_module(f.read(), weights)
    return import_model(model)


class CompiledModel:
    """A compiled model: ``run(feeds) -> {output name: array}`` or ``model(*arrays)``."""

    def __init__(self, module: Module, executable: Any, target: str, report: dict[str, Any] | None = None):
        self.module = module
        self.executable = executable
        self.target = target
        self.report: dict[str, Any] = report or {}
        g = module.main
        self.input_names = [p.name for p in g.params if p.binding is None]
        self.output_names = list(g.output_names)
        self.input_types = {p.name: p.type for p in g.params if p.binding is None}
        self.output_types = dict(zip(g.output_names, (v.type for v in g.outputs)))

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            raise InputError("run() takes a dict of input name -> array; call the model directly for positional inputs")
        return self.executable.run(feeds)

    def __call__(self, *arrays: Any) -> Any:
        if len(arrays) != len(self.input_names):
            raise InputError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                             f"got {len(arrays)}")
        outs = self.run(dict(zip(self.input_names, arrays)))
        vals = tuple(outs[n] for n in self.output_names)
        return vals[0] if len(vals) == 1 else vals

    def __repr__(self) -> str:
        return (f"<CompiledModel target={self.target} inputs={self.input_names} outputs={self.output_names}>")


def compile(model: Any, target: str = "reference", mode: str = "infer", **options: Any) -> CompiledModel:  # noqa: A001
    """Compile ``model`` (a path, ``onnx.ModelProto``, or ``Module``) for ``target``."""
    if mode not in MODES:
        raise NncError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    backend = get_backend(target)
    if mode == "train":
        raise NncError("mode 'train' is not available yet: training support is tracked separately")
    module = load_module(model)
    executable = backend(module, options)
    return CompiledModel(module, executable, target)

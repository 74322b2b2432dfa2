"""Models in: anything nnc accepts as a model becomes an IR ``Module``.

``from_onnx``, ``from_torch``, ``parse`` and ``load_module`` (which picks the right one) are shared
by ``nnc.compile`` (``api.py``) and training (``training.py``), so neither imports the other.
"""

from __future__ import annotations

import os
from typing import Any, Mapping

import numpy as np

from nnc.backends.artifact import load_text_ir, sibling
from nnc.frontends.onnx import import_model
from nnc.ir import InputError, ModelError, Module, parse_module


def from_onnx(model: Any, weights: str = "const") -> Module:
    """Import an ONNX model (a path, bytes or an ``onnx.ModelProto``) as an nnc ``Module``."""
    return import_model(model, weights=weights)


def from_torch(module: Any, example_args: Any = (), dynamic_shapes: Any = None, weights: str = "const") -> Module:
    """Import a PyTorch ``nn.Module`` through ``torch.export`` (core ATen) as an nnc ``Module``;
    also takes an ``ExportedProgram`` or a ``.pt2`` path (then ``example_args`` is not needed).
    ``dynamic_shapes`` is torch.export's; its ``Dim`` names become nnc symbols. ``weights="param"``
    makes each trainable parameter a graph parameter bound to the constant of its torch name."""
    from nnc.frontends.torch.importer import from_torch as import_torch
    from nnc.frontends.torch.importer import import_program
    from nnc.frontends.torch.loader import is_exported_program, is_pt2_path, load_pt2

    if is_pt2_path(module):
        return load_pt2(module, weights=weights)
    if is_exported_program(module):
        return import_program(module, weights=weights)
    return import_torch(module, example_args, dynamic_shapes, weights=weights)


def parse(text: str, weights: Mapping[str, np.ndarray] | None = None) -> Module:
    """Parse textual IR. ``weights`` supplies the data of constants printed by reference."""
    return parse_module(text, weights)


def load_module(model: Any, example_args: Any = None, dynamic_shapes: Any = None) -> Module:
    """Anything nnc accepts as a model -> Module: a Module, an ONNX path/ModelProto/bytes, a
    ``.nnc`` text file (with weights from a sibling ``.npz`` when present), a torch ``nn.Module``
    (with ``example_args``), a ``torch.export.ExportedProgram`` or a ``.pt2`` file."""
    if isinstance(model, Module):
        return model
    from nnc.frontends.torch.loader import is_exported_program, is_pt2_path, is_torch_module

    if is_torch_module(model):
        if example_args is None:
            raise InputError("compiling a torch nn.Module needs example_args=(tensor, ...) to trace it")
        return from_torch(model, example_args, dynamic_shapes)
    if is_exported_program(model) or is_pt2_path(model):
        return from_torch(model)
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".nnc"):
        return load_text_ir(str(model))
    return import_model(model)


def check_weights(module: Module, source: Any) -> None:
    """Text IR parsed without its weights can be printed but not compiled: say which are missing."""
    missing = sorted(k for k in module.constant_types if not module.has_data(k))
    if not missing:
        return
    names = ", ".join("@" + k for k in missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    where = ""
    if isinstance(source, (str, os.PathLike)) and str(source).endswith(".nnc"):
        where = f"{source}: "
        names += f" (expected in {sibling(str(source), '.npz')}, written beside it by 'nnc compile -o')"
    raise ModelError(f"{where}no data for weight(s) {names}")

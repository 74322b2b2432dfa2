"""Recognise torch objects without importing torch, and load programs saved with
``torch.export.save`` (``.pt2``)."""

from __future__ import annotations

import os
import sys
import zipfile
from typing import Any

from nnc.ir import ModelError, Module


def is_torch_module(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.nn.Module)


def is_exported_program(obj: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(obj, torch.export.ExportedProgram)


def is_pt2_path(obj: Any) -> bool:
    return isinstance(obj, (str, os.PathLike)) and str(obj).endswith(".pt2")


def load_pt2(path: str | os.PathLike, weights: str = "const") -> Module:
    """Import a program saved with ``torch.export.save(ep, "model.pt2")``."""
    from .importer import import_program, require_torch

    torch = require_torch()
    path = str(path)
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if not zipfile.is_zipfile(path):  # checked first: torch logs a traceback for a bad archive
        raise ModelError(f"{path}: not a program saved with torch.export.save (not a .pt2 zip archive)")
    try:
        ep = torch.export.load(path)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds for a bad archive
        raise ModelError(f"{path}: not a program saved with torch.export.save: {e}") from None
    name = os.path.splitext(os.path.basename(path))[0]
    return import_program(ep, weights=weights, name=name)

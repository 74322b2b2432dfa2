"""The table of compilation targets. A target is a backend's ``compile(module, options)``.

Targets are looked up by name; an unknown target is a ``TargetError``.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

from nnc.ir import TargetError

# name -> (module path, one-line description)
TARGETS: dict[str, tuple[str, str]] = {
    "reference": ("nnc.backends.reference", "numpy interpreter of the IR (the oracle; slow)"),
    "x86": ("nnc.backends.x86", "LLVM code generation for x86 CPUs (host CPU and features by default)"),
    "asic": ("nnc.backends.asic", "simulated INT8 edge accelerator (quantizes, simulates, reports latency/energy)"),
}


def get_backend(name: str) -> Callable[..., Any]:
    if name not in TARGETS:
        raise TargetError(f"unknown target {name!r}; available targets: {', '.join(TARGETS)}")
    return importlib.import_module(TARGETS[name][0]).compile

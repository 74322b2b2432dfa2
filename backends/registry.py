"""The registered compilation targets: one ``Backend`` object per name.

Each target is registered once, here, by the module and class that declare it; the module is
imported on first use (the x86 backend loads LLVM, the asic one its presets), so ``nnc --help`` and
a reference-only program stay light. An unknown name is a ``TargetError`` listing the known ones.
"""

from __future__ import annotations

import importlib

from nnc.ir import TargetError

from .compiled import Backend, CompiledModel

# name -> (module, class, one-line description): the one place a target is declared
_DECLARED: dict[str, tuple[str, str, str]] = {
    "reference": ("nnc.backends.reference", "ReferenceBackend", "numpy interpreter of the IR (the oracle; slow)"),
    "x86": ("nnc.backends.x86.backend", "X86Backend",
            "LLVM code generation for x86 CPUs (host CPU and features by default)"),
    "asic": ("nnc.backends.asic.backend", "AsicBackend",
             "simulated INT8 edge accelerator (quantizes, simulates, reports latency/energy)"),
}
_INSTANCES: dict[str, Backend] = {}


def get_backend(name: str) -> Backend:
    if not isinstance(name, str) or name not in _DECLARED:
        raise TargetError(f"unknown target {name!r}; available targets: {', '.join(_DECLARED)}")
    if name not in _INSTANCES:
        module, cls, _ = _DECLARED[name]
        _INSTANCES[name] = getattr(importlib.import_module(module), cls)()
        assert _INSTANCES[name].name == name, f"{module}.{cls} declares the name {_INSTANCES[name].name!r}"
    return _INSTANCES[name]


def describe() -> dict[str, str]:
    """name -> one-line description, for help texts (imports no backend)."""
    return {n: d for n, (_, _, d) in _DECLARED.items()}


def backend_for_artifact(path: str) -> Backend:
    """The backend whose ``save`` writes files named like ``path`` (``.so`` -> x86, ``.nnc`` -> reference)."""
    for name in _DECLARED:
        b = get_backend(name)
        if b.artifact_suffixes and path.endswith(b.artifact_suffixes):
            return b
    suffixes = sorted(s for n in _DECLARED for s in get_backend(n).artifact_suffixes)
    raise TargetError(f"{path}: not a saved nnc model (expected one of {', '.join(suffixes)})")


def load(path: str) -> CompiledModel:
    """A saved model back as a ``CompiledModel`` (``nnc.load``)."""
    return backend_for_artifact(path).load(path)

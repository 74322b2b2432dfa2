"""Pass declaration and lookup.

A pass is a dataclass whose fields are its typed options, registered under a kebab-case name that
matches its file name, with ``run(module) -> bool`` (True if it changed anything):

    @register_pass("dce")
    @dataclass
    class DeadCodeElimination(Pass):
        \"\"\"Remove pure ops whose results are unused.\"\"\"
        def run(self, module: Module) -> bool: ...

Options are set from pipeline strings (``fuse{max-ops=16}``): the option ``max-ops`` is the field
``max_ops``; values are converted to the field's type (int, float, bool, str).
"""

from __future__ import annotations

import dataclasses
from typing import Any, ClassVar

from nnc.ir import Module, NncError


class PassError(NncError):
    """A pipeline names an unknown pass or option, or a pass failed."""


class Pass:
    name: ClassVar[str] = ""
    # What the pass did on its last run, for the compile report (counts by kind, reasons).
    stats: dict[str, Any]

    def run(self, module: Module) -> bool:
        raise NotImplementedError

    def note(self, key: str, amount: int = 1) -> None:
        if not hasattr(self, "stats") or self.stats is None:
            self.stats = {}
        self.stats[key] = self.stats.get(key, 0) + amount


_PASSES: dict[str, type[Pass]] = {}


def register_pass(name: str):
    def register(cls: type[Pass]) -> type[Pass]:
        if name in _PASSES:
            raise ValueError(f"pass {name!r} registered twice")
        if not dataclasses.is_dataclass(cls):
            cls = dataclasses.dataclass(cls)
        cls.name = name
        _PASSES[name] = cls
        return cls
    return register


def get_pass_class(name: str) -> type[Pass]:
    _ensure_loaded()
    if name not in _PASSES:
        raise PassError(f"unknown pass {name!r}; known passes: {', '.join(sorted(_PASSES))}")
    return _PASSES[name]


def all_passes() -> dict[str, type[Pass]]:
    _ensure_loaded()
    return dict(sorted(_PASSES.items()))


def make_pass(name: str, options: dict[str, str] | None = None) -> Pass:
    cls = get_pass_class(name)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, text in (options or {}).items():
        field = key.replace("-", "_")
        if field not in fields:
            known = ", ".join(f.replace("_", "-") for f in fields) or "none"
            raise PassError(f"pass {name!r} has no option {key!r} (options: {known})")
        kwargs[field] = _convert(name, key, text, fields[field].type)
    return cls(**kwargs)


def _convert(pass_name: str, key: str, text: str, annotation: Any) -> Any:
    kind = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    try:
        if kind == "bool":
            if text.lower() in ("1", "true", "yes", "on"):
                return True
            if text.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError(text)
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
        return text
    except ValueError:
        raise PassError(f"pass {pass_name!r}: option {key!r} expects {kind}, got {text!r}") from None


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import catalog  # noqa: F401  (imports every pass module)

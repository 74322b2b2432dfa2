"""Typed op attributes: the kinds, the schema entry, and validation.

Attribute values are plain immutable Python data: ``int``, ``float``, ``str``, tuples of those, or a
``DType``. There is no tensor-valued attribute: tensors live in the module's constant pool and enter
a graph through ``const`` ops.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Any

from .dtypes import DType


class AttrKind(enum.Enum):
    INT = "int"
    FLOAT = "float"
    STR = "str"
    INTS = "ints"
    FLOATS = "floats"
    STRS = "strs"
    DTYPE = "dtype"


class _Required:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class AttrSpec:
    """One attribute of an op schema.

    ``default`` is REQUIRED when the attribute must be given, or None when it may be absent (an
    optional attribute, e.g. one that a dynamic operand can supply instead).
    """

    kind: AttrKind
    default: Any = REQUIRED
    choices: tuple[str, ...] | None = None

    @property
    def required(self) -> bool:
        return self.default is REQUIRED


def coerce_attr(name: str, spec: AttrSpec, value: Any) -> Any:
    """Validate ``value`` against ``spec`` and return its canonical immutable form."""
    k = spec.kind
    if value is None:
        if spec.default is None:
            return None
        raise TypeError(f"attribute {name!r} may not be None")
    try:
        if k is AttrKind.INT:
            if isinstance(value, bool) or not _is_int(value):
                raise TypeError
            return int(value)
        if k is AttrKind.FLOAT:
            if isinstance(value, bool) or not (_is_int(value) or isinstance(value, float) or _is_np_float(value)):
                raise TypeError
            return float(value)
        if k is AttrKind.STR:
            if not isinstance(value, str):
                raise TypeError
            if spec.choices is not None and value not in spec.choices:
                raise ValueError(f"attribute {name!r} must be one of {list(spec.choices)}, got {value!r}")
            return value
        if k is AttrKind.INTS:
            items = tuple(value)
            if any(isinstance(v, bool) or not _is_int(v) for v in items):
                raise TypeError
            return tuple(int(v) for v in items)
        if k is AttrKind.FLOATS:
            items = tuple(value)
            if any(isinstance(v, bool) or not (_is_int(v) or isinstance(v, float) or _is_np_float(v)) for v in items):
                raise TypeError
            return tuple(float(v) for v in items)
        if k is AttrKind.STRS:
            items = tuple(value)
            if any(not isinstance(v, str) for v in items):
                raise TypeError
            return items
        if k is AttrKind.DTYPE:
            if isinstance(value, DType):
                return value
            if isinstance(value, str):
                return DType.parse(value)
            raise TypeError
    except TypeError:
        raise TypeError(f"attribute {name!r} expects {k.value}, got {value!r}") from None
    raise AssertionError(k)


def _is_int(v: Any) -> bool:
    import numpy as np

    return isinstance(v, (int, np.integer))


def _is_np_float(v: Any) -> bool:
    import numpy as np

    return isinstance(v, np.floating)


def format_float(v: float) -> str:
    """Shortest text that parses back to exactly ``v`` (always with a '.', 'e', 'nan' or 'inf')."""
    if math.isnan(v):
        return "nan"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    r = repr(float(v))
    if "." not in r and "e" not in r:
        r += ".0"
    return r


def format_attr(kind: AttrKind, value: Any) -> str:
    import json

    if kind is AttrKind.INT:
        return str(value)
    if kind is AttrKind.FLOAT:
        return format_float(value)
    if kind is AttrKind.STR:
        return json.dumps(value)
    if kind is AttrKind.INTS:
        return "[" + ", ".join(str(v) for v in value) + "]"
    if kind is AttrKind.FLOATS:
        return "[" + ", ".join(format_float(v) for v in value) + "]"
    if kind is AttrKind.STRS:
        return "[" + ", ".join(json.dumps(v) for v in value) + "]"
    if kind is AttrKind.DTYPE:
        return str(value)
    raise AssertionError(kind)

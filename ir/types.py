"""Tensor types: an element type plus a shape whose dims are ints or named symbols.

A dim is an ``int`` (static), a symbol such as ``"N"`` (dynamic but named: two dims with the same
symbol are equal at run time), or ``"?"`` (unknown, equal to nothing in particular). A shape of
``None`` means even the rank is unknown; it prints as ``[*]``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Union

from .dtypes import DType

Dim = Union[int, str]
UNKNOWN: str = "?"
_SYMBOL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def is_symbol(d: Dim) -> bool:
    return isinstance(d, str)


def check_dim(d: Dim) -> Dim:
    if isinstance(d, bool):
        raise TypeError(f"bad dim {d!r}")
    if isinstance(d, int):
        if d < 0:
            raise ValueError(f"negative dim {d}")
        return d
    if isinstance(d, str) and (d == UNKNOWN or _SYMBOL_RE.match(d)):
        return d
    raise ValueError(f"bad dim {d!r}: dims are non-negative ints, symbols or '?'")


@dataclass(frozen=True)
class TensorType:
    dtype: DType
    shape: tuple[Dim, ...] | None

    def __post_init__(self) -> None:
        if not isinstance(self.dtype, DType):
            raise TypeError(f"dtype must be a DType, got {self.dtype!r}")
        if self.shape is not None:
            object.__setattr__(self, "shape", tuple(check_dim(d) for d in self.shape))

    @property
    def rank(self) -> int | None:
        return None if self.shape is None else len(self.shape)

    @property
    def is_static(self) -> bool:
        return self.shape is not None and all(isinstance(d, int) for d in self.shape)

    @property
    def numel(self) -> int | None:
        """Number of elements, or None when some dim is not static."""
        if not self.is_static:
            return None
        return math.prod(self.shape)  # type: ignore[arg-type]

    @property
    def nbytes(self) -> int | None:
        n = self.numel
        return None if n is None else n * self.dtype.itemsize

    def with_shape(self, shape: tuple[Dim, ...] | None) -> TensorType:
        return TensorType(self.dtype, None if shape is None else tuple(shape))

    def with_dtype(self, dtype: DType) -> TensorType:
        return TensorType(dtype, self.shape)

    def __str__(self) -> str:
        if self.shape is None:
            return f"{self.dtype}[*]"
        return f"{self.dtype}[{','.join(str(d) for d in self.shape)}]"

    def matches(self, dtype: DType, shape: tuple[int, ...], bindings: dict[str, int]) -> str | None:
        """Check a concrete array against this type, binding symbols consistently.

        Returns None when it fits, otherwise a short reason. ``bindings`` is updated in place.
        """
        if dtype != self.dtype:
            return f"dtype {dtype} but expected {self.dtype}"
        if self.shape is None:
            return None
        if len(shape) != len(self.shape):
            return f"shape {list(shape)} but expected rank {len(self.shape)} ({self})"
        for got, want in zip(shape, self.shape):
            if isinstance(want, int):
                if got != want:
                    return f"shape {list(shape)} but expected {self}"
            elif want != UNKNOWN:
                bound = bindings.setdefault(want, got)
                if bound != got:
                    return f"shape {list(shape)} but symbol {want} is already bound to {bound}"
        return None


def tensor(dtype: DType | str, shape: tuple[Dim, ...] | list[Dim] | None) -> TensorType:
    """Shorthand: ``tensor("f32", [1, 3])``."""
    dt = dtype if isinstance(dtype, DType) else DType.parse(dtype)
    return TensorType(dt, None if shape is None else tuple(shape))


@dataclass(frozen=True)
class SequenceType:
    """A list of tensors (ONNX ``seq(tensor)``): all of one dtype; ``elem`` holds what is known of
    every element's shape (dims that differ between elements are ``?``). At run time a Python list
    of arrays. Prints as ``seq<f32[?,3]>``."""

    elem: TensorType
    is_static = False  # not a tensor: no static shape (what asks only tensors for one may ask this too)

    @property
    def dtype(self) -> DType:
        return self.elem.dtype

    def __str__(self) -> str:
        return f"seq<{self.elem}>"


@dataclass(frozen=True)
class OptionalType:
    """A tensor or sequence that may be absent (ONNX ``optional(...)``); at run time the value or
    None. Prints as ``opt<f32[2]>`` or ``opt<seq<f32[*]>>``."""

    elem: TensorType | SequenceType
    is_static = False

    @property
    def dtype(self) -> DType:
        return self.elem.dtype

    def __str__(self) -> str:
        return f"opt<{self.elem}>"


ValueType = Union[TensorType, SequenceType, OptionalType]


def is_tensor(t: object) -> bool:
    return isinstance(t, TensorType)


def join_types(a: ValueType, b: ValueType) -> ValueType | None:
    """The most precise type covering both (dims that differ become ``?``, ranks that differ give an
    unknown shape), or None when they are of different kinds or dtypes."""
    if isinstance(a, TensorType) and isinstance(b, TensorType):
        if a.dtype != b.dtype:
            return None
        if a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
            return TensorType(a.dtype, None)
        return TensorType(a.dtype, tuple(x if x == y else UNKNOWN for x, y in zip(a.shape, b.shape)))
    if type(a) is not type(b):
        return None
    inner = join_types(a.elem, b.elem)  # type: ignore[union-attr]
    return None if inner is None else type(a)(inner)  # type: ignore[call-arg]

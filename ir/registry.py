"""The op registry: every op is declared once, with everything true of it on any backend.

An ``OpDef`` holds the operand and attribute schema, traits, type/shape inference, numpy reference
semantics, the gradient-rule slot and folding policy. Backend lowerings live in the backends, keyed
by op name. Declare an op with ``defop(...)``; the op families live in ``ir/ops/``.

Operand names in a schema: ``"x"`` is required, ``"b?"`` is optional (trailing only), ``"xs*"`` is
variadic (last only). Results: a tuple of names, or ``("outs*",)`` for a variable count decided by
inference.

Dynamic attributes: some parameters (a reshape's shape, a slice's starts, reduction axes) are
attributes when known at compile time and operands when they are only known at run time, as ONNX
allows. ``dynamic={"shape": "shape?"}`` links attribute ``shape`` to optional operand ``shape``:
inference sees the attribute filled from the operand when the operand is a constant, or None when
it is not; the reference implementation always receives the attribute filled in from the operand's
run-time value. ``canonicalize_dynamic`` folds constant operands back into attributes.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from .attrs import AttrKind, AttrSpec, coerce_attr
from .errors import TypeInferenceError
from .types import TensorType


class Trait(enum.Flag):
    NONE = 0
    PURE = enum.auto()          # no side effects; may be folded, CSE'd, deleted when unused
    ELEMENTWISE = enum.auto()   # result[i] depends only on operands[i] (after broadcasting)
    BROADCAST = enum.auto()     # operands broadcast numpy-style
    REDUCTION = enum.auto()
    COMMUTATIVE = enum.auto()   # binary op whose operands may be swapped
    INPLACE = enum.auto()       # the result may reuse operand 0's buffer
    SHAPE_ONLY = enum.auto()    # moves data without arithmetic (reshape, transpose, slice, ...)
    RANDOM = enum.auto()        # draws random numbers (not pure, never folded)


class NotDifferentiable:
    """Marker for ops whose gradient is zero or undefined (comparisons, argmax, shape ops...)."""

    def __repr__(self) -> str:
        return "NOT_DIFFERENTIABLE"


NOT_DIFFERENTIABLE: Any = NotDifferentiable()


class InferContext:
    """What a type-inference rule may look at: operand types, attributes, constant operands."""

    def __init__(self, opname: str, types: Sequence[TensorType], attrs: dict[str, Any],
                 consts: Sequence[np.ndarray | None], n_results: int | None = None,
                 regions: Sequence[Any] = ()):
        self.opname = opname
        self.types = list(types)
        self.attrs = attrs
        self.consts = list(consts)
        self.n_results = n_results
        self.regions = list(regions)  # nested Graphs, for ops that own them

    def const(self, i: int) -> np.ndarray | None:
        """Operand ``i``'s value when it is a compile-time constant, else None."""
        return self.consts[i] if i < len(self.consts) else None

    def fail(self, msg: str) -> TypeInferenceError:
        return TypeInferenceError(f"{self.opname}: {msg}")


InferFn = Callable[[InferContext], Sequence[TensorType]]


@dataclass
class OpDef:
    name: str
    operands: tuple[str, ...]
    attrs: dict[str, AttrSpec]
    infer: InferFn
    reference: Callable[..., Any]
    results: tuple[str, ...] = ("out",)
    traits: Trait = Trait.PURE
    dynamic: dict[str, str] = field(default_factory=dict)  # attr name -> operand name
    vjp: Any = None  # a rule (builder, op, cotangents) -> operand cotangents; None = not yet written
    fold: bool = True  # whether fold-constants may evaluate it at compile time
    doc: str = ""

    # -- schema queries -----------------------------------------------------------------------
    @property
    def operand_names(self) -> list[str]:
        return [o.rstrip("?*") for o in self.operands]

    @property
    def variadic(self) -> bool:
        return bool(self.operands) and self.operands[-1].endswith("*")

    @property
    def variadic_results(self) -> bool:
        return bool(self.results) and self.results[-1].endswith("*")

    def operand_range(self) -> tuple[int, int | None]:
        """(minimum, maximum) operand count; maximum None for variadic."""
        required = sum(1 for o in self.operands if not o.endswith("?") and not o.endswith("*"))
        if self.variadic:
            return required, None
        return required, len(self.operands)

    def operand_index(self, name: str) -> int:
        return self.operand_names.index(name)

    def has(self, trait: Trait) -> bool:
        return bool(self.traits & trait)

    @property
    def is_pure(self) -> bool:
        return self.has(Trait.PURE)

    def complete_attrs(self, attrs: dict[str, Any], where: str = "") -> dict[str, Any]:
        """Validate attributes against the schema and fill in defaults."""
        out: dict[str, Any] = {}
        for k in attrs:
            if k not in self.attrs:
                raise TypeInferenceError(f"{self.name}{where}: unknown attribute {k!r} "
                                         f"(has: {', '.join(self.attrs) or 'none'})")
        for k, spec in self.attrs.items():
            if k in attrs:
                try:
                    out[k] = coerce_attr(k, spec, attrs[k])
                except (TypeError, ValueError) as e:
                    raise TypeInferenceError(f"{self.name}{where}: {e}") from None
            elif spec.required:
                raise TypeInferenceError(f"{self.name}{where}: missing required attribute {k!r}")
            else:
                out[k] = spec.default
        return out

    def run_infer(self, types: Sequence[TensorType], attrs: dict[str, Any],
                  consts: Sequence[np.ndarray | None], n_results: int | None = None,
                  regions: Sequence[Any] = ()) -> list[TensorType]:
        attrs = self.attrs_with_dynamic(attrs, consts, static=True)
        ctx = InferContext(self.name, types, attrs, consts, n_results, regions)
        try:
            result = list(self.infer(ctx))
        except TypeInferenceError:
            raise
        except (ValueError, IndexError, TypeError, KeyError) as e:
            raise TypeInferenceError(f"{self.name}: {e}") from None
        return result

    def attrs_with_dynamic(self, attrs: dict[str, Any], arrays: Sequence[Any], static: bool) -> dict[str, Any]:
        """Fill dynamic attributes from their operands' values (constants at compile time, or
        run-time arrays in the interpreter)."""
        if not self.dynamic:
            return attrs
        names = self.operand_names
        attrs = dict(attrs)
        for attr, operand in self.dynamic.items():
            i = names.index(operand)
            if i < len(arrays):
                arr = arrays[i]
                attrs[attr] = None if arr is None else array_to_attr(self.attrs[attr].kind, arr)
        return attrs

    def dynamic_operand_indices(self) -> set[int]:
        names = self.operand_names
        return {names.index(o) for o in self.dynamic.values()}


def array_to_attr(kind: AttrKind, arr: np.ndarray) -> Any:
    a = np.asarray(arr)
    if kind is AttrKind.INTS:
        return tuple(int(v) for v in a.reshape(-1))
    if kind is AttrKind.FLOATS:
        return tuple(float(v) for v in a.reshape(-1))
    if kind is AttrKind.INT:
        return int(a.reshape(-1)[0])
    if kind is AttrKind.FLOAT:
        return float(a.reshape(-1)[0])
    raise TypeError(f"attribute kind {kind} cannot come from an operand")


_REGISTRY: dict[str, OpDef] = {}


def defop(name: str, *, operands: Sequence[str], infer: InferFn, reference: Callable[..., Any],
          attrs: dict[str, AttrSpec] | None = None, results: Sequence[str] = ("out",),
          traits: Trait = Trait.PURE, dynamic: dict[str, str] | None = None, vjp: Any = None,
          fold: bool = True, doc: str = "") -> OpDef:
    """Declare an op. Raises if the name is taken: each op is declared exactly once."""
    if name in _REGISTRY:
        raise ValueError(f"op {name!r} is already declared")
    d = OpDef(name=name, operands=tuple(operands), attrs=dict(attrs or {}), infer=infer,
              reference=reference, results=tuple(results), traits=traits, dynamic=dict(dynamic or {}),
              vjp=vjp, fold=fold, doc=doc)
    for attr, operand in d.dynamic.items():
        if attr not in d.attrs or operand not in d.operand_names:
            raise ValueError(f"op {name!r}: dynamic {attr!r}->{operand!r} names an unknown attr/operand")
        if d.attrs[attr].default is not None:
            raise ValueError(f"op {name!r}: dynamic attribute {attr!r} must default to None")
    _REGISTRY[name] = d
    return d


def get_opdef(name: str) -> OpDef:
    _ensure_loaded()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise KeyError(f"unknown op {name!r}") from None


def declared_op(name: str) -> OpDef:
    """An op declared so far, without loading the op families: for an op module that derives its
    ops from another family's (which it imports first)."""
    return _REGISTRY[name]


def has_op(name: str) -> bool:
    _ensure_loaded()
    return name in _REGISTRY


def all_opdefs() -> list[OpDef]:
    _ensure_loaded()
    return [ _REGISTRY[k] for k in sorted(_REGISTRY) ]


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import grads  # noqa: F401  (registers every op family, then attaches the gradient rules)

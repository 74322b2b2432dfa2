"""nnc's dataflow IR: types, ops, graphs and modules, the op registry, printer, parser, verifier
and reference interpreter. This layer imports nothing from frontends, passes or backends."""

from .attrs import REQUIRED, AttrKind, AttrSpec
from .builder import Builder, const_value
from .dtypes import DType
from .errors import (
    GradientError,
    InputError,
    IRError,
    ModelError,
    NncError,
    ParseError,
    TargetError,
    TypeInferenceError,
    UnsupportedOpError,
    VerifyError,
)
from .graph import Graph, Module, Op, Value
from .interpreter import Interpreter, interpret
from .parser import parse_module
from .printer import print_graph, print_module
from .registry import NOT_DIFFERENTIABLE, OpDef, Trait, all_opdefs, defop, get_opdef, has_op
from .types import UNKNOWN, Dim, OptionalType, SequenceType, TensorType, ValueType, join_types, tensor
from .verifier import verify_module

__all__ = [
    "REQUIRED", "AttrKind", "AttrSpec", "Builder", "const_value", "DType", "GradientError", "InputError", "IRError",
    "ModelError", "NncError", "ParseError", "TargetError", "TypeInferenceError", "UnsupportedOpError",
    "VerifyError", "Graph", "Module", "Op", "Value", "Interpreter", "interpret", "parse_module",
    "print_graph", "print_module", "NOT_DIFFERENTIABLE", "OpDef", "Trait", "all_opdefs", "defop",
    "get_opdef", "has_op", "UNKNOWN", "Dim", "TensorType", "tensor", "verify_module", "SequenceType",
    "OptionalType", "ValueType", "join_types",
]

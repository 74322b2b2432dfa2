"""Converters for ONNX Optional, OptionalHasElement and OptionalGetElement.

An optional-typed value (``OptionalType``) goes through the IR's optional ops. Applied to a plain
tensor or sequence, which is always present, OptionalHasElement folds to true and
OptionalGetElement is the value itself; an omitted input folds to false.
"""

from __future__ import annotations

import numpy as np

from nnc.ir import UnsupportedOpError
from nnc.ir.types import OptionalType, SequenceType, TensorType

from ..context import ConvertContext, Node
from ..registry import converter


@converter("Optional", since=15)
def optional(ctx: ConvertContext, node: Node):
    x = node.input(0)
    if x is not None:
        return ctx.op("optional", x)
    tp = node.attr("type", None)
    if tp is None:
        raise node.unsupported("an empty Optional needs its 'type' attribute")
    from ..importer import type_from_proto

    t = type_from_proto(tp.tp, f"{node.describe()}: type")
    if isinstance(t, OptionalType):
        raise UnsupportedOpError(f"{node.describe()}: optionals of optionals are not supported")
    kind = "sequence" if isinstance(t, SequenceType) else "tensor"
    return ctx.op("optional_none", dtype=t.dtype, kind=kind)


@converter("OptionalHasElement", since=15)
def optional_has_element(ctx: ConvertContext, node: Node):
    x = node.input(0)
    if x is not None and isinstance(x.type, OptionalType):
        return ctx.op("optional_has_element", x)
    return ctx.const(np.array(x is not None), name=node.outputs[0])


@converter("OptionalGetElement", since=15)
def optional_get_element(ctx: ConvertContext, node: Node):
    x = node.input(0)
    if x is None:
        raise node.unsupported("OptionalGetElement of an empty optional has no value")
    if isinstance(x.type, OptionalType):
        return ctx.op("optional_get_element", x)
    assert isinstance(x.type, (TensorType, SequenceType))
    return x

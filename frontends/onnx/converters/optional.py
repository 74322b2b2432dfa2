"""Converters for ONNX Optional* ops applied to plain tensors.

nnc has no optional type: an optional input that is present is just its tensor, and one that is
absent is known to be absent at import. So OptionalHasElement folds to a boolean constant and
OptionalGetElement of a tensor is that tensor. Optional-typed graph inputs and outputs are rejected
by the importer (they are not tensors).
"""

from __future__ import annotations

import numpy as np

from ..context import ConvertContext, Node
from ..registry import converter


@converter("OptionalHasElement", since=15)
def optional_has_element(ctx: ConvertContext, node: Node):
    return ctx.const(np.array(node.input(0) is not None), name=node.outputs[0])


@converter("OptionalGetElement", since=15)
def optional_get_element(ctx: ConvertContext, node: Node):
    x = node.input(0)
    if x is None:
        raise node.unsupported("OptionalGetElement of an empty optional has no value")
    return x

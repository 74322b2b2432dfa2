"""Which official ONNX node tests are "ordinary-tensor" (numeric): plain tensors of standard dtypes,
no subgraphs, default domain; and which are control flow ("cf") or sequences/optionals ("seq").
Mirrors ``shared/tools/onnx_node_categories.py`` so the tests do not depend on a file outside the
repository."""

from __future__ import annotations

import functools
import warnings

import onnx
from onnx import TensorProto as T

EXOTIC = {getattr(T, n) for n in ("STRING", "FLOAT8E4M3FN", "FLOAT8E4M3FNUZ", "FLOAT8E5M2", "FLOAT8E5M2FNUZ",
                                   "UINT4", "INT4", "FLOAT4E2M1", "INT2", "UINT2", "FLOAT8E8M0") if hasattr(T, n)}


def category(model: onnx.ModelProto) -> str:
    g = model.graph
    kinds = []
    for v in list(g.input) + list(g.output):
        k = v.type.WhichOneof("value")
        kinds.append((k, v.type.tensor_type.elem_type if k == "tensor_type" else None))
    for node in g.node:
        for a in node.attribute:
            if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
                kinds.append(("subgraph", None))
            if a.type == onnx.AttributeProto.TENSOR:
                kinds.append(("tensor_type", a.t.data_type))
    if any(k not in ("tensor_type", "subgraph") for k, _ in kinds):
        return "seq"
    if any(e in EXOTIC for k, e in kinds if k == "tensor_type"):
        return "exotic"
    if any(k == "subgraph" for k, _ in kinds):
        return "cf"
    if any(n.domain not in ("", "ai.onnx") for n in g.node):
        return "dom"
    return "numeric"


@functools.lru_cache(maxsize=1)
def node_test_categories() -> dict[str, str]:
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {t.name: category(t.model) for t in load_model_tests(kind="node")}


def numeric_node_tests() -> set[str]:
    return {k for k, v in node_test_categories().items() if v == "numeric"}


def category_node_tests(name: str) -> set[str]:
    """The node tests of one category ("cf": a node carries a subgraph; "seq": a sequence, optional
    or map value appears)."""
    return {k for k, v in node_test_categories().items() if v == name}


TRAINING_DOMAIN = "ai.onnx.preview.training"


@functools.lru_cache(maxsize=1)
def training_node_tests() -> set[str]:
    """The node tests of the ``ai.onnx.preview.training`` ops (Momentum, Adagrad, Adam, Gradient):
    category "dom", but in nnc's scope since training mode."""
    from onnx.backend.test.loader import load_model_tests

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return {t.name for t in load_model_tests(kind="node")
                if t.model.graph.node and all(n.domain == TRAINING_DOMAIN for n in t.model.graph.node)}

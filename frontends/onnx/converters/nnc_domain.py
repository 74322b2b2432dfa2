"""The ``ai.nnc`` domain: nodes that nnc's ONNX exporter (backends/onnx_export.py) writes for ops with no
standard ONNX spelling. The op type is the nnc op name and the attributes are the op's own (a dtype by
its name), so every registered op reads back as itself and an exported model round-trips."""

from __future__ import annotations

from typing import Any, Callable

from nnc.ir import Value
from nnc.ir.attrs import AttrKind
from nnc.ir.dtypes import DType
from nnc.ir.registry import OpDef, get_opdef, has_op

from ..context import ConvertContext, Node

NNC_DOMAIN = "ai.nnc"


def _attrs(d: OpDef, node: Node) -> dict[str, Any]:
    out = {}
    for k, v in node.attrs.items():
        spec = d.attrs.get(k)
        if spec is None:
            raise node.unsupported(f"attribute {k!r} is not one of nnc op {d.name!r}'s "
                                   f"({', '.join(d.attrs) or 'none'})")
        out[k] = DType.parse(v) if spec.kind is AttrKind.DTYPE else v
    return out


def _make(d: OpDef):
    def convert(ctx: ConvertContext, node: Node) -> list[Value]:
        operands = list(node.inputs)
        while operands and operands[-1] is None:  # nnc's optional operands are trailing
            operands.pop()
        if any(v is None for v in operands):
            raise node.unsupported("an omitted input before a given one has no nnc form")
        op = ctx.b.create(d.name, operands, _attrs(d, node), n_results=len(node.outputs))
        return op.results
    return convert


def lookup_nnc(op_type: str) -> Callable:
    """The converter of ``ai.nnc`` node ``op_type``: any registered op but ``const`` and ``fused`` (which
    the exporter writes as initializers and local functions). Kept out of the ONNX converter table, so
    ``nnc ops`` lists ONNX ops only."""
    if op_type in ("const", "fused") or not has_op(op_type):
        def unknown(ctx: ConvertContext, node: Node) -> list[Value]:
            raise node.unsupported(f"{op_type!r} is not an op of this nnc version: an ai.nnc node names an "
                                   "nnc op, as nnc's ONNX export writes them")
        return unknown
    return _make(get_opdef(op_type))

"""Converters for ONNX sequence ops (SequenceConstruct/Empty/Insert/Erase/At/Length, SplitToSequence,
ConcatFromSequence, SequenceMap): one IR op each (``ir/ops/tensor_sequence.py``)."""

from __future__ import annotations

from nnc.ir import DType
from nnc.ir.types import SequenceType

from ..context import ConvertContext, Node, dtype_from_onnx
from ..registry import converter
from .control_flow import align_captures


def _operands(node: Node) -> list:
    return [v for v in node.inputs if v is not None]


@converter("SequenceConstruct")
def sequence_construct(ctx: ConvertContext, node: Node):
    return ctx.op("sequence_construct", *node.inputs)


@converter("SequenceEmpty")
def sequence_empty(ctx: ConvertContext, node: Node):
    dt = node.attr("dtype", None)
    return ctx.op("sequence_empty", dtype=DType.f32 if dt is None else dtype_from_onnx(dt))


@converter("SequenceInsert")
def sequence_insert(ctx: ConvertContext, node: Node):
    return ctx.op("sequence_insert", *_operands(node))


@converter("SequenceErase")
def sequence_erase(ctx: ConvertContext, node: Node):
    return ctx.op("sequence_erase", *_operands(node))


@converter("SequenceAt")
def sequence_at(ctx: ConvertContext, node: Node):
    return ctx.op("sequence_at", *node.inputs)


@converter("SequenceLength")
def sequence_length(ctx: ConvertContext, node: Node):
    return ctx.op("sequence_length", node.inputs[0])


@converter("SplitToSequence")
def split_to_sequence(ctx: ConvertContext, node: Node):
    return ctx.op("split_to_sequence", *_operands(node), axis=node.attr("axis", 0), keepdims=node.attr("keepdims", 1))


@converter("ConcatFromSequence")
def concat_from_sequence(ctx: ConvertContext, node: Node):
    return ctx.op("concat_from_sequence", node.inputs[0], axis=node.attr("axis"), new_axis=node.attr("new_axis", 0))


@converter("SequenceMap")
def sequence_map(ctx: ConvertContext, node: Node):
    ins = list(node.inputs)
    formal = [t.elem if isinstance(t, SequenceType) else t for t in (v.type for v in ins)]
    region, caps = ctx.import_region(node.attr("body").g, formal, "body")
    if any(isinstance(v.type, SequenceType) for v, _ in caps):
        raise node.unsupported("a body that reads a sequence from the enclosing graph is not supported")
    outer = align_captures([(region, caps)], len(ins))
    return ctx.b.create("sequence_map", [*ins, *outer], {}, list(node.outputs), len(region.outputs),
                        regions=[region]).results

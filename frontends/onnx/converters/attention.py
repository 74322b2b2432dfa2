"""Converters for ONNX attention ops: Attention (opset 23+), RotaryEmbedding, LinearAttention.

Each becomes one IR op of the same name (see ``ir/ops/attention.py``). An absent optional input
followed by a present one is passed as a zero-element stand-in, which the IR ops read as absent.
SwiGLU needs no converter: the importer expands its ONNX function body into core ops.
"""

from __future__ import annotations

import numpy as np

from nnc.ir import DType, Value

from ..context import ConvertContext, Node, dtype_from_onnx
from ..registry import converter


def optional_operands(ctx: ConvertContext, inputs: list[Value | None], dtypes: list[DType]) -> list[Value]:
    """``inputs`` with trailing absent ones dropped and inner absent ones replaced by a
    zero-element constant of the given dtype."""
    inputs = list(inputs)
    while inputs and inputs[-1] is None:
        inputs.pop()
    return [v if v is not None else ctx.const(np.zeros((0,), dtypes[i].numpy), name=ctx._name(f"absent{i}"))
            for i, v in enumerate(inputs)]


@converter("Attention", since=23)
def attention(ctx: ConvertContext, node: Node):
    q = node.inputs[0]
    f = q.dtype
    operands = optional_operands(ctx, node.inputs, [f, f, f, f, f, f, DType.i64])
    if len(operands) > 4 and (node.input(4) is None) != (node.input(5) is None):
        raise node.unsupported("past_key and past_value must be given together")
    precision = node.attr("softmax_precision", 0)
    return ctx.op("attention", *operands,
                  scale=node.attr("scale", None), is_causal=node.attr("is_causal", 0),
                  q_num_heads=node.attr("q_num_heads", 0), kv_num_heads=node.attr("kv_num_heads", 0),
                  softcap=node.attr("softcap", 0.0),
                  qk_matmul_output_mode=node.attr("qk_matmul_output_mode", 0),
                  softmax_precision=dtype_from_onnx(precision, f"{node.describe()}: ") if precision else None,
                  left_window=node.attr("left_window_size", -1), right_window=node.attr("right_window_size", -1))


@converter("RotaryEmbedding", since=23)
def rotary_embedding(ctx: ConvertContext, node: Node):
    return ctx.op("rotary_embedding", *[v for v in node.inputs if v is not None],
                  interleaved=node.attr("interleaved", 0),
                  rotary_dim=node.attr("rotary_embedding_dim", 0), num_heads=node.attr("num_heads", 0))


@converter("LinearAttention", since=1)
def linear_attention(ctx: ConvertContext, node: Node):
    q = node.inputs[0]
    operands = optional_operands(ctx, node.inputs, [q.dtype] * 6)
    # chunk_size is a tuning hint of chunked kernels; it does not change the result
    return ctx.op("linear_attention", *operands, q_num_heads=node.attr("q_num_heads"),
                  kv_num_heads=node.attr("kv_num_heads"), scale=node.attr("scale", 0.0),
                  update_rule=node.attr("update_rule", "gated_delta"))

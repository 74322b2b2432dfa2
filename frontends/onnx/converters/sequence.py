"""Converters for ONNX sequence ops: RNN, GRU, LSTM, CausalConvWithState and TfIdfVectorizer.

Each becomes one IR op (see ``ir/ops/sequence.py``) whose attributes mirror ONNX's. An absent
optional input followed by a present one is passed as a zero-element stand-in.
"""

from __future__ import annotations

from nnc.ir import DType

from ..context import ConvertContext, Node
from ..registry import converter
from .attention import optional_operands


def _recurrent_attrs(node: Node) -> dict:
    r = node.inputs[2]
    hidden = node.attr("hidden_size", None)
    if hidden is None:
        if r.shape is None or not isinstance(r.shape[-1], int):
            raise node.unsupported("hidden_size must be given or R's shape known")
        hidden = r.shape[-1]
    acts = node.attr("activations", None)
    return {"hidden_size": hidden, "direction": node.attr("direction", "forward"),
            "activations": acts or None,
            "activation_alpha": node.attr("activation_alpha", ()), "activation_beta": node.attr("activation_beta", ()),
            "clip": node.attr("clip", None), "layout": node.attr("layout", 0)}


def _operands(ctx: ConvertContext, node: Node, n: int):
    f = node.inputs[0].dtype
    dtypes = [f, f, f, f, DType.i32] + [f] * (n - 5)
    return optional_operands(ctx, node.inputs[:n], dtypes)


@converter("RNN")
def rnn(ctx: ConvertContext, node: Node):
    return ctx.op("rnn", *_operands(ctx, node, 6), **_recurrent_attrs(node))


@converter("GRU")
def gru(ctx: ConvertContext, node: Node):
    return ctx.op("gru", *_operands(ctx, node, 6), linear_before_reset=node.attr("linear_before_reset", 0),
                  **_recurrent_attrs(node))


@converter("LSTM")
def lstm(ctx: ConvertContext, node: Node):
    return ctx.op("lstm", *_operands(ctx, node, 8), input_forget=node.attr("input_forget", 0),
                  **_recurrent_attrs(node))


@converter("CausalConvWithState")
def causal_conv_with_state(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    operands = optional_operands(ctx, node.inputs, [x.dtype] * 4)
    return ctx.op("causal_conv_with_state", *operands, activation=node.attr("activation", "none"))


@converter("TfIdfVectorizer")
def tfidf_vectorizer(ctx: ConvertContext, node: Node):
    if node.attr("pool_strings", None):
        raise node.unsupported("string pools are not supported (nnc tensors have no string dtype)")
    return ctx.op("tfidf_vectorizer", node.inputs[0], mode=node.attr("mode"),
                  min_gram_length=node.attr("min_gram_length"), max_gram_length=node.attr("max_gram_length"),
                  max_skip_count=node.attr("max_skip_count"), ngram_counts=node.attr("ngram_counts"),
                  ngram_indexes=node.attr("ngram_indexes"), pool_int64s=node.attr("pool_int64s", ()),
                  weights=node.attr("weights", ()))

"""Decoder-with-past ONNX models from ``transformers`` causal LMs, in the layout optimum exports.

Inputs ``input_ids`` [batch, sequence_length], ``attention_mask`` [batch, past_sequence_length +
sequence_length], ``position_ids`` [batch, sequence_length] (optional) and
``past_key_values.{i}.key`` / ``.value`` [batch, kv_heads, past_sequence_length, head_dim];
outputs ``logits`` [batch, sequence_length, vocab] and ``present.{i}.key`` / ``.value``, each the
concatenation of the past and the new keys or values along the sequence axis.

``export_decoder_with_past`` wraps the model in a module whose forward takes those tensors
positionally and builds ``transformers``' ``DynamicCache`` from them (its update is a
``torch.cat``, which the exporter writes as ``Concat``), then runs ``torch.onnx.export`` (the
TorchScript exporter: the dynamo one needs onnxscript, which is not a dependency). Used by the
generation tests and by ``bench/generate.py``; ``greedy_onnxruntime`` is the onnxruntime side of
both (a plain Python loop over the decoder, as a user of onnxruntime would write it).
"""

from __future__ import annotations

from typing import Any

import numpy as np


def cache_layout(config: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head size) of a ``transformers`` decoder config."""
    layers = config.num_hidden_layers
    heads = config.num_attention_heads
    kv = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return int(layers), int(kv), int(head_dim)


def past_names(layers: int) -> list[str]:
    return [f"past_key_values.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def present_names(layers: int) -> list[str]:
    return [f"present.{i}.{kv}" for i in range(layers) for kv in ("key", "value")]


def export_decoder_with_past(model: Any, path: str, position_ids: bool = True, opset: int = 17) -> str:
    """Write ``model`` (a ``transformers`` causal LM, eval mode) as a decoder-with-past ONNX file
    at ``path`` (layout: the module docstring); ``position_ids=False`` leaves that input out (the
    model then derives positions from the past length). Returns ``path``."""
    import torch
    from transformers import DynamicCache

    layers, kv, head_dim = cache_layout(model.config)

    class WithPast(torch.nn.Module):
        def __init__(self, lm: Any):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: Any, attention_mask: Any, *rest: Any) -> tuple:
            pos, flat = (rest[0], rest[1:]) if position_ids else (None, rest)
            cache = DynamicCache(config=self.lm.config)
            for i, layer in enumerate(cache.layers):  # the pasts as they are (update would cat them to nothing)
                layer.lazy_initialization(flat[2 * i], flat[2 * i + 1])
                layer.keys, layer.values = flat[2 * i], flat[2 * i + 1]
            out = self.lm(input_ids=input_ids, attention_mask=attention_mask, position_ids=pos,
                          past_key_values=cache, use_cache=True, return_dict=True)
            present = out.past_key_values
            return (out.logits,) + tuple(t for i in range(layers)
                                         for t in (present.layers[i].keys, present.layers[i].values))

    batch, past, seq = 1, 3, 2
    ids = torch.randint(0, model.config.vocab_size, (batch, seq))
    mask = torch.ones(batch, past + seq, dtype=torch.long)
    pos = torch.arange(past, past + seq)[None]
    caches = [torch.randn(batch, kv, past, head_dim) for _ in range(2 * layers)]
    args = (ids, mask) + ((pos,) if position_ids else ()) + tuple(caches)
    names = ["input_ids", "attention_mask"] + (["position_ids"] if position_ids else []) + past_names(layers)
    outs = ["logits"] + present_names(layers)
    axes = {"input_ids": {0: "batch", 1: "sequence_length"},
            "attention_mask": {0: "batch", 1: "total_sequence_length"},
            "position_ids": {0: "batch", 1: "sequence_length"},
            "logits": {0: "batch", 1: "sequence_length"}}
    axes.update({n: {0: "batch", 2: "past_sequence_length"} for n in names if n.startswith("past_")})
    axes.update({n: {0: "batch", 2: "total_sequence_length"} for n in outs[1:]})
    training = model.training
    # the wrapper in eval mode: the exporter restores the wrapper's mode afterwards, recursively
    with torch.no_grad():
        torch.onnx.export(WithPast(model).eval(), args, path, input_names=names, output_names=outs,
                          dynamic_axes={k: v for k, v in axes.items() if k in names + outs},
                          opset_version=opset, dynamo=False)
    model.train(training)
    return path


def greedy_onnxruntime(session: Any, input_ids: np.ndarray, max_new_tokens: int) -> tuple[np.ndarray, dict]:
    """Greedy decoding with an onnxruntime ``InferenceSession`` over a decoder-with-past model:
    the prompt with empty pasts, then one token per step with the presents fed back as the pasts.
    Returns the new tokens (i64[B, max_new_tokens]) and {"prefill_s", "decode_s"}."""
    import time

    inputs = {i.name: i for i in session.get_inputs()}
    pasts = [n for n in inputs if n.startswith("past_key_values.")]
    shape = inputs[pasts[0]].shape  # [batch, kv heads, past, head dim]
    b, n = input_ids.shape
    feeds: dict[str, np.ndarray] = {p: np.zeros((b, shape[1], 0, shape[3]), np.float32) for p in pasts}
    ids = input_ids.astype(np.int64)
    new, done = [], 0
    times = {"prefill_s": 0.0, "decode_s": 0.0}
    while True:
        feeds["input_ids"] = ids
        feeds["attention_mask"] = np.ones((b, done + ids.shape[1]), np.int64)
        if "position_ids" in inputs:
            feeds["position_ids"] = np.broadcast_to(np.arange(done, done + ids.shape[1]), ids.shape).copy()
        t0 = time.perf_counter()
        outs = session.run(None, feeds)
        times["decode_s" if new else "prefill_s"] += time.perf_counter() - t0
        done += ids.shape[1]
        tok = np.argmax(outs[0][:, -1, :], axis=-1).astype(np.int64)
        new.append(tok)
        if len(new) == max_new_tokens:  # the last token needs no forward pass (as nnc.generate)
            return np.stack(new, axis=1), times
        ids = tok[:, None]
        for p, value in zip(pasts, outs[1:]):
            feeds[p] = value

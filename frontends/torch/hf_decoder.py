"""A ``transformers`` causal language model as one *decoder step* program with an explicit,
preallocated KV cache, for generation (docs/generation.md).

The step is ``(input_ids i64[B, seq], position i64[], past_key.0, past_value.0, ...) -> (logits
f32[B, 1, V], present_key.0, present_value.0, ...)``: every cache is ``[B, kv_heads, max_length,
head_dim]``, the new tokens sit at positions ``position .. position + seq - 1``, and each present is
the past with the new keys or values written at those positions (``index_copy`` along axis 2,
torch's own op, kept whole by the importer). The model runs with a cache object that holds the
step's inputs instead of buffers of its own, so ``transformers`` builds the causal mask over the
whole cache from the positions (positions past the written ones are masked) exactly as for its
static cache. Only the last position's logits are computed (``logits_to_keep=1``), as ``generate``
does.

One program with a symbolic ``seq`` serves both the prefill (the prompt) and the decode step
(``seq`` fixed to 1 when it is compiled).
"""

from __future__ import annotations

from typing import Any

from nnc.ir import ModelError, Module

from .importer import export, import_program, require_torch

INPUT_IDS, POSITION = "input_ids", "position"


def cache_names(layers: int) -> list[str]:
    """The names of the cache inputs in order: past_key.0, past_value.0, past_key.1, ..."""
    return [f"past_{kv}.{i}" for i in range(layers) for kv in ("key", "value")]


def cache_geometry(config: Any) -> tuple[int, int, int]:
    """(layers, kv heads, head size) of a ``transformers`` decoder config."""
    text = config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config
    layers = getattr(text, "num_hidden_layers", None)
    heads = getattr(text, "num_attention_heads", None)
    hidden = getattr(text, "hidden_size", None)
    if not (layers and heads and hidden):
        raise ModelError(f"{type(config).__name__}: not a decoder config (needs num_hidden_layers, "
                         f"num_attention_heads and hidden_size)")
    kv = getattr(text, "num_key_value_heads", None) or heads
    head_dim = getattr(text, "head_dim", None) or hidden // heads
    return int(layers), int(kv), int(head_dim)


def step_module(model: Any) -> Any:
    """``model`` wrapped as the decoder step (see the module docstring)."""
    torch = require_torch()
    from transformers.cache_utils import Cache, StaticLayer

    class StepLayer(StaticLayer):
        """A static cache layer over the step's input tensors; ``update`` writes functionally
        (``index_copy``, not ``index_copy_``) so that the present caches are the step's outputs."""

        def __init__(self, keys: Any, values: Any, position: Any):
            super().__init__(max_cache_len=keys.shape[2])
            self.keys, self.values, self.position = keys, values, position
            self.is_initialized = True

        def update(self, key_states: Any, value_states: Any, *args: Any, **kwargs: Any) -> tuple[Any, Any]:
            where = torch.arange(key_states.shape[-2]) + self.position
            self.keys = self.keys.index_copy(2, where, key_states)
            self.values = self.values.index_copy(2, where, value_states)
            return self.keys, self.values

        def get_seq_length(self) -> Any:
            return self.position

    class DecoderStep(torch.nn.Module):
        def __init__(self, lm: Any):
            super().__init__()
            self.lm = lm

        def forward(self, input_ids: Any, position: Any, caches: list) -> tuple:
            layers = [StepLayer(caches[2 * i], caches[2 * i + 1], position) for i in range(len(caches) // 2)]
            cache = Cache(layers=layers)
            where = torch.arange(input_ids.shape[1]) + position
            out = self.lm(input_ids=input_ids, past_key_values=cache, cache_position=where,
                          position_ids=where[None].expand(input_ids.shape[0], -1), use_cache=True,
                          logits_to_keep=1, return_dict=True)
            return (out.logits,) + tuple(t for layer in layers for t in (layer.keys, layer.values))

    return DecoderStep(model)


def export_decoder(model: Any, max_length: int, batch: int = 1) -> Any:
    """The decoder step of ``model`` as an ``ExportedProgram`` with a symbolic ``seq`` (1 to
    ``max_length``), caches of ``max_length`` positions and batch ``batch``."""
    torch = require_torch()
    if not hasattr(model, "config") or not hasattr(model, "forward"):
        raise ModelError(f"{type(model).__name__}: not a transformers causal language model")
    layers, kv, head_dim = cache_geometry(model.config)
    dtype = next(model.parameters()).dtype
    caches = [torch.zeros(batch, kv, max_length, head_dim, dtype=dtype) for _ in range(2 * layers)]
    ids = torch.zeros(batch, min(2, max_length), dtype=torch.long)
    seq = torch.export.Dim("seq", min=1, max=max_length)
    step = step_module(model.eval())
    return export(step, (ids, torch.tensor(0), caches), dynamic_shapes=({1: seq}, None, [None] * len(caches)))


def name_decoder(module: Module) -> Module:
    """Give a decoder step's inputs and outputs their names (``input_ids``, ``position``,
    ``past_key.0``..., ``logits``, ``present_key.0``...), in place; returns the module."""
    g = module.main
    params = [p for p in g.params if p.binding is None]
    layers = (len(params) - 2) // 2
    for p, name in zip(params, [INPUT_IDS, POSITION] + cache_names(layers)):
        g.rename(p, name)
    outs = ["logits"] + [n.replace("past_", "present_") for n in cache_names(layers)]
    if len(g.outputs) == len(outs):
        g.set_outputs(list(g.outputs), outs)
    return module


def from_hf_decoder(model: Any, max_length: int, batch: int = 1) -> Module:
    """Import ``model``'s decoder step (``export_decoder``) as an nnc Module with named inputs."""
    ep = export_decoder(model, max_length, batch)
    ids = next(n for n in ep.graph.nodes if n.op == "placeholder" and n.name == INPUT_IDS)
    symbols = {str(ids.meta["val"].shape[1]): "seq"}  # torch's name for the token dim (s70) -> seq
    return name_decoder(import_program(ep, name=type(model).__name__, symbols=symbols))

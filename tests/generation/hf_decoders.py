"""The ``transformers`` decoders the generation tests run (random weights from small configs,
fixed seed) and their oracle, ``model.generate``: shared by test_generate.py (torch) and
test_onnx_decoder.py (the same models exported to ONNX).

The weights are drawn with ``initializer_range=0.2`` (default 0.02): at the default scale a random
2-layer model repeats one token forever, which would make "the same 64 tokens" a weak check.
"""

from __future__ import annotations

import numpy as np

VOCAB = 1000


def build(tf, kind: str):
    """GPT-2, or a Llama-architecture model (RMSNorm, rotary embeddings, grouped-query attention
    with 2 kv heads for 4 query heads, SwiGLU): 2 layers, hidden 64, head size 16."""
    import torch

    torch.manual_seed(0)
    if kind == "gpt2":
        cfg = tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=128, vocab_size=VOCAB, initializer_range=0.2)
        return tf.GPT2LMHeadModel(cfg).eval()
    cfg = tf.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=128, vocab_size=VOCAB, max_position_embeddings=128, initializer_range=0.2)
    return tf.LlamaForCausalLM(cfg).eval()


def prompt(n: int = 7) -> np.ndarray:
    return np.random.default_rng(1).integers(0, VOCAB, (1, n))


def hf_greedy(m, ids: np.ndarray, new: int) -> np.ndarray:
    """transformers' greedy ``generate``: the prompt then ``new`` tokens (no eos)."""
    import torch

    t = torch.from_numpy(ids)
    with torch.no_grad():
        out = m.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=new, do_sample=False,
                         eos_token_id=None, pad_token_id=0)
    return out.numpy()

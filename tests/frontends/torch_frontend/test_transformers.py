"""Hugging Face ``transformers`` models built from small configs (random weights, nothing is
downloaded) through both frontends: ``nnc.compile(module, example_args=...)`` (torch.export, ATen)
on the reference interpreter and on x86, and ``torch.onnx.export`` + the ONNX frontend; eager
PyTorch is the oracle.

Models: BERT, DistilBERT, GPT-2, ViT, a Llama-architecture decoder (RMSNorm, rotary embeddings,
grouped-query attention with 2 kv heads for 4 query heads, SwiGLU) and T5 (encoder and decoder, with
relative position buckets). Text models get input_ids plus an attention mask that pads the last
four tokens of the second sequence, so the mask path (the multi-tensor ``aten.index.Tensor`` that
transformers' mask builder emits) is exercised, not only the all-ones shortcut.

Tolerance: ``assert_close`` (rtol 1e-4, atol 1e-5 of the output's largest magnitude). Every output
here is a layer-normed hidden state (std ~1, max ~3.5); f32 sums over 64-128 terms leave ~1e-6
absolute error, so the floor is ~10x above f32 noise and ~1e5x below the signal.

The index tests at the top need torch only; the model tests also need transformers (the ``hf``
extra) and skip without it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch  # before the skip, so that -m torch selects the module
torch = pytest.importorskip("torch", reason="the PyTorch frontend tests need torch (pip install 'nnc[torch]')")

from torch import nn  # noqa: E402
from torch_cases import assert_close, eager  # noqa: E402

import nnc  # noqa: E402

B, S, VOCAB = 2, 16, 1000


# -- multi-tensor advanced indexing (aten.index.Tensor) -------------------------------------------------

class Index(nn.Module):
    def __init__(self, where: str):
        super().__init__()
        self.where = where

    def forward(self, x, i, j):
        if self.where == "front":
            return x[i, j]
        if self.where == "middle":
            return x[:, i, j]
        return x[:, i, :, j]  # not adjacent: the broadcast dims go in front (numpy's rule)


@pytest.mark.parametrize("where", ["front", "middle", "apart"])
def test_index_with_several_tensors(where: str) -> None:
    x = torch.randn(3, 4, 5, 6)
    i = torch.tensor([[0], [2], [-1]])  # [3, 1] broadcasts against j's [4]
    j = torch.tensor([1, -2, 3, 0])
    m = Index(where)
    want = eager(m, (x, i, j))
    # the expected shapes, worked out from numpy's placement rule rather than read off torch
    expect_shape = {"front": (3, 4, 5, 6), "middle": (3, 3, 4, 6), "apart": (3, 4, 3, 5)}[where]
    assert want[0].shape == expect_shape
    for target in ("reference", "x86"):
        got = nnc.compile(m, example_args=(x, i, j), target=target, quiet=True)(x.numpy(), i.numpy(), j.numpy())
        np.testing.assert_array_equal(got, want[0])  # a gather: exact


# -- transformers models ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("transformers", reason="the transformers model tests need transformers "
                                                      "(pip install 'nnc[hf]' next to torch)")


class HiddenStates(nn.Module):
    """The model's last hidden state from positional inputs (no cache, tuple outputs), so that
    torch.export, torch.onnx.export and nnc all see the same plain signature."""

    def __init__(self, model: nn.Module, kind: str):
        super().__init__()
        self.model, self.kind = model, kind

    def forward(self, *a):
        if self.kind == "vit":
            return self.model(pixel_values=a[0], return_dict=False)[0]
        if self.kind == "t5":
            return self.model(input_ids=a[0], attention_mask=a[1], decoder_input_ids=a[2], use_cache=False,
                              return_dict=False)[0]
        kw = {"use_cache": False} if self.kind in ("gpt2", "llama") else {}
        return self.model(input_ids=a[0], attention_mask=a[1], return_dict=False, **kw)[0]


def build(tf, kind: str, attn: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(0)
    small = {"attn_implementation": attn}
    if kind == "bert":
        model = tf.BertModel(tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=128, vocab_size=VOCAB, **small))
    elif kind == "distilbert":
        model = tf.DistilBertModel(tf.DistilBertConfig(dim=64, n_layers=2, n_heads=4, hidden_dim=128,
                                                       vocab_size=VOCAB, **small))
    elif kind == "gpt2":
        model = tf.GPT2Model(tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64, vocab_size=VOCAB,
                                           **small))
    elif kind == "vit":
        model = tf.ViTModel(tf.ViTConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                         intermediate_size=128, image_size=32, patch_size=8, **small))
    elif kind == "llama":
        model = tf.LlamaModel(tf.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                             num_key_value_heads=2, intermediate_size=128, vocab_size=VOCAB,
                                             max_position_embeddings=64, **small))
    else:
        model = tf.T5Model(tf.T5Config(d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                                       vocab_size=VOCAB, **small))
    m = HiddenStates(model.eval(), kind)
    if kind == "vit":
        return m, (torch.randn(B, 3, 32, 32),)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, S - 4:] = 0
    ids = torch.randint(0, VOCAB, (B, S))
    return m, (ids, mask, torch.randint(0, VOCAB, (B, S))) if kind == "t5" else (ids, mask)


def expected(m: nn.Module, args: tuple) -> list[np.ndarray]:
    want = eager(m, args)
    assert np.isfinite(want[0]).all() and float(np.std(want[0])) > 0.5  # real signal, no NaN from masking
    return want


def numpy_args(args: tuple) -> list[np.ndarray]:
    return [a.numpy() for a in args]


KINDS = ["bert", "distilbert", "gpt2", "vit", "llama", "t5"]


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", KINDS)
def test_torch_reference(tf, kind: str, attn: str) -> None:
    m, args = build(tf, kind, attn)
    want = expected(m, args)
    module = nnc.from_torch(m, args)
    ops = {op.opname for op in module.main.ops}
    assert "gather_nd" in ops or kind == "vit"  # the mask builder's multi-tensor index (ViT has no mask)
    if attn == "sdpa":
        assert "attention" in ops  # scaled_dot_product_attention arrives whole
    assert_close(nnc.compile(module)(*numpy_args(args)), want)


@pytest.mark.parametrize("kind", [k if k == "bert" else pytest.param(k, marks=pytest.mark.slow) for k in KINDS])
def test_torch_x86(tf, kind: str) -> None:
    m, args = build(tf, kind, "sdpa")
    want = expected(m, args)
    assert_close(nnc.compile(m, example_args=args, target="x86", quiet=True)(*numpy_args(args)), want)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("kind", KINDS)
def test_onnx_export(tf, kind: str, attn: str, tmp_path) -> None:
    m, args = build(tf, kind, attn)
    want = expected(m, args)
    path = str(tmp_path / f"{kind}-{attn}.onnx")
    # the TorchScript exporter: the dynamo one needs onnxscript, which is not a dependency
    torch.onnx.export(m, args, path, dynamo=False, opset_version=17)
    assert_close(nnc.compile(path)(*numpy_args(args)), want)


@pytest.mark.parametrize("target", ["reference", pytest.param("x86", marks=pytest.mark.slow)])
def test_llama_grouped_query_attention(tf, target: str, monkeypatch) -> None:
    """Under export with a mask, transformers repeats the kv heads itself; its switch for passing
    ``enable_gqa=True`` instead keeps 2 kv heads for 4 query heads into the IR ``attention`` op."""
    monkeypatch.setenv("TRANSFORMERS_SDPA_FORCE_GQA", "1")
    m, args = build(tf, "llama", "sdpa")
    want = expected(m, args)
    module = nnc.from_torch(m, args)
    attention = [op for op in module.main.ops if op.opname == "attention"]
    assert len(attention) == 2  # one per layer
    q, k, v = (o.type.shape for o in attention[0].operands[:3])
    assert (q[1], k[1], v[1]) == (4, 2, 2)
    assert_close(nnc.compile(module, target=target, quiet=True)(*numpy_args(args)), want)



@pytest.mark.parametrize("target", ["reference", pytest.param("x86", marks=pytest.mark.slow)])
@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2", "llama", "t5"])
def test_symbolic_sequence_length(tf, kind: str, target: str) -> None:
    """One compile for a symbolic sequence length (torch.export ``Dim``), run at two lengths; the
    mask builder's index tensors then have symbolic shapes."""
    m, args = build(tf, kind, "sdpa")
    seq = torch.export.Dim("seq", min=2, max=64)
    module = nnc.from_torch(m, args, dynamic_shapes=(tuple({1: seq} for _ in args),))
    assert not module.main.params[0].type.is_static
    cm = nnc.compile(module, target=target, quiet=True)
    for n in (S, 9):
        cut = tuple(a[:, :n] for a in args)
        assert_close(cm(*numpy_args(cut)), expected(m, cut))


def test_llama_symbolic_sequence_length_without_simplify(tf) -> None:
    m, args = build(tf, "llama", "sdpa")
    seq = torch.export.Dim("seq", min=2, max=64)
    cm = nnc.compile(nnc.from_torch(m, args, dynamic_shapes=(tuple({1: seq} for _ in args),)), opt_level=0)
    for n in (S, 9):
        cut = tuple(a[:, :n] for a in args)
        assert_close(cm(*numpy_args(cut)), expected(m, cut))

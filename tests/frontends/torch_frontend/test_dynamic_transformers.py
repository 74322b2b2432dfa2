"""Transformers with a symbolic batch AND sequence length compile once for x86 (shape-generic
code, docs/dynamic-shapes.md) and match eager PyTorch at every size, including sizes the export
never saw. Models and tolerance as in test_transformers.py (small configs, random weights,
``assert_close``: rtol 1e-4, atol 1e-5 of the largest magnitude)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason="the PyTorch frontend tests need torch (pip install 'nnc[torch]')")

from test_transformers import build, expected, numpy_args  # noqa: E402
from torch_cases import assert_close  # noqa: E402

import nnc  # noqa: E402
from nnc.backends.x86.generic import GenericExecutable  # noqa: E402


@pytest.fixture(scope="module")
def tf():
    return pytest.importorskip("transformers", reason="the transformers model tests need transformers "
                                                      "(pip install 'nnc[hf]' next to torch)")


def cut(args: tuple, n: int, s: int) -> tuple:
    """Inputs of batch ``n`` and sequence ``s`` like ``args``: token ids (and decoder ids) drawn
    again, the mask padding the last quarter of the first sequence."""
    gen = torch.Generator().manual_seed(n * 1000 + s)
    ids = torch.randint(0, 1000, (n, s), generator=gen)
    mask = torch.ones(n, s, dtype=torch.long)
    mask[0, s - s // 4:] = 0
    return (ids, mask) + tuple(torch.randint(0, 1000, (n, s), generator=gen) for _ in args[2:])


@pytest.mark.parametrize("kind", ["bert", "distilbert", "gpt2"])
def test_symbolic_batch_and_sequence_compile_once(tf, kind: str) -> None:
    m, args = build(tf, kind, "sdpa")
    batch, seq = torch.export.Dim("batch", min=1, max=8), torch.export.Dim("seq", min=2, max=64)
    module = nnc.from_torch(m, args, dynamic_shapes=(tuple({0: batch, 1: seq} for _ in args),))
    cm = nnc.compile(module, target="x86", quiet=True, cache=False)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    assert isinstance(cm.executable, GenericExecutable)
    shapes = ((2, 16), (1, 9), (3, 5), (2, 33))
    for n, s in shapes:
        part = cut(args, n, s)
        assert_close(cm(*numpy_args(part)), expected(m, part))
    seen = cm.executable.shapes_seen()
    assert [tuple(r["dims"].items()) for r in seen] == [(("batch", n), ("seq", s)) for n, s in shapes]


@pytest.mark.parametrize("kind", ["bert", "gpt2"])
def test_onnx_export_with_dynamic_axes_compiles_once(tf, kind: str, tmp_path) -> None:
    """The exporter's ``dynamic_axes`` become dim_params; the attention reshapes then compute their
    targets with Shape -> Gather -> Concat at run time, which the host evaluates per signature."""
    m, args = build(tf, kind, "eager")
    path = str(tmp_path / f"{kind}.onnx")
    names = ["input_ids", "attention_mask"]
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    torch.onnx.export(m, args, path, dynamo=False, opset_version=17, input_names=names, dynamic_axes=axes)
    cm = nnc.compile(path, target="x86", quiet=True, cache=False)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    # the oracle is onnxruntime on the same file: the TorchScript export traces transformers' mask
    # builder with the example's data, so the file itself differs from eager for other masks
    import onnxruntime as ort

    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    for n, s in ((2, 16), (1, 7), (3, 12)):
        feeds = dict(zip(names, numpy_args(cut(args, n, s))))
        assert_close(cm(*feeds.values()), sess.run(None, feeds))


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bert-base", "distilbert", "gpt2-4"])
def test_full_size_onnx_models_compile_once_for_nine_shapes(tf, kind: str, tmp_path) -> None:
    """Issue 12's acceptance run: BERT-base, DistilBERT and a 4-layer GPT-2 at their real widths
    (random weights), exported with symbolic batch and sequence; one compile serves batch 1, 2, 4 x
    sequence 8, 32, 128, each matching onnxruntime on the same file within 1e-4 relative (of the
    output's largest magnitude: f32 sums over 768-3072 terms in other orders leave ~1e-6)."""
    import numpy as np
    import onnxruntime as ort

    torch.manual_seed(0)
    if kind == "bert-base":
        model = tf.BertModel(tf.BertConfig(attn_implementation="eager"))
    elif kind == "distilbert":
        model = tf.DistilBertModel(tf.DistilBertConfig(attn_implementation="eager"))
    else:
        model = tf.GPT2Model(tf.GPT2Config(n_layer=4, attn_implementation="eager"))
    from test_transformers import HiddenStates

    m = HiddenStates(model.eval(), kind.split("-")[0])
    ids = torch.randint(0, 1000, (2, 16))
    args = (ids, torch.ones_like(ids))
    path = str(tmp_path / f"{kind}.onnx")
    names = ["input_ids", "attention_mask"]
    torch.onnx.export(m, args, path, dynamo=False, opset_version=17, input_names=names,
                      dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
    cm = nnc.compile(path, target="x86", quiet=True, cache=False)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(0)
    for batch in (1, 2, 4):
        for seq in (8, 32, 128):
            feeds = {"input_ids": rng.integers(0, 1000, (batch, seq)),
                     "attention_mask": np.ones((batch, seq), np.int64)}
            feeds["attention_mask"][0, seq // 2:] = 0  # padding in the first sequence
            (want,) = sess.run(None, feeds)
            (got,) = cm.run(feeds).values()
            np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))
    assert cm.executable.plans_made == 9  # nine signatures, one compile


def test_fused_qkv_split_by_a_permute_and_unbind_with_symbolic_dims() -> None:
    # ViT/timm-style attention: one qkv projection viewed to [B, S, 3, H, D] from a run-time size
    # list (nnc types it f32[?,?,?,?,?]), permuted and unbound along the 3: each part's squeeze of
    # that axis must drop it (torch knows it is 1), or the k transpose meets a rank-5 tensor
    class Attention(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.qkv, self.heads = torch.nn.Linear(32, 96), 4

        def forward(self, x):
            b, s, c = x.shape
            q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
            a = (q @ k.transpose(-2, -1) * (c // self.heads) ** -0.5).softmax(-1)
            return (a @ v).transpose(1, 2).reshape(b, s, c)

    torch.manual_seed(0)
    m = Attention().eval()
    batch, seq = torch.export.Dim("batch"), torch.export.Dim("seq")
    module = nnc.from_torch(m, (torch.randn(2, 5, 32),), dynamic_shapes=({0: batch, 1: seq},))
    cm = nnc.compile(module, target="x86", quiet=True, cache=False)
    assert isinstance(cm.executable, GenericExecutable)
    for n, s in ((2, 5), (3, 7), (1, 16)):
        x = torch.randn(n, s, 32)
        with torch.no_grad():
            assert_close(cm(x.numpy()), [m(x).numpy()])

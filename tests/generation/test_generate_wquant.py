"""Weight-only quantized generation (``quantize="int8-weights"|"int4-weights"``) on ``transformers``
GPT-2 and Llama-architecture decoders (random weights, fixed seed).

The oracle is torch eager with *fake-quantized* weights: every weight that nnc quantizes (the
attention and MLP projections and the lm head; not the embeddings) replaced, in the torch model,
by its dequantized value, computed here in torch from the scheme's definition (per output column,
blocks along the reduction dim, symmetric ``max|w| / (2**(bits-1) - 1)`` or asymmetric over the
block's range with a zero point; round half to even; the lm head int8 per channel unless
``quantize_head`` says int4 or float). nnc's logits along a token sequence must
equal that model's within the FP32 tolerance of the generate tests (1e-4 of the logits' scale):
quantization changes which weights are used, not how exactly they are applied. The quality
report's SQNR and teacher-forced agreement are then checked against the same figures computed in
torch from the FP32 and fake-quantized models.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnc
from nnc.cli import main as cli
from nnc.generation import Decoder, generate
from nnc.ir import InputError

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason="needs torch (pip install 'nnc[torch]')")
tf = pytest.importorskip("transformers", reason="needs transformers (pip install 'nnc[hf]')")
VOCAB, MAX_LEN, NEW = 512, 48, 24


def build(kind: str):
    torch.manual_seed(3)
    if kind == "gpt2":
        cfg = tf.GPT2Config(n_embd=96, n_layer=2, n_head=4, n_positions=64, vocab_size=VOCAB, initializer_range=0.1)
        return tf.GPT2LMHeadModel(cfg).eval()
    cfg = tf.LlamaConfig(hidden_size=96, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                         intermediate_size=160, vocab_size=VOCAB, max_position_embeddings=64, initializer_range=0.1)
    return tf.LlamaForCausalLM(cfg).eval()


def fake_quantize(w: torch.Tensor, bits: int, group: int | None, symmetric: bool) -> torch.Tensor:
    """w [N, K] (one row per output column) quantized along K and dequantized, in f64 then f32."""
    n, k = w.shape
    g = k if group is None else group
    nb = -(-k // g)
    x = torch.zeros(n, nb * g, dtype=torch.float64)
    x[:, :k] = w.double()
    x = x.reshape(n, nb, g)
    if symmetric:
        qmax = 2 ** (bits - 1) - 1
        scale = (x.abs().amax(dim=2) / qmax).float().double()
        zp = torch.zeros_like(scale)
        lo, hi = -qmax, qmax
    else:
        lo_v = x.amin(dim=2).clamp(max=0)
        hi_v = x.amax(dim=2).clamp(min=0)
        scale = ((hi_v - lo_v) / (2 ** bits - 1)).float().double()
        safe = torch.where(scale > 0, scale, torch.ones_like(scale))
        zp = torch.round(-lo_v / safe).clamp(0, 2 ** bits - 1)
        lo, hi = 0, 2 ** bits - 1
    safe = torch.where(scale > 0, scale, torch.ones_like(scale))[..., None]
    q = (torch.round(x / safe) + zp[..., None]).clamp(lo, hi)
    deq = ((q - zp[..., None]).float() * scale.float()[..., None]).reshape(n, nb * g)[:, :k]
    return deq


def fake_quantized_copy(kind: str, bits: int, group: int | None, symmetric: bool, head: str = "int8"):
    m = build(kind)
    with torch.no_grad():
        for name, mod in m.named_modules():
            if isinstance(mod, torch.nn.Linear) and name != "lm_head":  # Llama: weight [N, K]
                mod.weight.copy_(fake_quantize(mod.weight, bits, group, symmetric))
            elif type(mod).__name__ == "Conv1D":  # GPT-2: weight [K, N]
                mod.weight.copy_(fake_quantize(mod.weight.T, bits, group, symmetric).T)
        # the lm head is quantized (int8 per channel by default), the embedding it may be tied to is not: untie
        w = m.lm_head.weight.detach().clone()
        if head != "float":
            w = fake_quantize(w, 8, None, symmetric) if head == "int8" else fake_quantize(w, bits, group, symmetric)
        m.lm_head.weight = torch.nn.Parameter(w)
    return m


def eager_logits(m, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return m(torch.from_numpy(tokens)).logits.numpy()


def prompt() -> np.ndarray:
    return np.random.default_rng(2).integers(0, VOCAB, (1, 6))


def teacher_forced(dec: Decoder, tokens: np.ndarray, n_prompt: int) -> np.ndarray:
    """The decoder's logits predicting tokens[n_prompt:] from their prefixes: [1, positions, vocab]."""
    dec.reset()
    out = [dec.step(tokens[:, :n_prompt])]
    for t in range(n_prompt, tokens.shape[1] - 1):
        out.append(dec.step(tokens[:, t:t + 1]))
    return np.stack(out, axis=1)


# (model, quantize, group, asymmetric, quantize_head: None is the default, int8)
SCHEMES = [("gpt2", "int8-weights", None, False, None), ("gpt2", "int4-weights", 32, False, None),
           ("llama", "int4-weights", 64, True, "int4"), ("llama", "int4-weights", 128, False, "float")]


@pytest.mark.parametrize("kind,quantize,group,asymmetric,head", SCHEMES)
def test_logits_equal_eager_with_fake_quantized_weights(kind, quantize, group, asymmetric, head) -> None:
    bits = int(quantize[3])
    opts = {"quantize": quantize, "quantize_group": group, "quantize_asymmetric": asymmetric or None,
            "quantize_head": head}
    dec = Decoder.from_torch(build(kind), max_length=MAX_LEN, cache=False, **opts)
    ops = [op.opname for op in dec.decode.module.main.walk()]
    assert "matmul_nbits" in ops and "gemm" not in ops
    # the head, a matmul by the (untied) embedding's transpose, is the only float product left with head=float
    assert ops.count("matmul") == (1 if head == "float" else 0)
    head_bits = [op.attrs["bits"] for op in dec.decode.module.main.walk() if op.opname == "matmul_nbits"
                 and op.attrs["K"] == 96 and op.results[0].shape[-1] == VOCAB]
    assert head_bits == ([] if head == "float" else [4] if head == "int4" else [8])
    assert generate(dec, prompt(), max_new_tokens=2).report["weights"]["head"] == (head or "int8")
    ids = prompt()
    tokens = generate(dec, ids, max_new_tokens=NEW).tokens
    fake = fake_quantized_copy(kind, bits, group, not asymmetric, head or "int8")
    want = eager_logits(fake, tokens)[:, ids.shape[1] - 1:-1]
    got = teacher_forced(dec, tokens, ids.shape[1])
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-4 * np.abs(want).max())
    # greedy: every token the quantized decoder chose is the argmax of the fake-quantized model
    np.testing.assert_array_equal(np.argmax(want, axis=-1), tokens[:, ids.shape[1]:])


@pytest.mark.slow  # six compiles (quantized and FP32 decoders, prefill and decode) and torch runs: ~35 s loaded
def test_quality_report_equals_the_torch_figures() -> None:
    m = build("llama")
    ids = prompt()
    out = generate(m, ids, max_new_tokens=NEW, max_length=MAX_LEN, cache=False, quantize="int4-weights",
                   quantize_group=32, quality=True)
    q, w = out.report["quality"], out.report["weights"]
    assert out.report["compiles"] == 2 and q["fp32_compiles"] == 2 and q["positions"] == NEW
    # FP32 greedy tokens, then both models' logits along them, in torch
    t = torch.from_numpy(ids)  # nnc's FP32 greedy tokens are transformers' (test_generate.py)
    with torch.no_grad():
        ref = m.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=NEW, do_sample=False,
                         eos_token_id=None, pad_token_id=0).numpy()
    fp32 = eager_logits(m, ref)[:, ids.shape[1] - 1:-1].astype(np.float64)
    fq = eager_logits(fake_quantized_copy("llama", 4, 32, True), ref)[:, ids.shape[1] - 1:-1]
    sqnr = 10 * np.log10(np.sum(fp32 ** 2) / np.sum((fp32 - fq) ** 2))
    assert abs(q["logit_sqnr_db"] - sqnr) < 0.05
    assert q["teacher_forced_agreement"] == np.mean(np.argmax(fq, axis=-1) == ref[:, ids.shape[1]:])
    assert q["greedy_agreement"] == np.mean(out.new_tokens == ref[:, ids.shape[1]:])
    # FP32's top-1 minus top-2 logit, and what quantization changes in it: each logit is within
    # 1e-4 of the logits' scale of torch's (the tolerance above), the figures rounded to 4 decimals
    top = np.argsort(fp32, axis=-1)[..., -2:]
    ref_top, q_top = np.take_along_axis(fp32, top, -1), np.take_along_axis(fq.astype(np.float64), top, -1)
    margin = ref_top[..., 1] - ref_top[..., 0]
    change = (q_top[..., 1] - q_top[..., 0]) - margin
    scale = 1e-4 * np.abs(fp32).max()
    assert abs(q["top1_margin_median"] - np.median(margin)) <= 2 * scale + 5e-5
    assert abs(q["margin_change_rms"] - np.sqrt(np.mean(change ** 2))) <= 4 * scale + 5e-5
    # 7 matrices per layer, [K, N]: codes K*N/2 bytes, one f32 scale per 32 weights; the head int8
    # per channel: K*N bytes and a scale per column
    d, f, kv = 96, 160, 48
    mats = 2 * [(d, d), (d, kv), (d, kv), (d, d), (d, f), (d, f), (f, d)]
    assert w["matrices"] == len(mats) + 1 and w["head"] == "int8" and w["output_layers"] == 1
    assert w["float_bytes"] == sum(4 * k * n for k, n in mats) + 4 * d * VOCAB
    assert w["quantized_bytes"] == sum(k * n // 2 + 4 * n * (k // 32) for k, n in mats) + d * VOCAB + 4 * VOCAB


def test_quality_needs_a_weight_quantized_decoder() -> None:
    with pytest.raises(InputError, match="quality compares a weight-quantized decoder"):
        generate(build("gpt2"), prompt(), max_new_tokens=2, max_length=MAX_LEN, cache=False, quality=True)


def test_cli_generate_int4_with_quality(tmp_path, capsys) -> None:
    m = build("gpt2")
    path = str(tmp_path / "gpt2.nnc")
    nnc.save_decoder(m, path, max_length=32)
    report = tmp_path / "r.json"
    assert cli(["generate", path, "--prompt-ids", "1,2,3", "--max-new-tokens", "6", "--no-cache", "--quantize",
                "int4-weights", "--quantize-group", "64", "--quantize-asymmetric", "--quality",
                "--report", str(report)]) == 0
    captured = capsys.readouterr()
    assert len(captured.out.strip().split(",")) == 6
    assert "logit SQNR" in captured.err and "(lm head int8)" in captured.err
    r = json.loads(report.read_text())
    assert r["weights"]["quantize"] == "int4-weights" and r["quality"]["positions"] == 6
    assert cli(["generate", path, "--prompt-ids", "1", "--no-cache", "--quantize", "int8-weights",
                "--quantize-group", "32"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--quantize-group applies to --quantize int4-weights" in err[0]
    assert cli(["generate", path, "--prompt-ids", "1", "--no-cache", "--quality"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "quality compares a weight-quantized decoder" in err[0]


def test_an_onnx_decoder_with_past_quantizes_to_the_same_codes(tmp_path) -> None:
    """The same model through ONNX (decoder with past, rewritten onto the cache) and through torch:
    the same weights, so the same codes and the same int4 tokens."""
    from bench.decoder_onnx import export_decoder_with_past

    m = build("gpt2")
    path = export_decoder_with_past(m, str(tmp_path / "gpt2.onnx"))
    opts = {"max_length": MAX_LEN, "cache": False, "quantize": "int4-weights"}
    via_onnx = generate(Decoder.from_onnx(path, **opts), prompt(), max_new_tokens=8)
    via_torch = generate(Decoder.from_torch(m, **opts), prompt(), max_new_tokens=8)
    np.testing.assert_array_equal(via_onnx.tokens, via_torch.tokens)
    assert via_onnx.report["weights"] == via_torch.report["weights"]


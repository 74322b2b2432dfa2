"""``nnc.generate`` with ``transformers`` decoders (random weights from small configs, fixed seed):
GPT-2 and a Llama-architecture model (RMSNorm, rotary embeddings, grouped-query attention with 2
kv heads for 4 query heads, SwiGLU). The oracle is ``transformers`` itself: ``model.generate`` for
greedy tokens (exact equality in FP32), the eager forward's logits for the top-k check.

The models and the oracle are in ``hf_decoders.py`` (shared with test_onnx_decoder.py).

Each model's decoder is compiled once per module (prefill + decode: the two compiles the report
counts); the tests then share it.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason="generation from transformers models needs torch "
                                           "(pip install 'nnc[torch]')")

from hf_decoders import VOCAB, build, hf_greedy, prompt  # noqa: E402

import nnc  # noqa: E402
from nnc.backends.x86.executable import X86Executable  # noqa: E402
from nnc.backends.x86.generic import GenericExecutable  # noqa: E402
from nnc.cli import main as cli  # noqa: E402
from nnc.generation import Decoder, generate  # noqa: E402

MAX_LEN, NEW = 96, 64


_BUILT: dict[str, tuple] = {}


@pytest.fixture(params=["gpt2", "llama"])
def built(request, tf):
    """(transformers model, its Decoder): built once per kind for the whole module."""
    kind = request.param
    if kind not in _BUILT:
        m = build(tf, kind)
        _BUILT[kind] = (m, Decoder.from_torch(m, max_length=MAX_LEN, cache=False))
    return _BUILT[kind]


def test_greedy_64_tokens_equal_transformers_generate(built) -> None:
    m, dec = built
    ids = prompt()
    seen: list[int] = []
    out = generate(dec, ids, max_new_tokens=NEW, callback=lambda step, tok: seen.append(int(tok[0])))
    want = hf_greedy(m, ids, NEW)
    assert out.tokens.shape == (1, 7 + NEW)
    np.testing.assert_array_equal(out.tokens, want)
    assert seen == out.new_tokens[0].tolist()  # the callback saw every token, in order
    r = out.report
    assert r["compiles"] == 2 and r["new_tokens"] == NEW
    assert r["prefill"]["tokens"] == 7 and r["decode"]["tokens"] == NEW - 1
    assert r["prefill"]["tokens_per_s"] > 0 and r["decode"]["tokens_per_s"] > 0
    layers, kv = m.config.num_hidden_layers, getattr(m.config, "num_key_value_heads", None) or 4
    assert r["cache"]["bytes"] == 2 * layers * kv * MAX_LEN * 16 * 4
    # no recompile: decode is static code (seq fixed to 1), prefill one shape-generic compile that
    # planned one signature for this prompt; a second prompt length plans, never compiles
    assert isinstance(dec.decode.executable, X86Executable)
    assert isinstance(dec.prefill.executable, GenericExecutable)
    assert dec.prefill.report["shapes"]["generic"] is True
    plans = dec.prefill.executable.plans_made
    out2 = generate(dec, prompt(4), max_new_tokens=5)
    np.testing.assert_array_equal(out2.tokens, hf_greedy(m, prompt(4), 5))
    assert dec.prefill.executable.plans_made == plans + 1 and dec.compiles == 2


def test_the_cache_is_written_in_place(built) -> None:
    m, dec = built
    g = dec.decode.module.main
    params = {p.name: p for p in g.params}
    for cache, present in zip(dec.spec.caches, dec.spec.presents):
        (user, _), = params[cache].uses  # the cache's one reader: the write of the new position
        assert user.opname == "index_copy" and user.results[0] is g.outputs[g.output_names.index(present)]
        # attention reads the written cache itself: no concat, repeat or copy of it in between
        assert {u.opname for u, _ in user.results[0].uses} == {"attention"}
    assert not [op for op in g.ops if op.opname in ("concat", "expand") and MAX_LEN in (op.results[0].shape or ())]
    assert dec.in_place == {"prefill": True, "decode": True}
    # each attention reads the rows written so far (bound-kv-reads), not all MAX_LEN of them
    attentions = [op for op in g.ops if op.opname == "attention"]
    assert len(attentions) == m.config.num_hidden_layers == dec.bounded_attentions
    assert all(len(op.operands) == 7 for op in attentions)  # with nonpad_kv_seqlen
    buffers = {n: a for n, a in dec.caches.items()}
    before = {n: a.copy() for n, a in buffers.items()}
    dec.reset()
    dec.step(prompt(3))
    dec.step(np.array([[5]]))  # a decode step at position 3
    for n, a in dec.caches.items():
        assert a is buffers[n]  # the same arrays: the code wrote into them
        np.testing.assert_array_equal(a[:, :, 4:], before[n][:, :, 4:])  # nothing beyond the written rows
        assert not np.array_equal(a[:, :, 3], before[n][:, :, 3])
    out = generate(dec, prompt(), max_new_tokens=3)
    assert out.report["cache"]["bytes_copied_per_decode_step"] == out.report["cache"]["bytes"] // MAX_LEN


def test_sampling_is_reproducible_and_keeps_to_top_k(built) -> None:
    m, dec = built
    ids = prompt()
    runs = [generate(dec, ids, max_new_tokens=24, do_sample=True, temperature=1.5, top_k=5, seed=7) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].tokens, runs[1].tokens)
    seq = runs[0].tokens
    with torch.no_grad():  # the eager logits at every position of the generated sequence
        logits = m(torch.from_numpy(seq)).logits[0].numpy()
    for i, tok in enumerate(seq[0, 7:]):
        row = logits[6 + i]
        assert tok in np.argsort(-row)[:5], (i, tok)
    greedy = generate(dec, ids, max_new_tokens=24).new_tokens
    assert not np.array_equal(runs[0].new_tokens, greedy)  # at temperature 1.5 it does sample


def test_eos_stops_early(built) -> None:
    m, dec = built
    ids = prompt()
    full = generate(dec, ids, max_new_tokens=16).new_tokens[0]
    eos = int(full[5])
    first = int(np.argmax(full == eos))  # the first time greedy decoding emits it
    out = generate(dec, ids, max_new_tokens=16, eos_token_id=eos)
    assert out.new_tokens[0].tolist() == full[:first + 1].tolist()
    assert out.report["stopped_at_eos"] is True


def test_too_long_and_bad_ids_are_input_errors(built) -> None:
    _, dec = built
    with pytest.raises(nnc.InputError, match="maximum length"):
        generate(dec, prompt(), max_new_tokens=MAX_LEN)
    with pytest.raises(nnc.InputError, match="token ids"):
        generate(dec, np.array([[1, VOCAB]]), max_new_tokens=2)
    with pytest.raises(nnc.InputError, match="batch"):
        dec.step(np.zeros((2, 3), np.int64))


def test_index_copy_imports_from_torch() -> None:
    class Write(torch.nn.Module):
        def forward(self, cache, pos, new):
            return cache.index_copy(2, pos, new) * 2

    args = (torch.randn(1, 2, 6, 3), torch.tensor([4, 1]), torch.randn(1, 2, 2, 3))
    want = Write()(*args).numpy()
    for target in ("reference", "x86"):
        got = nnc.compile(Write(), example_args=args, target=target, quiet=True)(*(a.numpy() for a in args))
        np.testing.assert_array_equal(got, want)


def test_cli_generate_on_a_saved_decoder(tf, tmp_path, capsys) -> None:
    m = build(tf, "gpt2")
    path = str(tmp_path / "gpt2.nnc")
    assert nnc.save_decoder(m, path, max_length=32) == [path, str(tmp_path / "gpt2.npz")]
    assert cli(["generate", path, "--prompt-ids", "1,2,3", "--max-new-tokens", "8", "-q", "--no-cache",
                "--report", str(tmp_path / "r.json")]) == 0
    want = hf_greedy(m, np.array([[1, 2, 3]]), 8)[0, 3:]
    assert capsys.readouterr().out.strip() == ",".join(map(str, want))
    import json

    with open(tmp_path / "r.json") as f:
        assert json.load(f)["compiles"] == 2
    for argv, msg in ((["generate", path], "--prompt-ids is required"),
                      (["generate", path, "--prompt-ids", "1,x"], "expected comma-separated integers"),
                      (["generate", path, "--prompt-ids", "1", "--max-new-tokens", "40"], "maximum length")):
        assert cli(argv + ["--no-cache"]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err


def test_a_batch_of_two_with_eos_matches_transformers(tf) -> None:
    """Two prompts of one length; eos ends the first early, which then gets pad tokens (the eos,
    as transformers pads) until the second finishes."""
    m = build(tf, "gpt2")
    ids = np.random.default_rng(3).integers(0, VOCAB, (2, 5))
    t = torch.from_numpy(ids)
    full = hf_greedy(m, ids, 12)
    eos = int(full[0, 8])  # the first sequence's 4th new token
    with torch.no_grad():
        want = m.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=12, do_sample=False,
                          eos_token_id=eos, pad_token_id=eos).numpy()
    dec = Decoder.from_torch(m, max_length=24, batch=2, cache=False)
    np.testing.assert_array_equal(generate(dec, ids, max_new_tokens=12).tokens, full)
    out = generate(dec, ids, max_new_tokens=12, eos_token_id=eos)
    np.testing.assert_array_equal(out.tokens, want)
    assert (out.new_tokens[0, 3:] == eos).all()

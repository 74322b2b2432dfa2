"""Host-side token choice (``nnc.generation.sampling``) against brute-force definitions, and the
refusals that need no torch: a model that is not a decoder step, bad sampling parameters, the CLI's
one-line errors."""

from __future__ import annotations

import os

import numpy as np
import pytest

from nnc.cli import main as cli
from nnc.generation import NotADecoderError, Sampling, allowed, decoder_spec, generate, next_tokens
from nnc.ir import InputError, parse_module

RNG = np.random.default_rng(0)
EXAMPLES = os.path.join(os.path.dirname(__file__), "..", "..", "examples")


def brute_top_p(row: np.ndarray, p: float) -> set[int]:
    """The smallest set of most likely tokens whose probability reaches p."""
    probs = np.exp(row - row.max())
    probs /= probs.sum()
    order = sorted(range(len(row)), key=lambda i: -probs[i])
    kept, total = set(), 0.0
    for i in order:
        kept.add(i)
        total += probs[i]
        if total >= p:
            break
    return kept


def test_greedy_is_the_first_largest_logit() -> None:
    logits = np.array([[0.1, 3.0, 3.0, -1.0], [5.0, 0.0, 0.0, 5.0]], np.float32)
    assert next_tokens(logits, Sampling(), np.random.default_rng(0)).tolist() == [1, 0]


def test_top_k_and_top_p_filters() -> None:
    logits = RNG.standard_normal((3, 50))
    for k in (1, 5, 50):
        keep = allowed(logits, k, None)
        for row, mask in zip(logits, keep):
            assert set(np.flatnonzero(mask)) == set(np.argsort(-row)[:k].tolist())
    for p in (0.05, 0.5, 0.9, 1.0):
        keep = allowed(logits, None, p)
        for row, mask in zip(logits, keep):
            want = brute_top_p(row, p) if p < 1 else set(range(50))
            assert set(np.flatnonzero(mask)) == want


def test_seeded_sampling_is_reproducible_and_stays_in_top_k() -> None:
    logits = RNG.standard_normal((4, 100))
    how = Sampling(do_sample=True, temperature=2.0, top_k=3)
    a = [next_tokens(logits, how, np.random.default_rng(9)) for _ in range(2)]
    np.testing.assert_array_equal(a[0], a[1])
    draws = np.stack([next_tokens(logits, how, np.random.default_rng(s)) for s in range(200)])
    for r in range(4):
        top = set(np.argsort(-logits[r])[:3].tolist())
        assert set(draws[:, r].tolist()) == top  # only the top 3, and at temperature 2 each of them


@pytest.mark.parametrize("bad", [{"temperature": 0.0}, {"top_k": 0}, {"top_p": 0.0}, {"top_p": 1.5}])
def test_bad_sampling_parameters(bad) -> None:
    with pytest.raises(InputError):
        Sampling(do_sample=True, **bad)


def test_a_model_without_a_kv_cache_is_not_a_decoder() -> None:
    m = parse_module("""
graph @main(%x: f32[N,4]) -> (y: f32[N,4]) {
  %y = relu(%x) : f32[N,4]
  return %y
}""")
    with pytest.raises(NotADecoderError, match="not a decoder step with a KV cache"):
        decoder_spec(m)
    with pytest.raises(NotADecoderError):
        generate(m, np.array([[1, 2]]), max_new_tokens=2, target="reference")


def test_cli_refuses_a_non_decoder_and_a_missing_prompt_in_one_line(capsys) -> None:
    mlp = os.path.join(EXAMPLES, "mlp.onnx")
    for argv, msg in ((["generate", mlp, "--prompt-ids", "1,2"], "not a decoder step"),
                      (["generate", mlp], "--prompt-ids is required"),
                      (["generate", "nowhere.nnc", "--prompt-ids", "1"], "no such file")):
        assert cli(argv) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and msg in err[0], err

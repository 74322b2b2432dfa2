"""Generation without torch: a one-layer decoder step written in nnc IR (token embedding, one
attention head over a KV cache written by ``index_copy``, a causal mask over the positions, an
output projection), run by ``nnc.generate`` on the reference interpreter and on x86, and saved and
run by ``nnc generate``. The oracle is the same model in plain numpy over the whole sequence, with
no cache: greedy tokens must agree exactly."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.cli import main as cli
from nnc.generation import Decoder, generate, save_decoder
from nnc.ir import Builder, Graph, Module, tensor

VOCAB, D, MAX = 50, 8, 24
RNG = np.random.default_rng(4)
EMB = RNG.standard_normal((VOCAB, D)).astype(np.float32)
OUT = (RNG.standard_normal((D, VOCAB)) * 2).astype(np.float32)


def decoder_step() -> Module:
    m = Module("tiny_decoder")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    ids = g.add_param("input_ids", tensor("i64", [1, "seq"]))
    position = g.add_param("position", tensor("i64", []))
    past_k = g.add_param("past_key.0", tensor("f32", [1, 1, MAX, D]))
    past_v = g.add_param("past_value.0", tensor("f32", [1, 1, MAX, D]))
    x = b.op("gather", b.const(EMB, name="emb"), ids, axis=0)  # [1, seq, D]
    n = b.op("reshape", b.op("shape", ids, start=1, end=2), shape=[])
    zero, one = b.const(np.array(0, np.int64)), b.const(np.array(1, np.int64))
    pos = b.op("add", b.op("range", zero, n, one), position)  # [seq]: the new tokens' positions
    h = b.op("unsqueeze", x, axes=[1])  # one head: [1, 1, seq, D]
    k = b.op("index_copy", past_k, pos, h, axis=2)
    v = b.op("index_copy", past_v, pos, h, axis=2)
    keys = b.op("range", zero, b.const(np.array(MAX, np.int64)), one)
    mask = b.op("less_equal", b.op("unsqueeze", keys, axes=[0]), b.op("unsqueeze", pos, axes=[1]))  # [seq, MAX]
    y = b.op("attention", h, k, v, mask)[0]  # [1, 1, seq, D]
    last = b.op("reshape", b.op("slice", y, starts=[-1], ends=[2**62], axes=[2]), shape=[1, 1, D])
    logits = b.op("matmul", last, b.const(OUT, name="out"))
    g.set_outputs([logits, k, v], ["logits", "present_key.0", "present_value.0"])
    return m


def numpy_greedy(prompt: list[int], new: int) -> list[int]:
    seq = list(prompt)
    for _ in range(new):
        x = EMB[seq]  # [T, D]
        s = x[-1] @ x.T / np.sqrt(D)  # the last token attends to every earlier one
        p = np.exp(s - s.max())
        y = (p / p.sum()) @ x
        seq.append(int(np.argmax(y @ OUT)))
    return seq[len(prompt):]


@pytest.mark.parametrize("target", ["reference", "x86"])
def test_greedy_tokens_equal_numpy(target: str) -> None:
    dec = Decoder(decoder_step(), target=target, **({"cache": False} if target == "x86" else {}))
    # x86 writes the caches in place; the interpreter computes a new cache and copies it back
    in_place = target == "x86"
    assert dec.compiles == 2 and dec.in_place == {"prefill": in_place, "decode": in_place}
    caches = dict(dec.caches)
    assert dec.bounded_attentions == 1
    for prompt in ([3, 1, 4], [7]):
        seen: list[int] = []
        out = generate(dec, np.array([prompt]), max_new_tokens=16,
                       callback=lambda step, tokens, seen=seen: seen.append(int(tokens[0])))
        want = numpy_greedy(prompt, 16)
        assert out.new_tokens[0].tolist() == want == seen
    assert out.report["cache"]["bytes"] == 2 * MAX * D * 4
    assert all(dec.caches[n] is a for n, a in caches.items())  # the same arrays either way
    copied = out.report["cache"]["bytes_copied_per_decode_step"]
    assert copied == 2 * D * 4 + (0 if in_place else 2 * MAX * D * 4)


def test_cli_generate_on_a_saved_ir_decoder(tmp_path, capsys) -> None:
    path = str(tmp_path / "tiny.nnc")
    assert save_decoder(decoder_step(), path, max_length=MAX) == [path, str(tmp_path / "tiny.npz")]
    argv = ["generate", path, "--prompt-ids", "3,1,4", "--max-new-tokens", "10", "--target", "reference"]
    assert cli(argv + ["-q"]) == 0
    assert capsys.readouterr().out.strip() == ",".join(map(str, numpy_greedy([3, 1, 4], 10)))
    assert cli(argv + ["--do-sample", "--seed", "1", "--top-k", "3"]) == 0
    streamed, summary = capsys.readouterr()
    assert len(streamed.strip().split(",")) == 10 and "compiles: 2" in summary


def test_refuses_a_step_whose_present_is_not_a_cache_write() -> None:
    m = decoder_step()
    g = m.main
    g.set_outputs([g.outputs[0], g.outputs[1], g.params[2]], list(g.output_names))  # present = the past itself
    with pytest.raises(nnc.ModelError, match="is not index_copy"):
        Decoder(m, target="reference")

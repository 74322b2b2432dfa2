"""``nnc.generate`` from ONNX decoders with past key/values, in the layout transformers/optimum
export (``bench/decoder_onnx.py`` writes them from GPT-2 and a Llama-architecture model with
grouped-query attention, random weights from small configs, fixed seed).

Oracles: ``transformers``' ``generate`` (greedy, FP32: the tokens must be exactly equal) and
onnxruntime running the *same* ONNX file in a greedy Python loop. The rewrite onto the
preallocated cache is checked on the compiled graphs (each cache read only by its in-place
``index_copy``, no concat left) and on the run (the caches are the same arrays, rows after the
written ones untouched). Weights are drawn with ``initializer_range=0.2`` as in test_generate.py,
so that 64 greedy tokens are not one token repeated.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch", reason="exporting the ONNX decoders needs torch (pip install 'nnc[torch]')")

from hf_decoders import build, hf_greedy, prompt  # noqa: E402

import nnc  # noqa: E402
from bench.decoder_onnx import export_decoder_with_past, greedy_onnxruntime  # noqa: E402
from nnc.cli import main as cli  # noqa: E402
from nnc.generation import Decoder, NotADecoderError, decoder_step_from_onnx, generate  # noqa: E402

MAX_LEN, NEW = 96, 64


_BUILT: dict[str, tuple] = {}


@pytest.fixture(params=["gpt2", "llama"])
def built(request, tf, tmp_path_factory):
    """(transformers model, its ONNX path, the x86 Decoder of that ONNX): once per kind."""
    kind = request.param
    if kind not in _BUILT:
        m = build(tf, kind)
        path = export_decoder_with_past(m, str(tmp_path_factory.mktemp("onnx") / f"{kind}.onnx"))
        _BUILT[kind] = (m, path, Decoder.from_onnx(path, max_length=MAX_LEN, cache=False))
    return _BUILT[kind]


def test_greedy_64_tokens_equal_transformers_and_onnxruntime(built) -> None:
    ort = pytest.importorskip("onnxruntime")
    m, path, dec = built
    ids = prompt()
    out = generate(dec, ids, max_new_tokens=NEW)
    np.testing.assert_array_equal(out.tokens, hf_greedy(m, ids, NEW))
    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    np.testing.assert_array_equal(out.new_tokens, greedy_onnxruntime(session, ids, NEW)[0])
    r = out.report
    assert r["compiles"] == 2 and r["new_tokens"] == NEW and r["decode"]["tokens"] == NEW - 1
    # a second prompt length: the shape-generic prefill plans once more, nothing compiles
    plans = dec.prefill.executable.plans_made
    np.testing.assert_array_equal(generate(dec, prompt(4), max_new_tokens=5).tokens, hf_greedy(m, prompt(4), 5))
    assert dec.prefill.executable.plans_made == plans + 1 and dec.compiles == 2


def test_the_concat_became_an_in_place_write(built) -> None:
    m, _, dec = built
    layers = m.config.num_hidden_layers
    kv = getattr(m.config, "num_key_value_heads", None) or m.config.num_attention_heads
    assert dec.spec.caches == tuple(f"past_key_values.{i}.{x}" for i in range(layers) for x in ("key", "value"))
    assert dec.spec.cache_shape == (1, kv, MAX_LEN, 16)
    for which in (dec.prefill, dec.decode):
        g = which.module.main
        params = {p.name: p for p in g.params}
        for cache, present in zip(dec.spec.caches, dec.spec.presents):
            (user, _), = params[cache].uses
            assert user.opname == "index_copy" and user.results[0] is g.outputs[g.output_names.index(present)]
            assert {u.opname for u, _ in user.results[0].uses} == {"attention"}  # read where it is
        assert not [op for op in g.ops if op.opname in ("concat", "expand") and MAX_LEN in (op.results[0].shape or ())]
        attentions = [op for op in g.ops if op.opname == "attention"]
        assert len(attentions) == layers and all(op.attrs["is_causal"] == 1 for op in attentions)
    assert dec.in_place == {"prefill": True, "decode": True} and dec.bounded_attentions == layers
    before = {n: a.copy() for n, a in dec.caches.items()}
    arrays = dict(dec.caches)
    dec.reset()
    dec.step(prompt(3))
    dec.step(np.array([[5]]))
    for n, a in dec.caches.items():
        assert a is arrays[n]
        np.testing.assert_array_equal(a[:, :, 4:], before[n][:, :, 4:])
    out = generate(dec, prompt(), max_new_tokens=3)
    row_bytes = 2 * layers * kv * 16 * 4  # one new position of every cache
    assert out.report["cache"]["bytes_copied_per_decode_step"] == row_bytes == out.report["cache"]["bytes"] // MAX_LEN


def test_without_position_ids_on_the_interpreter(tf, tmp_path) -> None:
    """The model then computes positions from the past length it reads from the pasts' shapes:
    that read becomes the position input."""
    m = build(tf, "llama")
    path = export_decoder_with_past(m, str(tmp_path / "llama.onnx"), position_ids=False)
    ids = prompt()
    out = nnc.generate(path, ids, max_new_tokens=24, target="reference")
    np.testing.assert_array_equal(out.tokens, hf_greedy(m, ids, 24))


def test_a_batch_of_two_on_the_interpreter(tf, tmp_path) -> None:
    """The batch is fixed when the step is built: the cache, nonpad and position rows follow it."""
    m = build(tf, "llama")
    path = export_decoder_with_past(m, str(tmp_path / "llama.onnx"))
    ids = np.random.default_rng(3).integers(0, 1000, (2, 5))
    out = nnc.generate(path, ids, max_new_tokens=12, target="reference")
    np.testing.assert_array_equal(out.tokens, hf_greedy(m, ids, 12))
    assert out.report["cache"]["shape"] == [2, 2, 17, 16]


def test_cli_generate_on_an_onnx_decoder_and_its_saved_step(tf, tmp_path, capsys) -> None:
    m = build(tf, "gpt2")
    path = export_decoder_with_past(m, str(tmp_path / "gpt2.onnx"))
    want = ",".join(map(str, hf_greedy(m, np.array([[1, 2, 3]]), 8)[0, 3:]))
    flags = ["--prompt-ids", "1,2,3", "--max-new-tokens", "8", "-q", "--target", "reference"]
    assert cli(["generate", path, *flags]) == 0
    assert capsys.readouterr().out.strip() == want
    # the rewritten step saved as text IR (caches of 16 positions) runs the same
    saved = str(tmp_path / "gpt2.nnc")
    nnc.save_decoder(nnc.from_onnx(path), saved, max_length=16)
    assert cli(["generate", saved, *flags]) == 0
    assert capsys.readouterr().out.strip() == want


# -- models that are not decoders with past key/values: typed errors saying what was expected --------

def _model(onnx, helper, nodes, inputs, outputs, inits=()):
    g = helper.make_graph(nodes, "d", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def tiny_decoder(bias: np.ndarray | None, softmax: str = "Softmax", concat: bool = True, past: object = "past"):
    """One layer, one head, head size 4: q = k = v = the token's embedding; an ONNX model in the
    decoder-with-past layout whose attention adds ``bias`` to the scores (none when None)."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal((10, 4)).astype(np.float32), "embed"),
             numpy_helper.from_array(rng.standard_normal((4, 10)).astype(np.float32), "head"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    nodes = [helper.make_node("Gather", ["embed", "input_ids"], ["x"]),
             helper.make_node("Unsqueeze", ["x", "one"], ["q"]),
             helper.make_node("Concat" if concat else "Add", ["past_key_values.0.key", "q"], ["present.0.key"],
                              **({"axis": 2} if concat else {})),
             helper.make_node("Concat", ["past_key_values.0.value", "q"], ["present.0.value"], axis=2),
             helper.make_node("Transpose", ["present.0.key"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["scores"])]
    scores = "scores"
    if bias is not None:
        inits.append(numpy_helper.from_array(bias.astype(np.float32), "bias"))
        nodes.append(helper.make_node("Add", ["scores", "bias"], ["biased"]))
        scores = "biased"
    nodes += [helper.make_node(softmax, [scores], ["p"], **({"axis": -1} if softmax == "Softmax" else {})),
              helper.make_node("MatMul", ["p", "present.0.value"], ["y"]),
              helper.make_node("Squeeze", ["y", "one"], ["h"]),
              helper.make_node("MatMul", ["h", "head"], ["logits"])]
    f, i64 = TensorProto.FLOAT, TensorProto.INT64
    cache = ["batch", 1, past, 4]
    inputs = [helper.make_tensor_value_info("input_ids", i64, ["batch", "seq"]),
              helper.make_tensor_value_info("past_key_values.0.key", f, cache),
              helper.make_tensor_value_info("past_key_values.0.value", f, cache)]
    outputs = [helper.make_tensor_value_info("logits", f, ["batch", "seq", 10]),
               helper.make_tensor_value_info("present.0.key", f, None),
               helper.make_tensor_value_info("present.0.value", f, None)]
    return _model(onnx, helper, nodes, inputs, outputs, inits)


@pytest.mark.parametrize("case, message", [
    ("no-mask", "has no mask, so it is not causal"),
    ("not-causal", "is not the causal mask"),
    ("sigmoid", "is not softmax(q k^T * scale + mask) v"),
    ("add", "is not Concat(past_key_values.0.key, new) on axis 2"),
    ("static-past", "a symbolic past length"),
])
def test_not_a_decoder_with_past_is_a_typed_error(case: str, message: str) -> None:
    model = {"no-mask": lambda: tiny_decoder(None), "not-causal": lambda: tiny_decoder(np.zeros((1,))),
             "sigmoid": lambda: tiny_decoder(np.zeros((1,)), softmax="Sigmoid"),
             "add": lambda: tiny_decoder(None, concat=False),
             "static-past": lambda: tiny_decoder(np.zeros((1,)), past=3)}[case]()
    with pytest.raises(NotADecoderError, match="expected an ONNX decoder with past key/values") as e:
        decoder_step_from_onnx(nnc.from_onnx(model), max_length=16)
    assert message in str(e.value)
    assert isinstance(e.value, nnc.ModelError)


def test_an_onnx_model_without_pasts_is_refused_in_one_cli_line(tmp_path, capsys) -> None:
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    path = str(tmp_path / "relu.onnx")
    x = helper.make_tensor_value_info("input_ids", TensorProto.FLOAT, ["n"])
    y = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["n"])
    onnx.save(_model(onnx, helper, [helper.make_node("Relu", ["input_ids"], ["logits"])], [x], [y]), path)
    assert cli(["generate", path, "--prompt-ids", "1,2", "--target", "reference"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "without past_key_values" in err[0], err
    with pytest.raises(NotADecoderError):
        nnc.generate(path, np.array([[1, 2]]), max_new_tokens=2, target="reference")

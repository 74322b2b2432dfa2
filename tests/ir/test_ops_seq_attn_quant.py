"""Recurrent, attention and quantization ops: ONNX import of the forms the official node tests do
not reach (sequence lengths, activations, clip, layouts, GQA with a KV cache, per-axis/blocked
quantization, QLinear ops), checked against onnxruntime or onnx.reference, plus the IR ops' shape
inference with symbolic dims and the text round trip."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import nnc
from nnc.ir import Builder, DType, Graph, Module, UnsupportedOpError, parse_module, tensor, verify_module
from nnc.ir.types import UNKNOWN

RNG = np.random.default_rng(0)
_ONNX = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float16): TensorProto.FLOAT16,
         np.dtype(np.int64): TensorProto.INT64, np.dtype(np.int32): TensorProto.INT32,
         np.dtype(np.uint8): TensorProto.UINT8, np.dtype(np.int8): TensorProto.INT8,
         np.dtype(np.bool_): TensorProto.BOOL}


def make_model(op: str, inputs: dict[str, np.ndarray], n_outputs: int = 1, opset: int = 22,
               consts: dict[str, np.ndarray] | None = None, order: list[str] | None = None,
               **attrs) -> onnx.ModelProto:
    """One-node model: ``inputs`` are graph inputs, ``consts`` initializers; ``order`` lists the
    node's inputs by name ("" for a missing optional one)."""
    consts = consts or {}
    names = order if order is not None else list(inputs) + list(consts)
    outs = [f"y{i}" for i in range(n_outputs)]
    node = helper.make_node(op, names, outs, **attrs)
    graph = helper.make_graph(
        [node], "g",
        [helper.make_tensor_value_info(k, _ONNX[v.dtype], v.shape) for k, v in inputs.items()],
        [onnx.ValueInfoProto(name=o) for o in outs],
        [numpy_helper.from_array(v, k) for k, v in consts.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], ir_version=10)
    return onnx.shape_inference.infer_shapes(model)


def run_nnc(model: onnx.ModelProto, inputs: dict[str, np.ndarray]) -> list[np.ndarray]:
    out = nnc.compile(model)(*inputs.values())
    return list(out) if isinstance(out, tuple) else [out]


def check(model: onnx.ModelProto, inputs: dict[str, np.ndarray], engine: str = "ort",
          rtol: float = 1e-5, atol: float = 1e-5) -> list[np.ndarray]:
    got = run_nnc(model, inputs)
    if engine == "ort":
        sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, inputs)
    else:
        want = ReferenceEvaluator(model).run(None, inputs)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and g.shape == w.shape
        np.testing.assert_allclose(g.astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol)
    return got


def f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# -- recurrent ------------------------------------------------------------------------------------

def test_lstm_bidirectional_seq_lens_peepholes_clip_matches_onnxruntime():
    seq, batch, inp, hid = 5, 3, 4, 6
    x = f32(seq, batch, inp)
    consts = {"W": f32(2, 4 * hid, inp) * 0.5, "R": f32(2, 4 * hid, hid) * 0.5, "B": f32(2, 8 * hid) * 0.1,
              "L": np.array([5, 2, 3], np.int32), "H": f32(2, batch, hid), "C": f32(2, batch, hid),
              "P": f32(2, 3 * hid) * 0.1}
    m = make_model("LSTM", {"X": x}, n_outputs=3, consts=consts, hidden_size=hid, direction="bidirectional",
                   clip=1.5)
    check(m, {"X": x})


def test_lstm_layout1_with_missing_middle_inputs_matches_reference():
    batch, seq, inp, hid = 2, 4, 3, 5
    x = f32(batch, seq, inp)
    consts = {"W": f32(1, 4 * hid, inp), "R": f32(1, 4 * hid, hid), "H": f32(batch, 1, hid)}
    # B and sequence_lens absent, initial_h present: the stand-in for absent inner inputs
    m = make_model("LSTM", {"X": x}, n_outputs=3, consts=consts, order=["X", "W", "R", "", "", "H"],
                   hidden_size=hid, layout=1)
    check(m, {"X": x}, engine="ref")


def test_gru_reverse_linear_before_reset_custom_activations_matches_onnxruntime():
    seq, batch, inp, hid = 4, 3, 2, 3
    x = f32(seq, batch, inp)
    consts = {"W": f32(1, 3 * hid, inp), "R": f32(1, 3 * hid, hid), "B": f32(1, 6 * hid),
              "L": np.array([4, 1, 3], np.int32)}
    m = make_model("GRU", {"X": x}, n_outputs=2, consts=consts, hidden_size=hid, direction="reverse",
                   linear_before_reset=1, activations=["HardSigmoid", "LeakyRelu"],
                   activation_alpha=[0.3, 0.05], activation_beta=[0.4])
    check(m, {"X": x})


def test_rnn_relu_bidirectional_with_seq_lens_matches_onnxruntime():
    seq, batch, inp, hid = 3, 2, 4, 3
    x = f32(seq, batch, inp)
    consts = {"W": f32(2, hid, inp), "R": f32(2, hid, hid), "B": f32(2, 2 * hid), "L": np.array([1, 3], np.int32)}
    m = make_model("RNN", {"X": x}, n_outputs=2, consts=consts, hidden_size=hid, direction="bidirectional",
                   activations=["Relu", "Tanh"])
    check(m, {"X": x})


def test_recurrent_ops_infer_symbolic_batch_and_round_trip():
    mod = Module("m")
    g = mod.add_graph(Graph("main"))
    b = Builder(mod, g)
    x = g.add_param("x", tensor("f32", ["T", "N", 4]))
    w, r = b.const(f32(2, 16, 4), name="w"), b.const(f32(2, 16, 4), name="r")
    y, yh, yc = b.op("lstm", x, w, r, hidden_size=4, direction="bidirectional",
                     activations=("Sigmoid", "Tanh", "Tanh", "Sigmoid", "Tanh", "Tanh"), clip=2.0)
    assert y.type == tensor("f32", ["T", 2, "N", 4]) and yc.type == tensor("f32", [2, "N", 4])
    g.set_outputs([y, yh, yc])
    text = str(mod)
    again = parse_module(text, weights=mod.constants)
    verify_module(again)
    assert str(again) == text


# -- attention ------------------------------------------------------------------------------------

def test_attention_3d_gqa_with_past_bool_mask_and_all_outputs_matches_reference():
    b, sq, skv, past, hq, hkv, d = 2, 3, 3, 2, 4, 2, 5
    q, k, v = f32(b, sq, hq * d), f32(b, skv, hkv * d), f32(b, skv, hkv * d)
    mask = RNG.random((b, 1, sq, past + skv)) > 0.3
    pk, pv = f32(b, hkv, past, d), f32(b, hkv, past, d)
    inputs = {"q": q, "k": k, "v": v, "m": mask, "pk": pk, "pv": pv}
    m = make_model("Attention", inputs, n_outputs=4, opset=23, q_num_heads=hq, kv_num_heads=hkv,
                   softcap=3.0, qk_matmul_output_mode=2)
    check(m, inputs, engine="ref")


def test_attention_causal_with_past_and_no_mask_uses_absent_stand_in():
    b, h, sq, past, d = 1, 2, 2, 3, 4
    inputs = {"q": f32(b, h, sq, d), "k": f32(b, h, sq, d), "v": f32(b, h, sq, d),
              "pk": f32(b, h, past, d), "pv": f32(b, h, past, d)}
    m = make_model("Attention", inputs, n_outputs=3, opset=23, order=["q", "k", "v", "", "pk", "pv"],
                   is_causal=1, scale=0.3)
    check(m, inputs, engine="ref")


def test_attention_infers_symbolic_dims():
    mod = Module("m")
    g = mod.add_graph(Graph("main"))
    b = Builder(mod, g)
    q = g.add_param("q", tensor("f32", ["N", "S", 32]))
    k = g.add_param("k", tensor("f32", ["N", "T", 16]))
    y, pk, pv, qk = b.op("attention", q, k, k, q_num_heads=4, kv_num_heads=2)
    assert y.type == tensor("f32", ["N", "S", 32])
    assert pk.type == tensor("f32", ["N", 2, "T", 8])
    assert qk.type == tensor("f32", ["N", 4, "S", "T"])
    past = g.add_param("pk", tensor("f32", ["N", 2, "P", 8]))
    none = b.const(np.zeros((0,), np.float32), name="absent")
    _, pk2, _, _ = b.op("attention", q, k, k, none, past, past, q_num_heads=4, kv_num_heads=2)
    assert pk2.type.shape == ("N", 2, UNKNOWN, 8)


def test_rotary_embedding_3d_interleaved_partial_matches_reference():
    b, s, heads, d, rd = 2, 3, 2, 8, 4
    x = f32(b, s, heads * d)
    pos = np.array([[0, 1, 2], [3, 4, 5]], np.int64)
    cos, sin = f32(6, rd // 2), f32(6, rd // 2)
    inputs = {"x": x, "cos": cos, "sin": sin, "pos": pos}
    m = make_model("RotaryEmbedding", inputs, opset=23, interleaved=1, rotary_embedding_dim=rd, num_heads=heads)
    check(m, inputs, engine="ref")


def test_linear_attention_gated_delta_per_feature_decay_matches_reference():
    b, t, hq, hkv, dk, dv = 2, 4, 4, 2, 3, 2
    inputs = {"q": f32(b, t, hq * dk), "k": f32(b, t, hkv * dk) * 0.5, "v": f32(b, t, hkv * dv),
              "s": f32(b, hkv, dk, dv), "g": -np.abs(f32(b, t, hkv * dk)), "beta": np.abs(f32(b, t, 1))}
    m = make_model("LinearAttention", inputs, n_outputs=2, opset=27, q_num_heads=hq, kv_num_heads=hkv)
    check(m, inputs, engine="ref")


def test_causal_conv_with_state_bias_without_past_matches_reference():
    x, w, bias = f32(2, 3, 5), f32(3, 1, 4), f32(3)
    inputs = {"x": x, "w": w, "bias": bias}
    m = make_model("CausalConvWithState", inputs, n_outputs=2, opset=27, activation="silu")
    check(m, inputs, engine="ref")


# -- quantization ---------------------------------------------------------------------------------

def test_quantize_rounds_half_to_even_and_saturates():
    x = np.array([[0.5, 1.5, 2.5, -0.5], [-1.5, 300.0, -300.0, 7.0]], np.float32)
    scale, zp = np.array([1.0, 0.5], np.float32), np.array([0, 10], np.int8)
    inputs = {"x": x}
    m = make_model("QuantizeLinear", inputs, opset=21, consts={"s": scale, "z": zp}, axis=0)
    got = run_nnc(m, inputs)[0]
    want = np.clip(np.rint(x / scale[:, None]) + zp[:, None], -128, 127).astype(np.int8)
    np.testing.assert_array_equal(got, want)
    assert got[0].tolist() == [0, 2, 2, 0]  # half to even, not half away from zero


def test_blocked_quantize_dequantize_with_short_last_block_matches_reference():
    x = f32(3, 5) * 4
    scale = np.abs(f32(3, 3)) + 0.1  # block_size 2 over 5 columns: blocks of 2, 2, 1
    zp = RNG.integers(0, 20, (3, 3)).astype(np.uint8)
    inputs = {"x": x}
    q = make_model("QuantizeLinear", inputs, opset=21, consts={"s": scale, "z": zp}, axis=1, block_size=2)
    qx = check(q, inputs, engine="ref", atol=0)[0]
    dq = make_model("DequantizeLinear", {"q": qx}, opset=21, consts={"s": scale, "z": zp}, axis=1, block_size=2)
    check(dq, {"q": qx}, engine="ref")


def test_dynamic_quantize_linear_matches_onnxruntime():
    x = f32(3, 7) * 5 + 2
    m = make_model("DynamicQuantizeLinear", {"x": x}, n_outputs=3, opset=11)
    check(m, {"x": x}, atol=0)


def test_qlinear_matmul_per_column_scales_is_bit_exact():
    a = RNG.integers(0, 255, (3, 4)).astype(np.uint8)
    b = RNG.integers(-128, 127, (4, 2)).astype(np.int8)
    consts = {"as": np.array(0.02, np.float32), "az": np.array(128, np.uint8),
              "b": b, "bs": np.array([0.05, 0.01], np.float32), "bz": np.array([0, 3], np.int8),
              "ys": np.array(0.1, np.float32), "yz": np.array(100, np.uint8)}
    m = make_model("QLinearMatMul", {"a": a}, opset=21, consts=consts,
                   order=["a", "as", "az", "b", "bs", "bz", "ys", "yz"])
    got = run_nnc(m, {"a": a})[0]
    acc = (a.astype(np.int64) - 128) @ (b.astype(np.int64) - consts["bz"])
    want = np.clip(np.rint(acc * (0.02 * consts["bs"].astype(np.float64) / 0.1)) + 100, 0, 255)
    np.testing.assert_array_equal(got, want.astype(np.uint8))


def test_qlinear_conv_per_channel_with_bias_matches_onnxruntime():
    x = RNG.integers(0, 255, (1, 2, 5, 5)).astype(np.uint8)
    consts = {"xs": np.array(0.03, np.float32), "xz": np.array(120, np.uint8),
              "w": RNG.integers(-100, 100, (3, 2, 3, 3)).astype(np.int8),
              "ws": np.array([0.01, 0.02, 0.005], np.float32), "wz": np.zeros(3, np.int8),
              "ys": np.array(0.2, np.float32), "yz": np.array(128, np.uint8),
              "bias": RNG.integers(-500, 500, 3).astype(np.int32)}
    m = make_model("QLinearConv", {"x": x}, opset=10, consts=consts, pads=[1, 1, 1, 1],
                   order=["x", "xs", "xz", "w", "ws", "wz", "ys", "yz", "bias"])
    check(m, {"x": x}, atol=0)


def test_quantize_to_unsupported_dtype_is_a_clear_error():
    x = f32(4)
    m = make_model("QuantizeLinear", {"x": x}, opset=21, consts={"s": np.array(1.0, np.float32)},
                   output_dtype=TensorProto.UINT64)
    with pytest.raises(UnsupportedOpError, match="quantizing to u64"):
        nnc.compile(m)


def test_bitcast_reinterprets_bits():
    x = np.array([1.0, -2.5, 0.0], np.float32)
    m = make_model("BitCast", {"x": x}, opset=26, to=TensorProto.INT32)
    np.testing.assert_array_equal(run_nnc(m, {"x": x})[0], x.view(np.int32))


def test_quant_ops_text_round_trip():
    mod = Module("m")
    g = mod.add_graph(Graph("main"))
    b = Builder(mod, g)
    x = g.add_param("x", tensor("f32", ["N", 8]))
    s = b.const(np.full((1, 8), 0.1, np.float32), name="s")
    q = b.op("quantize", x, s, axis=0, block_size=4, dtype=DType.i8)
    assert q.type == tensor("i8", ["N", 8])
    g.set_outputs([b.op("dequantize", q, s, axis=0, block_size=4)])
    text = str(mod)
    again = parse_module(text, weights=mod.constants)
    verify_module(again)
    assert str(again) == text


# -- text -----------------------------------------------------------------------------------------

def test_tfidf_vectorizer_tfidf_with_weights_matches_reference():
    x = np.array([[1, 1, 3, 3, 3, 7], [8, 6, 7, 5, 6, 8]], np.int32)
    attrs = dict(mode="TFIDF", min_gram_length=1, max_gram_length=2, max_skip_count=2,
                 ngram_counts=[0, 4], ngram_indexes=[0, 1, 2, 3, 4, 5, 6],
                 pool_int64s=[2, 3, 5, 4, 5, 6, 7, 8, 6, 7], weights=[1.0, 0.5, 2.0, 1.5, 3.0, 0.25, 1.0])
    m = make_model("TfIdfVectorizer", {"x": x}, opset=9, **attrs)
    check(m, {"x": x}, engine="ref")

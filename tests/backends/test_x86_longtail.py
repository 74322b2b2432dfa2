"""The x86 lowerings of the long-tail ops (sequence, attention, quantization, image sampling,
signal) agree with the interpreter, whose op references are the numpy specification.

Tolerances: f32 kernels accumulate in a different order than numpy's BLAS/pairwise sums and use
nnc's polynomial exp/tanh (a few ulps), so f32 results are compared at rtol 1e-4 / atol 1e-5;
f64 arithmetic (det, dft, grid sampling) at 1e-6; integer results (quantize) exactly.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, Graph, Module, interpret, tensor

RNG = np.random.default_rng(7)


def build(params: dict[str, tuple[str, tuple[int, ...]]], body: Callable[..., object]) -> Module:
    m = Module("t")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    args = [g.add_param(n, tensor(dt, list(shape))) for n, (dt, shape) in params.items()]
    outs = body(b, *args)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    g.set_outputs(outs, [f"o{i}" for i in range(len(outs))])
    return m


def agree(m: Module, feeds: dict[str, np.ndarray], rtol: float = 1e-4, atol: float = 1e-5) -> None:
    got = nnc.compile(m, target="x86").run(feeds)
    want = interpret(m, feeds)
    for k, w in want.items():
        assert got[k].dtype == w.dtype and got[k].shape == w.shape, k
        if w.dtype.kind in "iub":
            np.testing.assert_array_equal(got[k], w, err_msg=k)
        else:
            np.testing.assert_allclose(got[k].astype(np.float64), w.astype(np.float64), rtol=rtol, atol=atol,
                                       err_msg=k)


def randn(*shape: int, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


# -- quantization -----------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype", ["i8", "u8", "i16"])
def test_quantize_per_tensor_axis_blocked(dtype):
    zdt = {"i8": np.int8, "u8": np.uint8, "i16": np.int16}[dtype]
    x = (randn(2, 6, 4) * 300).astype(np.float32)
    x[0, 0, :3] = [0.5, 1.5, -2.5]  # ties round half to even
    x[1, 1, 1] = np.nan

    def body(b, x):
        per_t = b.op("quantize", x, b.const(np.float32(2.0)), b.const(zdt(3)), axis=1, dtype=dtype)
        per_a = b.op("quantize", x, b.const(np.linspace(0.5, 3, 6).astype(np.float32)),
                     b.const(np.arange(6).astype(zdt)), axis=1, dtype=dtype)
        blocked = b.op("quantize", x, b.const(np.abs(randn(2, 3, 4)) + 0.5), axis=1, block_size=2, dtype=dtype)
        return per_t, per_a, blocked
    agree(build({"x": ("f32", x.shape)}, body), {"x": x})


def test_dequantize_per_axis_blocked_and_int32():
    xi = RNG.integers(-128, 128, (3, 5, 4)).astype(np.int8)
    x32 = RNG.integers(-2**31, 2**31 - 1, (7,)).astype(np.int32)

    def body(b, x, y):
        per_a = b.op("dequantize", x, b.const(np.linspace(0.1, 1, 5).astype(np.float32)),
                     b.const(np.arange(5).astype(np.int8)), axis=1)
        blocked = b.op("dequantize", x, b.const(np.abs(randn(3, 5, 2)) + 0.1), b.const(np.ones((3, 5, 2), np.int8)),
                       axis=-1, block_size=3)
        wide = b.op("dequantize", y, b.const(np.float32(0.25)), b.const(np.int32(-5)), axis=0)
        half = b.op("dequantize", x, b.const(np.float16(0.3)), axis=0)
        return per_a, blocked, wide, half
    agree(build({"x": ("i8", xi.shape), "y": ("i32", x32.shape)}, body), {"x": xi, "y": x32}, rtol=1e-6, atol=0)


def test_bitcast_reinterprets_bits():
    x = randn(3, 5)
    agree(build({"x": ("f32", x.shape)}, lambda b, x: b.op("bitcast", x, to="i32")), {"x": x})


# -- attention --------------------------------------------------------------------------------------

def test_attention_4d_gqa_bool_mask_causal_past_softcap():
    q, k, v = randn(2, 4, 3, 8), randn(2, 2, 3, 8), randn(2, 2, 3, 6)
    pk, pv = randn(2, 2, 5, 8), randn(2, 2, 5, 6)
    mask = RNG.random((3, 8)) > 0.3
    mask[1] = False  # a fully masked row gives zeros

    def body(b, q, k, v, pk, pv):
        m = b.const(mask)
        return b.op("attention", q, k, v, m, pk, pv, is_causal=1, softcap=2.0, qk_matmul_output_mode=3)
    feeds = {"q": q, "k": k, "v": v, "pk": pk, "pv": pv}
    agree(build({n: ("f32", a.shape) for n, a in feeds.items()}, body), feeds)


@pytest.mark.parametrize("mode", [0, 2])
def test_attention_3d_float_mask_windows_nonpad(mode):
    q, k, v = randn(2, 4, 3 * 4), randn(2, 6, 3 * 4), randn(2, 6, 3 * 5)
    mask = randn(4, 6)
    nonpad = np.array([5, 6], np.int64)

    def body(b, q, k, v):
        empty = b.const(np.zeros((0,), np.float32))
        return b.op("attention", q, k, v, b.const(mask), empty, empty, b.const(nonpad), q_num_heads=3,
                    kv_num_heads=3, scale=0.3, is_causal=1, left_window=2, right_window=1,
                    qk_matmul_output_mode=mode)
    feeds = {"q": q, "k": k, "v": v}
    agree(build({n: ("f32", a.shape) for n, a in feeds.items()}, body), feeds)


def test_attention_fp16():
    q, k, v = (randn(1, 2, 4, 8, dtype=np.float16) for _ in range(3))
    feeds = {"q": q, "k": k, "v": v}
    m = build({n: ("f16", a.shape) for n, a in feeds.items()},
              lambda b, q, k, v: b.op("attention", q, k, v, is_causal=1))
    agree(m, feeds, rtol=2e-3, atol=2e-3)  # f16: a couple of ulps of values of order 1


@pytest.mark.parametrize("interleaved,rotary_dim,three_d", [(0, 0, False), (1, 4, True), (0, 4, True)])
def test_rotary_embedding(interleaved, rotary_dim, three_d):
    B, H, S, D = 2, 3, 5, 8
    half = (rotary_dim or D) // 2
    x = randn(B, S, H * D) if three_d else randn(B, H, S, D)
    cos, sin = randn(16, half), randn(16, half)
    pos = RNG.integers(0, 16, (B, S)).astype(np.int64)

    def body(b, x):
        return b.op("rotary_embedding", x, b.const(cos), b.const(sin), b.const(pos), interleaved=interleaved,
                    rotary_dim=rotary_dim, num_heads=H if three_d else 0)
    agree(build({"x": ("f32", x.shape)}, body), {"x": x})


@pytest.mark.parametrize("rule", ["linear", "gated", "delta", "gated_delta"])
def test_linear_attention(rule):
    B, T, hq, hkv, dk, dv = 2, 4, 4, 2, 3, 5
    q, k, v = randn(B, T, hq * dk), randn(B, T, hkv * dk) * 0.5, randn(B, T, hkv * dv)
    past = randn(B, hkv, dk, dv)
    decay = -np.abs(randn(B, T, hkv * dk)) if rule in ("gated", "gated_delta") else np.zeros(0, np.float32)
    beta = 1 / (1 + np.exp(-randn(B, T, hkv))) if rule in ("delta", "gated_delta") else np.zeros(0, np.float32)

    def body(b, q, k, v):
        return b.op("linear_attention", q, k, v, b.const(past), b.const(decay.astype(np.float32)),
                    b.const(beta.astype(np.float32)), q_num_heads=hq, kv_num_heads=hkv, update_rule=rule)
    feeds = {"q": q, "k": k, "v": v}
    agree(build({n: ("f32", a.shape) for n, a in feeds.items()}, body), feeds)


# -- sequence ---------------------------------------------------------------------------------------

def test_causal_conv_with_state():
    x, w, bias, past = randn(2, 3, 5), randn(3, 1, 4), randn(3), randn(2, 3, 3)

    def body(b, x):
        y1 = b.op("causal_conv_with_state", x, b.const(w), b.const(bias), b.const(past), activation="silu")
        y2 = b.op("causal_conv_with_state", x, b.const(w))
        return [*y1, *y2]
    agree(build({"x": ("f32", x.shape)}, body), {"x": x})


def _recurrent(kind: str, layout: int, direction: str, **attrs):
    G = {"rnn": 1, "gru": 3, "lstm": 4}[kind]
    seq, batch, n_in, hs = 4, 3, 5, 6
    dirs = 2 if direction == "bidirectional" else 1
    x = randn(seq, batch, n_in) if layout == 0 else randn(batch, seq, n_in)
    st_shape = (dirs, batch, hs) if layout == 0 else (batch, dirs, hs)
    consts = [randn(dirs, G * hs, n_in) * 0.5, randn(dirs, G * hs, hs) * 0.5, randn(dirs, 2 * G * hs) * 0.3,
              np.array([4, 2, 3], np.int32), randn(*st_shape)]
    if kind == "lstm":
        consts += [randn(*st_shape), randn(dirs, 3 * hs)]

    def body(b, x):
        return b.op(kind, x, *[b.const(c) for c in consts], hidden_size=hs, direction=direction, layout=layout,
                    **attrs)
    agree(build({"x": ("f32", x.shape)}, body), {"x": x})


@pytest.mark.parametrize("kind", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("layout,direction", [(0, "bidirectional"), (1, "reverse")])
def test_recurrent_layers(kind, layout, direction):
    _recurrent(kind, layout, direction)


def test_recurrent_activations_clip_and_variants():
    _recurrent("rnn", 0, "bidirectional", activations=("LeakyRelu", "HardSigmoid"), activation_alpha=(0.2, 0.3),
               activation_beta=(0.4,), clip=1.5)
    _recurrent("gru", 0, "forward", linear_before_reset=1, activations=("Softsign", "Elu"))
    _recurrent("lstm", 1, "forward", input_forget=1, activations=("Sigmoid", "ScaledTanh", "Softplus"),
               activation_alpha=(0.9,), activation_beta=(1.1,))


def test_tfidf_vectorizer():
    x = RNG.integers(0, 6, (2, 12)).astype(np.int32)
    attrs = dict(min_gram_length=1, max_gram_length=2, max_skip_count=2, ngram_counts=(0, 3),
                 ngram_indexes=(0, 1, 2, 3, 4, 5), pool_int64s=(1, 2, 3, 1, 2, 3, 4, 5, 5),
                 weights=(0.5, 1.0, 2.0, 1.5, 0.1, 3.0))
    for mode in ("TF", "IDF", "TFIDF"):
        m = build({"x": ("i32", x.shape)}, lambda b, x, mode=mode: b.op("tfidf_vectorizer", x, mode=mode, **attrs))
        agree(m, {"x": x}, rtol=0, atol=0)


# -- image ------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("pad", ["zeros", "border", "reflection"])
def test_grid_sample_2d(mode, pad):
    x, grid = randn(2, 3, 5, 4), (RNG.random((2, 6, 7, 2)) * 2.6 - 1.3).astype(np.float32)
    for align in (0, 1):
        m = build({"x": ("f32", x.shape), "g": ("f32", grid.shape)},
                  lambda b, x, g, align=align: b.op("grid_sample", x, g, mode=mode, padding_mode=pad,
                                                    align_corners=align))
        agree(m, {"x": x, "g": grid}, rtol=1e-5, atol=1e-5)


def test_grid_sample_volumetric_and_affine_grid():
    x, grid = randn(1, 2, 3, 4, 5), (RNG.random((1, 2, 3, 4, 3)) * 2.4 - 1.2).astype(np.float32)
    m = build({"x": ("f32", x.shape), "g": ("f32", grid.shape)},
              lambda b, x, g: b.op("grid_sample", x, g, mode="linear", padding_mode="border"))
    agree(m, {"x": x, "g": grid}, rtol=1e-5, atol=1e-5)
    for align in (0, 1):
        for size in ((2, 3, 4, 5), (2, 3, 2, 3, 4)):
            nd = len(size) - 2
            theta = randn(2, nd, nd + 1)
            m = build({"t": ("f32", theta.shape)},
                      lambda b, t, size=size, align=align: b.op("affine_grid", t, size=size, align_corners=align))
            agree(m, {"t": theta}, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("mode,ctm,ratio", [("avg", "half_pixel", 2), ("max", "output_half_pixel", 0)])
def test_roi_align(mode, ctm, ratio):
    x = randn(2, 3, 10, 8)
    rois = np.array([[0, 0, 7, 7], [1.5, 2.2, 6.1, 9.4], [-3, -2, 12, 15], [4, 4, 4.2, 4.1]], np.float32)
    bidx = np.array([0, 1, 1, 0], np.int64)
    m = build({"x": ("f32", x.shape)}, lambda b, x: b.op(
        "roi_align", x, b.const(rois), b.const(bidx), mode=mode, output_height=3, output_width=2,
        sampling_ratio=ratio, spatial_scale=0.8, coordinate_transformation_mode=ctm))
    agree(m, {"x": x}, rtol=1e-5, atol=1e-5)


def test_nms_runs_as_a_host_step():
    """Its output size depends on the data: a bounded kernel and a host step (test_x86_data_dependent.py)."""
    boxes, scores = randn(1, 4, 4), randn(1, 1, 4)
    m = build({"b": ("f32", boxes.shape), "s": ("f32", scores.shape)},
              lambda b, x, s: b.op("nms", x, s, max_output_boxes_per_class=2))
    agree(m, {"b": boxes, "s": scores})


# -- signal -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("inverse,onesided,n,complex_in", [(0, 0, None, False), (0, 1, 8, False), (1, 0, 6, True),
                                                           (1, 1, None, True), (0, 0, 5, True)])
def test_dft(inverse, onesided, n, complex_in):
    x = randn(2, 7, 3, 2 if complex_in else 1, dtype=np.float64)
    m = build({"x": ("f64", x.shape)}, lambda b, x: b.op("dft", x, inverse=inverse, onesided=onesided, axis=1,
                                                       dft_length=n))
    agree(m, {"x": x}, rtol=1e-6, atol=1e-9)


def test_stft_window_mel_det():
    sig, win = randn(2, 40, 1), np.hanning(8).astype(np.float32)
    m = build({"s": ("f32", sig.shape)}, lambda b, s: [
        b.op("stft", s, b.const(win), frame_step=5), b.op("stft", s, b.const(np.zeros(0, np.float32)),
                                                          frame_step=3, frame_length=6, onesided=0),
        b.op("window", kind="blackman", periodic=0, size=9), b.op("window", kind="hamming", size=10),
        b.op("mel_weight_matrix", num_mel_bins=8, dft_length=32, sample_rate=8000, lower_edge_hertz=20.0,
             upper_edge_hertz=3000.0)])
    agree(m, {"s": sig}, rtol=1e-4, atol=1e-5)
    x = randn(3, 2, 5, 5, dtype=np.float64)
    x[0, 0, :, 0] = x[0, 0, :, 1] * 2  # a singular matrix
    agree(build({"x": ("f64", x.shape)}, lambda b, x: b.op("det", x)), {"x": x}, rtol=1e-9, atol=1e-9)

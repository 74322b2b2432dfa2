"""Shape-generic x86 code for the CNN and attention ops: conv (and conv_transpose), pooling and batch
norm with a batch known only at run time, attention with run-time batch and sequence lengths. Each
graph compiles once (``report["shapes"]["generic"]``) and runs at several sizes: 1, odd sizes, sizes
above the kernels' blocks and thread splits, and 0 where the op allows an empty batch.

Tolerances: f32 convolutions sum their taps in GEMM order, not numpy's, so results agree to a few
ulps of the largest partial sums (rtol 1e-4 / atol 1e-4 for values of order 10); pooling maxima are
exact, averages and batch norm a couple of ulps; attention as in test_x86_longtail.py.
"""

from __future__ import annotations

import numpy as np
import pytest
from test_x86_longtail import build  # one op graph from a body over typed params (the tests are not packages)

import nnc
from nnc.ir import Module, interpret

RNG = np.random.default_rng(11)


def randn(*shape: int, dtype=np.float32) -> np.ndarray:
    return RNG.standard_normal(shape).astype(dtype)


def compile_once(m: Module, threads: int = 1):
    cm = nnc.compile(m, target="x86", cache=False, threads=threads)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    return cm


def agree(cm, m: Module, feeds: dict[str, np.ndarray], rtol: float = 1e-4, atol: float = 1e-4) -> None:
    got = cm.run(feeds)
    want = interpret(m, feeds)
    for k, w in want.items():
        assert got[k].dtype == w.dtype and got[k].shape == w.shape, (k, got[k].shape, w.shape)
        if w.dtype.kind in "iub":
            np.testing.assert_array_equal(got[k], w, err_msg=k)
        else:
            np.testing.assert_allclose(got[k], w, rtol=rtol, atol=atol, err_msg=k)


# -- conv -------------------------------------------------------------------------------------------

def _convs(b, x):
    """Each conv path: implicit-im2col GEMM with bias and a fused relu, a 1x1 conv read directly,
    grouped and strided, depthwise (a small plane and a strided one), and a residual epilogue."""
    c = x.shape[1]
    return [
        b.op("relu", b.op("conv", x, b.const(randn(16, c, 3, 3)), b.const(randn(16)), pads=[1, 1, 1, 1])),
        b.op("conv", x, b.const(randn(8, c, 1, 1))),
        b.op("conv", x, b.const(randn(8, c // 4, 3, 3)), strides=[2, 2], group=4),
        b.op("conv", x, b.const(randn(c, 1, 3, 3)), b.const(randn(c)), pads=[1, 1, 1, 1], group=c),
        b.op("conv", x, b.const(randn(2 * c, 1, 3, 3)), pads=[1, 1, 1, 1], group=c, strides=[2, 2]),
        b.op("add", b.op("conv", x, b.const(randn(c, c, 3, 3)), pads=[1, 1, 1, 1]), x),
    ]


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_runtime_batch(threads):
    m = build({"x": ("f32", ["N", 8, 11, 11])}, _convs)
    cm = compile_once(m, threads)
    for n in (1, 3, 0, 6):
        agree(cm, m, {"x": randn(n, 8, 11, 11)})
    assert cm.executable.plans_made == 4  # one machine code, a frame per batch size


@pytest.mark.parametrize("threads", [1, 2])
def test_conv_runtime_batch_large_images_split_over_threads(threads):
    # 2*M*P*K = 2*32*400*144 per image: enough work for the GEMM to split each image into tasks
    m = build({"x": ("f32", ["N", 16, 20, 20])},
              lambda b, x: b.op("conv", x, b.const(randn(32, 16, 3, 3)), b.const(randn(32)), pads=[1, 1, 1, 1]))
    cm = compile_once(m, threads)
    for n in (1, 5):
        agree(cm, m, {"x": randn(n, 16, 20, 20)}, atol=3e-4)


def test_conv_other_dtypes_and_conv_transpose_runtime_batch():
    m = build({"x": ("f16", ["N", 3, 7, 7]), "y": ("f32", ["B", 4, 5, 5])}, lambda b, x, y: [
        b.op("conv", x, b.const(randn(4, 3, 3, 3, dtype=np.float16)), pads=[1, 1, 1, 1]),
        b.op("conv_transpose", y, b.const(randn(4, 3, 3, 3)), b.const(randn(3)), strides=[2, 2])])
    cm = compile_once(m, 2)
    for n, nb in ((1, 2), (4, 1)):
        feeds = {"x": randn(n, 3, 7, 7, dtype=np.float16), "y": randn(nb, 4, 5, 5)}
        agree(cm, m, feeds, rtol=5e-3, atol=5e-3)  # f16: a few ulps of sums of 27 products of order 1


def test_conv_with_runtime_spatial_dims_compiles_per_shape():
    m = build({"x": ("f32", [1, 3, "H", "W"])}, lambda b, x: b.op("conv", x, b.const(randn(4, 3, 3, 3))))
    cm = nnc.compile(m, target="x86", cache=False)
    shapes = cm.report["shapes"]
    assert shapes["generic"] is False and "only the batch dim may be symbolic" in shapes["reason"]
    agree(cm, m, {"x": randn(1, 3, 6, 9)})


# -- pooling and normalizations ---------------------------------------------------------------------

def _pools(b, x):
    return [
        *b.op("max_pool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        *b.op("max_pool", x, kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1], dilations=[2, 2], ceil_mode=1),
        *b.op("max_pool", x, kernel_shape=[2, 2], with_indices=1),
        b.op("avg_pool", x, kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        b.op("avg_pool", x, kernel_shape=[2, 2], strides=[2, 2], pads=[0, 0, 1, 1], count_include_pad=1),
        b.op("lp_pool", x, kernel_shape=[2, 3], p=2),
        b.op("batch_norm", x, b.const(randn(6)), b.const(randn(6)), b.const(randn(6)), b.const(np.abs(randn(6)) + 0.1),
             epsilon=1e-3),
        b.op("group_norm", x, b.const(randn(6)), b.const(randn(6)), num_groups=3),
        b.op("lrn", x, size=3),
    ]


@pytest.mark.parametrize("threads", [1, 2])
def test_pooling_and_normalizations_runtime_batch(threads):
    m = build({"x": ("f32", ["N", 6, 9, 10])}, _pools)
    cm = compile_once(m, threads)
    for n in (1, 2, 5):  # (no empty batch: the reference of max_pool with indices cannot reshape one)
        agree(cm, m, {"x": randn(n, 6, 9, 10)}, rtol=1e-5, atol=1e-5)  # f32 sums of 9 taps, group stats of 180


@pytest.mark.parametrize("threads", [1, 2])
def test_pooling_and_batch_norm_many_planes_split_over_threads(threads):
    # 40x40 f32 planes (6.4 kB): 64 images give 1536 planes, several chunks of the pool's tasks
    m = build({"x": ("f32", ["N", 24, 40, 40])}, lambda b, x: [
        *b.op("max_pool", x, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
        b.op("avg_pool", x, kernel_shape=[2, 2], strides=[2, 2]),
        b.op("batch_norm", x, b.const(randn(24)), b.const(randn(24)), b.const(randn(24)),
             b.const(np.abs(randn(24)) + 0.1))])
    cm = compile_once(m, threads)
    for n in (1, 64, 3):
        agree(cm, m, {"x": randn(n, 24, 40, 40)}, rtol=1e-5, atol=1e-5)


def test_pooling_runtime_batch_f16_and_int():
    m = build({"x": ("f16", ["N", 3, 6, 6]), "y": ("i8", ["B", 2, 5, 5])}, lambda b, x, y: [
        b.op("avg_pool", x, kernel_shape=[2, 2], strides=[2, 2]),
        *b.op("max_pool", y, kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1])])
    cm = compile_once(m)
    for n, nb in ((1, 3), (4, 1)):
        feeds = {"x": randn(n, 3, 6, 6, dtype=np.float16), "y": RNG.integers(-99, 99, (nb, 2, 5, 5)).astype(np.int8)}
        agree(cm, m, feeds, rtol=1e-3, atol=1e-3)  # f16: one rounding of a mean of 4


# -- attention --------------------------------------------------------------------------------------

def _kv_lengths(n: int) -> list[tuple[int, int]]:
    return [(1, 1), (3, 5), (7, 2), (17, 40)][:n]


@pytest.mark.parametrize("threads", [1, 2])
def test_attention_runtime_batch_and_lengths_4d_causal_gqa_bool_mask(threads):
    # batch B, query length S, key length T all read at run time; 4 query heads over 2 kv heads
    m = build({"q": ("f32", ["B", 4, "S", 8]), "k": ("f32", ["B", 2, "T", 8]), "v": ("f32", ["B", 2, "T", 6]),
               "m": ("bool", ["S", "T"])},
              lambda b, q, k, v, mask: b.op("attention", q, k, v, mask, is_causal=1, softcap=2.0,
                                            qk_matmul_output_mode=3))
    cm = compile_once(m, threads)
    for bsz, (s, t) in zip((1, 2, 3, 2), _kv_lengths(4)):
        mask = RNG.random((s, t)) > 0.3
        mask[0] = False  # a fully masked row gives zeros
        feeds = {"q": randn(bsz, 4, s, 8), "k": randn(bsz, 2, t, 8), "v": randn(bsz, 2, t, 6), "m": mask}
        agree(cm, m, feeds, atol=1e-5)


def test_attention_runtime_lengths_3d_float_mask_broadcast_windows_nonpad():
    # BERT-like: [B,S,H*D] inputs (H*D read at run time too) and an additive [B,1,1,T] mask; nonpad
    # lengths per batch
    m = build({"q": ("f32", ["B", "S", "C"]), "k": ("f32", ["B", "T", "C"]), "v": ("f32", ["B", "T", "E"]),
               "m": ("f32", ["B", 1, 1, "T"]), "n": ("i64", ["B"])},
              lambda b, q, k, v, mask, n: b.op("attention", q, k, v, mask, b.const(np.zeros((0,), np.float32)),
                                               b.const(np.zeros((0,), np.float32)), n, q_num_heads=3,
                                               kv_num_heads=3, scale=0.3, left_window=3, right_window=2,
                                               qk_matmul_output_mode=2))
    cm = compile_once(m, 2)
    for bsz, (s, t) in zip((2, 1, 3), _kv_lengths(4)[1:]):
        feeds = {"q": randn(bsz, s, 12), "k": randn(bsz, t, 12), "v": randn(bsz, t, 15),
                 "m": randn(bsz, 1, 1, t), "n": RNG.integers(1, t + 1, bsz).astype(np.int64)}
        agree(cm, m, feeds, atol=1e-5)


def test_attention_runtime_lengths_with_past_kv_cache():
    # decoding: a run-time past length P, present = past + new keys (GPT-2 with a KV cache)
    m = build({"q": ("f32", ["B", 2, "S", 4]), "k": ("f32", ["B", 2, "S", 4]), "v": ("f32", ["B", 2, "S", 4]),
               "pk": ("f32", ["B", 2, "P", 4]), "pv": ("f32", ["B", 2, "P", 4])},
              lambda b, q, k, v, pk, pv: b.op("attention", q, k, v, b.const(np.zeros((0,), bool)), pk, pv,
                                              is_causal=1))
    cm = compile_once(m)
    for bsz, s, p in ((1, 1, 0), (2, 1, 5), (3, 4, 9)):
        feeds = {"q": randn(bsz, 2, s, 4), "k": randn(bsz, 2, s, 4), "v": randn(bsz, 2, s, 4),
                 "pk": randn(bsz, 2, p, 4), "pv": randn(bsz, 2, p, 4)}
        agree(cm, m, feeds, atol=1e-5)


# f16: a couple of ulps of order-1 values; f64 sums in another order than numpy's
@pytest.mark.parametrize("dtype,tol", [("f32", 1e-5), ("f16", 2e-3), ("f64", 1e-12)])
def test_attention_runtime_heads_and_head_sizes(dtype, tol):
    # every dim unknown, as after a model's reshape to heads with a computed target; scale from the
    # run-time head size; value rows longer than a vector (summed a vector at a time, masked tail)
    m = build({"q": (dtype, ["B", "H", "S", "D"]), "k": (dtype, ["B", "G", "T", "D"]),
               "v": (dtype, ["B", "G", "T", "E"])},
              lambda b, q, k, v: b.op("attention", q, k, v, is_causal=1, qk_matmul_output_mode=3))
    cm = compile_once(m, 2)
    npdt = {"f16": np.float16, "f32": np.float32, "f64": np.float64}[dtype]
    for bsz, h, g, s, t, d, e in ((1, 1, 1, 1, 1, 1, 1), (2, 4, 2, 3, 5, 8, 6), (1, 6, 3, 7, 7, 16, 5),
                                  (2, 2, 2, 5, 33, 20, 37)):
        feeds = {"q": randn(bsz, h, s, d, dtype=npdt), "k": randn(bsz, g, t, d, dtype=npdt),
                 "v": randn(bsz, g, t, e, dtype=npdt)}
        agree(cm, m, feeds, rtol=tol, atol=tol)


@pytest.mark.parametrize("interleaved,rotary_dim,three_d", [(0, 0, False), (1, 4, True)])
def test_rotary_embedding_runtime_batch_and_length(interleaved, rotary_dim, three_d):
    # position ids [B,S] into a [P,half] table of run-time length, or a per-token [B,S,half] table
    H, D = 3, 8
    half = (rotary_dim or D) // 2
    xs = ["B", "S", H * D] if three_d else ["B", H, "S", D]
    m = build({"x": ("f32", xs), "c": ("f32", ["P", half]), "s": ("f32", ["P", half]), "p": ("i64", ["B", "S"]),
               "tc": ("f32", ["B", "S", half]), "ts": ("f32", ["B", "S", half])},
              lambda b, x, c, s, p, tc, ts: [
                  b.op("rotary_embedding", x, c, s, p, interleaved=interleaved, rotary_dim=rotary_dim,
                       num_heads=H if three_d else 0),
                  b.op("rotary_embedding", x, tc, ts, interleaved=interleaved, rotary_dim=rotary_dim,
                       num_heads=H if three_d else 0)])
    cm = compile_once(m, 2)
    for bsz, s, p in ((1, 1, 1), (2, 5, 16), (3, 9, 9)):
        x = randn(bsz, s, H * D) if three_d else randn(bsz, H, s, D)
        feeds = {"x": x, "c": randn(p, half), "s": randn(p, half), "p": RNG.integers(0, p, (bsz, s)).astype(np.int64),
                 "tc": randn(bsz, s, half), "ts": randn(bsz, s, half)}
        agree(cm, m, feeds, rtol=1e-6, atol=1e-6)  # two f32 products and a sum, each rounded as numpy does

"""The x86 fast paths against the interpreter: fused conv/matmul/gemm groups (pre-packed weights, the
per-tile epilogue and its fallback), the vectorised implicit-im2col packing, the task split over
two threads, the vectorised max_pool, and the ``vector_loop`` of elementwise kernels (in-place ops,
broadcast operands, fused elementwise groups with vecmath, masked tails of the tile epilogue).

Each test builds a small graph, compiles it for x86 (-O3, so the ``fuse`` pass forms the groups;
the tests check that the fused op is really there) and compares with ``nnc.ir.interpret``.
Shapes are ragged (not multiples of the 12 x 32 tile or the 16-lane vector) so masked edges and
scalar tails run. Tolerance: f32 dot products of up to ~600 unit-variance terms summed in another
order differ by a few ulps of the sum's magnitude, so rtol/atol 1e-4 (scaled by the largest
|value|); f64 1e-10; max_pool selects values, so it must match exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, Graph, Module, interpret, tensor


def _build(fn, params: dict[str, tuple], dt: str = "f32", seed: int = 0):
    """``fn(builder, rng, *param_values) -> output value``; returns (module, feeds)."""
    rng = np.random.default_rng(seed)
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    npdt = np.float32 if dt == "f32" else np.float64
    vals, feeds = [], {}
    for name, shape in params.items():
        vals.append(g.add_param(name, tensor(dt, list(shape))))
        feeds[name] = rng.standard_normal(shape).astype(npdt)
    g.set_outputs([fn(b, rng, *vals)], ["y"])
    return m, feeds


def _run(m: Module, feeds, threads: int = 1, expect: str | None = None, tol: float = 1e-4):
    cm = nnc.compile(m, target="x86", quiet=True, cache=False, threads=threads, opt_level=3)
    graph = cm.executable.graph
    if expect is not None:
        kinds = [op.attrs.get("kind") for op in graph.ops if op.opname == "fused"]
        assert expect in kinds, f"no fused {expect} group in {[op.opname for op in graph.ops]}"
    got = cm.run(feeds)["y"]
    want = interpret(m, feeds)["y"]
    assert got.shape == want.shape and got.dtype == want.dtype
    if tol == 0:
        np.testing.assert_array_equal(got, want)
    else:
        np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(1.0, float(np.abs(want).max())))
    return graph


def _w(b, rng, shape, dt=np.float32, name="w"):
    return b.const((rng.standard_normal(shape) * 0.2).astype(dt), name=name)


# -- fused conv groups ------------------------------------------------------------------------

CONVS = [  # (C, H, W, M, k, stride, pad, dilation, group)
    (3, 23, 19, 20, 3, 1, 1, 1, 1),
    (16, 14, 14, 40, 3, 2, 1, 1, 1),
    (8, 17, 13, 26, 1, 1, 0, 1, 1),      # pointwise: the image is B in place
    (6, 11, 15, 14, 3, 1, 2, 2, 2),      # dilated, grouped
    (5, 30, 30, 13, 7, 2, 3, 1, 1),      # a stem-like 7x7 stride 2
    (9, 20, 21, 64, 3, 1, 1, 1, 1),      # 64 channels: the 8 x 48 tile
]


@pytest.mark.parametrize("C,H,W,M,k,s,p,d,g", CONVS)
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_conv_bias_residual_relu(C, H, W, M, k, s, p, d, g, threads):
    oh = (H + 2 * p - d * (k - 1) - 1) // s + 1
    ow = (W + 2 * p - d * (k - 1) - 1) // s + 1

    def fn(b, rng, x, r):
        y = b.op("conv", x, _w(b, rng, (M, C // g, k, k)), _w(b, rng, (M,), name="bias"), strides=[s, s],
                 pads=[p] * 4, dilations=[d, d], group=g)
        return b.op("relu", b.op("add", y, r))
    m, feeds = _build(fn, {"x": (1, C, H, W), "r": (1, M, oh, ow)}, seed=C + M)
    _run(m, feeds, threads, expect="conv")


def test_fused_conv_per_channel_scale_and_clip():
    """Epilogue inputs broadcast over the spatial dims (a per-channel scale) and constants (clip)."""
    def fn(b, rng, x):
        y = b.op("conv", x, _w(b, rng, (24, 10, 3, 3)), pads=[1, 1, 1, 1])
        scale = b.const(rng.standard_normal((1, 24, 1, 1)).astype(np.float32), name="scale")
        y = b.op("mul", y, scale)
        lo, hi = b.const(np.float32(0.0), name="lo"), b.const(np.float32(0.5), name="hi")
        return b.op("clip", y, lo, hi)
    m, feeds = _build(fn, {"x": (2, 10, 9, 21)})
    _run(m, feeds, expect="conv")


def test_fused_conv_epilogue_fallback_partial_broadcast():
    """An input broadcast along only some spatial dims cannot be read per tile row: the epilogue
    runs as a pass over the result, with the same answer."""
    def fn(b, rng, x, r):
        y = b.op("conv", x, _w(b, rng, (12, 7, 3, 3)), pads=[1, 1, 1, 1])
        return b.op("relu", b.op("add", y, r))
    m, feeds = _build(fn, {"x": (1, 7, 10, 11), "r": (1, 12, 10, 1)})
    _run(m, feeds, expect="conv")


def test_fused_conv_f64():
    def fn(b, rng, x, r):
        y = b.op("conv", x, _w(b, rng, (9, 5, 3, 3), np.float64), strides=[2, 2], pads=[1, 1, 1, 1])
        return b.op("relu", b.op("add", y, r))
    m, feeds = _build(fn, {"x": (1, 5, 13, 12), "r": (1, 9, 7, 6)}, dt="f64")
    _run(m, feeds, expect="conv", tol=1e-10)


@pytest.mark.parametrize("rank", [1, 3])
def test_conv_im2col_other_ranks(rank):
    """1-D and 3-D convs take the same vectorised packing (gathers and contiguous runs)."""
    sp = {1: (37,), 3: (6, 7, 9)}[rank]
    ks = {1: (5,), 3: (3, 2, 3)}[rank]

    def fn(b, rng, x):
        y = b.op("conv", x, _w(b, rng, (11, 4) + ks), pads=[1] * (2 * rank), strides=[1] * (rank - 1) + [2])
        return b.op("relu", y)
    m, feeds = _build(fn, {"x": (2, 4) + sp})
    _run(m, feeds, expect="conv")


def test_conv_weight_from_input_not_packed():
    """A run-time filter (a graph input) still works inside a fused group: packed per call."""
    def fn(b, rng, x, w):
        return b.op("relu", b.op("conv", x, w, pads=[1, 1, 1, 1]))
    m, feeds = _build(fn, {"x": (1, 6, 9, 10), "w": (13, 6, 3, 3)})
    _run(m, feeds, expect="conv")


DEPTHWISE = [  # (C, H, W, k, stride, pad, dilation, multiplier)
    (5, 23, 37, 3, 1, 1, 1, 1),
    (4, 29, 30, 3, 2, 1, 1, 1),
    (3, 9, 11, 5, 1, 2, 2, 2),     # dilated, two outputs per input channel
    (6, 7, 7, 3, 1, 1, 1, 1),      # a small plane: few interior columns
    (2, 4, 3, 5, 1, 1, 1, 1),      # no interior at all
    (3, 30, 50, 7, 1, 3, 1, 1),    # ConvNeXt's 7x7: row groups of 4 and a remainder, 16-column chunks
    (2, 33, 70, 5, 2, 2, 1, 1),    # stride 2 over wide rows
    # stride 2: each row's taps are shuffles of one window of inputs (MobileNet's 112 -> 56: a
    # border chunk, clean chunks, a half chunk); dilated windows span more vectors
    (3, 20, 112, 3, 2, 1, 1, 1),
    (2, 24, 75, 3, 2, 2, 2, 1),
]


@pytest.mark.parametrize("C,H,W,k,s,p,d,mult", DEPTHWISE)
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_depthwise_conv_clip_residual(C, H, W, k, s, p, d, mult, threads):
    """Depthwise convs: the unrolled interior loop, the per-tap border, the per-row epilogue."""
    oh = (H + 2 * p - d * (k - 1) - 1) // s + 1
    ow = (W + 2 * p - d * (k - 1) - 1) // s + 1
    M = C * mult

    def fn(b, rng, x, r):
        y = b.op("conv", x, _w(b, rng, (M, 1, k, k)), _w(b, rng, (M,), name="bias"), strides=[s, s],
                 pads=[p] * 4, dilations=[d, d], group=C)
        lo, hi = b.const(np.float32(-0.5), name="lo"), b.const(np.float32(1.0), name="hi")
        return b.op("clip", b.op("add", y, r), lo, hi)
    m, feeds = _build(fn, {"x": (2, C, H, W), "r": (2, M, oh, ow)}, seed=H * W)
    _run(m, feeds, threads, expect="conv")


# -- fused matmul / gemm groups -----------------------------------------------------------------

@pytest.mark.parametrize("threads", [1, 2])
def test_fused_matmul_bias_residual(threads):
    def fn(b, rng, x, r):
        y = b.op("matmul", x, _w(b, rng, (70, 45)))
        y = b.op("add", y, b.const(rng.standard_normal(45).astype(np.float32), name="bias"))
        return b.op("relu", b.op("add", y, r))
    m, feeds = _build(fn, {"x": (3, 29, 70), "r": (3, 29, 45)})
    _run(m, feeds, threads, expect="matmul")


def test_fused_batched_matmul_broadcast_residual():
    """Batched operands (no batch folding) with an input broadcast over the batch dim."""
    def fn(b, rng, x, w, r):
        return b.op("sigmoid", b.op("add", b.op("matmul", x, w), r))
    m, feeds = _build(fn, {"x": (4, 13, 33), "w": (4, 33, 40), "r": (1, 13, 40)})
    _run(m, feeds, expect="matmul")


@pytest.mark.parametrize("a_shape,b_shape", [((19, 40), (40,)), ((40,), (40, 23)), ((2, 5, 40), (40,))])
def test_fused_matmul_with_vector_operand(a_shape, b_shape):
    """A 1-D operand: C's rows are not the result's rows, so the epilogue runs as a pass."""
    def fn(b, rng, x, w, r):
        return b.op("relu", b.op("add", b.op("matmul", x, w), r))
    out = np.matmul(np.zeros(a_shape), np.zeros(b_shape)).shape
    m, feeds = _build(fn, {"x": a_shape, "w": b_shape, "r": out})
    _run(m, feeds, expect="matmul")


def test_fused_gemm_alpha_beta_relu():
    def fn(b, rng, x):
        c = b.const(rng.standard_normal((1, 50)).astype(np.float32), name="c")
        y = b.op("gemm", x, _w(b, rng, (50, 37)), c, alpha=0.5, beta=2.0, trans_b=1)
        return b.op("relu", y)
    m, feeds = _build(fn, {"x": (17, 37)})
    _run(m, feeds, expect="gemm")


# -- max_pool ---------------------------------------------------------------------------------

POOLS = [  # (C, H, W, kernel, stride, pads, ceil, dilation)
    (5, 112, 112, 3, 2, 1, 0, 1),
    (3, 17, 23, 3, 2, 1, 1, 1),
    (4, 9, 40, 2, 2, 0, 0, 1),
    (2, 19, 21, 3, 1, 1, 0, 1),
    (2, 20, 33, 3, 2, 2, 0, 2),
    (3, 8, 5, 5, 3, 2, 1, 1),
    (2, 30, 90, 7, 4, 3, 1, 1),    # stride 4, a 7-wide window: five vectors of inputs per row
    (3, 9, 64, 2, 2, 0, 0, 1),     # stride 2: the last clean chunk's windows end at the row's end
    (3, 9, 65, 2, 2, 0, 0, 1),     # ...one input short of it
    (3, 9, 70, 3, 2, 0, 0, 1),     # ...and a partial last chunk
]


@pytest.mark.parametrize("C,H,W,k,s,p,ceil,d", POOLS)
@pytest.mark.parametrize("dt", ["f32", "f64"])
def test_max_pool_vector_path(C, H, W, k, s, p, ceil, d, dt):
    def fn(b, rng, x):
        return b.op("max_pool", x, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=ceil,
                    dilations=[d, d])[0]
    m, feeds = _build(fn, {"x": (2, C, H, W)}, dt=dt, seed=H + W)
    feeds["x"][0, 0, 0, :3] = np.nan  # NaN propagates as numpy's max does, at the border and inside
    feeds["x"][1, 1, H // 2, W // 2 - 1:W // 2 + 1] = np.nan
    _run(m, feeds, tol=0)


@pytest.mark.parametrize("dt", ["f32", "f64"])
def test_max_pool_row_steps_recheck_nan(dt):
    """The vectorised max_pool does several output rows per step with the machine's max, and does a
    step again with numpy's max when a NaN is among its taps: a NaN in an input row two output rows
    share, one alone in a step, inf beside -inf in a window, a row of -inf; exact like numpy."""
    def fn(b, rng, x):
        return b.op("max_pool", x, kernel_shape=[3, 3], strides=[2, 2])[0]
    m, feeds = _build(fn, {"x": (1, 3, 37, 111)}, dt=dt, seed=5)
    x = feeds["x"]
    x[0, 0, 10, 50] = np.nan  # tap row 2 of output row 4, tap row 0 of output row 5
    x[0, 1, 30, 3] = np.nan
    x[0, 2, 5, 60:62] = [np.inf, -np.inf]
    x[0, 2, 20, :] = -np.inf
    _run(m, feeds, tol=0)


# -- vector loops: in-place elementwise kernels, fused groups, epilogue tails --------------------------

def _optimised_ir(m: Module, opt_level: int = 0) -> str:
    from nnc.backends.x86 import generate
    from nnc.backends.x86.jit import optimize
    from nnc.pipeline import optimize as pipeline

    m = pipeline(m, "infer", {"opt_level": opt_level})[0]
    _, _, info, text = generate(m, {"threads": 1})
    return str(optimize(text, info, 3)[0])


@pytest.mark.parametrize("threads", [1, 2])
def test_inplace_elementwise_chain_vectorised(threads):
    """At -O0 every op is its own kernel and the planner runs them in place (output == operand 0):
    the loop must still vectorise (no overlap check sending it to the scalar loop) and give the
    interpreter's values, broadcast operands and a ragged tail included."""
    def fn(b, rng, x, r):
        bias = b.const(rng.standard_normal((1, 37)).astype(np.float32), name="bias")
        y = b.op("add", b.op("tanh", x), bias)
        y = b.op("mul", b.op("sigmoid", y), r)
        return b.op("erf", b.op("exp", y))
    m, feeds = _build(fn, {"x": (53, 37), "r": (53, 1)})
    cm = nnc.compile(m, target="x86", quiet=True, cache=False, threads=threads, opt_level=0)
    want = interpret(m, feeds)["y"]
    np.testing.assert_allclose(cm.run(feeds)["y"], want, rtol=1e-5, atol=1e-6)  # vecmath: a few ulps
    text = _optimised_ir(m)
    assert "<16 x float>" in text or "<8 x float>" in text, "the elementwise loops did not vectorise"


def test_fused_elementwise_group_with_broadcasts():
    """A fused elementwise group (decomposed gelu + a per-row scale broadcast over columns)."""
    def fn(b, rng, x, s):
        h = b.op("div", x, b.const(np.float32(1.4142135), name="s2"))
        g = b.op("mul", b.op("mul", x, b.op("add", b.op("erf", h), b.const(np.float32(1.0), name="one"))),
                 b.const(np.float32(0.5), name="half"))
        return b.op("mul", b.op("sigmoid", g), s)
    m, feeds = _build(fn, {"x": (3, 41, 29), "s": (3, 41, 1)})
    _run(m, feeds, threads=2, expect="elementwise", tol=1e-5)


@pytest.mark.parametrize("n", [16, 37, 1])
def test_fused_matmul_gelu_epilogue_tails(n):
    """The per-tile epilogue over N columns not a multiple of the vector (masked tail), erf inside."""
    def fn(b, rng, x):
        y = b.op("add", b.op("matmul", x, _w(b, rng, (40, n))),
                 b.const(rng.standard_normal(n).astype(np.float32), name="bias"))
        e = b.op("erf", b.op("div", y, b.const(np.float32(1.4142135), name="s2")))
        return b.op("mul", b.op("mul", y, b.op("add", e, b.const(np.float32(1.0), name="one"))),
                    b.const(np.float32(0.5), name="half"))
    m, feeds = _build(fn, {"x": (1, 27, 40)})
    _run(m, feeds, expect="matmul")


def test_vector_loop_no_stderr_for_scalar_bodies(capfd):
    """Loops LLVM cannot vectorise (a libm call, integer pow's inner loop) get no width hint, so the
    compile prints no 'loop not vectorized' remarks."""
    def fn(b, rng, x, i):
        return b.op("add", b.op("sin", x), b.op("cast", b.op("pow", i, i), to="f32"))
    m = Module()
    g = m.add_graph(Graph())
    bld = Builder(m, g)
    x = g.add_param("x", tensor("f32", [5, 7]))
    i = g.add_param("i", tensor("i32", [5, 7]))
    g.set_outputs([fn(bld, None, x, i)], ["y"])
    feeds = {"x": np.linspace(-3, 3, 35, dtype=np.float32).reshape(5, 7),
             "i": np.arange(35, dtype=np.int32).reshape(5, 7) % 5}
    capfd.readouterr()
    got = nnc.compile(m, target="x86", quiet=True, cache=False, opt_level=0).run(feeds)["y"]
    err = capfd.readouterr().err
    assert "not vectorized" not in err, err
    np.testing.assert_allclose(got, interpret(m, feeds)["y"], rtol=1e-6)


@pytest.mark.parametrize("C,H,W,k,s,p,ceil,d", POOLS[:5])
@pytest.mark.parametrize("dt,include_pad", [("f32", 0), ("f32", 1), ("f64", 0)])
def test_avg_pool_interior_path(C, H, W, k, s, p, ceil, d, dt, include_pad):
    """avg_pool's interior rows take the unrolled vector loop (the count is the kernel size there);
    the border keeps the per-window counts, with or without the padding counted."""
    if d != 1:
        pytest.skip("avg_pool has no dilations before opset 19")

    def fn(b, rng, x):
        return b.op("avg_pool", x, kernel_shape=[k, k], strides=[s, s], pads=[p] * 4, ceil_mode=ceil,
                    count_include_pad=include_pad)
    m, feeds = _build(fn, {"x": (2, C, H, W)}, dt=dt, seed=H * W)
    # the sums run over the same taps in the same order, divided in f64 like the reference
    _run(m, feeds, tol=1e-6 if dt == "f32" else 1e-12)

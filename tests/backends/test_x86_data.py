"""x86 lowerings of data movement, indexing, pooling, resize and dropout against the interpreter.

Byte-moving ops must agree exactly; pooling sums are f32/f64 sums in another order (a few ulps);
resize repeats the reference's float64 arithmetic, so even integer rounding agrees exactly.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, DType, Graph, Module, interpret, tensor

RNG = np.random.default_rng(0)


def run(opname: str, inputs: list[np.ndarray], n_results: int | None = None, rtol: float = 0.0, **attrs):
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    params, feeds = [], {}
    for i, a in enumerate(inputs):
        params.append(g.add_param(f"x{i}", tensor(str(DType.from_numpy(a.dtype)), list(a.shape))))
        feeds[f"x{i}"] = a
    r = b.op(opname, *params, n_results=n_results, **attrs)
    rs = r if isinstance(r, list) else [r]
    g.set_outputs(rs, [f"y{i}" for i in range(len(rs))])
    want = interpret(m, feeds)
    got = nnc.compile(m, target="x86").run(feeds)
    for key in want:
        assert got[key].dtype == want[key].dtype and got[key].shape == want[key].shape
        if rtol:
            np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=rtol)
        else:
            np.testing.assert_array_equal(got[key], want[key])


X = RNG.standard_normal((2, 3, 4, 5)).astype(np.float32)
DTYPES = [np.float32, np.float16, np.int64, np.uint8, bool]


@pytest.mark.parametrize("dt", DTYPES)
def test_layout_ops_every_dtype(dt):
    x = (X * 10).astype(dt)
    run("transpose", [x], perm=[3, 1, 0, 2])
    run("reshape", [x], shape=[6, 20])
    run("concat", [x, x[:, :, :1]], axis=2)
    run("split", [x], n_results=2, axis=3, sizes=[2, 3])
    run("slice", [x], starts=[-1, 0, 3], ends=[-100, 3, 0], axes=[0, 2, 3], steps=[-1, 2, -2])
    run("expand", [x[:, :1]], shape=[3, 2, 4, 4, 5])
    run("tile", [x], repeats=[1, 2, 1, 3])
    run("trilu", [x], k=-1, upper=0)


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
def test_pad_modes_with_negative_pads(mode):
    x = RNG.standard_normal((3, 5, 6)).astype(np.float16)
    run("pad", [x], pads=[1, -1, 7, 2, 3, -2], mode=mode, value=2.5 if mode == "constant" else None)


@pytest.mark.parametrize("shape,perm", [((300, 257), (1, 0)), ((1, 64, 40, 40), (0, 2, 3, 1)),
                                        ((1, 40, 40, 64), (0, 3, 1, 2)), ((5, 33, 9, 17), (3, 0, 2, 1))])
def test_transpose_tiled_and_parallel(shape, perm):
    run("transpose", [RNG.standard_normal(shape).astype(np.float32)], perm=list(perm))


# batched 2-D transposes of 4-byte elements in 16x16 register tiles (kernels/transpose2d.py): ragged
# edges in both directions, several batch entries, int32 moved as bits; and permutations that are not
# such a transpose (the copy engine)
TRANSPOSE_2D = [((1, 96, 7, 9), (0, 2, 3, 1), np.float32), ((2, 13, 5, 19), (0, 3, 1, 2), np.float32),
                ((3, 40, 17), (0, 2, 1), np.int32), ((33, 16), (1, 0), np.uint32),
                ((2, 3, 24, 10), (0, 1, 3, 2), np.float32), ((9, 20), (1, 0), np.float32)]


@pytest.mark.parametrize("shape,perm,dt", TRANSPOSE_2D)
def test_transpose_as_2d_tiles(shape, perm, dt):
    from nnc.backends.x86.kernels import transpose2d

    batch, rows, cols = transpose2d.as_2d(shape, list(perm))
    assert batch * rows * cols == int(np.prod(shape))
    x = (RNG.standard_normal(shape) * 1000).astype(dt)
    run("transpose", [x], perm=list(perm))


def test_transpose_2d_detection():
    from nnc.backends.x86.kernels.transpose2d import as_2d

    assert as_2d((1, 96, 56, 56), [0, 2, 3, 1]) == (1, 96, 3136)
    assert as_2d((2, 56, 56, 96), [0, 3, 1, 2]) == (2, 3136, 96)
    assert as_2d((4, 5), [1, 0]) == (1, 4, 5)
    assert as_2d((2, 3, 4), [0, 1, 2]) is None  # identity
    assert as_2d((2, 3, 4, 5), [3, 0, 2, 1]) is None
    assert as_2d((2, 3, 4, 5), [0, 2, 1, 3]) is None  # the innermost axis stays: not a 2-D transpose


def test_large_copy_is_chunked():
    run("reshape", [RNG.standard_normal((700, 600))], shape=[600, 700])


@pytest.mark.parametrize("dt", [np.float32, np.int32, np.uint8, bool])
def test_gathers(dt):
    x = (RNG.standard_normal((4, 5, 6)) * 9).astype(dt)
    run("gather", [x, np.array([[0, -1], [2, 3]])], axis=1)
    run("gather", [x, np.array([5, -6, 0], np.int32)], axis=2)
    run("gather_elements", [x, RNG.integers(-5, 5, (4, 3, 6))], axis=1)
    run("gather_nd", [x, np.array([[0, 1], [-1, 2], [3, -5]])])
    run("gather_nd", [x, RNG.integers(0, 4, (4, 3, 2))], batch_dims=1)


@pytest.mark.parametrize("red", ["none", "add", "mul", "max", "min"])
@pytest.mark.parametrize("dt", [np.float32, bool])
def test_scatters_with_repeated_indices(red, dt):
    x = (RNG.standard_normal((4, 5, 6)) * 3).astype(dt)
    run("scatter_elements", [x, RNG.integers(-5, 5, (4, 3, 6)), (RNG.standard_normal((4, 3, 6)) * 3).astype(dt)],
        axis=1, reduction=red)
    run("scatter_nd", [x, RNG.integers(0, 4, (7, 2)), (RNG.standard_normal((7, 6)) * 3).astype(dt)], reduction=red)


POOLS = [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
         dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1),
         dict(kernel_shape=[3, 2], dilations=[2, 2], pads=[1, 0, 2, 1], ceil_mode=1, strides=[2, 3])]


# planes wide enough for pool_vector's run-time loop over full chunks of 16 columns, with borders,
# partial last chunks, strides 1-4 (5: LLVM's loop), ceil mode, dilation, and many border rows (the
# per-window fallback)
WIDE_POOLS = [dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]),
              dict(kernel_shape=[3, 3], strides=[1, 1], pads=[1, 1, 1, 1]),
              dict(kernel_shape=[2, 2], strides=[2, 2]),
              dict(kernel_shape=[3, 5], strides=[3, 3], pads=[0, 2, 1, 2], ceil_mode=1),
              dict(kernel_shape=[2, 3], strides=[2, 4], dilations=[2, 3], pads=[1, 2, 1, 2]),
              dict(kernel_shape=[3, 3], strides=[1, 5], pads=[1, 1, 1, 1]),
              dict(kernel_shape=[9, 9], pads=[4, 4, 4, 4]),
              dict(kernel_shape=[9, 3], dilations=[2, 1], pads=[8, 1, 8, 1])]


@pytest.mark.parametrize("attrs", WIDE_POOLS)
def test_pools_on_wide_planes(attrs):
    x = RNG.standard_normal((1, 2, 23, 77)).astype(np.float32)
    x[0, 1, 5, 40] = np.nan  # max propagates it, as numpy's max does
    x[0, 1, 0, 0] = np.nan  # in a border window
    run("max_pool", [x], n_results=1, **attrs)
    run("max_pool", [(np.nan_to_num(x) * 50).astype(np.int8)], n_results=1, **attrs)
    run("max_pool", [x.astype(np.float16)], n_results=1, **attrs)
    x = np.nan_to_num(x)
    for cip in (0, 1):
        run("avg_pool", [x], count_include_pad=cip, rtol=1e-6, **attrs)


@pytest.mark.parametrize("attrs", POOLS)
def test_pools(attrs):
    x = RNG.standard_normal((2, 3, 9, 11)).astype(np.float32)
    run("max_pool", [x], n_results=1, **attrs)
    run("max_pool", [(x * 50).astype(np.int8)], n_results=2, with_indices=1, **attrs)
    run("max_pool", [x], n_results=2, with_indices=1, storage_order=1, **attrs)
    ties = np.round(x)  # equal maxima in a window: the first one's index, interior and border alike
    ties[0, 1, 4, 5] = ties[1, 2, 0, 0] = np.nan
    run("max_pool", [ties], n_results=2, with_indices=1, **attrs)
    for cip in (0, 1):  # f32 sums of <= 9 terms in another order: a few ulps
        run("avg_pool", [x], count_include_pad=cip, rtol=1e-6, **attrs)
    run("avg_pool", [x.astype(np.float16)], rtol=1e-3, **attrs)  # f16 result: half an f16 ulp
    run("lp_pool", [x], p=3, rtol=1e-6, **attrs)


def test_max_pool_3d_and_unpool():
    x = RNG.standard_normal((1, 2, 5, 6, 7)).astype(np.float32)
    run("max_pool", [x], n_results=2, with_indices=1, kernel_shape=[2, 3, 2], strides=[2, 2, 2],
        pads=[0, 1, 1, 1, 1, 0])
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    xv = g.add_param("x", tensor("f32", [1, 2, 8, 8]))
    y, i = b.op("max_pool", xv, n_results=2, with_indices=1, kernel_shape=[2, 2], strides=[2, 2])
    g.set_outputs([b.op("max_unpool", y, i, kernel_shape=[2, 2], strides=[2, 2], output_shape=[1, 2, 9, 7])], ["u"])
    feeds = {"x": RNG.standard_normal((1, 2, 8, 8)).astype(np.float32)}
    np.testing.assert_array_equal(nnc.compile(m, target="x86").run(feeds)["u"], interpret(m, feeds)["u"])


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("coord", ["half_pixel", "align_corners", "tf_crop_and_resize", "half_pixel_symmetric"])
def test_resize(mode, coord):
    x = RNG.standard_normal((1, 2, 5, 7)).astype(np.float32)
    kw = dict(mode=mode, coordinate_transformation_mode=coord, scales=[1, 1, 2.0, 0.6])
    if coord == "tf_crop_and_resize":
        kw.update(roi=[0, 0, 0.1, 0.2, 1, 1, 0.9, 1.1], extrapolation_value=-3.0)
    run("resize", [x], rtol=1e-6, **kw)
    run("resize", [(x * 100).astype(np.int32)], **kw)  # the reference's float64 arithmetic, repeated
    run("resize", [x], rtol=1e-6, **{**kw, "exclude_outside": 1, "antialias": int(mode != "nearest")})


def test_dropout_inference_kernel_and_training_host_step():
    x = RNG.standard_normal((3, 4)).astype(np.float32)
    run("dropout", [x], n_results=2, training=0)
    m = Module()
    g = m.add_graph(Graph())
    g.set_outputs(Builder(m, g).op("dropout", g.add_param("x", tensor("f32", [3, 4])), seed=1.0), ["y", "mask"])
    # training mode draws from numpy's RandomState: a host step through the reference's stream
    # (backends/x86/random_steps.py), so the seeded draw equals the interpreter's
    cm = nnc.compile(m, target="x86", quiet=True, cache=False)
    assert cm.report["x86"]["segments"]["host_steps"] == 1
    got, want = cm.run({"x": x}), interpret(m, {"x": x})
    for k in ("y", "mask"):
        np.testing.assert_array_equal(got[k], want[k])

"""Shape-generic x86 data movement and gathers: graphs with symbolic dims compile once
(``report["shapes"]["generic"]``) and agree exactly with the interpreter at every size tried.

Sizes include 1 (axes that vanish or broadcast), odd sizes, and sizes large enough that the copies
are split into several blocks over the workers (run with threads=1 and threads=2). These ops move
bytes, so results must be bit-identical.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, DType, Graph, InputError, Module, interpret, tensor

RNG = np.random.default_rng(11)


def build(params: dict[str, tuple[str, list]], body: Callable[..., object]) -> Module:
    m = Module("t")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    args = [g.add_param(n, tensor(dt, shape)) for n, (dt, shape) in params.items()]
    outs = body(b, *args)
    outs = list(outs) if isinstance(outs, (list, tuple)) else [outs]
    g.set_outputs(outs, [f"o{i}" for i in range(len(outs))])
    return m


def data(shape: tuple[int, ...], dt: str = "f32") -> np.ndarray:
    if dt == "bool":
        return RNG.random(shape) < 0.5
    return (RNG.standard_normal(shape) * 50).astype(DType(dt).numpy)


def check(m: Module, feeds: list[dict[str, np.ndarray]], threads: int = 1) -> None:
    """One compile serves every feed; each result equals the interpreter's exactly."""
    cm = nnc.compile(m, target="x86", cache=False, threads=threads)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    for f in feeds:
        got, want = cm.run(f), interpret(m, f)
        for key, w in want.items():
            assert got[key].dtype == w.dtype and got[key].shape == w.shape, (key, got[key].shape, w.shape)
            np.testing.assert_array_equal(got[key], w, err_msg=f"{key} at {[a.shape for a in f.values()]}")


THREADS = pytest.mark.parametrize("threads", [1, 2])
# (N, S): 1s, odd sizes, and a size large enough to split copies over the workers
SIZES = [(1, 1), (2, 3), (3, 70), (5, 2048)]


@THREADS
@pytest.mark.parametrize("dt", ["f32", "f16", "i64", "u8", "bool"])
def test_reshape_squeeze_unsqueeze(dt, threads):
    def body(b, x):
        flat = b.op("reshape", x, shape=[-1, 6])
        s = b.op("shape", x, end=2)  # a target computed from the input's dims
        six = b.const(np.array([2, 3], dtype=np.int64))
        split = b.op("reshape", x, b.op("concat", s, six, axis=0))
        return b.op("squeeze", b.op("unsqueeze", flat, axes=[1]), axes=[1]), split
    m = build({"x": (dt, ["N", "S", 6])}, body)
    check(m, [{"x": data((n, s, 6), dt)} for n, s in SIZES], threads)


@THREADS
@pytest.mark.parametrize("perm", [[0, 2, 1, 3], [3, 2, 1, 0], [1, 0, 2, 3], [2, 3, 0, 1], [0, 1, 3, 2]])
def test_transpose(perm, threads):
    m = build({"x": ("f32", ["N", "S", 2, 3])}, lambda b, x: b.op("transpose", x, perm=perm))
    check(m, [{"x": data((n, s, 2, 3))} for n, s in SIZES], threads)


@THREADS
def test_transpose_of_run_time_inner_dims(threads):
    # perm (2, 0, 1): source axes 0 and 1 stay adjacent, so they copy as one run; both copies read
    # with a run-time stride and go in tiles (edges not multiples of the tile)
    def body(b, x, y):
        return b.op("transpose", x, perm=[2, 0, 1]), b.op("transpose", y, perm=[0, 1, 3, 2])
    m = build({"x": ("i64", ["N", "S", "C"]), "y": ("f16", ["N", 2, "S", "C"])}, body)
    sizes = [(1, 1, 1), (3, 5, 7), (40, 30, 33), (2, 700, 65)]
    check(m, [{"x": data((n, s, c), "i64"), "y": data((n, 2, s, c), "f16")} for n, s, c in sizes], threads)


@THREADS
def test_concat(threads):
    def body(b, x, y, z):
        return (b.op("concat", x, y, x, axis=1), b.op("concat", x, z, axis=2),
                b.op("concat", x, x, axis=0), b.op("concat", x, y, axis=-2))
    m = build({"x": ("f32", ["N", "S", 4]), "y": ("f32", ["N", "T", 4]), "z": ("f32", ["N", "S", 3])}, body)
    feeds = [{"x": data((n, s, 4)), "y": data((n, t, 4)), "z": data((n, s, 3))}
             for n, s, t in [(1, 1, 1), (2, 3, 1), (3, 70, 9), (5, 2048, 3), (2, 3, 0)]]  # T=0: an empty cache
    check(m, feeds, threads)


@THREADS
def test_split(threads):
    def body(b, x):
        a = b.op("split", x, n_results=2, axis=2, sizes=[2, 4])
        c = b.op("split", x, n_results=3, axis=1, num_outputs=3)  # sizes from the run-time dim
        return [*a, *c]
    m = build({"x": ("f32", ["N", "S", 6])}, body)
    check(m, [{"x": data((n, s, 6))} for n, s in [(1, 3), (2, 7), (3, 70), (5, 2048)]], threads)


SLICES = [
    dict(starts=[1], ends=[-1], axes=[1]),
    dict(starts=[-3], ends=[1 << 62], axes=[1]),  # negative start, end clamped
    dict(starts=[-1], ends=[-(1 << 62)], axes=[1], steps=[-2]),  # backwards to the front
    dict(starts=[5], ends=[2], axes=[1], steps=[-1]),  # start clamped to the last index
    dict(starts=[4], ends=[100], axes=[1]),  # empty when S <= 4
    dict(starts=[0, 1, 1], ends=[-1, 1 << 62, 5], axes=[0, 1, 2], steps=[1, 3, 2]),
    dict(starts=[-2, -100], ends=[1 << 62, 1 << 62], axes=[2, 0]),
]


@THREADS
@pytest.mark.parametrize("attrs", SLICES, ids=range(len(SLICES)))
def test_slice_static_bounds_against_run_time_dims(attrs, threads):
    m = build({"x": ("f32", ["N", "S", 6])}, lambda b, x: b.op("slice", x, **attrs))
    check(m, [{"x": data((n, s, 6))} for n, s in SIZES + [(2, 4), (2, 5)]], threads)


def test_slice_with_run_time_ends():
    # ends computed from another input's dims: only the starts must be constant
    def body(b, x, y):
        starts = b.const(np.array([1], dtype=np.int64))
        axes = b.const(np.array([1], dtype=np.int64))
        return b.op("slice", x, starts, b.op("shape", y), axes)
    m = build({"x": ("f32", ["N", "S", 6]), "y": ("f32", ["M"])}, body)
    check(m, [{"x": data((n, s, 6)), "y": data((mm,))} for n, s, mm in [(1, 1, 1), (2, 9, 4), (3, 5, 50)]])


def test_slice_with_run_time_starts_is_not_generic():
    def body(b, x, y):
        axes = b.const(np.array([1], dtype=np.int64))
        return b.op("slice", x, b.op("shape", y), b.op("shape", x, start=1, end=2), axes)
    m = build({"x": ("f32", ["N", "S"]), "y": ("f32", ["M"])}, body)
    cm = nnc.compile(m, target="x86", cache=False)
    assert cm.report["shapes"]["generic"] is False
    assert "slice starts computed at run time" in cm.report["shapes"]["reason"]
    f = {"x": data((2, 7)), "y": data((3,))}
    np.testing.assert_array_equal(cm.run(f)["o0"], interpret(m, f)["o0"])


@THREADS
def test_expand(threads):
    def body(b, x, y, z, w):
        return (b.op("expand", x, shape=[3, 1, 4]),  # attribute target: [3, N, 4]
                b.op("expand", z, b.op("shape", y)),  # the host evaluates the target: [N, S, 4]
                b.op("expand", w, shape=[1, 2, 5, 1]))  # an attention mask: [N, 2, 5, S], rows of S copied
    m = build({"x": ("f32", ["N", 4]), "y": ("f32", ["N", "S", 4]), "z": ("f32", ["B", 1, 4]),
               "w": ("u8", ["N", 1, 1, "S"])}, body)
    feeds = [{"x": data((n, 4)), "y": data((n, s, 4)), "z": data((bb, 1, 4)), "w": data((n, 1, 1, s), "u8")}
             for n, s, bb in [(1, 1, 1), (3, 5, 1), (3, 5, 3), (4, 700, 4), (4, 700, 1)]]
    check(m, feeds, threads)


def test_range_and_shape():
    def body(b, x):
        zero = b.const(np.array(0, dtype=np.int64))
        one = b.const(np.array(1, dtype=np.int64))
        seq = b.op("squeeze", b.op("shape", x, start=1, end=2), axes=[0])
        return b.op("range", zero, seq, one), b.op("shape", x), b.op("shape", x, start=-2)
    m = build({"x": ("f32", ["N", "S", 2])}, body)
    check(m, [{"x": data((n, s, 2))} for n, s in SIZES])


def test_range_of_input_values():
    # the operands are inputs: the host works out the length from their values, per value
    m = build({"a": ("i32", []), "z": ("i32", []), "d": ("i32", [])}, lambda b, a, z, d: b.op("range", a, z, d))
    feeds = [{"a": np.int32(a), "z": np.int32(z), "d": np.int32(d)} for a, z, d in
             [(0, 5, 1), (7, -6, -3), (2, 2, 1), (-4, 100, 7)]]
    check(m, [{k: np.asarray(v) for k, v in f.items()} for f in feeds])


@THREADS
def test_tile_and_trilu(threads):
    def body(b, x):
        return (b.op("tile", x, repeats=[2, 1, 3]), b.op("tile", x, repeats=[1, 1, 1]),
                b.op("trilu", x, k=-1, upper=0), b.op("trilu", x, k=2, upper=1))
    m = build({"x": ("i64", ["N", "S", "T"])}, body)
    check(m, [{"x": data((n, s, t), "i64")} for n, s, t in [(1, 1, 1), (2, 3, 5), (3, 70, 9), (2, 300, 300)]],
          threads)


@THREADS
def test_gather(threads):
    table = data((50, 8))

    def body(b, ids, x, i):
        emb = b.op("gather", b.const(table), ids, axis=0)  # an embedding lookup: [N, S, 8]
        return emb, b.op("gather", x, i, axis=1), b.op("gather", x, i, axis=2)
    m = build({"ids": ("i64", ["N", "S"]), "x": ("f32", ["N", "S", 5]), "i": ("i32", ["K"])}, body)
    feeds = []
    for n, s in SIZES:
        k = 1 + (n * s) % 6
        feeds.append({"ids": RNG.integers(-50, 50, (n, s)), "x": data((n, s, 5)),
                      "i": RNG.integers(-min(s, 5), min(s, 5), k).astype(np.int32)})
    feeds.append({"ids": np.zeros((2, 0), np.int64), "x": data((2, 0, 5)), "i": np.zeros(0, np.int32)})  # empty
    check(m, feeds, threads)


def test_gather_index_out_of_range_at_a_run_time_dim():
    m = build({"x": ("f32", ["N", "S"]), "i": ("i64", ["K"])}, lambda b, x, i: b.op("gather", x, i, axis=1))
    cm = nnc.compile(m, target="x86", cache=False)
    assert cm.report["shapes"]["generic"] is True
    x = data((2, 4))
    np.testing.assert_array_equal(cm.run({"x": x, "i": np.array([3, -4])})["o0"], x[:, [3, 0]])
    for bad in ([4], [-5]):
        with pytest.raises(InputError):
            cm.run({"x": x, "i": np.array(bad)})


@THREADS
def test_gather_elements(threads):
    def body(b, x, i, j):
        return b.op("gather_elements", x, i, axis=1), b.op("gather_elements", x, j, axis=0)
    m = build({"x": ("f32", ["N", "S"]), "i": ("i64", ["N", "K"]), "j": ("i64", ["M", "S"])}, body)
    feeds = [{"x": data((n, s)), "i": RNG.integers(-s, s, (n, k)), "j": RNG.integers(-n, n, (mm, s))}
             for n, s, k, mm in [(1, 1, 1, 1), (2, 3, 5, 1), (3, 70, 9, 4), (300, 300, 200, 2)]]
    check(m, feeds, threads)


@THREADS
def test_gather_nd(threads):
    def body(b, x, i, j):
        return b.op("gather_nd", x, i, batch_dims=1), b.op("gather_nd", x, j)
    m = build({"x": ("f32", ["N", "S", 4]), "i": ("i64", ["N", "K", 1]), "j": ("i64", ["K", 2])}, body)
    feeds = [{"x": data((n, s, 4)), "i": RNG.integers(-s, s, (n, k, 1)),
              "j": np.stack([RNG.integers(-n, n, k), RNG.integers(-s, s, k)], axis=1)}
             for n, s, k in [(1, 1, 1), (2, 3, 5), (3, 70, 9), (6, 500, 3000)]]
    check(m, feeds, threads)


def test_reshape_to_a_target_of_run_time_length_is_not_generic():
    m = build({"x": ("f32", ["N", 4]), "s": ("i64", ["K"])}, lambda b, x, s: b.op("reshape", x, s))
    cm = nnc.compile(m, target="x86", cache=False)
    assert cm.report["shapes"]["generic"] is False
    assert "unknown rank" in cm.report["shapes"]["reason"]
    f = {"x": data((3, 4)), "s": np.array([2, -1, 3])}
    np.testing.assert_array_equal(cm.run(f)["o0"], interpret(m, f)["o0"])


@pytest.mark.parametrize("red", ["none", "add", "max"])
def test_scatters(red):
    # sequential updates in the reference's order: repeated indices agree exactly too
    def body(b, x, i, u, j, v):
        return (b.op("scatter_elements", x, i, u, axis=1, reduction=red),
                b.op("scatter_nd", b.op("expand", x, shape=[3, 1, 1]), j, v, reduction=red))
    m = build({"x": ("f32", ["N", "S"]), "i": ("i64", ["N", "K"]), "u": ("f32", ["N", "K"]),
               "j": ("i64", ["R", 2]), "v": ("f32", ["R", "S"])}, body)
    feeds = [{"x": data((n, s)), "i": RNG.integers(-s, s, (n, k)), "u": data((n, k)),
              "j": np.stack([RNG.integers(-3, 3, r), RNG.integers(-n, n, r)], axis=1), "v": data((r, s))}
             for n, s, k, r in [(1, 1, 1, 1), (2, 3, 5, 4), (3, 70, 9, 20)]]
    check(m, feeds)


@THREADS
def test_constant_pad_with_cropping(threads):
    def body(b, x):
        return (b.op("pad", x, pads=[1, 0, 3, 2, 0, 1], mode="constant", value=2.5),
                b.op("pad", x, pads=[0, -1, 2, 0, -2, -1], mode="constant", value=-1.0))  # crops
    m = build({"x": ("f16", ["N", "S", 5])}, body)
    check(m, [{"x": data((n, s, 5), "f16")} for n, s in [(1, 3), (2, 4), (3, 70), (5, 2048)]], threads)


def test_reflect_pad_of_run_time_dims_is_not_generic():
    m = build({"x": ("f32", ["N", 5])}, lambda b, x: b.op("pad", x, pads=[0, 1, 0, 2], mode="reflect"))
    cm = nnc.compile(m, target="x86", cache=False)
    assert cm.report["shapes"] == {"generic": False, "reason": cm.report["shapes"]["reason"]}
    assert "reflect padding of run-time dims" in cm.report["shapes"]["reason"]
    f = {"x": data((3, 5))}
    np.testing.assert_array_equal(cm.run(f)["o0"], interpret(m, f)["o0"])


@THREADS
def test_head_split_and_merge_with_computed_targets(threads):
    # the attention reshapes of an exported transformer: targets computed with Shape -> Gather ->
    # Unsqueeze -> Concat, which the host evaluates per signature; then the kernels move the data
    def body(b, x, past):
        s = b.op("shape", x)
        n, seq = (b.op("unsqueeze", b.op("gather", s, b.const(np.array(i, np.int64)), axis=0), axes=[0])
                  for i in (0, 1))
        heads = b.const(np.array([2, 4], np.int64))
        h = b.op("transpose", b.op("reshape", x, b.op("concat", n, seq, heads, axis=0)), perm=[0, 2, 1, 3])
        kv = b.op("concat", past, h, axis=2)  # a cache grown along the sequence
        merged = b.op("reshape", b.op("transpose", kv, perm=[0, 2, 1, 3]),
                      b.op("concat", n, b.const(np.array([-1, 8], np.int64)), axis=0))
        last = b.op("slice", merged, starts=[-1], ends=[1 << 62], axes=[1])
        return kv, merged, last
    m = build({"x": ("f32", ["N", "S", 8]), "past": ("f32", ["N", 2, "P", 4])}, body)
    feeds = [{"x": data((n, s, 8)), "past": data((n, 2, p, 4))}
             for n, s, p in [(1, 1, 0), (2, 3, 1), (3, 70, 9), (2, 600, 31)]]
    check(m, feeds, threads)

"""The x86 backend end to end on small graphs: generated code agrees with the interpreter."""

from __future__ import annotations

import numpy as np

import nnc
from nnc.backends import x86
from nnc.ir import Builder, Graph, Module, interpret, tensor


def mlp() -> Module:
    rng = np.random.default_rng(0)
    m = Module("mlp")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [2, 64]))
    h = b.op("matmul", x, b.const(rng.standard_normal((64, 32)).astype(np.float32), name="w1"), name="h")
    h = b.op("relu", b.op("add", h, b.const(rng.standard_normal(32).astype(np.float32), name="b1")), name="r")
    y = b.op("gemm", h, b.const(rng.standard_normal((10, 32)).astype(np.float32), name="w2"),
             b.const(rng.standard_normal(10).astype(np.float32), name="b2"), trans_b=1, name="y")
    g.set_outputs([y], ["logits"])
    return m


def test_mlp_matches_interpreter():
    m = mlp()
    x = np.random.default_rng(1).standard_normal((2, 64)).astype(np.float32)
    got = nnc.compile(m, target="x86").run({"x": x})["logits"]
    want = interpret(m, {"x": x})["logits"]
    # f32 dot products of length 64 and 32, summed in a different order: a few ulps of the sums
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_broadcasting_and_comparison_kernels():
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    a = g.add_param("a", tensor("f32", [3, 1, 4]))
    c = g.add_param("c", tensor("f32", [5, 1]))
    s = b.op("add", a, c, name="s")
    g.set_outputs([s, b.op("where", b.op("greater", s, c, name="gt"), s, b.op("neg", s), name="w")], ["s", "w"])
    rng = np.random.default_rng(2)
    feeds = {"a": rng.standard_normal((3, 1, 4)).astype(np.float32),
             "c": rng.standard_normal((5, 1)).astype(np.float32)}
    got = nnc.compile(m, target="x86").run(feeds)
    want = interpret(m, feeds)
    for k in want:
        np.testing.assert_array_equal(got[k], want[k])


def test_symbolic_dims_compile_once_and_run_at_every_size():
    m = Module()
    g = m.add_graph(Graph())
    x = g.add_param("x", tensor("f32", ["N", 4]))
    g.set_outputs([Builder(m, g).op("relu", x)])
    exe = x86.compile(m, {"cache": False})  # shape-generic code: N is read at run time
    for n in (1, 3, 70):
        feed = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
        (got,) = exe.run({"x": feed}).values()
        np.testing.assert_array_equal(got, np.maximum(feed, 0))

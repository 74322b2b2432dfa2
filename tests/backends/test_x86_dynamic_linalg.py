"""Shape-generic x86 matrix products, normalizations and reductions: one compile serves every
value of the symbolic dims (``report["shapes"]["generic"]``), checked against the interpreter at
sizes of 1, odd sizes and sizes past the GEMM blocking (M = 300 rows > MC; K = 300 > KC).

Tolerances: f32 sums of up to a few hundred products (or a row's statistics) in another order than
numpy's differ by a few ulps of the sum's magnitude (rtol/atol 1e-4 on unit-variance data); f64
1e-10; integer products and data movement (argmax) are exact.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, Graph, Module, interpret, tensor

TOL = {np.float32: 1e-4, np.float64: 1e-10, np.int32: 0, np.int64: 0}
NAMES = {np.float32: "f32", np.float64: "f64", np.int32: "i32", np.int64: "i64"}


def _data(rng, shape, dt):
    if np.issubdtype(dt, np.integer):
        return rng.integers(-5, 6, size=shape).astype(dt)
    return rng.standard_normal(shape).astype(dt)


def _model(opname, params, consts=(), dt=np.float32, post=None, **attrs):
    """``opname(*params, *consts)``; params are (name, symbolic shape), consts concrete shapes."""
    rng = np.random.default_rng(7)
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    operands = [g.add_param(n, tensor(NAMES[dt], list(shape))) for n, shape in params]
    operands += [b.const(_data(rng, shape, dt), name=f"c{i}") for i, shape in enumerate(consts)]
    y = b.op(opname, *operands, name="y", **attrs)
    if isinstance(y, (tuple, list)):
        y = y[0]
    if post is not None:
        y = b.op(post, y, name="z")
    g.set_outputs([y], ["y"])
    return m


def _check(m, bindings, dt=np.float32, threads=1):
    """Compile once; at each binding of the symbols compare with the interpreter."""
    cm = nnc.compile(m, target="x86", cache=False, quiet=True, threads=threads)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    rng = np.random.default_rng(1)
    params = m.main.params
    for bind in bindings:
        feeds = {p.name: _data(rng, tuple(bind[d] if isinstance(d, str) else d for d in p.type.shape), dt)
                 for p in params}
        got = cm.run(feeds)["y"]
        want = interpret(m, feeds)["y"]
        assert got.shape == want.shape and got.dtype == want.dtype, (bind, got.shape, want.shape)
        tol = TOL[dt]
        if tol == 0 or np.issubdtype(want.dtype, np.integer):  # integer results (indices) are exact
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=tol,
                                       atol=tol * max(1.0, float(np.abs(want).max(initial=0))), err_msg=str(bind))
    return cm


SIZES_NS = [{"N": 1, "S": 1}, {"N": 2, "S": 7}, {"N": 3, "S": 100}, {"N": 1, "S": 13}]


@pytest.mark.parametrize("threads", [1, 2])
def test_linear_layer_packed_weight_runtime_rows(threads):
    # x[N,S,K] @ W[K,Nout]: W packed at compile time, M = N*S read at run time (300 > MC rows)
    m = _model("matmul", [("x", ("N", "S", 64))], [(64, 100)])
    _check(m, SIZES_NS, threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_linear_layer_fused_epilogue(threads):
    m = _model("matmul", [("x", ("N", "S", 40))], [(40, 33)], post="relu")
    _check(m, SIZES_NS, threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_attention_batched_matmuls_runtime_mnk(threads):
    # scores [B,h,S,d] x [B,h,d,S]: runtime M and N; then [B,h,S,S] x [B,h,S,d]: runtime K
    m = _model("matmul", [("q", ("B", 2, "S", 8)), ("k", ("B", 2, 8, "S"))])
    _check(m, [{"B": 1, "S": 1}, {"B": 2, "S": 5}, {"B": 1, "S": 300}], threads=threads)
    m = _model("matmul", [("p", ("B", 2, "S", "S")), ("v", ("B", 2, "S", 8))])
    _check(m, [{"B": 1, "S": 1}, {"B": 2, "S": 5}, {"B": 1, "S": 300}], threads=threads)


def test_matmul_runtime_k_may_be_zero():
    m = _model("matmul", [("a", (3, "K")), ("b", ("K", 5))])
    _check(m, [{"K": 0}, {"K": 1}, {"K": 300}])


@pytest.mark.parametrize("sa,sb", [(("N", 6, 8), ("B", 1, 8, 40)), (("S",), ("S", 5)), (("N", 4, "K"), ("K",)),
                                   (("A", 5, 8), ("A", 8, 3))])
def test_matmul_broadcast_and_vectors(sa, sb):
    m = _model("matmul", [("a", sa), ("b", sb)])
    _check(m, [{"N": 1, "B": 1, "S": 1, "K": 1, "A": 1}, {"N": 3, "B": 2, "S": 9, "K": 17, "A": 4}])


def test_matmul_runtime_b_constant_a():
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    w = b.const(np.random.default_rng(3).standard_normal((20, 30)).astype(np.float32), name="w")
    x = g.add_param("x", tensor("f32", [30, "N"]))
    g.set_outputs([b.op("matmul", w, x, name="y")], ["y"])
    _check(m, [{"N": 1}, {"N": 37}, {"N": 300}], threads=2)


@pytest.mark.parametrize("dt", [np.float64, np.int32])
def test_matmul_other_dtypes(dt):
    m = _model("matmul", [("a", ("N", 9, "K")), ("b", ("K", 11))], dt=dt)
    _check(m, [{"N": 1, "K": 1}, {"N": 3, "K": 13}], dt=dt)


@pytest.mark.parametrize("ta,tb", [(0, 0), (1, 1)])
@pytest.mark.parametrize("c_shape", [None, (23,), ("N", 23)])
def test_gemm_runtime_rows(ta, tb, c_shape):
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    rng = np.random.default_rng(5)
    a = g.add_param("a", tensor("f32", [41, "N"] if ta else ["N", 41]))
    w = b.const(rng.standard_normal((23, 41) if tb else (41, 23)).astype(np.float32), name="w")
    _gemm_check(m, g, b, [a, w], ta, tb, c_shape)


@pytest.mark.parametrize("ta,tb", [(0, 1), (1, 0)])
def test_gemm_runtime_contraction_both_operands_inputs(ta, tb):
    # B read in place with a run-time column stride (trans_b: K), A with a run-time row count
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    a = g.add_param("a", tensor("f32", ["K", "N"] if ta else ["N", "K"]))
    w = g.add_param("w", tensor("f32", [23, "K"] if tb else ["K", 23]))
    _gemm_check(m, g, b, [a, w], ta, tb, (23,), [{"N": 1, "K": 1}, {"N": 5, "K": 0}, {"N": 300, "K": 300}])


def _gemm_check(m, g, b, ops, ta, tb, c_shape, bindings=({"N": 1}, {"N": 5}, {"N": 300})):
    """gemm(*ops[, c]) with alpha 0.5, beta 2, compared at each binding with two threads."""
    ops = list(ops)
    if c_shape is not None:
        ops.append(g.add_param("c", tensor("f32", list(c_shape))))
    g.set_outputs([b.op("gemm", *ops, name="y", trans_a=ta, trans_b=tb, alpha=0.5, beta=2.0)], ["y"])
    _check(m, list(bindings), threads=2)


EMPTY = [("linear", "matmul", [("x", ("N", "S", 64))], [(64, 100)], {}),
         ("attention", "matmul", [("q", ("N", 2, "S", 8)), ("k", ("N", 2, 8, "S"))], [], {}),
         ("softmax", "softmax", [("x", ("N", "S", 33))], [], {"axis": -1}),
         ("layer_norm", "layer_norm", [("x", ("N", "S", 48))], [(48,), (48,)], {"axis": -1}),
         ("reduce_sum", "reduce_sum", [("x", ("N", "S", 5))], [], {"axes": [1]}),
         ("argmax", "argmax", [("x", ("N", 4, "S"))], [], {"axis": 1})]


@pytest.mark.parametrize("name,opname,params,consts,attrs", EMPTY, ids=[e[0] for e in EMPTY])
def test_empty_runtime_dims(name, opname, params, consts, attrs):
    # a run-time 0 anywhere: no task, no read past an empty operand, the (empty or zero) result
    m = _model(opname, params, consts, **attrs)
    _check(m, [{"N": 0, "S": 3}, {"N": 2, "S": 0}, {"N": 1, "S": 2}], threads=2)


@pytest.mark.parametrize("opname", ["softmax", "log_softmax"])
@pytest.mark.parametrize("axis", [-1, 1])
@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_runtime_rows_and_axis(opname, axis, threads):
    # [B,h,S,S] attention scores: the normalised dim is run-time too; axis 1 is strided (inner = S*S)
    m = _model(opname, [("x", ("B", 3, "S", "S"))], axis=axis)
    _check(m, [{"B": 1, "S": 1}, {"B": 2, "S": 7}, {"B": 1, "S": 300}], threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_softmax_static_row_runtime_batch(threads):
    m = _model("softmax", [("x", ("N", "S", 33))], axis=-1)
    _check(m, SIZES_NS, threads=threads)


@pytest.mark.parametrize("opname", ["layer_norm", "rms_norm"])
@pytest.mark.parametrize("threads", [1, 2])
def test_norms_runtime_leading_dims(opname, threads):
    consts = [(48,), (48,)] if opname == "layer_norm" else [(48,)]
    m = _model(opname, [("x", ("N", "S", 48))], consts, axis=-1)
    _check(m, SIZES_NS, threads=threads)
    m = _model(opname, [("x", ("N", 4, 12))], [(4, 12)], axis=1)
    _check(m, [{"N": 1}, {"N": 300}], threads=threads)


REDUCE_BINDINGS = [{"N": 1, "S": 1}, {"N": 2, "S": 7}, {"N": 3, "S": 300}]


@pytest.mark.parametrize("opname", ["reduce_sum", "reduce_mean", "reduce_prod", "reduce_max", "reduce_min"])
@pytest.mark.parametrize("axes", [[1], [2], [0, 2], None])
@pytest.mark.parametrize("threads", [1, 2])
def test_reductions_runtime_dims(opname, axes, threads):
    attrs = {"axes": axes} if axes is not None else {}
    m = _model(opname, [("x", ("N", "S", 5))], keepdims=1 if axes == [2] else 0, **attrs)
    _check(m, REDUCE_BINDINGS, threads=threads)


@pytest.mark.parametrize("dt", [np.int32, np.float64])
def test_reduce_mean_integer_and_f64_runtime_count(dt):
    m = _model("reduce_mean", [("x", (4, "S", "N"))], dt=dt, axes=[1])
    _check(m, REDUCE_BINDINGS, dt=dt)


def test_reduce_noop_copy_runtime_size():
    m = _model("reduce_sum", [("x", ("N", "S"))], axes=[], noop_with_empty_axes=1)
    _check(m, REDUCE_BINDINGS)


@pytest.mark.parametrize("opname", ["argmax", "argmin"])
@pytest.mark.parametrize("axis,last", [(1, 0), (-1, 1), (0, 0)])
@pytest.mark.parametrize("dt", [np.float32, np.int32])
@pytest.mark.parametrize("threads", [1, 2])
def test_argmax_runtime_axis_and_rows(opname, axis, last, dt, threads):
    m = _model(opname, [("x", ("N", "S", 6))], dt=dt, axis=axis, select_last_index=last)
    # integer data in [-5, 5] has ties, so the first/last index rule is exercised
    _check(m, REDUCE_BINDINGS, dt=dt, threads=threads)


@pytest.mark.parametrize("threads", [1, 2])
def test_transformer_mlp_block_compiles_once(threads):
    # layer norm -> linear (+bias, gelu-free relu) -> linear -> residual -> softmax over the features:
    # the fused linear groups (anchor matmul, elementwise tail) are shape-generic with their anchor
    rng = np.random.default_rng(11)
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", ["N", "S", 32]))

    def const(*shape):
        return b.const(rng.standard_normal(shape).astype(np.float32) * 0.2)
    h = b.op("layer_norm", x, const(32), const(32), axis=-1)
    h = h[0] if isinstance(h, (tuple, list)) else h
    h = b.op("relu", b.op("add", b.op("matmul", h, const(32, 72)), const(72)))
    h = b.op("add", b.op("matmul", h, const(72, 32)), x)
    g.set_outputs([b.op("softmax", h, axis=-1, name="y")], ["y"])
    _check(m, SIZES_NS, threads=threads)


@pytest.mark.parametrize("opname", ["layer_norm", "rms_norm"])
def test_norms_over_runtime_dims(opname):
    # the normalised dims are run-time too; the parameters have their shape (or one value)
    params = [("x", ("N", "S", "D")), ("s", ("S", "D"))] + ([("c", (1,))] if opname == "layer_norm" else [])
    m = _model(opname, params, axis=1)
    _check(m, [{"N": 1, "S": 1, "D": 1}, {"N": 3, "S": 5, "D": 7}, {"N": 2, "S": 3, "D": 300}], threads=2)


def test_layer_norm_broadcast_over_runtime_dims_falls_back_per_shape():
    m = _model("layer_norm", [("x", ("N", "S", "D")), ("s", ("D",))], axis=1)
    cm = nnc.compile(m, target="x86", cache=False, quiet=True)
    shapes = cm.report["shapes"]
    assert shapes["generic"] is False and "broadcast over the run-time normalised shape" in shapes["reason"], shapes
    feeds = {"x": np.random.default_rng(2).standard_normal((3, 4, 10)).astype(np.float32),
             "s": np.random.default_rng(3).standard_normal(10).astype(np.float32)}
    np.testing.assert_allclose(cm.run(feeds)["y"], interpret(m, feeds)["y"], rtol=1e-5, atol=1e-5)


FUSED_LINEAR = """module @m

graph @main(%x: f32[N,S,40], %w: f32[40,36], %r: f32[N,S,36]) -> (y: f32[N,S,36]) {
  %y = fused(%x, %w, %r) {kind="matmul"} : f32[N,S,36] {
    graph @matmul.y(%x: f32[N,S,40], %w: f32[40,36], %r: f32[N,S,36]) -> (y: f32[N,S,36]) {
      %h = matmul(%x, %w) : f32[N,S,36]
      %a = add(%h, %r) : f32[N,S,36]
      %y = relu(%a) : f32[N,S,36]
      return %y
    }
  }
  return %y
}
"""


FUSED_GEMM = """module @m

graph @main(%x: f32[N,40], %w: f32[36,40], %c: f32[36], %r: f32[N,36]) -> (y: f32[N,36]) {
  %y = fused(%x, %w, %c, %r) {kind="gemm"} : f32[N,36] {
    graph @gemm.y(%x: f32[N,40], %w: f32[36,40], %c: f32[36], %r: f32[N,36]) -> (y: f32[N,36]) {
      %h = gemm(%x, %w, %c) {trans_b=1} : f32[N,36]
      %a = add(%h, %r) : f32[N,36]
      %y = relu(%a) : f32[N,36]
      return %y
    }
  }
  return %y
}
"""


@pytest.mark.parametrize("text", [FUSED_LINEAR, FUSED_GEMM], ids=["matmul", "gemm"])
@pytest.mark.parametrize("threads", [1, 2])
def test_fused_anchor_group_with_symbolic_dims(text, threads):
    # (the fuse pass leaves symbolic groups alone for now; a fused group written out still compiles
    # once, its anchor shape-generic and its elementwise tail a pass over the result)
    from nnc.ir import parse_module

    _check(parse_module(text), SIZES_NS, threads=threads)


def _check_feeds(m, shapes_list, threads=2):
    """Compile once, then compare at each set of input shapes (for '?' dims, which bind no symbol)."""
    cm = nnc.compile(m, target="x86", cache=False, quiet=True, threads=threads)
    assert cm.report["shapes"]["generic"] is True, cm.report["shapes"]
    rng = np.random.default_rng(4)
    for shapes in shapes_list:
        feeds = {p.name: rng.standard_normal(s).astype(np.float32) for p, s in zip(m.main.params, shapes)}
        np.testing.assert_allclose(cm.run(feeds)["y"], interpret(m, feeds)["y"], rtol=1e-4, atol=1e-4)


def test_matmul_unknown_batch_dims_broadcast_at_run_time():
    # '?' batch dims: either side may be 1 at run time (a stride-0 broadcast chosen by a select)
    m = _model("matmul", [("a", ("?", 3, 8)), ("b", ("?", 8, "?"))])
    _check_feeds(m, [((1, 3, 8), (4, 8, 5)), ((4, 3, 8), (1, 8, 300)), ((2, 3, 8), (2, 8, 1))])


def test_gemm_bias_of_unknown_dims_broadcast_at_run_time():
    # C's '?' dims may broadcast or not: its strides are run-time values (the loop path)
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    ops = [g.add_param("a", tensor("f32", ["N", 41])), g.add_param("w", tensor("f32", [41, 23])),
           g.add_param("c", tensor("f32", ["?", "?"]))]
    g.set_outputs([b.op("gemm", *ops, name="y", trans_a=0, trans_b=0, alpha=1.0, beta=1.0)], ["y"])
    _check_feeds(m, [((5, 41), (41, 23), cs) for cs in ((1, 23), (5, 1), (5, 23), (1, 1))])

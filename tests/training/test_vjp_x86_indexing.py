"""The gradient rules of the indexing, scan, image, signal and sequence families compile and run
on x86 in float32 and agree with the reference interpreter; the embedding gradient is a
scatter-add (checked against numpy's ``np.add.at``); ``fused`` refuses to be differentiated."""

from __future__ import annotations

import numpy as np
import pytest
from vjp_cases import CASES

import nnc
from nnc.ir import Builder, GradientError, Graph, Module, interpret, tensor
from nnc.passes.fuse import Fuse
from nnc.passes.training.autodiff import grad
from nnc.passes.training.gradcheck import build_op_module

# (op, index into vjp_cases.CASES[op]): one or two cases per op, the important forms first
X86_CASES = [("gather", 0), ("gather", 1), ("gather_elements", 0), ("gather_nd", 1), ("scatter_elements", 1),
             ("scatter_elements", 3), ("scatter_nd", 0), ("scatter_nd", 1), ("topk", 0), ("max_unpool", 1),
             ("tile", 1), ("trilu", 0), ("cumsum", 3), ("cumprod", 0), ("reduce_prod", 1), ("slice", 1),
             ("dequantize", 1), ("det", 1), ("resize", 0), ("resize", 2), ("resize", 3), ("affine_grid", 0),
             ("col2im", 0), ("grid_sample", 1), ("grid_sample", 2), ("dft", 0), ("dft", 4),
             ("stft", 0), ("causal_conv_with_state", 0), ("causal_conv_with_state", 2), ("deform_conv", 1),
             ("roi_align", 0)]


def _f32(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


@pytest.mark.parametrize("name,i", [pytest.param(n, i, id=f"{n}-{i}") for n, i in X86_CASES])
def test_gradient_graph_runs_on_x86(name: str, i: int):
    case = CASES[name][i]
    operands = [_f32(o) for o in case[0]]
    options = case[2] if len(case) > 2 else {}
    m, names = build_op_module(name, operands, case[1], const_operands=options.get("const_operands", ()),
                               n_results=options.get("n_results"))
    feeds = {n: operands[int(n[1:])] for n in names}
    want = interpret(m, feeds)
    got = nnc.compile(m, target="x86").run(feeds)
    for k, w in want.items():
        # f32 sums of a few terms in another order (det: products of 4x4 minors): a few ulps
        np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-5, err_msg=f"{name} {k}")


def _embedding_module(table: np.ndarray, ids: np.ndarray, r: np.ndarray) -> tuple[Module, object]:
    m = Module("emb")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    w = g.add_param("table", tensor("f32", list(table.shape)))
    e = b.op("gather", w, b.const(ids, name="ids"), axis=0)
    loss = b.op("reduce_sum", b.op("mul", e, b.const(r, name="r")), keepdims=0)
    dw = grad(m, loss, [w])[w]
    g.set_outputs([loss, dw], ["loss", "d_table"])
    return m, dw


def test_embedding_gradient_is_a_scatter_add_on_x86():
    rng = np.random.default_rng(0)
    table = rng.standard_normal((50, 16)).astype(np.float32)
    ids = rng.integers(0, 50, size=(4, 12)).astype(np.int64)
    ids[0, :3] = 7  # repeated ids accumulate
    r = rng.standard_normal((4, 12, 16)).astype(np.float32)
    m, dw = _embedding_module(table, ids, r)
    assert dw.producer.opname == "scatter_nd" and dw.producer.attrs["reduction"] == "add"
    want = np.zeros_like(table)
    np.add.at(want, ids, r)  # d/dtable sum(r * table[ids]) adds r's rows at the ids
    got = nnc.compile(m, target="x86").run({"table": table})["d_table"]
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(interpret(m, {"table": table})["d_table"], want, rtol=1e-6, atol=1e-6)


def test_gather_on_inner_axis_matches_numpy():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((3, 6, 2))
    ids = np.array([[5, 0], [5, -1]], np.int64)
    m = Module("g")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    w = g.add_param("x", tensor("f64", [3, 6, 2]))
    r = rng.standard_normal((3, 2, 2, 2))
    loss = b.op("reduce_sum", b.op("mul", b.op("gather", w, b.const(ids), axis=1), b.const(r)), keepdims=0)
    g.set_outputs([grad(m, loss, [w])[w]], ["dx"])
    want = np.zeros_like(x)
    for i in range(2):
        for j in range(2):
            want[:, ids[i, j] % 6, :] += r[:, i, j, :]
    np.testing.assert_allclose(interpret(m, {"x": x})["dx"], want, rtol=1e-12)


def test_fused_op_refuses_differentiate_before_fusion():
    m = Module("f")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [4]))
    y = b.op("tanh", b.op("mul", b.op("exp", x), b.const(np.float32(2.0))))
    loss = b.op("reduce_sum", y, keepdims=0)
    g.set_outputs([loss], ["loss"])
    Fuse().run(m)
    assert any(op.opname == "fused" for op in g.ops)
    with pytest.raises(GradientError, match="differentiate before fusion"):
        grad(m, loss, [x])


def _grads(opname: str, operands: list[np.ndarray], attrs: dict, r: np.ndarray) -> dict[str, np.ndarray]:
    """d/d operand of sum(r * op(operands)) for the float operands, on the interpreter."""
    m = Module(opname)
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    vals, wrt = [], []
    for i, a in enumerate(operands):
        if a.dtype.kind == "f":
            v = g.add_param(f"x{i}", tensor("f64", list(a.shape)))
            wrt.append(v)
        else:
            v = b.const(a)
        vals.append(v)
    y = b.op(opname, *vals, **attrs)
    loss = b.op("reduce_sum", b.op("mul", y, b.const(r)), keepdims=0)
    d = grad(m, loss, wrt)
    g.set_outputs([d[w] for w in wrt], [w.name for w in wrt])
    return interpret(m, {w.name: operands[int(w.name[1:])] for w in wrt})


@pytest.mark.parametrize("mode,padding,align", [("linear", "zeros", 0), ("linear", "border", 1),
                                                ("nearest", "zeros", 0)])
@pytest.mark.torch
def test_grid_sample_gradients_match_torch(mode: str, padding: str, align: int):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(3)
    x = rng.standard_normal((2, 3, 5, 6))
    grid = rng.uniform(-1.1, 1.1, (2, 4, 3, 2))
    r = rng.standard_normal((2, 3, 4, 3))
    got = _grads("grid_sample", [x, grid], {"mode": mode, "padding_mode": padding, "align_corners": align}, r)
    tx = torch.tensor(x, requires_grad=True)
    tg = torch.tensor(grid, requires_grad=True)
    out = torch.nn.functional.grid_sample(tx, tg, mode="bilinear" if mode == "linear" else "nearest",
                                          padding_mode=padding, align_corners=bool(align))
    (out * torch.tensor(r)).sum().backward()
    # the reference (like onnxruntime) rounds sampling positions to f32, torch in f64 does not: the
    # bilinear weights differ by ~1e-7
    np.testing.assert_allclose(got["x0"], tx.grad.numpy(), rtol=1e-5, atol=1e-6)
    if mode == "linear":
        np.testing.assert_allclose(got["x1"], tg.grad.numpy(), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("attrs,torch_mode", [
    ({"mode": "linear", "scales": [1.0, 1.0, 2.0, 1.5]}, "bilinear"),
    ({"mode": "nearest", "scales": [1.0, 1.0, 2.0, 3.0], "coordinate_transformation_mode": "asymmetric",
      "nearest_mode": "floor"}, "nearest")])
@pytest.mark.torch
def test_resize_gradient_matches_torch(attrs: dict, torch_mode: str):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1, 2, 4, 6))
    out_hw = (int(4 * attrs["scales"][2]), int(6 * attrs["scales"][3]))
    r = rng.standard_normal((1, 2) + out_hw)
    got = _grads("resize", [x], attrs, r)["x0"]
    tx = torch.tensor(x, requires_grad=True)
    kw = {"align_corners": False} if torch_mode == "bilinear" else {}
    y = torch.nn.functional.interpolate(tx, scale_factor=tuple(attrs["scales"][2:]), mode=torch_mode, **kw)
    (y * torch.tensor(r)).sum().backward()
    np.testing.assert_allclose(got, tx.grad.numpy(), rtol=1e-9, atol=1e-9)

"""The unrolled (backpropagation through time) gradient rules of ``lstm``, ``gru``, ``rnn`` and
``linear_attention`` compile and run on x86 in float32 and agree with the reference interpreter,
and the LSTM and GRU gradients match torch.autograd on torch.nn.LSTM / torch.nn.GRU with the
weights mapped by hand to ONNX's gate order. The unrolled graphs go through the whole default
pipeline (fusion included)."""

from __future__ import annotations

import numpy as np
import pytest
from vjp_cases import CASES

import nnc
from nnc.ir import Builder, Graph, Module, interpret, tensor
from nnc.passes.training.autodiff import grad
from nnc.passes.training.gradcheck import build_op_module

X86_CASES = [("lstm", 0), ("lstm", 1), ("gru", 0), ("rnn", 3), ("linear_attention", 4)]


def _f32(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


def _check_case(name: str, i: int, **compile_options) -> None:
    case = CASES[name][i]
    operands = [_f32(o) for o in case[0]]
    options = case[2] if len(case) > 2 else {}
    m, names = build_op_module(name, operands, case[1], const_operands=options.get("const_operands", ()))
    feeds = {n: operands[int(n[1:])] for n in names}
    want = interpret(m, feeds)
    got = nnc.compile(m, target="x86", **compile_options).run(feeds)
    for k, w in want.items():
        np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-5, err_msg=f"{name} {k}")


@pytest.mark.parametrize("name,i", [pytest.param(n, i, id=f"{n}-{i}") for n, i in X86_CASES])
def test_gradient_graph_runs_on_x86(name: str, i: int):
    _check_case(name, i)


def _module(opname: str, arrays: dict[str, np.ndarray], weights: list[np.ndarray],
            attrs: dict) -> tuple[Module, list[str]]:
    """loss = sum_i <result_i, weights_i>; outputs the loss and the gradient of every input."""
    m = Module(opname)
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    ins = [g.add_param(n, tensor("f32", list(a.shape))) for n, a in arrays.items()]
    operands = ins[:3] + [ins[3], b.const(np.zeros(0, np.float32), name="no_lens")] + ins[4:]
    res = b.create(opname, operands, attrs).results
    loss = None
    for r, wt in zip(res, weights):
        term = b.op("reduce_sum", b.op("mul", r, b.const(wt)), keepdims=0)
        loss = term if loss is None else b.op("add", loss, term)
    gs = grad(m, loss, ins)
    g.set_outputs([loss] + [gs[v] for v in ins], ["loss"] + [f"d_{n}" for n in arrays])
    return m, list(arrays)


def _torch_grads(layer, x, h0, weights, wants_c: bool):
    import torch

    xt = torch.tensor(x, requires_grad=True)
    state = tuple(torch.tensor(s, requires_grad=True) for s in h0)
    out = layer(xt, state if wants_c else state[0])
    y, fin = out[0], out[1] if wants_c else (out[1],)
    seq, batch = x.shape[:2]
    dirs = state[0].shape[0]
    y4 = y.reshape(seq, batch, dirs, -1).permute(0, 2, 1, 3)  # torch [S,B,D*H] -> ONNX [S,D,B,H]
    loss = sum((r * torch.tensor(w)).sum() for r, w in zip((y4, *fin), weights))
    loss.backward()
    return xt.grad.numpy(), [s.grad.numpy() for s in state]


def _onnx_order(t, blocks: list[int], dirs: int, suffixes: list[str], name: str) -> np.ndarray:
    """Stack torch's per-direction parameter ``name`` with its gate blocks reordered for ONNX."""
    out = []
    for sfx in suffixes[:dirs]:
        p = getattr(t, name + sfx).detach().numpy()
        parts = np.split(p, len(blocks), axis=0)
        out.append(np.concatenate([parts[k] for k in blocks], axis=0))
    return np.stack(out)


@pytest.mark.torch
@pytest.mark.parametrize("kind,bidir", [("lstm", False), ("lstm", True), ("gru", False)])
def test_recurrent_gradients_match_torch(kind: str, bidir: bool):
    torch = pytest.importorskip("torch")
    torch.manual_seed(0)
    seq, batch, width, hs = 4, 3, 5, 6
    dirs = 2 if bidir else 1
    cls = torch.nn.LSTM if kind == "lstm" else torch.nn.GRU
    layer = cls(width, hs, bidirectional=bidir)
    # torch gate order: LSTM i, f, g, o -> ONNX i, o, f, c; GRU r, z, n -> ONNX z, r, h
    blocks = [0, 3, 1, 2] if kind == "lstm" else [1, 0, 2]
    sfx = ["_l0", "_l0_reverse"]
    w = _onnx_order(layer, blocks, dirs, sfx, "weight_ih")
    r = _onnx_order(layer, blocks, dirs, sfx, "weight_hh")
    bias = np.concatenate([_onnx_order(layer, blocks, dirs, sfx, "bias_ih"),
                           _onnx_order(layer, blocks, dirs, sfx, "bias_hh")], axis=1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((seq, batch, width)).astype(np.float32)
    states = [rng.standard_normal((dirs, batch, hs)).astype(np.float32) for _ in range(2 if kind == "lstm" else 1)]
    weights = [rng.standard_normal(s).astype(np.float32)
               for s in [(seq, dirs, batch, hs)] + [(dirs, batch, hs)] * len(states)]
    arrays = {"x": x, "w": w, "r": r, "b": bias, "h0": states[0]}
    if kind == "lstm":
        arrays["c0"] = states[1]
    attrs = {"hidden_size": hs, "direction": "bidirectional" if bidir else "forward"}
    if kind == "gru":
        attrs["linear_before_reset"] = 1  # torch's GRU
    m, names = _module(kind, arrays, weights, attrs)
    got = nnc.compile(m, target="x86").run(arrays)
    dx, dstates = _torch_grads(layer, x, states, weights, kind == "lstm")
    np.testing.assert_allclose(got["d_x"], dx, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["d_h0"], dstates[0], rtol=1e-4, atol=1e-5)
    if kind == "lstm":
        np.testing.assert_allclose(got["d_c0"], dstates[1], rtol=1e-4, atol=1e-5)
    for name, torch_name in (("w", "weight_ih"), ("r", "weight_hh")):
        tg = np.stack([getattr(layer, torch_name + s).grad.numpy() for s in sfx[:dirs]])
        tg = np.stack([np.concatenate([np.split(t, len(blocks))[k] for k in blocks]) for t in tg])
        np.testing.assert_allclose(got[f"d_{name}"], tg, rtol=1e-4, atol=1e-5, err_msg=name)
    tb = np.concatenate([np.stack([np.concatenate([np.split(getattr(layer, n + s).grad.numpy(), len(blocks))[k]
                                                   for k in blocks]) for s in sfx[:dirs]])
                         for n in ("bias_ih", "bias_hh")], axis=1)
    np.testing.assert_allclose(got["d_b"], tb, rtol=1e-4, atol=1e-5)

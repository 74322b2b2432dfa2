"""The gradient rules of the conv, pooling, normalization and attention families compile and run
on x86 in float32: they agree with the reference interpreter on the modules ``build_op_module``
builds, and with torch.autograd (the oracle for conventions such as max-pool ties) on grouped
strided convolutions, pooling with ties, batch/layer/group norm and scaled dot-product attention."""

from __future__ import annotations

import numpy as np
import pytest
from vjp_cases import CASES

import nnc
from nnc.ir import Builder, Graph, Module, interpret, tensor
from nnc.passes.training.autodiff import grad
from nnc.passes.training.gradcheck import build_op_module

# (op, index into vjp_cases.CASES[op]): the important forms (x86 compiles take ~0.5 s each)
X86_CASES = [("conv", 1), ("conv", 2), ("conv_transpose", 1), ("avg_pool", 3), ("max_pool", 1), ("lp_pool", 0),
             ("softmax", 0), ("log_softmax", 0), ("layer_norm", 0), ("rms_norm", 0), ("group_norm", 0), ("lrn", 0),
             ("attention", 3), ("attention", 8), ("rotary_embedding", 4), ("einsum", 4)]


def _f32(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.kind == "f" else a


@pytest.mark.parametrize("name,i", [pytest.param(n, i, id=f"{n}-{i}") for n, i in X86_CASES])
def test_gradient_graph_runs_on_x86(name: str, i: int):
    case = CASES[name][i]
    operands = [_f32(o) for o in case[0]]
    attrs = dict(case[1])
    if attrs.get("stash_type") == "f64":  # the float64 check's statistics; f32 on x86
        attrs["stash_type"] = "f32"
    options = case[2] if len(case) > 2 else {}
    m, names = build_op_module(name, operands, attrs, const_operands=options.get("const_operands", ()))
    feeds = {n: operands[int(n[1:])] for n in names}
    want = interpret(m, feeds)
    got = nnc.compile(m, target="x86").run(feeds)
    for k, w in want.items():
        # f32 sums over windows/rows in another order: a few ulps of the sums
        np.testing.assert_allclose(got[k], w, rtol=1e-4, atol=1e-5, err_msg=f"{name} {k}")


# -- torch.autograd as the oracle ------------------------------------------------------------------

def _x86_grads(opname: str, inputs: list[np.ndarray], attrs: dict, r: np.ndarray,
               consts: dict[int, np.ndarray] | None = None) -> dict[str, np.ndarray]:
    """d sum(op(...)[0] * r) / d input_i on x86; ``consts`` are operands held constant."""
    m = Module(opname)
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    consts = consts or {}
    vals, wrt = [], []
    for i in range(len(inputs) + len(consts)):
        if i in consts:
            vals.append(b.const(consts[i], name=f"c{i}"))
            continue
        a = inputs[len(wrt)]
        v = g.add_param(f"x{i}", tensor("f32", list(a.shape)))
        vals.append(v)
        wrt.append(v)
    y = b.create(opname, vals, attrs).results[0]
    loss = b.op("reduce_sum", b.op("mul", y, b.const(r, name="r")), keepdims=0)
    grads = grad(m, loss, wrt)
    g.set_outputs([grads[w] for w in wrt], [f"d_{w.name}" for w in wrt])
    out = nnc.compile(m, target="x86").run({w.name: a for w, a in zip(wrt, inputs)})
    return {k[2:]: v for k, v in out.items()}


def _torch_grads(fn, inputs: list[np.ndarray], r: np.ndarray) -> list[np.ndarray]:
    torch = pytest.importorskip("torch")
    ts = [torch.tensor(a, requires_grad=True) for a in inputs]
    (fn(*ts) * torch.tensor(r)).sum().backward()
    return [t.grad.numpy() for t in ts]


def _close(got: dict[str, np.ndarray], want: list[np.ndarray], names: list[str]) -> None:
    for n, w in zip(names, want):
        np.testing.assert_allclose(got[n], w, rtol=1e-4, atol=1e-4, err_msg=n)


_rng = np.random.default_rng(7)


def _a(*shape: int) -> np.ndarray:
    return _rng.standard_normal(shape).astype(np.float32)


@pytest.mark.torch
@pytest.mark.parametrize("group,stride,dilation", [(1, 2, 1), (2, 1, 2), (6, 2, 1)])
def test_conv_gradients_match_torch(group: int, stride: int, dilation: int):
    torch = pytest.importorskip("torch")
    x, w, bias = _a(2, 6, 11, 10), _a(12, 6 // group, 3, 3), _a(12)
    attrs = {"group": group, "strides": [stride] * 2, "dilations": [dilation] * 2, "pads": [1, 0, 2, 1]}

    def fn(x, w, bias):  # torch pads symmetrically: pad explicitly for [top 1, left 0, bottom 2, right 1]
        return torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 1, 1, 2)), w, bias, stride=stride,
                                          dilation=dilation, groups=group)
    r = _a(*fn(*(torch.tensor(t) for t in (x, w, bias))).shape)
    _close(_x86_grads("conv", [x, w, bias], attrs, r), _torch_grads(fn, [x, w, bias], r), ["x0", "x1", "x2"])


@pytest.mark.torch
def test_conv_transpose_gradients_match_torch():
    torch = pytest.importorskip("torch")
    x, w, bias = _a(2, 4, 5, 6), _a(4, 3, 3, 2), _a(6)
    attrs = {"group": 2, "strides": [2, 3], "pads": [1, 0, 1, 0], "output_padding": [1, 2]}

    def fn(x, w, bias):
        return torch.nn.functional.conv_transpose2d(x, w, bias, stride=(2, 3), padding=(1, 0), output_padding=(1, 2),
                                                    groups=2)
    r = _a(*fn(*(torch.tensor(t) for t in (x, w, bias))).shape)
    _close(_x86_grads("conv_transpose", [x, w, bias], attrs, r), _torch_grads(fn, [x, w, bias], r),
           ["x0", "x1", "x2"])


@pytest.mark.torch
@pytest.mark.parametrize("with_indices", [0, 1])
def test_max_pool_ties_send_the_gradient_to_the_first_max_like_torch(with_indices: int):
    torch = pytest.importorskip("torch")
    x = _rng.integers(0, 3, size=(2, 3, 7, 8)).astype(np.float32)  # many ties in every window
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "with_indices": with_indices}

    def fn(x):
        return torch.nn.functional.max_pool2d(x, 3, stride=2, padding=1)
    r = _a(2, 3, 4, 4)
    _close(_x86_grads("max_pool", [x], attrs, r), _torch_grads(fn, [x], r), ["x0"])


@pytest.mark.torch
def test_avg_pool_ceil_mode_matches_torch():
    torch = pytest.importorskip("torch")
    x = _a(2, 3, 8, 7)
    attrs = {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1], "ceil_mode": 1, "count_include_pad": 1}

    def fn(x):
        return torch.nn.functional.avg_pool2d(x, 3, stride=2, padding=1, ceil_mode=True, count_include_pad=True)
    r = _a(*fn(torch.tensor(x)).shape)
    _close(_x86_grads("avg_pool", [x], attrs, r), _torch_grads(fn, [x], r), ["x0"])


@pytest.mark.torch
def test_inference_batch_norm_gradients_of_every_operand_match_torch():
    pytest.importorskip("torch")
    x, s, bias, mean, var = _a(3, 4, 5, 5), _a(4), _a(4), _a(4), np.abs(_a(4)) + 0.5

    def fn(x, s, bias, mean, var):  # eval-mode batch norm written out: torch differentiates the statistics too
        sh = (1, -1, 1, 1)
        return (x - mean.reshape(sh)) / (var.reshape(sh) + 1e-5).sqrt() * s.reshape(sh) + bias.reshape(sh)
    r = _a(3, 4, 5, 5)
    inputs = [x, s, bias, mean, var]
    _close(_x86_grads("batch_norm", inputs, {"epsilon": 1e-5}, r), _torch_grads(fn, inputs, r),
           [f"x{i}" for i in range(5)])


@pytest.mark.torch
def test_layer_norm_and_group_norm_match_torch():
    torch = pytest.importorskip("torch")
    x, s, bias = _a(3, 5, 16), _a(16), _a(16)
    r = _a(3, 5, 16)
    _close(_x86_grads("layer_norm", [x, s, bias], {"axis": -1}, r),
           _torch_grads(lambda x, s, b: torch.nn.functional.layer_norm(x, (16,), s, b), [x, s, bias], r),
           ["x0", "x1", "x2"])
    x, s, bias = _a(2, 6, 4, 3), _a(6), _a(6)
    r = _a(2, 6, 4, 3)
    _close(_x86_grads("group_norm", [x, s, bias], {"num_groups": 3}, r),
           _torch_grads(lambda x, s, b: torch.nn.functional.group_norm(x, 3, s, b), [x, s, bias], r),
           ["x0", "x1", "x2"])


@pytest.mark.torch
@pytest.mark.parametrize("form", ["float_mask", "causal", "gqa_bool_mask"])
def test_attention_gradients_match_torch_sdpa(form: str):
    torch = pytest.importorskip("torch")
    sdpa = torch.nn.functional.scaled_dot_product_attention
    hkv = 2 if form == "gqa_bool_mask" else 4
    q, k, v = _a(2, 4, 6, 8), _a(2, hkv, 6, 8), _a(2, hkv, 6, 8)
    r = _a(2, 4, 6, 8)
    if form == "float_mask":
        mask = _a(6, 6)
        got = _x86_grads("attention", [q, k, v, mask], {}, r)
        want = _torch_grads(lambda q, k, v, m: sdpa(q, k, v, attn_mask=m), [q, k, v, mask], r)
        _close(got, want, ["x0", "x1", "x2", "x3"])
    elif form == "causal":
        got = _x86_grads("attention", [q, k, v], {"is_causal": 1}, r)
        _close(got, _torch_grads(lambda q, k, v: sdpa(q, k, v, is_causal=True), [q, k, v], r), ["x0", "x1", "x2"])
    else:
        mask = np.tril(np.ones((6, 6), dtype=bool), 1)
        got = _x86_grads("attention", [q, k, v], {}, r, consts={3: mask})
        want = _torch_grads(lambda q, k, v: sdpa(q, k, v, attn_mask=torch.tensor(mask), enable_gqa=True), [q, k, v], r)
        _close(got, want, ["x0", "x1", "x2"])


def test_dropout_gradient_is_the_masked_scaled_cotangent():
    """dx = g * mask / (1 - ratio) with the op's own mask (interpreter: x86 refuses training dropout,
    whose numpy random stream it cannot reproduce)."""
    m, _ = build_op_module("dropout", [np.ones((4, 6))], {"ratio": 0.25, "seed": 5.0})
    x = _rng.standard_normal((4, 6))
    out = interpret(m, {"x0": x})
    # the loss is sum(y * r) with y = x * mask / 0.75, so d loss / dx = r * mask / 0.75 = r * y / x
    y_over_x = np.asarray(interpret(_forward_dropout(), {"x": x})["y"]) / x
    mask = np.isclose(y_over_x, 1 / 0.75)
    assert mask.any() and not mask.all()
    r = np.random.default_rng(0).standard_normal((4, 6))  # build_op_module's weights (seed 0)
    np.testing.assert_allclose(out["d_x0"], r * mask / 0.75, rtol=1e-12)


def _forward_dropout() -> Module:
    m = Module("d")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", tensor("f64", [4, 6]))
    g.set_outputs([b.op("dropout", x, ratio=0.25, seed=5.0)[0]], ["y"])
    return m

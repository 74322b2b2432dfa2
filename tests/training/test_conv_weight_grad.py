"""``conv_weight_grad`` (the weight gradient of an ungrouped 1-D/2-D conv) against torch.autograd:
the op's reference, the x86 pixel GEMM (f32; rows of channels, or of kernel taps with fewer than 8
input channels; output channels that fill no whole panel) and its loop nest (f64), and the whole
conv gradient (dx and dw) of ``grad`` compiled for x86 at strides 1 and 2, 1x1/3x3/7x7 kernels."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, Graph, Module, get_opdef, interpret, tensor
from nnc.passes.training.autodiff import grad

pytestmark = pytest.mark.torch
torch = pytest.importorskip("torch")

# (batch, in channels, out channels, kernel, stride, pads [top, left, bottom, right], height, width)
SHAPES = [(2, 16, 40, 3, 1, [1, 1, 1, 1], 9, 10),  # 16 channels: rows of channels, 40 = a partial panel
          (2, 20, 70, 3, 2, [1, 1, 1, 1], 11, 9),  # 20 = a partial tile of channels
          (2, 3, 64, 7, 2, [3, 3, 3, 3], 20, 19),  # the RGB stem: rows of taps
          (2, 16, 32, 1, 2, [0, 0, 0, 0], 9, 8),  # a strided 1x1 downsample
          (2, 8, 12, 3, 1, [0, 1, 2, 1], 7, 6),  # asymmetric pads
          (2, 8, 96, 3, 1, [1, 1, 1, 1], 64, 64)]  # 8192 pixels: B too big to keep whole, packed per slice


def _torch_conv_grads(x, w, gy, stride, pads, dilation=1):
    xt = torch.tensor(x, requires_grad=True)
    wt = torch.tensor(w, requires_grad=True)
    xp = torch.nn.functional.pad(xt, (pads[1], pads[3], pads[0], pads[2]))
    y = torch.nn.functional.conv2d(xp, wt, stride=stride, dilation=dilation)
    y.backward(torch.tensor(gy))
    return xt.grad.numpy(), wt.grad.numpy()


def _out(h, k, s, p0, p1, d=1):
    return (h + p0 + p1 - (k - 1) * d - 1) // s + 1


def _data(shape, dtype=np.float32, dilation=1):
    n, c, m, k, s, p, h, w = shape
    rng = np.random.default_rng(3)
    oh, ow = _out(h, k, s, p[0], p[2], dilation), _out(w, k, s, p[1], p[3], dilation)
    return (rng.standard_normal((n, c, h, w)).astype(dtype), rng.standard_normal((m, c, k, k)).astype(dtype),
            rng.standard_normal((n, m, oh, ow)).astype(dtype))


def _wgrad_module(x, gy, k, s, p, dtype, dilation=1):
    m = Module("wgrad")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    xv, gv = g.add_param("x", tensor(dtype, list(x.shape))), g.add_param("dy", tensor(dtype, list(gy.shape)))
    r = b.op("conv_weight_grad", xv, gv, kernel_shape=[k, k], strides=[s, s], pads=p, dilations=[dilation] * 2,
             group=1)
    g.set_outputs([r], ["dw"])
    return m


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: f"c{s[1]}m{s[2]}k{s[3]}s{s[4]}")
def test_weight_grad_op_matches_torch_on_x86(shape):
    x, w, gy = _data(shape)
    _, want = _torch_conv_grads(x, w, gy, shape[4], shape[5])
    m = _wgrad_module(x, gy, shape[3], shape[4], shape[5], "f32")
    feeds = {"x": x, "dy": gy}
    # each weight is an f32 sum of n = N*OH*OW unit-variance products, summed in another order than
    # torch's: the rounding differences grow like n ulps (220 products: within 1e-4; 8192: 2e-3)
    atol = max(1e-4, 2 * float(np.finfo(np.float32).eps) * gy.shape[0] * gy.shape[2] * gy.shape[3])
    np.testing.assert_allclose(interpret(m, feeds)["dw"], want, rtol=1e-4, atol=atol)
    for threads in (1, 2):
        got = nnc.compile(m, target="x86", threads=threads, cache=False).run(feeds)["dw"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=atol, err_msg=f"{threads} thread(s)")


def test_weight_grad_loops_f64_with_dilation():
    shape = (2, 5, 6, 3, 2, [2, 1, 1, 2], 10, 9)
    x, w, gy = _data(shape, np.float64, dilation=2)
    _, want = _torch_conv_grads(x, w, gy, 2, shape[5], dilation=2)
    m = _wgrad_module(x, gy, 3, 2, shape[5], "f64", dilation=2)
    got = nnc.compile(m, target="x86", cache=False).run({"x": x, "dy": gy})["dw"]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_weight_grad_op_infers_and_checks_the_geometry():
    opdef = get_opdef("conv_weight_grad")
    assert opdef.vjp is not None  # declared not differentiable, not missing
    m = Module("bad")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x, gy = g.add_param("x", tensor("f32", [2, 3, 8, 8])), g.add_param("dy", tensor("f32", [2, 4, 5, 5]))
    with pytest.raises(Exception, match="does not match"):
        b.op("conv_weight_grad", x, gy, kernel_shape=[3, 3], strides=[1, 1], pads=[0, 0, 0, 0], group=1)


@pytest.mark.parametrize("shape", [SHAPES[1], SHAPES[2], SHAPES[3]], ids=["3x3s2", "7x7s2", "1x1s2"])
def test_conv_gradients_on_x86_match_torch(shape):
    x, w, gy = _data(shape)
    _, _, _, k, s, p, _, _ = shape
    want_dx, want_dw = _torch_conv_grads(x, w, gy, s, p)
    m = Module("conv")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    xv, wv = g.add_param("x", tensor("f32", list(x.shape))), g.add_param("w", tensor("f32", list(w.shape)))
    y = b.op("conv", xv, wv, strides=[s, s], pads=p)
    loss = b.op("reduce_sum", b.op("mul", y, b.const(gy, name="r")), keepdims=0)
    grads = grad(m, loss, [xv, wv])
    g.set_outputs([grads[xv], grads[wv]], ["dx", "dw"])
    assert any(op.opname == "conv_weight_grad" for op in g.ops)
    got = nnc.compile(m, target="x86", cache=False).run({"x": x, "w": w})
    np.testing.assert_allclose(got["dx"], want_dx, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(got["dw"], want_dw, rtol=1e-4, atol=1e-4)


def test_weight_grad_of_a_1d_conv_on_x86():
    rng = np.random.default_rng(5)
    x, w = rng.standard_normal((2, 12, 30)).astype(np.float32), rng.standard_normal((20, 12, 5)).astype(np.float32)
    xt, wt = torch.tensor(x), torch.tensor(w, requires_grad=True)
    y = torch.nn.functional.conv1d(xt, wt, stride=2, padding=2)
    gy = rng.standard_normal(tuple(y.shape)).astype(np.float32)
    y.backward(torch.tensor(gy))
    m = Module("wgrad1d")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    xv, gv = g.add_param("x", tensor("f32", list(x.shape))), g.add_param("dy", tensor("f32", list(gy.shape)))
    g.set_outputs([b.op("conv_weight_grad", xv, gv, kernel_shape=[5], strides=[2], pads=[2, 2], group=1)], ["dw"])
    got = nnc.compile(m, target="x86", cache=False).run({"x": x, "dy": gy})["dw"]
    np.testing.assert_allclose(got, wt.grad.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("k,s,pads,group", [(1, 2, [0, 0, 0, 0], 1), (3, 2, [1, 1, 1, 1], 2), (5, 3, [2, 0, 1, 3], 1),
                                            (2, 2, [4, 1, 0, 2], 1)])
def test_strided_input_gradient_by_phases_matches_torch(k, s, pads, group):
    """dx of a strided conv as one stride-1 conv per phase (interpreter, f64: exact up to rounding);
    odd sizes, a kernel smaller than the stride (phases no tap reaches) and pads wider than it."""
    rng = np.random.default_rng(11)
    x, w = rng.standard_normal((2, 4, 9, 8)), rng.standard_normal((6, 4 // group, k, k))
    xt = torch.tensor(x, requires_grad=True)
    y = torch.nn.functional.conv2d(torch.nn.functional.pad(xt, (pads[1], pads[3], pads[0], pads[2])),
                                   torch.tensor(w), stride=s, groups=group)
    r = rng.standard_normal(tuple(y.shape))
    (y * torch.tensor(r)).sum().backward()
    m = Module("conv")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    xv, wv = g.add_param("x", tensor("f64", list(x.shape))), g.add_param("w", tensor("f64", list(w.shape)))
    yv = b.op("conv", xv, wv, strides=[s, s], pads=pads, group=group)
    grads = grad(m, b.op("reduce_sum", b.op("mul", yv, b.const(r, name="r")), keepdims=0), [xv])
    g.set_outputs([grads[xv]], ["dx"])
    assert not any(op.opname == "pad" for op in g.ops)  # no zeros stuffed into the cotangent
    np.testing.assert_allclose(interpret(m, {"x": x, "w": w})["dx"], xt.grad.numpy(), rtol=1e-12, atol=1e-12)

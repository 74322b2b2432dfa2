"""Converters for the ``ai.onnx.preview.training`` ops: Momentum, Adagrad, Adam and Gradient.

The optimizer ops update n tensors at once (inputs R, T, then X1..Xn, G1..Gn and the state tensors;
outputs the new X's then the new states). Momentum is nnc's ``sgd_update`` per tensor (ONNX's
first step, T == 0, takes the gradient unscaled: ``first_step=0``). Adagrad and Adam are rare and
their formulas differ from torch's (Adam adds epsilon after the square root without bias-correcting
it, and corrects the learning rate instead), so they are decomposed into elementwise ops following
the ONNX definition. Gradient differentiates a value of the graph with nnc's reverse-mode autodiff.
"""

from __future__ import annotations

import numpy as np

from nnc.ir import DType, Value

from ..context import ConvertContext, Node
from ..registry import converter

DOMAIN = "ai.onnx.preview.training"


def _groups(node: Node, k: int) -> list[list[Value]]:
    """Split inputs 2.. into k groups of n tensors (X's, G's, states...)."""
    rest = node.inputs[2:]
    if len(rest) % k:
        raise node.unsupported(f"expected {k} groups of tensors after R and T, got {len(rest)} inputs")
    n = len(rest) // k
    return [list(rest[i * n:(i + 1) * n]) for i in range(k)]


@converter("Momentum", domain=DOMAIN)
def momentum(ctx: ConvertContext, node: Node):
    r, t = node.inputs[:2]
    xs, gs, vs = _groups(node, 3)
    alpha, beta = node.attr("alpha"), node.attr("beta")
    mode = node.attr("mode")
    if mode not in ("standard", "nesterov"):
        raise node.unsupported(f"mode {mode!r} (standard or nesterov)")
    new_x, new_v = [], []
    for x, g, v in zip(xs, gs, vs):
        xo, vo = ctx.op("sgd_update", x, g, r, v, t, momentum=alpha, dampening=1 - beta,
                        nesterov=int(mode == "nesterov"), weight_decay=node.attr("norm_coefficient"), first_step=0)
        new_x.append(xo)
        new_v.append(vo)
    return new_x + new_v


def _s(ctx: ConvertContext, v: float, dt: DType) -> Value:
    return ctx.scalar(v, dt)


@converter("Adagrad", domain=DOMAIN)
def adagrad(ctx: ConvertContext, node: Node):
    r, t = node.inputs[:2]
    xs, gs, hs = _groups(node, 3)
    decay, eps, nc = node.attr("decay_factor", 0.0), node.attr("epsilon", 0.0), node.attr("norm_coefficient", 0.0)
    new_x, new_h = [], []
    for x, g, h in zip(xs, gs, hs):
        dt = x.dtype
        tf = ctx.cast(t, dt)
        r_ = ctx.op("div", ctx.cast(r, dt), ctx.op("add", _s(ctx, 1, dt), ctx.op("mul", tf, _s(ctx, decay, dt))))
        g_reg = ctx.op("add", ctx.op("mul", _s(ctx, nc, dt), x), g)
        h_new = ctx.op("add", h, ctx.op("mul", g_reg, g_reg))
        denom = ctx.op("add", ctx.op("sqrt", h_new), _s(ctx, eps, dt))
        new_x.append(ctx.op("sub", x, ctx.op("div", ctx.op("mul", r_, g_reg), denom)))
        new_h.append(h_new)
    return new_x + new_h


@converter("Adam", domain=DOMAIN)
def adam(ctx: ConvertContext, node: Node):
    r, t = node.inputs[:2]
    xs, gs, vs, hs = _groups(node, 4)
    alpha, beta = node.attr("alpha", 0.9), node.attr("beta", 0.999)
    eps, nc = node.attr("epsilon", 0.0), node.attr("norm_coefficient", 0.0)
    post = node.attr("norm_coefficient_post", 0.0)
    new_x, new_v, new_h = [], [], []
    for x, g, v, h in zip(xs, gs, vs, hs):
        dt = x.dtype
        tf = ctx.cast(t, dt)
        rf = ctx.cast(r, dt)
        g_reg = ctx.op("add", ctx.op("mul", _s(ctx, nc, dt), x), g)
        v_new = ctx.op("add", ctx.op("mul", _s(ctx, alpha, dt), v), ctx.op("mul", _s(ctx, 1 - alpha, dt), g_reg))
        h_new = ctx.op("add", ctx.op("mul", _s(ctx, beta, dt), h),
                       ctx.op("mul", _s(ctx, 1 - beta, dt), ctx.op("mul", g_reg, g_reg)))
        h_sqrt = ctx.op("add", ctx.op("sqrt", h_new), _s(ctx, eps, dt))

        bc2 = ctx.op("sub", _s(ctx, 1, dt), ctx.op("pow", _s(ctx, beta, dt), tf))
        bc1 = ctx.op("sub", _s(ctx, 1, dt), ctx.op("pow", _s(ctx, alpha, dt), tf))
        adjusted = ctx.op("div", ctx.op("mul", rf, ctx.op("sqrt", bc2)), bc1)
        r_adj = ctx.op("where", ctx.op("greater", tf, _s(ctx, 0, dt)), adjusted, rf)
        x_new = ctx.op("sub", x, ctx.op("mul", r_adj, ctx.op("div", v_new, h_sqrt)))
        if post:
            x_new = ctx.op("mul", _s(ctx, 1 - post, dt), x_new)
        new_x.append(x_new)
        new_v.append(v_new)
        new_h.append(h_new)
    return new_x + new_v + new_h


@converter("Gradient", domain=DOMAIN)
def gradient(ctx: ConvertContext, node: Node):
    """d y / d x for each x in ``xs``; y must be a scalar (or its elements are summed, the
    gradient of sum(y))."""
    from nnc.ir.grads.engine import grad

    xs, y_name = list(node.attr("xs")), node.attr("y")
    named = {v.name: v for v in ctx.b.graph.values()}
    if y_name not in named:
        raise node.unsupported(f"y {y_name!r} is not a value computed before this node")
    y = named[y_name]
    wrt = []
    for i, x in enumerate(xs):
        v = node.input(i) if i < len(node.inputs) and node.input(i) is not None else named.get(x)
        if v is None:
            raise node.unsupported(f"xs[{i}] {x!r} is not a value of the graph")
        wrt.append(v)
    seed = None
    if y.type.numel != 1:
        seed = ctx.const(np.ones(y.type.shape, y.dtype.numpy))
    grads = grad(ctx.module, y, wrt, graph=ctx.b.graph, seed=seed)
    return [grads[w] for w in wrt]

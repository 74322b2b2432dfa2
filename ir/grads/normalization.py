"""Gradient rules: ``softmax``, ``log_softmax``, ``batch_norm`` (inference form), ``layer_norm``,
``rms_norm``, ``group_norm``, ``lrn`` and ``dropout``.

Normalizations use the closed forms (for x_hat = (x - mean) * inv_std over n elements and
gh = dy * scale: dx = inv_std * (gh - mean(gh) - x_hat * mean(gh * x_hat))), built from reductions
with keepdims and broadcasting elementwise ops, so they fuse into a few row passes. Statistics a
forward op returns (layer_norm's mean and inv_std_dev) are reused and also receive their own
cotangents. Inference batch norm is affine per channel, so every operand, the running mean and
variance included, gets a gradient. LRN's window sum over channels is a one-channel ``conv`` with
a ones kernel; its adjoint is the same conv with the pads swapped.
"""

from __future__ import annotations

import math

import numpy as np

from ..builder import Builder
from ..graph import Value
from . import register_vjp, shape_generic
from .util import broadcast_to, cast_to, is_static, reshape, scalar, scalar_attr, shape_of, sum_to


def _axis(op, x: Value) -> int:
    return op.attrs["axis"] % len(shape_of(x))


@register_vjp("softmax")
def _softmax(b, op, cts):
    g, y = cts[0], op.results[0]
    gy = b.op("mul", g, y)
    s = b.op("reduce_sum", gy, axes=[_axis(op, y)], keepdims=1)
    return [b.op("sub", gy, b.op("mul", y, s))]  # y * (g - sum(g*y))


@register_vjp("log_softmax")
def _log_softmax(b, op, cts):
    g, y = cts[0], op.results[0]
    s = b.op("reduce_sum", g, axes=[_axis(op, y)], keepdims=1)
    return [b.op("sub", g, b.op("mul", b.op("exp", y), s))]


def _normalized_dx(b: Builder, gh: Value, xhat: Value, inv: Value, axes: list[int]) -> Value:
    """inv * (gh - mean(gh) - xhat * mean(gh * xhat)) over ``axes`` (kept for broadcasting)."""
    a = b.op("reduce_mean", gh, axes=axes, keepdims=1)
    c = b.op("reduce_mean", b.op("mul", gh, xhat), axes=axes, keepdims=1)
    return b.op("mul", inv, b.op("sub", b.op("sub", gh, a), b.op("mul", xhat, c)))


def _add(b: Builder, acc: Value | None, v: Value) -> Value:
    return v if acc is None else b.op("add", acc, v)


@register_vjp("layer_norm")
def _layer_norm(b, op, cts):
    gy, gm, gi = cts
    x, scale = op.operands[0], op.operands[1]
    xs = shape_of(x)
    ax = _axis(op, x)
    axes = list(range(ax, len(xs)))
    n = math.prod(xs[ax:])
    mean, inv = cast_to(b, op.results[1], x), cast_to(b, op.results[2], x)
    xc = b.op("sub", x, mean)
    dx: Value | None = None
    dscale = dbias = None
    if gy is not None:
        xhat = b.op("mul", xc, inv)
        gh = broadcast_to(b, b.op("mul", gy, cast_to(b, scale, x)), xs, like=x)
        dx = _normalized_dx(b, gh, xhat, inv, axes)
        dscale = cast_to(b, sum_to(b, b.op("mul", gy, xhat), scale), scale)
        if len(op.operands) > 2:
            dbias = cast_to(b, sum_to(b, gy, op.operands[2]), op.operands[2])
    if gm is not None:  # mean = sum(x) / n
        dx = _add(b, dx, broadcast_to(b, b.op("mul", cast_to(b, gm, x), scalar(b, 1.0 / n, x)), xs, like=x))
    if gi is not None:  # inv = (var + eps)^-1/2, var = sum(xc^2) / n: d inv / dx = -inv^3 xc / n
        k = b.op("mul", b.op("mul", cast_to(b, gi, x), b.op("mul", inv, b.op("mul", inv, inv))),
                 scalar(b, -1.0 / n, x))
        dx = _add(b, dx, b.op("mul", xc, k))
    res = [dx, dscale]
    if len(op.operands) > 2:
        res.append(dbias)
    return res


@register_vjp("rms_norm")
def _rms_norm(b, op, cts):
    g = cts[0]
    x, scale = op.operands
    xs = shape_of(x)
    axes = list(range(_axis(op, x), len(xs)))
    ms = b.op("reduce_mean", b.op("mul", x, x), axes=axes, keepdims=1)
    r = b.op("reciprocal", b.op("sqrt", b.op("add", ms, scalar(b, op.attrs["epsilon"], x))))
    gh = broadcast_to(b, b.op("mul", g, cast_to(b, scale, x)), xs, like=x)
    # y = x r scale: dx = r gh - r^3 x mean(gh x)
    c = b.op("reduce_mean", b.op("mul", gh, x), axes=axes, keepdims=1)
    dx = b.op("mul", r, b.op("sub", gh, b.op("mul", x, b.op("mul", b.op("mul", r, r), c))))
    dscale = cast_to(b, sum_to(b, b.op("mul", g, b.op("mul", x, r)), scale), scale)
    return [dx, dscale]


def _per_channel(b: Builder, p: Value, x: Value) -> Value:
    return reshape(b, cast_to(b, p, x), [1, shape_of(x)[1]] + [1] * (len(shape_of(x)) - 2))


def _channel_sum(b: Builder, v: Value, like: Value) -> Value:
    """Sum over every axis but the channel axis 1 -> ``[C]`` in ``like``'s dtype."""
    rank = len(shape_of(v))
    return cast_to(b, b.op("reduce_sum", v, axes=[0] + list(range(2, rank)), keepdims=0), like)


@register_vjp("batch_norm")
def _batch_norm(b, op, cts):
    g = cts[0]
    x, scale, _bias, mean, var = op.operands
    C = shape_of(x)[1]
    # y = (x - mean) * inv * scale + bias, inv = (var + eps)^-1/2: affine per channel
    inv = b.op("reciprocal", b.op("sqrt", b.op("add", cast_to(b, var, x), scalar(b, op.attrs["epsilon"], x))))
    s = cast_to(b, scale, x)
    k = b.op("mul", s, inv)  # [C]
    dx = b.op("mul", g, reshape(b, k, [1, C] + [1] * (len(shape_of(x)) - 2)))
    sum_g = b.op("reduce_sum", g, axes=[0] + list(range(2, len(shape_of(x)))), keepdims=0)
    sum_gxc = _channel_sum(b, b.op("mul", g, b.op("sub", x, _per_channel(b, mean, x))), x)
    dscale = b.op("mul", sum_gxc, inv)
    dmean = b.op("neg", b.op("mul", sum_g, k))
    # d inv / d var = -inv^3 / 2
    dvar = b.op("mul", b.op("mul", sum_gxc, s), b.op("mul", b.op("mul", inv, b.op("mul", inv, inv)),
                                                        scalar(b, -0.5, x)))
    return [dx, cast_to(b, dscale, scale), cast_to(b, sum_g, _bias), cast_to(b, dmean, mean), cast_to(b, dvar, var)]


@register_vjp("group_norm")
def _group_norm(b, op, cts):
    g = cts[0]
    x, scale, _bias = op.operands
    xs = shape_of(x)
    G = op.attrs["num_groups"]
    grouped = [xs[0], G, math.prod(xs[1:]) // G]
    xr = reshape(b, x, grouped)
    mean = b.op("reduce_mean", xr, axes=[2], keepdims=1)
    xc = b.op("sub", xr, mean)
    var = b.op("reduce_mean", b.op("mul", xc, xc), axes=[2], keepdims=1)
    inv = b.op("reciprocal", b.op("sqrt", b.op("add", var, scalar(b, op.attrs["epsilon"], x))))
    xhat = b.op("mul", xc, inv)  # [N, G, L]
    gh = reshape(b, b.op("mul", g, _per_channel(b, scale, x)), grouped)
    dx = reshape(b, _normalized_dx(b, gh, xhat, inv, [2]), xs)
    dscale = _channel_sum(b, b.op("mul", g, reshape(b, xhat, xs)), scale)
    dbias = _channel_sum(b, g, _bias)
    return [dx, dscale, dbias]


def _channel_window(b: Builder, v: Value, before: int, after: int, size: int) -> Value:
    """Sum of ``v[N, C, ...]`` over channels [c - before, c + after] (clipped): a conv of the
    [N, 1, C, rest] view with a [size, 1] kernel of ones."""
    vs = shape_of(v)
    v4 = reshape(b, v, [vs[0], 1, vs[1], math.prod(vs[2:])])
    ones = b.const(np.ones((1, 1, size, 1), dtype=v.dtype.numpy), name="ones")
    return reshape(b, b.op("conv", v4, ones, pads=[before, 0, after, 0]), vs)


@register_vjp("lrn")
def _lrn(b, op, cts):
    g, x = cts[0], op.operands[0]
    size, alpha, beta, bias = op.attrs["size"], op.attrs["alpha"], op.attrs["beta"], op.attrs["bias"]
    lo, hi = (size - 1) // 2, (size - 1) - (size - 1) // 2
    # y = x * D^-beta, D = bias + alpha/size * S, S[c] = sum of x^2 over channels [c - lo, c + hi]
    S = _channel_window(b, b.op("mul", x, x), lo, hi, size)
    D = b.op("add", b.op("mul", S, scalar(b, alpha / size, x)), scalar(b, bias, x))
    Dp = b.op("pow", D, scalar(b, -beta, x))
    t = b.op("div", b.op("mul", b.op("mul", g, x), Dp), D)  # g x D^(-beta-1)
    # channel c' is in the window of c for c in [c' - hi, c' + lo]: the window with pads swapped
    back = _channel_window(b, t, hi, lo, size)
    dx = b.op("add", b.op("mul", g, Dp), b.op("mul", back, b.op("mul", x, scalar(b, -2.0 * beta * alpha / size, x))))
    return [dx]


# -- dropout ---------------------------------------------------------------------------------------

@register_vjp("dropout")
def _dropout(b, op, cts):
    """dx = g * mask / (1 - ratio) with the op's own mask; the identity when not training."""
    g, mask = cts[0], op.results[1]
    rest = [None] * (len(op.operands) - 1)
    if g is None:
        return [None] + rest
    ratio, ratio_rt = scalar_attr(b.module, op, "ratio", 1)
    training, training_rt = scalar_attr(b.module, op, "training", 2)
    if training is not None and not training:
        return [g] + rest
    if ratio_rt is None and (ratio if ratio is not None else 0.5) == 0:
        return [g] + rest
    kept = b.op("mul", g, b.op("cast", mask, to=g.dtype))
    if ratio_rt is not None:
        r = reshape(b, cast_to(b, ratio_rt, g), [])
        factor = b.op("reciprocal", b.op("sub", scalar(b, 1.0, g), r))
    else:
        factor = scalar(b, 1.0 / (1.0 - (ratio if ratio is not None else 0.5)), g)
    if training_rt is not None:  # run-time training flag: scale only when it is set
        on = reshape(b, b.op("cast", training_rt, to="bool"), [])
        factor = b.op("where", on, factor, scalar(b, 1.0, g))
    return [b.op("mul", kept, factor)] + rest


@register_vjp("keyed_dropout")
def _keyed_dropout(b, op, cts):
    """dx = g * mask / (1 - ratio), with the op's own mask; the key gets none."""
    g = cts[0]
    if g is None:
        return [None, None]
    factor = scalar(b, 1.0 / (1.0 - op.attrs["ratio"]), g)
    return [b.op("where", op.results[1], b.op("mul", g, factor), scalar(b, 0.0, g)), None]


def _normalized_static(op) -> str | None:
    """layer/RMS norm: the normalized axes (from ``axis`` on) must be static (their count n)."""
    xs = shape_of(op.operands[0])
    if not is_static(xs[op.attrs["axis"] % len(xs):]):
        return f"the normalized axes of {op.operands[0].name} ({op.operands[0].type}) must be static"
    return None


def _channels_static(op) -> str | None:
    """batch norm: only the batch dim may be symbolic."""
    xs = shape_of(op.operands[0])
    if not is_static(xs[1:]) or not all(v.type.is_static for v in op.operands[1:]):
        return f"only the batch dim may be symbolic ({op.operands[0].name}: {op.operands[0].type})"
    return None


shape_generic("softmax", "log_softmax", "keyed_dropout")
shape_generic("layer_norm", "rms_norm", check=_normalized_static)
shape_generic("batch_norm", "batch_norm_train", check=_channels_static)

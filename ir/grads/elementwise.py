"""Gradient rules: elementwise ops (arithmetic, math, activations, where, clip, cast).

Binary ops broadcast, so each operand's cotangent is summed back to the operand's shape
(``sum_to``). Derivatives at kinks follow PyTorch: relu'(0) = 0, |x|'(0) = 0, clip passes the
gradient on the closed interval, max/min send it to the first operand on ties.
"""

from __future__ import annotations

import math

from ..builder import Builder
from ..graph import Op, Value
from ..registry import _REGISTRY
from . import not_differentiable, register_vjp, shape_generic
from .util import cast_to, scalar, sum_to

not_differentiable("sign", "floor", "ceil", "round", "isinf", "isnan", "mod")


def _unary(fn):
    """Register ``fn(b, x, y, g) -> dx`` (x the operand, y the result, g the cotangent)."""
    def rule(b: Builder, op: Op, cts: list[Value | None]) -> list[Value | None]:
        return [fn(b, op, op.operands[0], op.results[0], cts[0])] + [None] * (len(op.operands) - 1)
    return rule


def _ew(name: str):
    def deco(fn):
        register_vjp(name)(_unary(fn))
        return fn
    return deco


def _mul(b: Builder, *xs: Value) -> Value:
    out = xs[0]
    for x in xs[1:]:
        out = b.op("mul", out, x)
    return out


# -- binary arithmetic -----------------------------------------------------------------------
@register_vjp("add")
def _add(b, op, cts):
    g = cts[0]
    return [sum_to(b, g, op.operands[0]), sum_to(b, g, op.operands[1])]


@register_vjp("sub")
def _sub(b, op, cts):
    g = cts[0]
    return [sum_to(b, g, op.operands[0]), sum_to(b, b.op("neg", g), op.operands[1])]


@register_vjp("mul")
def _mul_rule(b, op, cts):
    g, (x, y) = cts[0], op.operands
    return [sum_to(b, b.op("mul", g, y), x), sum_to(b, b.op("mul", g, x), y)]


@register_vjp("div")
def _div(b, op, cts):
    g, (x, y), out = cts[0], op.operands, op.results[0]
    gx = b.op("div", g, y)
    gy = b.op("neg", b.op("mul", gx, out))  # d(x/y)/dy = -x/y^2 = -(x/y)/y
    return [sum_to(b, gx, x), sum_to(b, gy, y)]


@register_vjp("pow")
def _pow(b, op, cts):
    g, (x, y), out = cts[0], op.operands, op.results[0]
    # d/dx = y * x^(y-1); d/dy = x^y * log(x) (only where x > 0: zero elsewhere, as torch does)
    gx = _mul(b, g, y, b.op("pow", x, b.op("sub", y, scalar(b, 1.0, y))))
    positive = b.op("greater", x, scalar(b, 0.0, x))
    safe = b.op("where", positive, x, scalar(b, 1.0, x))
    gy = b.op("where", positive, _mul(b, g, out, b.op("log", safe)), scalar(b, 0.0, x))
    return [sum_to(b, gx, x), sum_to(b, gy, y)]


def _select(b: Builder, op: Op, cts, first_wins) -> list[Value | None]:
    g, (x, y) = cts[0], op.operands
    mask = b.op(first_wins, x, y)
    zero = scalar(b, 0.0, g)
    return [sum_to(b, b.op("where", mask, g, zero), x), sum_to(b, b.op("where", mask, zero, g), y)]


@register_vjp("max")
def _max(b, op, cts):
    return _select(b, op, cts, "greater_equal")


@register_vjp("min")
def _min(b, op, cts):
    return _select(b, op, cts, "less_equal")


@register_vjp("where")
def _where(b, op, cts):
    g, (c, x, y) = cts[0], op.operands
    zero = scalar(b, 0.0, g)
    return [None, sum_to(b, b.op("where", c, g, zero), x), sum_to(b, b.op("where", c, zero, g), y)]


@register_vjp("clip")
def _clip(b, op, cts):
    g, x = cts[0], op.operands[0]
    lo, hi = op.attrs.get("min"), op.attrs.get("max")
    inside = None
    for bound, cmp in ((lo, "greater_equal"), (hi, "less_equal")):
        if bound is None:
            continue
        m = b.op(cmp, x, scalar(b, bound, x))
        inside = m if inside is None else b.op("and", inside, m)
    gx = g if inside is None else b.op("where", inside, g, scalar(b, 0.0, g))
    return [gx] + [None] * (len(op.operands) - 1)


@register_vjp("cast")
def _cast(b, op, cts):
    x = op.operands[0]
    if not x.dtype.is_float or not op.results[0].dtype.is_float:
        return [None]
    return [cast_to(b, cts[0], x)]


@register_vjp("identity")
def _identity(b, op, cts):
    return [cts[0]]


# -- unary math ------------------------------------------------------------------------------
@_ew("neg")
def _neg(b, op, x, y, g):
    return b.op("neg", g)


@_ew("exp")
def _exp(b, op, x, y, g):
    return b.op("mul", g, y)


@_ew("log")
def _log(b, op, x, y, g):
    return b.op("div", g, x)


@_ew("sqrt")
def _sqrt(b, op, x, y, g):
    return b.op("div", g, b.op("mul", y, scalar(b, 2.0, y)))


@_ew("reciprocal")
def _reciprocal(b, op, x, y, g):
    return b.op("neg", _mul(b, g, y, y))


@_ew("abs")
def _abs(b, op, x, y, g):
    return b.op("mul", g, b.op("sign", x))


@_ew("tanh")
def _tanh(b, op, x, y, g):
    return b.op("mul", g, b.op("sub", scalar(b, 1.0, y), b.op("mul", y, y)))


@_ew("sigmoid")
def _sigmoid(b, op, x, y, g):
    return _mul(b, g, y, b.op("sub", scalar(b, 1.0, y), y))


@_ew("relu")
def _relu(b, op, x, y, g):
    # from the result, as torch's threshold_backward: the input can then be freed after the forward
    return b.op("where", b.op("greater", y, scalar(b, 0.0, y)), g, scalar(b, 0.0, g))


@_ew("leaky_relu")
def _leaky_relu(b, op, x, y, g):
    alpha = op.attrs["alpha"]
    return b.op("where", b.op("greater_equal", x, scalar(b, 0.0, x)), g, b.op("mul", g, scalar(b, alpha, g)))


@_ew("elu")
def _elu(b, op, x, y, g):
    alpha = op.attrs["alpha"]
    neg = b.op("mul", g, b.op("add", y, scalar(b, alpha, y)))  # alpha*exp(x) = y + alpha for x <= 0
    return b.op("where", b.op("greater", x, scalar(b, 0.0, x)), g, neg)


@_ew("softplus")
def _softplus(b, op, x, y, g):
    return b.op("mul", g, b.op("sigmoid", x))


@_ew("erf")
def _erf(b, op, x, y, g):
    d = b.op("exp", b.op("neg", b.op("mul", x, x)))
    return _mul(b, g, d, scalar(b, 2.0 / math.sqrt(math.pi), x))


@_ew("gelu")
def _gelu(b, op, x, y, g):
    if op.attrs["approximate"] == "tanh":
        # y = 0.5 x (1 + t), t = tanh(k (x + c x^3)); dy/dx = 0.5 (1 + t) + 0.5 x (1 - t^2) k (1 + 3 c x^2)
        k, c = math.sqrt(2 / math.pi), 0.044715
        x2 = b.op("mul", x, x)
        inner = _mul(b, b.op("add", x, _mul(b, x2, x, scalar(b, c, x))), scalar(b, k, x))
        t = b.op("tanh", inner)
        half = scalar(b, 0.5, x)
        left = b.op("mul", half, b.op("add", scalar(b, 1.0, x), t))
        dt = b.op("sub", scalar(b, 1.0, x), b.op("mul", t, t))
        dinner = _mul(b, b.op("add", scalar(b, 1.0, x), _mul(b, x2, scalar(b, 3 * c, x))), scalar(b, k, x))
        right = _mul(b, half, x, dt, dinner)
        return b.op("mul", g, b.op("add", left, right))
    # y = x Phi(x); dy/dx = Phi(x) + x phi(x)
    cdf = b.op("mul", scalar(b, 0.5, x),
               b.op("add", scalar(b, 1.0, x), b.op("erf", b.op("mul", x, scalar(b, 1 / math.sqrt(2), x)))))
    pdf = b.op("mul", b.op("exp", b.op("mul", b.op("mul", x, x), scalar(b, -0.5, x))),
               scalar(b, 1 / math.sqrt(2 * math.pi), x))
    return b.op("mul", g, b.op("add", cdf, b.op("mul", x, pdf)))


@_ew("hard_sigmoid")
def _hard_sigmoid(b, op, x, y, g):
    alpha, beta = op.attrs["alpha"], op.attrs["beta"]
    z = b.op("add", b.op("mul", x, scalar(b, alpha, x)), scalar(b, beta, x))
    inside = b.op("and", b.op("greater", z, scalar(b, 0.0, x)), b.op("less", z, scalar(b, 1.0, x)))
    return b.op("where", inside, b.op("mul", g, scalar(b, alpha, g)), scalar(b, 0.0, g))


@_ew("hard_swish")
def _hard_swish(b, op, x, y, g):
    # y = x * clip(x/6 + 1/2, 0, 1): 0 below -3, 1 above 3, x/3 + 1/2 between (torch's convention)
    mid = b.op("add", b.op("mul", x, scalar(b, 1 / 3, x)), scalar(b, 0.5, x))
    d = b.op("where", b.op("less", x, scalar(b, -3.0, x)), scalar(b, 0.0, x),
             b.op("where", b.op("greater", x, scalar(b, 3.0, x)), scalar(b, 1.0, x), mid))
    return b.op("mul", g, d)


@_ew("sin")
def _sin(b, op, x, y, g):
    return b.op("mul", g, b.op("cos", x))


@_ew("cos")
def _cos(b, op, x, y, g):
    return b.op("neg", b.op("mul", g, b.op("sin", x)))


@_ew("tan")
def _tan(b, op, x, y, g):
    return b.op("mul", g, b.op("add", scalar(b, 1.0, y), b.op("mul", y, y)))


@_ew("sinh")
def _sinh(b, op, x, y, g):
    return b.op("mul", g, b.op("cosh", x))


@_ew("cosh")
def _cosh(b, op, x, y, g):
    return b.op("mul", g, b.op("sinh", x))


def _rsqrt_of(b: Builder, x: Value, sign: float) -> Value:
    """1 / sqrt(1 + sign * x^2)."""
    return b.op("reciprocal", b.op("sqrt", b.op("add", scalar(b, 1.0, x),
                                                b.op("mul", scalar(b, sign, x), b.op("mul", x, x)))))


@_ew("asin")
def _asin(b, op, x, y, g):
    return b.op("mul", g, _rsqrt_of(b, x, -1.0))


@_ew("acos")
def _acos(b, op, x, y, g):
    return b.op("neg", b.op("mul", g, _rsqrt_of(b, x, -1.0)))


@_ew("atan")
def _atan(b, op, x, y, g):
    return b.op("div", g, b.op("add", scalar(b, 1.0, x), b.op("mul", x, x)))


@_ew("asinh")
def _asinh(b, op, x, y, g):
    return b.op("mul", g, _rsqrt_of(b, x, 1.0))


@_ew("acosh")
def _acosh(b, op, x, y, g):
    # 1 / sqrt(x^2 - 1)
    d = b.op("sqrt", b.op("sub", b.op("mul", x, x), scalar(b, 1.0, x)))
    return b.op("div", g, d)


@_ew("atanh")
def _atanh(b, op, x, y, g):
    return b.op("div", g, b.op("sub", scalar(b, 1.0, x), b.op("mul", x, x)))


# every rule of this file works on any shape: cotangents are elementwise, sum_to un-broadcasts
shape_generic(*sorted(n for n, d in _REGISTRY.items() if getattr(d.vjp, "__module__", None) == __name__))

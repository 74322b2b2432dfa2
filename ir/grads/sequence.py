"""Gradient rules: ``causal_conv_with_state``.

The op is a depthwise 1-D convolution of the state-padded input ``p = concat(past, x)`` (past =
zeros when absent), an optional SiLU, and the carried state ``p[..., L:]``. The cotangent of ``p``
is a depthwise ``conv_transpose`` of the pre-activation cotangent plus the state's cotangent at the
tail; the weight's is, per tap j, the sum over batch and time of that cotangent times ``p`` shifted
by j (the kernels are short: a few taps). The pre-activation is recomputed with a depthwise
``conv`` when SiLU needs it. The forward computes SiLU in float32 whatever the dtype; the rule
differentiates the exact SiLU.

The recurrent ops (rnn, gru, lstm) and linear_attention are in ``sequence_rnn.py``.
"""

from __future__ import annotations

from . import register_vjp
from .indexing import zeros
from .util import reshape, scalar, shape_of


def _given(op, i):
    """Operand i unless it is missing or empty (an empty operand stands for an absent one)."""
    if i >= len(op.operands):
        return None
    v = op.operands[i]
    return None if 0 in shape_of(v) else v


@register_vjp("causal_conv_with_state")
def _causal_conv(b, op, cts):
    x, w = op.operands[0], op.operands[1]
    bias, past = _given(op, 2), _given(op, 3)
    gy, gs = cts
    bsz, c, length = shape_of(x)
    k = shape_of(w)[2]
    if past is not None:
        padded = b.op("concat", past, x, axis=2)
    elif k > 1:
        padded = b.op("concat", zeros(b, (bsz, c, k - 1), x), x, axis=2)
    else:
        padded = x
    if gy is None:
        dacc = zeros(b, (bsz, c, length), x)
    elif op.attrs["activation"] == "none":
        dacc = gy
    else:  # silu'(a) = s(a) * (1 + a * (1 - s(a))), a the recomputed pre-activation
        acc = b.op("conv", padded, w, *([bias] if bias is not None else []), group=c)
        s = b.op("sigmoid", acc)
        one = scalar(b, 1.0, acc)
        d = b.op("mul", s, b.op("add", one, b.op("mul", acc, b.op("sub", one, s))))
        dacc = b.op("mul", gy, d)
    dp = b.op("conv_transpose", dacc, w, group=c)  # [B, C, L + K - 1]
    if gs is not None and k > 1:  # the state is the last K-1 padded inputs
        dp = b.op("add", dp, b.op("pad", gs, pads=[0, 0, length, 0, 0, 0], value=0.0))
    dx = dp if k == 1 else b.op("slice", dp, starts=[k - 1], ends=[k - 1 + length], axes=[2], steps=[1])
    taps = []
    for j in range(k):
        shifted = b.op("slice", padded, starts=[j], ends=[j + length], axes=[2], steps=[1])
        taps.append(b.op("reduce_sum", b.op("mul", dacc, shifted), axes=[0, 2], keepdims=1))  # [1, C, 1]
    dw = taps[0] if k == 1 else b.op("concat", *taps, axis=2)
    out = [dx, reshape(b, dw, (c, 1, k))]
    if len(op.operands) > 2:
        out.append(None if bias is None else reshape(b, b.op("reduce_sum", dacc, axes=[0, 2], keepdims=0), (c,)))
    if len(op.operands) > 3:
        out.append(None if past is None else
                   b.op("slice", dp, starts=[0], ends=[k - 1], axes=[2], steps=[1]))
    return out

"""Softmax and normalization ops: ``softmax``, ``log_softmax``, ``layer_norm``, ``rms_norm``,
``batch_norm`` (inference form), ``batch_norm_train`` (batch statistics and running-statistic
updates; its gradient is the ``batch_norm_train_grad`` op), ``group_norm`` (instance norm is group
norm with one group per channel) and ``lrn``.

These stay high-level because backends exploit them as single kernels (one pass over a row for
softmax/layer norm; batch norm folds into a preceding conv). Statistics are computed in
``stash_type`` (f32 by default) as ONNX specifies, then the result is cast back to the input dtype.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, DType
from ..errors import GradientError
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import check_dtype, norm_axis, require_rank
from ..types import TensorType

NORM = Trait.PURE


def _compute_dtype(x: np.ndarray) -> np.dtype:
    """f16/bf16 math happens in f32; f32 and f64 keep their precision."""
    return np.dtype(np.float64) if x.dtype == np.float64 else np.dtype(np.float32)


def _float_same(ctx: InferContext) -> list[TensorType]:
    t = ctx.types[0]
    check_dtype(ctx, 0, FLOAT_TYPES)
    if t.shape is not None:
        norm_axis(ctx.attrs["axis"], len(t.shape))
    return [t]


# -- softmax ---------------------------------------------------------------------------------------

def _softmax_dtype(x: np.ndarray) -> np.dtype:
    """f16 softmax runs in f16 like the ONNX reference (the official f16 attention data carries its
    rounding and f32 math misses it by 2 ulp); bf16, with 8 mantissa bits, runs in f32."""
    return np.dtype(np.float32) if x.dtype.name == "bfloat16" else x.dtype


def _softmax(x: np.ndarray, axis: int) -> np.ndarray:
    v = x.astype(_softmax_dtype(x))
    m = np.max(v, axis=axis, keepdims=True)
    e = np.exp(v - np.where(np.isfinite(m), m, 0))
    return (e / np.sum(e, axis=axis, keepdims=True)).astype(x.dtype)


def _log_softmax(x: np.ndarray, axis: int) -> np.ndarray:
    v = x.astype(_softmax_dtype(x))
    m = np.max(v, axis=axis, keepdims=True)
    s = v - np.where(np.isfinite(m), m, 0)
    return (s - np.log(np.sum(np.exp(s), axis=axis, keepdims=True))).astype(x.dtype)


defop("softmax", operands=("x",), attrs={"axis": AttrSpec(AttrKind.INT, -1)}, infer=_float_same,
      reference=_softmax, traits=NORM, doc="exp(x) / sum(exp(x)) along ``axis``")
defop("log_softmax", operands=("x",), attrs={"axis": AttrSpec(AttrKind.INT, -1)}, infer=_float_same,
      reference=_log_softmax, traits=NORM, doc="x - log(sum(exp(x))) along ``axis``")


# -- layer norm / rms norm -------------------------------------------------------------------------

def _stat_shape(t: TensorType, axis: int) -> tuple | None:
    """Shape of per-row statistics: the leading dims, then 1 for every normalized axis."""
    if t.shape is None:
        return None
    ax = norm_axis(axis, len(t.shape))
    return tuple(t.shape[:ax]) + (1,) * (len(t.shape) - ax)


def _layer_norm_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.types[0]
    check_dtype(ctx, 0, FLOAT_TYPES)
    stash = ctx.attrs["stash_type"]
    if not stash.is_float:
        raise ctx.fail(f"stash_type must be a float type, got {stash}")
    stat = TensorType(stash, _stat_shape(t, ctx.attrs["axis"]))
    return [t, stat, stat]


def _layer_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray | None = None, *, axis: int,
                epsilon: float, stash_type: DType) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ax = axis % x.ndim
    axes = tuple(range(ax, x.ndim))
    v = x.astype(stash_type.numpy)
    mean = np.mean(v, axis=axes, keepdims=True)
    d = v - mean
    inv_std = 1 / np.sqrt(np.mean(d * d, axis=axes, keepdims=True) + np.asarray(epsilon, v.dtype))
    y = (d * inv_std).astype(x.dtype) * scale.astype(x.dtype)
    if bias is not None:
        y = y + bias.astype(x.dtype)
    stash = stash_type.numpy
    return y.astype(x.dtype), mean.astype(stash), inv_std.astype(stash)


_STASH = AttrSpec(AttrKind.DTYPE, DType.f32)
defop("layer_norm", operands=("x", "scale", "bias?"), results=("out", "mean", "inv_std_dev"),
      attrs={"axis": AttrSpec(AttrKind.INT, -1), "epsilon": AttrSpec(AttrKind.FLOAT, 1e-5),
             "stash_type": _STASH},
      infer=_layer_norm_infer, reference=_layer_norm, traits=NORM,
      doc="normalize over axes [axis, rank) to zero mean and unit variance, then * scale + bias; "
          "also gives the mean and 1/sqrt(var + epsilon) (in stash_type, shaped for broadcasting)")


def _rms_norm_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.types[0]
    check_dtype(ctx, 0, FLOAT_TYPES)
    if t.shape is not None:
        norm_axis(ctx.attrs["axis"], len(t.shape))
    return [t]


def _rms_norm(x: np.ndarray, scale: np.ndarray, *, axis: int, epsilon: float, stash_type: DType) -> np.ndarray:
    axes = tuple(range(axis % x.ndim, x.ndim))
    v = x.astype(stash_type.numpy)
    rms = np.sqrt(np.mean(v * v, axis=axes, keepdims=True) + np.asarray(epsilon, v.dtype))
    return ((v / rms).astype(x.dtype) * scale.astype(x.dtype)).astype(x.dtype)


defop("rms_norm", operands=("x", "scale"),
      attrs={"axis": AttrSpec(AttrKind.INT, -1), "epsilon": AttrSpec(AttrKind.FLOAT, 1e-5),
             "stash_type": _STASH},
      infer=_rms_norm_infer, reference=_rms_norm, traits=NORM,
      doc="x / sqrt(mean(x^2 over axes [axis, rank)) + epsilon) * scale")


# -- batch / group norm ----------------------------------------------------------------------------

def _channel_infer(n_params: int) -> Callable[[InferContext], list[TensorType]]:
    """Infer for ops normalizing x[N, C, ...] with per-channel [C] parameters."""
    def infer(ctx: InferContext) -> list[TensorType]:
        t = ctx.types[0]
        check_dtype(ctx, 0, FLOAT_TYPES)
        if t.shape is not None and len(t.shape) < 2:
            raise ctx.fail(f"input must have rank >= 2 (N, C, ...), got {t}")
        c = t.shape[1] if t.shape is not None else None
        for i in range(1, 1 + n_params):
            check_dtype(ctx, i, FLOAT_TYPES)
            s = require_rank(ctx, i, 1)
            if s is not None and isinstance(s[0], int) and isinstance(c, int) and s[0] != c:
                raise ctx.fail(f"operand {i} has {s[0]} entries for {c} channels")
        groups = ctx.attrs.get("num_groups")
        if groups is not None:
            if groups <= 0 or (isinstance(c, int) and c % groups):
                raise ctx.fail(f"num_groups = {groups} must divide the {c} channels")
        return [t]
    return infer


def _per_channel(p: np.ndarray, x: np.ndarray) -> np.ndarray:
    return p.reshape((1, -1) + (1,) * (x.ndim - 2))


def _batch_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, mean: np.ndarray, var: np.ndarray, *,
                epsilon: float) -> np.ndarray:
    ct = _compute_dtype(x)
    s, b, m, v = (_per_channel(p.astype(ct), x) for p in (scale, bias, mean, var))
    return ((x.astype(ct) - m) / np.sqrt(v + np.asarray(epsilon, ct)) * s + b).astype(x.dtype)


defop("batch_norm", operands=("x", "scale", "bias", "mean", "var"),
      attrs={"epsilon": AttrSpec(AttrKind.FLOAT, 1e-5)}, infer=_channel_infer(4), reference=_batch_norm,
      traits=NORM,
      doc="inference batch norm over channel axis 1: (x - mean) / sqrt(var + epsilon) * scale + bias")


def _group_norm(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, *, num_groups: int, epsilon: float,
                stash_type: DType) -> np.ndarray:
    per_group = math.prod(x.shape[1:]) // num_groups  # explicit: -1 is ambiguous for a batch of 0
    g = x.astype(stash_type.numpy).reshape((x.shape[0], num_groups, per_group))
    mean = np.mean(g, axis=2, keepdims=True)
    d = g - mean
    var = np.mean(d * d, axis=2, keepdims=True)
    y = (d / np.sqrt(var + np.asarray(epsilon, g.dtype))).reshape(x.shape).astype(x.dtype)
    return (y * _per_channel(scale.astype(x.dtype), x) + _per_channel(bias.astype(x.dtype), x)).astype(x.dtype)


defop("group_norm", operands=("x", "scale", "bias"),
      attrs={"num_groups": AttrSpec(AttrKind.INT), "epsilon": AttrSpec(AttrKind.FLOAT, 1e-5),
             "stash_type": _STASH},
      infer=_channel_infer(2), reference=_group_norm, traits=NORM,
      doc="split channels into ``num_groups`` groups, normalize each (sample, group) over its "
          "channels and spatial dims, then per-channel * scale + bias; num_groups = C is instance norm")


# -- local response normalization ------------------------------------------------------------------

def _lrn_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.types[0]
    check_dtype(ctx, 0, FLOAT_TYPES)
    if t.shape is not None and len(t.shape) < 3:
        raise ctx.fail(f"input must have rank >= 3 (N, C, spatial...), got {t}")
    if ctx.attrs["size"] <= 0:
        raise ctx.fail(f"size must be positive, got {ctx.attrs['size']}")
    return [t]


def _lrn(x: np.ndarray, *, size: int, alpha: float, beta: float, bias: float) -> np.ndarray:
    ct = _compute_dtype(x)
    sq = x.astype(ct) ** 2
    c = x.shape[1]
    lo, hi = (size - 1) // 2, (size - 1) - (size - 1) // 2  # channels before / after the centre
    # a windowed sum over channels as a difference of prefix sums
    pre = np.concatenate([np.zeros_like(sq[:, :1]), np.cumsum(sq, axis=1)], axis=1)
    idx = np.arange(c)
    start, stop = np.maximum(idx - lo, 0), np.minimum(idx + hi + 1, c)
    window = np.take(pre, stop, axis=1) - np.take(pre, start, axis=1)
    return (x.astype(ct) / (bias + alpha / size * window) ** beta).astype(x.dtype)


defop("lrn", operands=("x",),
      attrs={"size": AttrSpec(AttrKind.INT), "alpha": AttrSpec(AttrKind.FLOAT, 1e-4),
             "beta": AttrSpec(AttrKind.FLOAT, 0.75), "bias": AttrSpec(AttrKind.FLOAT, 1.0)},
      infer=_lrn_infer, reference=_lrn, traits=NORM,
      doc="x / (bias + alpha / size * sum of x^2 over a window of ``size`` channels) ^ beta")


# -- training-mode batch norm ----------------------------------------------------------------------

def _bn_train_infer(ctx: InferContext) -> list[TensorType]:
    t = _channel_infer(4)(ctx)[0]
    stat = TensorType(DType.f64 if t.dtype is DType.f64 else DType.f32, None if t.shape is None else (t.shape[1],))
    return [t, ctx.types[3], ctx.types[4], stat, stat]


def _bn_axes(x: np.ndarray) -> tuple[int, ...]:
    return (0,) + tuple(range(2, x.ndim))


def _batch_norm_train(x: np.ndarray, scale: np.ndarray, bias: np.ndarray, running_mean: np.ndarray,
                      running_var: np.ndarray, *, epsilon: float, momentum: float,
                      unbiased: int) -> tuple[np.ndarray, ...]:
    ct = _compute_dtype(x)
    axes = _bn_axes(x)
    v = x.astype(ct)
    mean = np.mean(v, axis=axes)
    d = v - _per_channel(mean, x)
    var = np.mean(d * d, axis=axes)
    inv_std = (1 / np.sqrt(var + np.asarray(epsilon, ct))).astype(ct)
    y = d * _per_channel(inv_std, x) * _per_channel(scale.astype(ct), x) + _per_channel(bias.astype(ct), x)
    count = x.size // max(x.shape[1], 1)
    run_var = var * (count / (count - 1)) if unbiased and count > 1 else var
    m = np.asarray(momentum, ct)
    new_mean = (1 - m) * running_mean.astype(ct) + m * mean
    new_var = (1 - m) * running_var.astype(ct) + m * run_var
    return (y.astype(x.dtype), new_mean.astype(running_mean.dtype), new_var.astype(running_var.dtype),
            mean.astype(ct), inv_std)


def _batch_norm_train_vjp(b, op, cts):
    """d x, d scale, d bias through the normalized output (one fused ``batch_norm_train_grad`` op),
    plus the rarely needed paths through the running and saved statistics (elementwise ops; a
    training step never differentiates those, so they cost nothing there)."""
    x, scale = op.operands[0], op.operands[1]
    mean, inv_std = op.results[3], op.results[4]
    cx = cscale = cbias = crm = crv = None
    if cts[0] is not None:
        cx, cscale, cbias = b.op("batch_norm_train_grad", x, cts[0], scale, mean, inv_std)
    if all(c is None for c in cts[1:]):
        return [cx, cscale, cbias, None, None]
    shape = x.type.shape
    if not x.type.is_static:
        raise GradientError(f"cannot differentiate {op.where()} through its running or batch "
                            f"statistics with the symbolic shape {x.type}: fix the batch size")
    count = int(np.prod(shape)) // int(shape[1])
    mom = op.attrs["momentum"]
    corr = count / (count - 1) if op.attrs["unbiased"] and count > 1 else 1.0
    st = mean.dtype

    def k(v: float, dt=st):
        return b.const(np.asarray(v, dt.numpy))

    zero = b.const(np.zeros(mean.type.shape, st.numpy))
    a = b_ = zero
    if cts[1] is not None:  # running_mean_out = (1 - m) * running_mean + m * mean(x)
        crm = b.op("mul", cts[1], k(1 - mom, cts[1].dtype))
        a = b.op("add", a, b.op("mul", b.op("cast", cts[1], to=st), k(mom)))
    if cts[2] is not None:  # running_var_out = (1 - m) * running_var + m * corr * var(x)
        crv = b.op("mul", cts[2], k(1 - mom, cts[2].dtype))
        b_ = b.op("add", b_, b.op("mul", b.op("cast", cts[2], to=st), k(2 * mom * corr)))
    if cts[3] is not None:
        a = b.op("add", a, cts[3])
    if cts[4] is not None:  # inv_std = (var + eps)^-1/2: d inv / d var = -inv^3 / 2
        cube = b.op("mul", b.op("mul", inv_std, inv_std), inv_std)
        b_ = b.op("sub", b_, b.op("mul", cts[4], cube))
    bshape = (1, int(shape[1])) + (1,) * (len(shape) - 2)
    a = b.op("reshape", b.op("mul", a, k(1 / count)), shape=bshape)
    b_ = b.op("reshape", b.op("mul", b_, k(1 / count)), shape=bshape)
    xc = b.op("sub", b.op("cast", x, to=st), b.op("reshape", mean, shape=bshape))
    extra = b.op("cast", b.op("add", b.op("mul", xc, b_), a), to=x.dtype)
    cx = extra if cx is None else b.op("add", cx, extra)
    return [cx, cscale, cbias, crm, crv]


defop("batch_norm_train", operands=("x", "scale", "bias", "running_mean", "running_var"),
      results=("out", "running_mean_out", "running_var_out", "batch_mean", "batch_inv_std"),
      attrs={"epsilon": AttrSpec(AttrKind.FLOAT, 1e-5), "momentum": AttrSpec(AttrKind.FLOAT, 0.1),
             "unbiased": AttrSpec(AttrKind.INT, 1)},
      infer=_bn_train_infer, reference=_batch_norm_train, traits=NORM, vjp=_batch_norm_train_vjp,
      doc="training batch norm over channel axis 1 with the batch's statistics (population variance); "
          "also the updated running statistics in torch's convention, running = (1 - momentum) * "
          "running + momentum * batch (the variance unbiased when ``unbiased``), and the batch mean "
          "and 1/sqrt(var + epsilon) for the gradient")


def _bn_grad_infer(ctx: InferContext) -> list[TensorType]:
    t = ctx.types[0]
    check_dtype(ctx, 0, FLOAT_TYPES)
    if ctx.types[1] != t:
        raise ctx.fail(f"the cotangent {ctx.types[1]} must have the input's type {t}")
    return [t, ctx.types[2], ctx.types[2]]


def _batch_norm_train_grad(x: np.ndarray, dy: np.ndarray, scale: np.ndarray, mean: np.ndarray,
                           inv_std: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ct = _compute_dtype(x)
    axes = _bn_axes(x)
    count = x.size // max(x.shape[1], 1)
    xh = (x.astype(ct) - _per_channel(mean.astype(ct), x)) * _per_channel(inv_std.astype(ct), x)
    g = dy.astype(ct)
    dbias = np.sum(g, axis=axes)
    dscale = np.sum(g * xh, axis=axes)
    k = _per_channel((scale.astype(ct) * inv_std.astype(ct)).astype(ct), x)
    dx = k * (g - _per_channel(dbias / count, x) - xh * _per_channel(dscale / count, x))
    return dx.astype(x.dtype), dscale.astype(scale.dtype), dbias.astype(scale.dtype)


defop("batch_norm_train_grad", operands=("x", "dy", "scale", "batch_mean", "batch_inv_std"),
      results=("dx", "dscale", "dbias"), infer=_bn_grad_infer, reference=_batch_norm_train_grad, traits=NORM,
      vjp=NOT_DIFFERENTIABLE,
      doc="the gradient of batch_norm_train's output with respect to x, scale and bias")

"""Quantization ops: ``quantize`` and ``dequantize`` (explicit scale and zero-point operands,
per-tensor, per-axis or blocked) and ``bitcast`` (reinterpret the bits of each element).

Quantization is explicit in the IR rather than hidden type state: an int8 tensor is an ordinary
i8 value, and the ops that produce and consume it carry the scale, zero point and axis. Compound
ONNX forms (QLinearMatMul, QLinearConv, DynamicQuantizeLinear) are decomposed by the frontend into
these plus integer matmul/conv and elementwise arithmetic.
"""

from __future__ import annotations

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import broadcast_shapes, check_dtype, norm_axis
from ..types import TensorType

# Integer types a quantize may produce; float8/int4 have no nnc dtype.
QUANT_TYPES = frozenset({DType.i8, DType.u8, DType.i16, DType.u16, DType.i32})


def expand_param(p: np.ndarray, shape: tuple[int, ...], axis: int, block_size: int) -> np.ndarray:
    """Make a scale or zero point broadcastable to ``shape``: a scalar (per-tensor), a vector along
    ``axis`` (per-axis), or a tensor of ``shape`` with ``axis`` shrunk by ``block_size`` (blocked)."""
    if p.size == 1 and (p.ndim <= 1 or not block_size):
        return p.reshape(())
    if not block_size:
        dims = [1] * len(shape)
        dims[axis] = p.size
        return p.reshape(dims)
    p = np.repeat(p, block_size, axis=axis)
    # the last block may be short when block_size does not divide the axis
    return np.take(p, np.arange(shape[axis]), axis=axis)


def _check_param(ctx: InferContext, i: int, axis: int, block_size: int) -> None:
    x, p = ctx.types[0].shape, ctx.types[i].shape
    if x is None or p is None or len(p) == 0 or (len(p) == 1 and p[0] == 1):
        return
    if not block_size:
        if len(p) != 1:
            raise ctx.fail(f"operand {i} must be a scalar or a vector for per-axis quantization, "
                           f"got {ctx.types[i]}")
        d = x[axis]
        if isinstance(d, int) and isinstance(p[0], int) and d != p[0]:
            raise ctx.fail(f"operand {i} has {p[0]} entries, axis {axis} of x has {d}")
        return
    if len(p) != len(x):
        raise ctx.fail(f"blocked quantization needs operand {i} of rank {len(x)}, got {ctx.types[i]}")
    for k, (a, b) in enumerate(zip(x, p)):
        want = -(-a // block_size) if k == axis and isinstance(a, int) else a
        if isinstance(want, int) and isinstance(b, int) and want != b:
            raise ctx.fail(f"blocked quantization: operand {i} dim {k} is {b}, expected {want}")


def _check_params(ctx: InferContext) -> None:
    x = ctx.types[0].shape
    scalar = all(t.shape is not None and len(t.shape) <= 1 and t.shape in ((), (1,)) for t in ctx.types[1:])
    if x is None or scalar:
        return  # a per-tensor parameter ignores the axis
    axis = norm_axis(ctx.attrs["axis"], len(x))
    for i in range(1, len(ctx.types)):
        _check_param(ctx, i, axis, ctx.attrs["block_size"])


def _quantize_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    check_dtype(ctx, 0, FLOAT_TYPES | {DType.i32})
    out = ctx.attrs["dtype"]
    if out not in QUANT_TYPES:
        raise ctx.fail(f"cannot quantize to {out}; supported: {', '.join(sorted(map(str, QUANT_TYPES)))}")
    if len(ctx.types) > 2 and ctx.types[2].dtype != out:
        raise ctx.fail(f"zero point dtype {ctx.types[2].dtype} differs from the result dtype {out}")
    _check_params(ctx)
    return [x.with_dtype(out)]


def _quantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None, *, axis: int,
              block_size: int, dtype: DType) -> np.ndarray:
    axis = axis % max(x.ndim, 1)
    s = expand_param(scale, x.shape, axis, block_size)
    # x / scale in the input precision (as ONNX specifies), then round half to even and saturate
    q = np.rint(x / s.astype(x.dtype) if x.dtype.kind == "f" else x / s).astype(np.float64)
    if zero_point is not None:
        q = q + expand_param(zero_point, x.shape, axis, block_size).astype(np.float64)
    info = np.iinfo(dtype.numpy)
    return np.clip(np.nan_to_num(q), info.min, info.max).astype(dtype.numpy)


defop("quantize", operands=("x", "scale", "zero_point?"),
      attrs={"axis": AttrSpec(AttrKind.INT, 1), "block_size": AttrSpec(AttrKind.INT, 0),
             "dtype": AttrSpec(AttrKind.DTYPE)},
      infer=_quantize_infer, reference=_quantize, vjp=NOT_DIFFERENTIABLE,
      doc="saturate(round_half_even(x / scale) + zero_point) as ``dtype``; scale and zero point are "
          "per-tensor (scalar), per-axis (vector along ``axis``) or blocked (``block_size`` > 0)")


def _dequantize_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    check_dtype(ctx, 0, QUANT_TYPES)
    out = check_dtype(ctx, 1, FLOAT_TYPES)
    if len(ctx.types) > 2 and ctx.types[2].dtype != x.dtype:
        raise ctx.fail(f"zero point dtype {ctx.types[2].dtype} differs from x's {x.dtype}")
    _check_params(ctx)
    return [x.with_dtype(out)]


def _dequantize(x: np.ndarray, scale: np.ndarray, zero_point: np.ndarray | None = None, *, axis: int,
                block_size: int) -> np.ndarray:
    axis = axis % max(x.ndim, 1)
    # int32 values are not exact in f32; subtract the zero point in f64, scale in f32 as ONNX does
    dx = x.astype(np.float64)
    if zero_point is not None:
        dx = dx - expand_param(zero_point, x.shape, axis, block_size).astype(np.float64)
    y = dx.astype(np.float32) * expand_param(scale, x.shape, axis, block_size)
    return y.astype(scale.dtype)


defop("dequantize", operands=("x", "scale", "zero_point?"),
      attrs={"axis": AttrSpec(AttrKind.INT, 1), "block_size": AttrSpec(AttrKind.INT, 0)},
      infer=_dequantize_infer, reference=_dequantize,
      doc="(x - zero_point) * scale in the scale's dtype; same layouts as ``quantize``")


def _bitcast_infer(ctx: InferContext) -> list[TensorType]:
    x, to = ctx.types[0], ctx.attrs["to"]
    if x.dtype.itemsize != to.itemsize:
        raise ctx.fail(f"bitcast {x.dtype} -> {to} changes the element size "
                       f"({x.dtype.itemsize} -> {to.itemsize} bytes)")
    return [x.with_dtype(to)]


defop("bitcast", operands=("x",), attrs={"to": AttrSpec(AttrKind.DTYPE)}, infer=_bitcast_infer,
      reference=lambda x, to: np.ascontiguousarray(x).view(to.numpy).reshape(x.shape),
      traits=Trait.PURE | Trait.ELEMENTWISE, vjp=NOT_DIFFERENTIABLE,
      doc="reinterpret each element's bits as ``to`` (same element size)")


# -- integer-only compute: qconv, qmatmul, requantize, qadd ----------------------------------------
#
# The quantized-graph contract shared by passes/quantize/ and the ASIC backend. Every reference is
# bit-exact integer math: the i8 x i8 dot products run as f64 BLAS matmuls, which are exact because
# every partial sum stays far below 2**53 (|x - zp| <= 255, |w| <= 128, so K < 2**37 suffices), and
# the rescaling runs in int64.

_I8 = frozenset({DType.i8})
_I32 = frozenset({DType.i32})
REQUANT_TYPES = frozenset({DType.i8, DType.u8, DType.i16, DType.i32})


def _check_bias(ctx: InferContext, n_out: object) -> None:
    if len(ctx.types) < 3:
        return
    check_dtype(ctx, 2, _I32)
    b = ctx.types[2].shape
    if b is not None and (len(b) != 1 or (isinstance(b[0], int) and isinstance(n_out, int) and b[0] != n_out)):
        raise ctx.fail(f"bias must be a vector of {n_out} i32, got {ctx.types[2]}")


def _qconv_infer(ctx: InferContext) -> list[TensorType]:
    from .conv import _check_groups, _conv_out_dims
    check_dtype(ctx, 0, _I8)
    check_dtype(ctx, 1, _I8)
    x, w = ctx.types[0], ctx.types[1]
    _check_bias(ctx, None if w.shape is None else w.shape[0])
    if x.shape is None or w.shape is None:
        rank = x.rank if x.shape is not None else w.rank
        return [TensorType(DType.i32, None if rank is None else ("?",) * rank)]
    if len(x.shape) < 3 or len(w.shape) != len(x.shape):
        raise ctx.fail(f"input {x} and weight {w} must have the same rank >= 3")
    _check_groups(ctx, x.shape[1], w.shape[1], w.shape[0], ctx.attrs["group"])
    return [TensorType(DType.i32, (x.shape[0], w.shape[0], *_conv_out_dims(x.shape, w.shape[2:], ctx.attrs)))]


def _exact_f64(k: int) -> None:
    if k >= 1 << 37:
        raise ValueError(f"a dot product of length {k} may exceed the exact f64 range")


def _qconv(x: np.ndarray, w: np.ndarray, b: np.ndarray | None = None, *, strides, pads, dilations, group,
           auto_pad, x_zero_point) -> np.ndarray:
    from .conv import fill, grouped_conv, pad_spatial, resolve_pads, window_count
    n = x.ndim - 2
    k = w.shape[2:]
    s, d = fill(strides, n, 1), fill(dilations, n, 1)
    p = resolve_pads(auto_pad, x.shape[2:], k, s, d, pads)
    _exact_f64(int(np.prod(w.shape[1:])))
    # subtracting the zero point first makes padding (which reads x_zero_point) a zero pad
    xs = x.astype(np.float64) - float(x_zero_point)
    xp = pad_spatial(xs, p[:n], p[n:])
    out = [window_count(x.shape[2 + i], k[i], s[i], d[i], p[i], p[n + i]) for i in range(n)]
    y = grouped_conv(xp, w.astype(np.float64), group, s, d, out).astype(np.int64)
    if b is not None:
        y = y + b.astype(np.int64).reshape((1, -1) + (1,) * n)
    return y.astype(np.int32)


defop("qconv", operands=("x", "w", "bias?"),
      attrs={"strides": AttrSpec(AttrKind.INTS, ()), "pads": AttrSpec(AttrKind.INTS, ()),
             "dilations": AttrSpec(AttrKind.INTS, ()),
             "auto_pad": AttrSpec(AttrKind.STR, "NOTSET", ("NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID")),
             "group": AttrSpec(AttrKind.INT, 1), "x_zero_point": AttrSpec(AttrKind.INT, 0)},
      infer=_qconv_infer, reference=_qconv, vjp=NOT_DIFFERENTIABLE,
      doc="integer convolution: x i8 [N,C,*in], w i8 [M,C/group,*k] (symmetric, zero point 0), bias i32 "
          "[M] -> i32 accumulators sum((x - x_zero_point) * w) + bias; padding reads x_zero_point")


def _qmatmul_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, _I8)
    check_dtype(ctx, 1, _I8)
    a, b = ctx.types[0].shape, ctx.types[1].shape
    if b is not None and len(b) != 2:
        raise ctx.fail(f"b must be a [K, N] matrix, got {ctx.types[1]}")
    n = None if b is None else b[1]
    _check_bias(ctx, n)
    if a is None:
        return [TensorType(DType.i32, None)]
    if len(a) < 1:
        raise ctx.fail("a must have rank >= 1")
    if b is not None and isinstance(a[-1], int) and isinstance(b[0], int) and a[-1] != b[0]:
        raise ctx.fail(f"contracted dims differ: {a[-1]} != {b[0]}")
    return [TensorType(DType.i32, tuple(a[:-1]) + ("?" if n is None else n,))]


def _qmatmul(a: np.ndarray, b: np.ndarray, bias: np.ndarray | None = None, *, a_zero_point) -> np.ndarray:
    _exact_f64(b.shape[0])
    y = np.matmul(a.astype(np.float64) - float(a_zero_point), b.astype(np.float64)).astype(np.int64)
    if bias is not None:
        y = y + bias.astype(np.int64)
    return y.astype(np.int32)


defop("qmatmul", operands=("a", "b", "bias?"), attrs={"a_zero_point": AttrSpec(AttrKind.INT, 0)},
      infer=_qmatmul_infer, reference=_qmatmul, vjp=NOT_DIFFERENTIABLE,
      doc="integer matmul: a i8 [..., M, K], weight b i8 [K, N] (symmetric), bias i32 [N] -> i32 "
          "sum((a - a_zero_point) * b) + bias")


def rounding_shift(p: np.ndarray, shift: np.ndarray | int) -> np.ndarray:
    """round_half_to_even(p / 2**shift) for int64 ``p`` and shifts in [0, 62], exactly."""
    p = np.asarray(p, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    q = p >> s  # floor division by 2**shift (arithmetic shift)
    r = p - (q << s)  # the remainder, in [0, 2**shift)
    half = np.where(s > 0, np.left_shift(np.int64(1), np.maximum(s - 1, 0)), 1)
    up = (r > half) | ((r == half) & ((q & 1) == 1))
    return q + (up & (s > 0))


def _clamp(y: np.ndarray, dtype: DType, clip_min: int | None, clip_max: int | None) -> np.ndarray:
    info = np.iinfo(dtype.numpy)
    lo = info.min if clip_min is None else max(clip_min, info.min)
    hi = info.max if clip_max is None else min(clip_max, info.max)
    return np.clip(y, lo, hi).astype(dtype.numpy)


def _requantize_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    check_dtype(ctx, 0, _I32)
    check_dtype(ctx, 1, _I32)
    check_dtype(ctx, 2, _I32)
    if ctx.attrs["dtype"] not in REQUANT_TYPES:
        raise ctx.fail(f"cannot requantize to {ctx.attrs['dtype']}")
    for i in (1, 2):
        p = ctx.types[i].shape
        if p is None or len(p) == 0 or p == (1,) or x.shape is None:
            continue
        if len(p) != 1:
            raise ctx.fail(f"operand {i} must be a scalar or a vector along the axis, got {ctx.types[i]}")
        d = x.shape[norm_axis(ctx.attrs["axis"], len(x.shape))]
        if isinstance(d, int) and isinstance(p[0], int) and d != p[0]:
            raise ctx.fail(f"operand {i} has {p[0]} entries, axis {ctx.attrs['axis']} of x has {d}")
    lo, hi = ctx.attrs["clip_min"], ctx.attrs["clip_max"]
    if lo is not None and hi is not None and lo > hi:
        raise ctx.fail(f"clip_min {lo} > clip_max {hi}")
    return [x.with_dtype(ctx.attrs["dtype"])]


def _requantize(x: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, *, axis, zero_point, dtype,
                clip_min, clip_max) -> np.ndarray:
    ax = axis % max(x.ndim, 1)
    m = expand_param(np.asarray(multiplier), x.shape, ax, 0).astype(np.int64)
    s = expand_param(np.asarray(shift), x.shape, ax, 0).astype(np.int64)
    if np.any(m < 0) or np.any(s < 0) or np.any(s > 62):
        raise ValueError("requantize needs multiplier >= 0 and shift in [0, 62]")
    # |x| <= 2**31 and multiplier < 2**31: the product fits int64
    y = rounding_shift(x.astype(np.int64) * m, s) + zero_point
    return _clamp(y, dtype, clip_min, clip_max)


defop("requantize", operands=("x", "multiplier", "shift"),
      attrs={"axis": AttrSpec(AttrKind.INT, 1), "zero_point": AttrSpec(AttrKind.INT, 0),
             "dtype": AttrSpec(AttrKind.DTYPE, DType.i8), "clip_min": AttrSpec(AttrKind.INT, None),
             "clip_max": AttrSpec(AttrKind.INT, None)},
      infer=_requantize_infer, reference=_requantize, vjp=NOT_DIFFERENTIABLE,
      doc="clamp(round_half_even(x * multiplier / 2**shift) + zero_point, clip_min, clip_max) in int64; "
          "multiplier in [0, 2**31) and shift in [0, 62] are scalars or vectors along ``axis``; "
          "clip bounds default to the dtype's range (a fused ReLU is clip_min = zero_point)")


def _qadd_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, _I8)
    check_dtype(ctx, 1, _I8)
    if ctx.attrs["shift"] < 0 or ctx.attrs["shift"] > 62:
        raise ctx.fail(f"shift must be in [0, 62], got {ctx.attrs['shift']}")
    return [TensorType(DType.i8, broadcast_shapes(ctx.types[0].shape, ctx.types[1].shape))]


def _qadd(a: np.ndarray, b: np.ndarray, *, a_zero_point, b_zero_point, a_multiplier, b_multiplier, shift,
          zero_point, clip_min, clip_max) -> np.ndarray:
    acc = (a.astype(np.int64) - a_zero_point) * a_multiplier + (b.astype(np.int64) - b_zero_point) * b_multiplier
    return _clamp(rounding_shift(acc, shift) + zero_point, DType.i8, clip_min, clip_max)


defop("qadd", operands=("a", "b"),
      attrs={"a_zero_point": AttrSpec(AttrKind.INT, 0), "b_zero_point": AttrSpec(AttrKind.INT, 0),
             "a_multiplier": AttrSpec(AttrKind.INT), "b_multiplier": AttrSpec(AttrKind.INT),
             "shift": AttrSpec(AttrKind.INT), "zero_point": AttrSpec(AttrKind.INT, 0),
             "clip_min": AttrSpec(AttrKind.INT, None), "clip_max": AttrSpec(AttrKind.INT, None)},
      infer=_qadd_infer, reference=_qadd, traits=Trait.PURE | Trait.ELEMENTWISE | Trait.BROADCAST,
      vjp=NOT_DIFFERENTIABLE,
      doc="i8 residual add: clamp(round_half_even(((a - a_zp) * a_multiplier + (b - b_zp) * b_multiplier) "
          "/ 2**shift) + zero_point, clip_min, clip_max), broadcasting like ``add``")


# -- int8 activations: qlut (any unary function) and qmul (products such as squeeze-excite) ----------

def _qlut_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, _I8)
    check_dtype(ctx, 1, _I8)
    t = ctx.types[1].shape
    if t is not None and t != (256,):
        raise ctx.fail(f"table must be i8[256] (one entry per int8 input, -128 first), got {ctx.types[1]}")
    return [ctx.types[0]]


def _qlut(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    return table[x.astype(np.int64) + 128]


defop("qlut", operands=("x", "table"), infer=_qlut_infer, reference=_qlut,
      traits=Trait.PURE | Trait.ELEMENTWISE, vjp=NOT_DIFFERENTIABLE,
      doc="i8 table lookup: table[x + 128]; the quantized form of any unary activation (hard-swish, "
          "sigmoid, SiLU, ...) between per-tensor int8 parameters, the table built at compile time")


def _qmul_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, _I8)
    check_dtype(ctx, 1, _I8)
    if not 0 <= ctx.attrs["multiplier"] < 2**31 or not 0 <= ctx.attrs["shift"] <= 62:
        raise ctx.fail(f"multiplier must be in [0, 2**31) and shift in [0, 62], got {ctx.attrs['multiplier']}, "
                       f"{ctx.attrs['shift']}")
    return [TensorType(DType.i8, broadcast_shapes(ctx.types[0].shape, ctx.types[1].shape))]


def _qmul(a: np.ndarray, b: np.ndarray, *, a_zero_point, b_zero_point, multiplier, shift, zero_point, clip_min,
          clip_max) -> np.ndarray:
    # |a - a_zp|, |b - b_zp| <= 255 and multiplier < 2**31: the product stays below 2**47
    p = (a.astype(np.int64) - a_zero_point) * (b.astype(np.int64) - b_zero_point) * multiplier
    return _clamp(rounding_shift(p, shift) + zero_point, DType.i8, clip_min, clip_max)


defop("qmul", operands=("a", "b"),
      attrs={"a_zero_point": AttrSpec(AttrKind.INT, 0), "b_zero_point": AttrSpec(AttrKind.INT, 0),
             "multiplier": AttrSpec(AttrKind.INT), "shift": AttrSpec(AttrKind.INT),
             "zero_point": AttrSpec(AttrKind.INT, 0), "clip_min": AttrSpec(AttrKind.INT, None),
             "clip_max": AttrSpec(AttrKind.INT, None)},
      infer=_qmul_infer, reference=_qmul, traits=Trait.PURE | Trait.ELEMENTWISE | Trait.BROADCAST,
      vjp=NOT_DIFFERENTIABLE,
      doc="i8 product: clamp(round_half_even((a - a_zp) * (b - b_zp) * multiplier / 2**shift) + zero_point, "
          "clip_min, clip_max), broadcasting like ``mul`` (a squeeze-excite scale is b [N,C,1,1])")

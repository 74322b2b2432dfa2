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
from ..shape_rules import check_dtype, norm_axis
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

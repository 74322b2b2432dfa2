"""Elementwise ops: unary math and activations, broadcasting binary arithmetic, comparisons and
logic, ``where``, ``clip`` and ``cast``.

Rare activations (selu, celu, softsign, mish, ...) are not ops: the ONNX frontend decomposes them
into these, and fusion puts them back together as one kernel.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, INT_TYPES, NUMERIC_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import broadcast_shapes, check_dtype, same_dtype
from ..types import TensorType

EW = Trait.PURE | Trait.ELEMENTWISE | Trait.INPLACE
SIGNED = frozenset(t for t in NUMERIC_TYPES if t.is_signed)


def _unary_infer(allowed: frozenset[DType]) -> Callable[[InferContext], list[TensorType]]:
    def infer(ctx: InferContext) -> list[TensorType]:
        check_dtype(ctx, 0, allowed)
        return [ctx.types[0]]
    return infer


def _keep(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
    """Run ``fn`` and cast back to the input dtype (numpy promotes f16 math to f32 at times)."""
    def ref(x: np.ndarray, **attrs) -> np.ndarray:
        return np.asarray(fn(x, **attrs)).astype(x.dtype, copy=False)
    return ref


def unary(name: str, fn: Callable[..., np.ndarray], allowed: frozenset[DType] = FLOAT_TYPES,
          attrs: dict[str, AttrSpec] | None = None, doc: str = "", vjp=None) -> None:
    defop(name, operands=("x",), attrs=attrs, infer=_unary_infer(allowed), reference=_keep(fn),
          traits=EW, doc=doc, vjp=vjp)


def _erf(x: np.ndarray) -> np.ndarray:
    v = np.vectorize(math.erf, otypes=[np.float64])
    return v(x.astype(np.float64))


def _sigmoid(x: np.ndarray) -> np.ndarray:
    x64 = x.astype(np.float64)
    return np.where(x64 >= 0, 1 / (1 + np.exp(-x64)), np.exp(x64) / (1 + np.exp(x64)))


def _gelu(x: np.ndarray, approximate: str) -> np.ndarray:
    x64 = x.astype(np.float64)
    if approximate == "tanh":
        return 0.5 * x64 * (1 + np.tanh(math.sqrt(2 / math.pi) * (x64 + 0.044715 * x64 ** 3)))
    return 0.5 * x64 * (1 + _erf(x64 / math.sqrt(2)))


def _round(x: np.ndarray) -> np.ndarray:
    return np.round(x)  # numpy rounds half to even, as ONNX requires


unary("neg", np.negative, SIGNED, doc="-x")
unary("abs", np.abs, NUMERIC_TYPES, doc="|x|")
unary("sign", np.sign, NUMERIC_TYPES, doc="-1, 0 or 1", vjp=NOT_DIFFERENTIABLE)
unary("exp", np.exp)
unary("log", np.log)
unary("sqrt", np.sqrt)
unary("reciprocal", np.reciprocal)
unary("sin", np.sin)
unary("cos", np.cos)
unary("tan", np.tan)
unary("asin", np.arcsin)
unary("acos", np.arccos)
unary("atan", np.arctan)
unary("sinh", np.sinh)
unary("cosh", np.cosh)
unary("tanh", np.tanh)
unary("asinh", np.arcsinh)
unary("acosh", np.arccosh)
unary("atanh", np.arctanh)
unary("erf", _erf)
unary("floor", np.floor, vjp=NOT_DIFFERENTIABLE)
unary("ceil", np.ceil, vjp=NOT_DIFFERENTIABLE)
unary("round", _round, doc="round half to even", vjp=NOT_DIFFERENTIABLE)
unary("sigmoid", _sigmoid, doc="1 / (1 + exp(-x))")
unary("relu", lambda x: np.maximum(x, np.zeros((), x.dtype)), NUMERIC_TYPES, doc="max(x, 0)")
unary("leaky_relu", lambda x, alpha: np.where(x >= 0, x, x * x.dtype.type(alpha)),
      attrs={"alpha": AttrSpec(AttrKind.FLOAT, 0.01)}, doc="x if x >= 0 else alpha * x")
unary("elu", lambda x, alpha: np.where(x > 0, x, alpha * np.expm1(x.astype(np.float64))),
      attrs={"alpha": AttrSpec(AttrKind.FLOAT, 1.0)}, doc="x if x > 0 else alpha * (exp(x) - 1)")
unary("softplus", lambda x: np.logaddexp(0, x.astype(np.float64)), doc="log(1 + exp(x))")
unary("gelu", _gelu, attrs={"approximate": AttrSpec(AttrKind.STR, "none", ("none", "tanh"))},
      doc="x * Phi(x), exact (erf) or tanh approximation")
unary("hard_sigmoid", lambda x, alpha, beta: np.clip(alpha * x.astype(np.float64) + beta, 0, 1),
      attrs={"alpha": AttrSpec(AttrKind.FLOAT, 0.2), "beta": AttrSpec(AttrKind.FLOAT, 0.5)},
      doc="clip(alpha * x + beta, 0, 1)")
unary("hard_swish", lambda x: x * np.clip(x.astype(np.float64) / 6 + 0.5, 0, 1), doc="x * hard_sigmoid(x, 1/6, 1/2)")


def _bool_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, {DType.bool})
    return [ctx.types[0]]


defop("not", operands=("x",), infer=_bool_infer, reference=np.logical_not, traits=EW, vjp=NOT_DIFFERENTIABLE)
defop("bitwise_not", operands=("x",), infer=_unary_infer(INT_TYPES), reference=np.invert, traits=EW,
      vjp=NOT_DIFFERENTIABLE)


def _isinf(x: np.ndarray, detect_positive: int, detect_negative: int) -> np.ndarray:
    return (np.isposinf(x) & bool(detect_positive)) | (np.isneginf(x) & bool(detect_negative))


def _pred_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    return [ctx.types[0].with_dtype(DType.bool)]


defop("isnan", operands=("x",), infer=_pred_infer, reference=np.isnan, traits=Trait.PURE | Trait.ELEMENTWISE,
      vjp=NOT_DIFFERENTIABLE)
defop("isinf", operands=("x",), infer=_pred_infer, reference=_isinf, traits=Trait.PURE | Trait.ELEMENTWISE,
      attrs={"detect_positive": AttrSpec(AttrKind.INT, 1), "detect_negative": AttrSpec(AttrKind.INT, 1)},
      vjp=NOT_DIFFERENTIABLE)


# -- binary ---------------------------------------------------------------------------------------

def _binary_infer(allowed: frozenset[DType], result: DType | None = None):
    def infer(ctx: InferContext) -> list[TensorType]:
        dt = same_dtype(ctx, 0, 1)
        check_dtype(ctx, 0, allowed)
        shape = broadcast_shapes(ctx.types[0].shape, ctx.types[1].shape)
        return [TensorType(result or dt, shape)]
    return infer


def binary(name: str, fn: Callable[..., np.ndarray], allowed: frozenset[DType] = NUMERIC_TYPES,
           result: DType | None = None, commutative: bool = False, attrs: dict[str, AttrSpec] | None = None,
           doc: str = "", vjp=None) -> None:
    traits = Trait.PURE | Trait.ELEMENTWISE | Trait.BROADCAST
    if result is None:
        traits |= Trait.INPLACE
    if commutative:
        traits |= Trait.COMMUTATIVE

    def ref(a: np.ndarray, b: np.ndarray, **kw) -> np.ndarray:
        out = np.asarray(fn(a, b, **kw))
        return out.astype(result.numpy if result else a.dtype, copy=False)

    defop(name, operands=("a", "b"), attrs=attrs, infer=_binary_infer(allowed, result), reference=ref,
          traits=traits, doc=doc, vjp=vjp)


def _div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        # ONNX integer division truncates toward zero (C semantics); division by zero gives 0 here.
        q = np.zeros(np.broadcast_shapes(a.shape, b.shape), dtype=a.dtype)
        nz = np.broadcast_to(b != 0, q.shape)
        a_b, b_b = np.broadcast_to(a, q.shape), np.broadcast_to(b, q.shape)
        q[nz] = (np.abs(a_b[nz].astype(np.int64)) // np.abs(b_b[nz].astype(np.int64))
                 * np.sign(a_b[nz].astype(np.int64)) * np.sign(b_b[nz].astype(np.int64))).astype(a.dtype)
        return q
    return np.divide(a, b)


def _pow(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.dtype.kind in "iu":
        return np.power(a.astype(np.int64), b.astype(np.int64))
    return np.power(a.astype(np.float64), b.astype(np.float64))


def _mod(a: np.ndarray, b: np.ndarray, fmod: int) -> np.ndarray:
    if fmod:
        return np.fmod(a, b)
    if a.dtype.kind in "iu":
        safe = np.where(b == 0, 1, b)
        return np.where(b == 0, 0, np.mod(a, safe))
    return np.mod(a, b)


binary("add", np.add, commutative=True)
binary("sub", np.subtract)
binary("mul", np.multiply, commutative=True)
binary("div", _div)
binary("pow", _pow, doc="a ** b (the exponent has the same dtype; the frontend casts)")
binary("mod", _mod, attrs={"fmod": AttrSpec(AttrKind.INT, 0)},
       doc="remainder: sign of the divisor (fmod=0) or of the dividend (fmod=1)")
binary("max", np.maximum, commutative=True)
binary("min", np.minimum, commutative=True)
binary("bitwise_and", np.bitwise_and, INT_TYPES, commutative=True, vjp=NOT_DIFFERENTIABLE)
binary("bitwise_or", np.bitwise_or, INT_TYPES, commutative=True, vjp=NOT_DIFFERENTIABLE)
binary("bitwise_xor", np.bitwise_xor, INT_TYPES, commutative=True, vjp=NOT_DIFFERENTIABLE)
binary("shift_left", np.left_shift, INT_TYPES, vjp=NOT_DIFFERENTIABLE)
binary("shift_right", np.right_shift, INT_TYPES, vjp=NOT_DIFFERENTIABLE)
_BOOL = frozenset({DType.bool})
_CMP = NUMERIC_TYPES | _BOOL
binary("and", np.logical_and, _BOOL, DType.bool, commutative=True, vjp=NOT_DIFFERENTIABLE)
binary("or", np.logical_or, _BOOL, DType.bool, commutative=True, vjp=NOT_DIFFERENTIABLE)
binary("xor", np.logical_xor, _BOOL, DType.bool, commutative=True, vjp=NOT_DIFFERENTIABLE)
binary("equal", np.equal, _CMP, DType.bool, commutative=True, vjp=NOT_DIFFERENTIABLE)
binary("less", np.less, _CMP, DType.bool, vjp=NOT_DIFFERENTIABLE)
binary("less_equal", np.less_equal, _CMP, DType.bool, vjp=NOT_DIFFERENTIABLE)
binary("greater", np.greater, _CMP, DType.bool, vjp=NOT_DIFFERENTIABLE)
binary("greater_equal", np.greater_equal, _CMP, DType.bool, vjp=NOT_DIFFERENTIABLE)


def _where_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, {DType.bool})
    dt = same_dtype(ctx, 1, 2)
    return [TensorType(dt, broadcast_shapes(*(t.shape for t in ctx.types)))]


defop("where", operands=("cond", "a", "b"), infer=_where_infer,
      reference=lambda c, a, b: np.where(c, a, b).astype(a.dtype, copy=False),
      traits=Trait.PURE | Trait.ELEMENTWISE | Trait.BROADCAST, doc="a where cond else b")


def _clip(x: np.ndarray, min: float | None, max: float | None) -> np.ndarray:
    out = x
    if min is not None:
        out = np.maximum(out, np.asarray(min).astype(x.dtype))
    if max is not None:
        out = np.minimum(out, np.asarray(max).astype(x.dtype))
    return np.asarray(out).astype(x.dtype, copy=False)


defop("clip", operands=("x", "min?", "max?"), infer=_unary_infer(NUMERIC_TYPES), reference=_clip,
      attrs={"min": AttrSpec(AttrKind.FLOAT, None), "max": AttrSpec(AttrKind.FLOAT, None)},
      dynamic={"min": "min", "max": "max"}, traits=EW,
      doc="clamp to [min, max]; a missing bound is unbounded")


def _cast_infer(ctx: InferContext) -> list[TensorType]:
    return [ctx.types[0].with_dtype(ctx.attrs["to"])]


def _cast(x: np.ndarray, to: DType) -> np.ndarray:
    if (x.dtype.kind == "f" or x.dtype.name == "bfloat16") and to.is_int:
        # float -> int is undefined for NaN/inf and out-of-range values; numpy warns, we saturate NaN to 0.
        # (bf16 goes through f32, as ml_dtypes' own conversion does: nan_to_num ignores bf16.)
        x = np.nan_to_num(x.astype(np.float32) if x.dtype.kind != "f" else x, nan=0.0)
    return x.astype(to.numpy)


defop("cast", operands=("x",), attrs={"to": AttrSpec(AttrKind.DTYPE)}, infer=_cast_infer, reference=_cast,
      traits=Trait.PURE | Trait.ELEMENTWISE, doc="convert to dtype ``to``")

"""Random ops: uniform and normal samples, Bernoulli draws and training-mode dropout.

They carry the RANDOM trait instead of PURE, so they are never folded, CSE'd or deleted as dead
code. ``seed`` (ONNX's float attribute) makes a run reproducible: each evaluation draws from a
fresh ``numpy.random.RandomState(int(seed))`` (the generator ONNX's own test data came from);
without a seed every run draws fresh entropy.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import check_dtype
from ..types import UNKNOWN, TensorType

_SEED = AttrSpec(AttrKind.FLOAT, None)


def _state(seed: float | None) -> np.random.RandomState:
    if seed is None or math.isnan(seed):
        return np.random.RandomState()
    return np.random.RandomState(int(seed))


def _sample_infer(ctx: InferContext) -> list[TensorType]:
    shape, dt = ctx.attrs["shape"], ctx.attrs["dtype"]
    if dt not in FLOAT_TYPES:
        raise ctx.fail(f"dtype must be a float type, got {dt}")
    if shape is None:
        s = ctx.types[0].shape if ctx.types else None
        n = s[0] if s is not None and len(s) == 1 and isinstance(s[0], int) else None
        return [TensorType(dt, None if n is None else (UNKNOWN,) * n)]
    return [TensorType(dt, tuple(shape))]


def _uniform(shape: Sequence[int], low: float, high: float, dtype: DType, seed: float | None) -> np.ndarray:
    return _state(seed).uniform(low, high, tuple(shape)).astype(dtype.numpy)


def _normal(shape: Sequence[int], mean: float, scale: float, dtype: DType, seed: float | None) -> np.ndarray:
    return _state(seed).normal(mean, scale, tuple(shape)).astype(dtype.numpy)


def _sample_attrs(a: str, b: str, da: float, db: float) -> dict[str, AttrSpec]:
    return {"shape": AttrSpec(AttrKind.INTS, None), a: AttrSpec(AttrKind.FLOAT, da), b: AttrSpec(AttrKind.FLOAT, db),
            "dtype": AttrSpec(AttrKind.DTYPE, DType.f32), "seed": _SEED}


defop("random_uniform", operands=("shape?",), attrs=_sample_attrs("low", "high", 0.0, 1.0),
      dynamic={"shape": "shape"}, infer=_sample_infer, reference=_uniform, traits=Trait.RANDOM,
      vjp=NOT_DIFFERENTIABLE, doc="samples from U[low, high)")
defop("random_normal", operands=("shape?",), attrs=_sample_attrs("mean", "scale", 0.0, 1.0),
      dynamic={"shape": "shape"}, infer=_sample_infer, reference=_normal, traits=Trait.RANDOM,
      vjp=NOT_DIFFERENTIABLE, doc="samples from N(mean, scale^2)")


def _bernoulli_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    return [ctx.types[0].with_dtype(ctx.attrs["dtype"] or ctx.types[0].dtype)]


def _bernoulli(p: np.ndarray, dtype: DType | None, seed: float | None) -> np.ndarray:
    out = _state(seed).binomial(1, p.astype(np.float64))
    return out.astype(dtype.numpy if dtype is not None else p.dtype)


defop("bernoulli", operands=("p",), attrs={"dtype": AttrSpec(AttrKind.DTYPE, None), "seed": _SEED},
      infer=_bernoulli_infer, reference=_bernoulli, traits=Trait.RANDOM, vjp=NOT_DIFFERENTIABLE,
      doc="1 with probability p, else 0")


def _dropout_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    x = ctx.types[0]
    return [x, x.with_dtype(DType.bool)]


def _dropout(x: np.ndarray, ratio: float | None, training: int | None,
             seed: float | None) -> tuple[np.ndarray, np.ndarray]:
    ratio = 0.5 if ratio is None else ratio
    if ratio == 0 or training == 0:
        return x.copy(), np.ones(x.shape, dtype=bool)
    keep = _state(seed).uniform(0.0, 1.0, x.shape) >= ratio
    scale = 1.0 / (1.0 - ratio)
    return (x * keep * scale).astype(x.dtype), keep


defop("dropout", operands=("x", "ratio?", "training?"), results=("out", "mask"), infer=_dropout_infer,
      reference=_dropout, traits=Trait.RANDOM,
      attrs={"ratio": AttrSpec(AttrKind.FLOAT, None), "training": AttrSpec(AttrKind.INT, None), "seed": _SEED},
      dynamic={"ratio": "ratio", "training": "training"},
      doc="training-mode dropout: zero each element with probability ratio (default 0.5) and scale the "
      "rest by 1/(1-ratio); mask says which were kept. A run-time training=0 (absent means 1) makes it "
      "the identity; the frontend turns inference dropout into identity directly.")


# -- keyed dropout: a counter-based generator every backend reproduces bit for bit ---------------
_GOLDEN, _KEYMUL = 0x9E3779B97F4A7C15, 0xD1B54A32D192ED03
_MIX1, _MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB


def keyed_uniform_bits(seed: int, key: int, n: int) -> np.ndarray:
    """24 random bits per element ``i`` in ``[0, n)``: SplitMix64's finaliser applied to
    ``seed * golden + key * K + i`` (wrapping 64-bit arithmetic), top 24 bits kept. A pure function
    of (seed, key, i), so generated code reproduces it exactly and a recomputation gives the same
    mask."""
    with np.errstate(over="ignore"):
        z = (np.uint64(seed % 2**64) * np.uint64(_GOLDEN)) ^ (np.uint64(key % 2**64) * np.uint64(_KEYMUL))
        z = z + np.arange(n, dtype=np.uint64)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(_MIX1)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(_MIX2)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(40)).astype(np.int64)


def keep_threshold(ratio: float) -> int:
    """Keep an element when its 24 bits are >= this (probability 1 - ratio, exactly in 2^-24 steps)."""
    return int(math.ceil(ratio * (1 << 24)))


def _keyed_dropout_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    check_dtype(ctx, 1, {DType.i64})
    k = ctx.types[1].shape
    if k is not None and any(d != 1 for d in k):
        raise ctx.fail(f"key must be a scalar, got {ctx.types[1]}")
    if not 0.0 <= ctx.attrs["ratio"] < 1.0:
        raise ctx.fail(f"ratio must be in [0, 1), got {ctx.attrs['ratio']}")
    x = ctx.types[0]
    return [x, x.with_dtype(DType.bool)]


def _keyed_dropout(x: np.ndarray, key: np.ndarray, *, ratio: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    bits = keyed_uniform_bits(seed, int(np.asarray(key).reshape(-1)[0]), x.size).reshape(x.shape)
    keep = bits >= keep_threshold(ratio)
    scale = np.asarray(1.0 / (1.0 - ratio), dtype=x.dtype)
    return np.where(keep, x * scale, np.zeros((), x.dtype)).astype(x.dtype), keep


defop("keyed_dropout", operands=("x", "key"), results=("out", "mask"), infer=_keyed_dropout_infer,
      reference=_keyed_dropout, attrs={"ratio": AttrSpec(AttrKind.FLOAT, 0.5), "seed": AttrSpec(AttrKind.INT, 0)},
      doc="training dropout whose mask is a pure function of (seed, key, element index) (SplitMix64 "
      "counter generator): the training step passes its step count as the key, so masks change every "
      "step, every backend draws the same mask, and a recomputed dropout (remat) equals the original")

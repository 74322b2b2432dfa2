"""The arithmetic of the INT8 scheme: scales and zero points from observed ranges, symmetric
per-channel weight quantization, i32 bias quantization, and the conversion of a real rescaling
factor into the fixed-point ``(multiplier, shift)`` pair that ``requantize`` and ``qadd`` apply
(``real ~= multiplier / 2**shift`` with a 31-bit multiplier, so the relative error is < 2**-31).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

QMIN, QMAX = -128, 127
WMAX = 127  # weights use [-127, 127]: symmetric, so -w is representable and no zero point is needed
MAX_SHIFT = 62


@dataclass(frozen=True)
class QParams:
    """How one activation tensor is quantized: real = (q - zero_point) * scale."""

    scale: float
    zero_point: int = 0

    def quantize(self, x: np.ndarray) -> np.ndarray:
        return np.clip(np.rint(x / self.scale) + self.zero_point, QMIN, QMAX).astype(np.int8)


def activation_params(lo: float, hi: float, symmetric: bool = True) -> QParams:
    """Per-tensor parameters covering [lo, hi]: symmetric (zero point 0, the default) or
    asymmetric (the whole [-128, 127] range spans [min(lo, 0), max(hi, 0)])."""
    lo, hi = min(float(lo), 0.0), max(float(hi), 0.0)
    if symmetric:
        amax = max(-lo, hi)
        return QParams(amax / QMAX if amax > 0 else 1.0, 0)
    if hi - lo <= 0:
        return QParams(1.0, 0)
    scale = (hi - lo) / (QMAX - QMIN)
    zp = int(np.clip(round(QMIN - lo / scale), QMIN, QMAX))
    return QParams(scale, zp)


def weight_scales(w: np.ndarray, axis: int = 0, per_channel: bool = True) -> np.ndarray:
    """Symmetric scales (max |w| / 127) per slice along ``axis``, or one per tensor."""
    a = np.abs(w.astype(np.float64))
    if per_channel:
        amax = a.reshape(a.shape[0], -1).max(axis=1) if axis == 0 else \
            np.moveaxis(a, axis, 0).reshape(a.shape[axis], -1).max(axis=1)
    else:
        amax = np.full(w.shape[axis], a.max())
    return np.where(amax > 0, amax / WMAX, 1.0)


def quantize_weights(w: np.ndarray, scales: np.ndarray, axis: int = 0) -> np.ndarray:
    shape = [1] * w.ndim
    shape[axis] = -1
    return np.clip(np.rint(w.astype(np.float64) / scales.reshape(shape)), -WMAX, WMAX).astype(np.int8)


def quantize_bias(b: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """Bias in the accumulator's units (x_scale * w_scale per channel), saturated to i32."""
    q = np.rint(b.astype(np.float64) / scales)
    return np.clip(q, -2**31, 2**31 - 1).astype(np.int32)


def quantize_multiplier(real: np.ndarray | float) -> tuple[np.ndarray, np.ndarray]:
    """(multiplier i32, shift i32) with real ~= multiplier / 2**shift, multiplier in [2**30, 2**31)
    when the shift range allows (shift <= 62; tinier factors lose low bits, zero gives (0, 0))."""
    r = np.atleast_1d(np.asarray(real, dtype=np.float64))
    if np.any(r < 0) or not np.all(np.isfinite(r)):
        raise ValueError("requantization factors must be finite and >= 0")
    frac, exp = np.frexp(r)  # r = frac * 2**exp, frac in [0.5, 1)
    mult = np.rint(frac * 2.0**31).astype(np.int64)
    shift = 31 - exp.astype(np.int64)
    carry = mult == 2**31  # frac rounded up to 1.0
    mult = np.where(carry, mult // 2, mult)
    shift = np.where(carry, shift - 1, shift)
    if np.any((r > 0) & (shift < 0)):
        raise ValueError(f"requantization factor {r.max()} is too large (>= 2**31)")
    tiny = shift > MAX_SHIFT
    mult = np.where(tiny, np.rint(np.where(tiny, r, 0.0) * 2.0**MAX_SHIFT).astype(np.int64), mult)
    shift = np.where(tiny, MAX_SHIFT, shift)
    zero = (r == 0) | (mult == 0)
    mult, shift = np.where(zero, 0, mult), np.where(zero, 0, shift)
    shape = np.shape(real)
    return mult.astype(np.int32).reshape(shape), shift.astype(np.int32).reshape(shape)


def qadd_params(a: QParams, b: QParams, y: QParams) -> dict[str, int]:
    """The integer attributes of ``qadd`` for y = a + b: both inputs are rescaled to y's scale with a
    common shift, chosen so that the larger multiplier uses ~30 bits."""
    ra, rb = a.scale / y.scale, b.scale / y.scale
    big = max(ra, rb)
    _, e = np.frexp(big)
    shift = int(min(MAX_SHIFT, 30 - e))  # the larger multiplier lands in [2**29, 2**30)
    ma, mb = round(ra * 2.0**shift), round(rb * 2.0**shift)
    if shift < 0 or ma >= 2**31 or mb >= 2**31:
        raise ValueError(f"qadd rescaling factors {ra}, {rb} are out of range")
    return {"a_zero_point": a.zero_point, "b_zero_point": b.zero_point, "a_multiplier": ma,
            "b_multiplier": mb, "shift": shift, "zero_point": y.zero_point}


def requant_shift_pair(real: float) -> tuple[int, int]:
    """One (multiplier, shift) pair as Python ints: ``quantize_multiplier`` of a single factor."""
    m, s = quantize_multiplier(real)
    return int(m), int(s)

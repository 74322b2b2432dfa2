"""The numpy reference of the vector unit's layers: what each one computes on whole NCHW int8
tensors, written without the simulator's tiles, memories or instructions, so the simulator (and
the IR ops it runs) can be checked against it bit for bit (tests/asic/test_asic_vector.py).

Rounding is round-half-to-even of an exact integer quotient by 2**shift (Python-style floor
division on int64 values that stay below 2**62), saturation clamps to [lo, hi] within int8.
"""

from __future__ import annotations

import numpy as np


def rescale(p: np.ndarray, mult: np.ndarray | int, shift: np.ndarray | int, zp: int = 0, lo: int = -128,
            hi: int = 127) -> np.ndarray:
    """clamp(round_half_even(p * mult / 2**shift) + zp, lo, hi) as int8."""
    v = np.asarray(p, np.int64) * np.asarray(mult, np.int64)
    d = np.left_shift(np.int64(1), np.asarray(shift, np.int64))
    q, r = np.divmod(v, d)
    twice = 2 * r
    up = (twice > d) | ((twice == d) & (q % 2 == 1))
    y = q + up.astype(np.int64) + zp
    return np.clip(y, max(lo, -128), min(hi, 127)).astype(np.int8)


def lut(x: np.ndarray, table: np.ndarray) -> np.ndarray:
    """An int8 activation: the table entry of each input (entry 0 is input -128)."""
    return np.asarray(table, np.int8)[x.astype(np.int64) + 128]


def channel_mul(x: np.ndarray, scale: np.ndarray, *, a_zp: int, b_zp: int, mult: int, shift: int, zp: int = 0,
                lo: int = -128, hi: int = 127) -> np.ndarray:
    """Squeeze-excite: x [N,C,H,W] times a per-channel int8 scale [N or 1,C,1,1], rescaled."""
    p = (x.astype(np.int64) - a_zp) * (scale.astype(np.int64) - b_zp)
    return rescale(p, mult, shift, zp, lo, hi)


def global_avg_pool(x: np.ndarray, mult: np.ndarray, shift: np.ndarray, zp: int = 0, lo: int = -128,
                    hi: int = 127, x_zp: int = 0) -> np.ndarray:
    """Sum of (x - x_zp) over H and W per channel, rescaled per channel (1/HW folded into ``mult``):
    [N,C,1,1]."""
    s = (x.astype(np.int64) - x_zp).sum(axis=(2, 3), keepdims=True)
    return rescale(s, np.asarray(mult).reshape(1, -1, 1, 1), np.asarray(shift).reshape(1, -1, 1, 1), zp, lo, hi)


def depthwise(x: np.ndarray, w: np.ndarray, bias: np.ndarray | None, *, stride: tuple[int, int],
              pads: tuple[int, int, int, int], dilation: tuple[int, int] = (1, 1), x_zp: int = 0,
              mult: np.ndarray, shift: np.ndarray, zp: int = 0, lo: int = -128, hi: int = 127,
              table: np.ndarray | None = None) -> np.ndarray:
    """Depthwise conv x [N,C,H,W] * w [C,1,kh,kw] (+ bias), padding reads ``x_zp``; per-channel rescale,
    then the optional activation table. int32 accumulation wraps as the hardware's adder does."""
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    (sh, sw), (dh, dw) = stride, dilation
    pt, pl, pb, pr = pads
    xp = np.full((n, c, h + pt + pb, wd + pl + pr), x_zp, np.int64)
    xp[:, :, pt:pt + h, pl:pl + wd] = x
    oh = (h + pt + pb - dh * (kh - 1) - 1) // sh + 1
    ow = (wd + pl + pr - dw * (kw - 1) - 1) // sw + 1
    acc = np.zeros((n, c, oh, ow), np.int64)
    for i in range(kh):
        for j in range(kw):
            win = xp[:, :, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw]
            acc += (win - x_zp) * w[:, 0, i, j].astype(np.int64).reshape(1, c, 1, 1)
    if bias is not None:
        acc += bias.astype(np.int64).reshape(1, c, 1, 1)
    acc = acc.astype(np.int32).astype(np.int64)
    y = rescale(acc, np.asarray(mult).reshape(1, -1, 1, 1), np.asarray(shift).reshape(1, -1, 1, 1), zp, lo, hi)
    return y if table is None else lut(y, table)

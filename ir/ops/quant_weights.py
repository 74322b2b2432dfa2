"""Weight-only quantization: ``matmul_nbits``, a float matmul whose constant weight is stored as
4- or 8-bit codes in blocks along the reduction dim, each block with its own scale and zero point.

The layout is that of onnxruntime's ``com.microsoft.MatMulNBits`` (so an imported model keeps its
bytes): the weight is held transposed, one row per output column ``n``, cut into
``ceil(K / block_size)`` blocks of ``block_size`` codes; 4-bit codes are packed two per byte, the
even element in the low nibble. Codes are unsigned; ``w[k, n] = (code - zero_point) * scale`` with
the block's scale and zero point (``2**(bits-1)`` when there are no zero points: the symmetric
scheme). An INT8 per-output-channel weight is the case ``bits=8, block_size=K`` (one block per row).

The helpers here pack and unpack codes in that layout; the quantization itself (choosing scales) is
a pass (passes/quantize/weights.py).
"""

from __future__ import annotations

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, defop
from ..shape_rules import check_dtype
from ..types import TensorType

NBITS = (4, 8)


def blob_bytes(bits: int, block_size: int) -> int:
    """Bytes of one block of codes."""
    return block_size * bits // 8


def pack_codes(codes: np.ndarray, bits: int) -> np.ndarray:
    """Codes ``[..., L]`` (integers in [0, 2**bits), L even for 4 bits) as bytes ``[..., L*bits/8]``."""
    c = codes.astype(np.uint8)
    if bits == 8:
        return c
    return (c[..., 0::2] & 0xF) | ((c[..., 1::2] & 0xF) << 4)


def unpack_codes(packed: np.ndarray, bits: int) -> np.ndarray:
    """The inverse of ``pack_codes``: bytes ``[..., B]`` -> codes ``[..., B*8/bits]`` (u8)."""
    if bits == 8:
        return packed.astype(np.uint8)
    out = np.empty(packed.shape[:-1] + (packed.shape[-1] * 2,), np.uint8)
    out[..., 0::2] = packed & 0xF
    out[..., 1::2] = packed >> 4
    return out


def dequantize_nbits(b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None, *, K: int, bits: int,
                     block_size: int) -> np.ndarray:
    """The weight ``[K, N]`` that ``b`` codes, in the scales' dtype: ``(code - zp) * scale``."""
    n, nb = scales.shape
    codes = unpack_codes(b, bits).reshape(n, nb * block_size)[:, :K].astype(np.int32)
    zp = np.full((n, nb), 1 << (bits - 1), np.int32) if zero_points is None else zero_points.astype(np.int32)
    rep = lambda p: np.repeat(p, block_size, axis=1)[:, :K]  # noqa: E731 - per block -> per element
    # the code difference is a small exact integer; one rounding, in the scale's precision
    return ((codes - rep(zp)).astype(scales.dtype) * rep(scales)).T


def _infer(ctx: InferContext) -> list[TensorType]:
    at = ctx.types[0]
    check_dtype(ctx, 0, FLOAT_TYPES)
    check_dtype(ctx, 1, frozenset({DType.u8}))
    if ctx.types[2].dtype != at.dtype:
        raise ctx.fail(f"scales are {ctx.types[2].dtype}, a is {at.dtype}: they must match")
    bits, bs, K = ctx.attrs["bits"], ctx.attrs["block_size"], ctx.attrs["K"]
    if bits not in NBITS:
        raise ctx.fail(f"bits must be one of {NBITS}, got {bits}")
    if bs < 1 or (bs * bits) % 8:
        raise ctx.fail(f"block_size {bs} does not fill whole bytes at {bits} bits")
    if K < 1:
        raise ctx.fail(f"K must be positive, got {K}")
    nb = -(-K // bs)
    b, s = ctx.types[1].shape, ctx.types[2].shape
    if b is None or s is None:
        raise ctx.fail("the weight codes and scales need known shapes")
    if len(b) != 3 or b[1:] != (nb, blob_bytes(bits, bs)):
        raise ctx.fail(f"b must be u8[N, {nb}, {blob_bytes(bits, bs)}] for K={K}, block_size={bs}, bits={bits}; "
                       f"got {ctx.types[1]}")
    n = b[0]
    if s != (n, nb):
        raise ctx.fail(f"scales must be [{n}, {nb}], got {ctx.types[2]}")
    if len(ctx.types) > 3:
        check_dtype(ctx, 3, frozenset({DType.u8}))
        if ctx.types[3].shape != (n, nb):
            raise ctx.fail(f"zero_points must be u8[{n}, {nb}] (one code per block), got {ctx.types[3]}")
    a = at.shape
    if a is None:
        return [TensorType(at.dtype, None)]
    if len(a) < 1:
        raise ctx.fail("a must have rank >= 1")
    if isinstance(a[-1], int) and a[-1] != K:
        raise ctx.fail(f"a's last dim {a[-1]} is not K={K}")
    return [TensorType(at.dtype, tuple(a[:-1]) + (n,))]


def _reference(a: np.ndarray, b: np.ndarray, scales: np.ndarray, zero_points: np.ndarray | None = None, *,
               K: int, bits: int, block_size: int) -> np.ndarray:
    w = dequantize_nbits(b, scales, zero_points, K=K, bits=bits, block_size=block_size)
    return np.matmul(a.astype(np.float64), w.astype(np.float64)).astype(a.dtype)


defop("matmul_nbits", operands=("a", "b", "scales", "zero_points?"),
      attrs={"K": AttrSpec(AttrKind.INT), "bits": AttrSpec(AttrKind.INT), "block_size": AttrSpec(AttrKind.INT)},
      infer=_infer, reference=_reference, vjp=NOT_DIFFERENTIABLE,
      doc="a [..., K] @ w [K, N], w stored as codes b u8[N, ceil(K/block_size), block_size*bits/8] "
          "(4 bits: two per byte, even element low) with scales [N, blocks] and optional u8 zero points "
          "[N, blocks] (default 2**(bits-1)): w[k, n] = (code - zp) * scale; MatMulNBits' layout")

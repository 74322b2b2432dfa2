"""``com.microsoft.MatMulNBits``, onnxruntime's weight-only quantized matmul (its 4-bit models), as
nnc's ``matmul_nbits`` (ir/ops/quant_weights.py), which keeps the same code layout.

``Y = A @ dequantize(B)^T (+ bias)`` with ``B`` u8 ``[N, ceil(K/block_size), block_size*bits/8]``,
``scales`` ``[N * blocks]`` or ``[N, blocks]`` and optional u8 ``zero_points`` (4 bits: packed two
per byte, ``ceil(blocks/2)`` bytes per column; 8 bits: one per block). Supported: 4 and 8 bits,
u8 zero points given as constants, ``g_idx`` only when it is the plain block order
(``k // block_size``). ``accuracy_level`` is a compute-precision floor (level 4 lets onnxruntime
round A to int8); nnc always computes in A's float type, which meets every level.
"""

from __future__ import annotations

import numpy as np

from nnc.ir import DType, Value
from nnc.ir.ops.quant_weights import NBITS, blob_bytes, unpack_codes

from ..context import ConvertContext, Node
from ..registry import converter


def _zero_points(node: Node, zp: np.ndarray, n: int, nb: int, bits: int) -> np.ndarray:
    if zp.dtype != np.uint8:
        raise node.unsupported(f"zero points of type {zp.dtype} (float zero points) are not supported; "
                               "u8 zero points are")
    if zp.size == n * nb:
        return zp.reshape(n, nb)
    per_col = -(-nb * bits // 8)
    if bits == 4 and zp.size == n * per_col:
        return unpack_codes(zp.reshape(n, per_col), 4)[:, :nb]
    raise node.unsupported(f"zero_points of shape {list(zp.shape)} fit neither [N, blocks] = [{n}, {nb}] nor "
                           f"packed [{n} * {per_col}]")


@converter("MatMulNBits", domain="com.microsoft")
def matmul_nbits(ctx: ConvertContext, node: Node) -> Value:
    K, N, bs = node.attr("K"), node.attr("N"), node.attr("block_size")
    bits = node.attr("bits", 4)
    if bits not in NBITS:
        raise node.unsupported(f"bits={bits}; supported: {', '.join(map(str, NBITS))}")
    if bs < 16 or bs & (bs - 1):
        raise node.unsupported(f"block_size={bs} is not a power of 2 >= 16")
    nb = -(-K // bs)
    a, b, scales = node.input(0), node.input(1), node.input(2)
    if b.shape != (N, nb, blob_bytes(bits, bs)) or b.dtype != DType.u8:
        raise node.unsupported(f"B is {b.type}, expected u8[{N}, {nb}, {blob_bytes(bits, bs)}] for K={K}, N={N}, "
                               f"bits={bits}, block_size={bs}")
    if scales.shape is None or int(np.prod(scales.shape)) != N * nb:
        raise node.unsupported(f"scales are {scales.type}, expected {N * nb} values ([N, blocks])")
    s = ctx.const_value(scales)
    scales = ctx.const(s.reshape(N, nb), name=f"{node.outputs[0]}.scales") if s is not None else \
        ctx.op("reshape", scales, shape=[N, nb])
    operands = [a, b, scales]
    if node.input(3) is not None:
        zp = ctx.const_value(node.input(3))
        if zp is None:
            raise node.unsupported("zero_points computed at run time are not supported (give an initializer)")
        operands.append(ctx.const(_zero_points(node, zp, N, nb, bits), name=f"{node.outputs[0]}.zero_points"))
    if node.input(4) is not None:
        g = ctx.const_value(node.input(4))
        if g is None or g.size != K or not np.array_equal(g.reshape(-1), np.arange(K) // bs):
            raise node.unsupported("a g_idx other than the plain block order (k // block_size) is not supported")
    y = ctx.op("matmul_nbits", *operands, K=K, bits=bits, block_size=bs)
    bias = node.input(5)
    return y if bias is None else ctx.op("add", y, bias)

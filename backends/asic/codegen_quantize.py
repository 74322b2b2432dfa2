"""Code generation for the model's input quantize on the chip (``input_quantize: "chip"``): the FP32
input is read from DRAM (4 bytes an element) into the buffer in chunks, the vector unit's
``vec.quant`` converts each chunk to int8 (x / scale in FP32, round half to even, + zero point,
saturate: the IR's ``quantize``), and the int8 chunk is stored as the first layer's input.

The tensor is quantized as a flat run of elements (its NHWC order in DRAM is the same for the FP32
input and its int8 result); two buffer slots, each an FP32 area and an int8 area, double-buffer the
chunks, so the DMA of one chunk overlaps the conversion and the store of the one before.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.ir import TargetError

from .codegen import flat_pieces
from .config import AsicConfig
from .emitter import Emitter

# the largest chunk, in elements: small enough that the last chunk's conversion and store (what the
# first layer waits for after the input's DMA) stay short, large enough that the per-transfer latency
# and the vector unit's issue overhead are small beside each chunk's bytes
MAX_CHUNK = 16384


def scale_bits(scale: float) -> int:
    """The bit pattern of the FP32 scale (instruction fields are integers)."""
    return int(np.array([scale], np.float32).view(np.uint32)[0])


def emit_quant_layer(em: Emitter, cfg: AsicConfig, *, x: int, n: int, out: int, in_key: Any, out_key: Any,
                     scale: float, zp: int) -> dict[str, Any]:
    """int8 y = quantize(FP32 x) over ``n`` elements: FP32 at DRAM address ``x``, int8 to ``out``."""
    buf = cfg.sizes()["buf"]
    cols = min(n, 4 * cfg.vector_lanes)
    chunk = max(cols, min(n, MAX_CHUNK, buf // 10) // cols * cols)  # two slots of 4 + 1 bytes an element
    if 10 * chunk > buf:
        raise TargetError(f"asic: the input quantize needs buffer_kib - act_buffer_kib >= {-(-10 * chunk // 1024)} "
                          f"(has {buf // 1024}; two slots of {chunk} FP32 and int8 elements)")
    f32 = [0, 4 * chunk]
    i8 = [8 * chunk, 9 * chunk]
    bits = scale_bits(scale)
    for sl, e0, off, rows, c in flat_pieces(n, cols, chunk):
        fkey, qkey = ("buf", "in", sl), ("buf", "out", sl)
        em.emit("load", reads=[in_key], writes=[fkey], mem="buf", dst=f32[sl] + 4 * off, dst_stride=4 * c,
                src=x + 4 * (e0 + off), src_stride=4 * c, rows=rows, cols=4 * c, pad_before=0, pad_after=0, pad=0)
        em.emit("vec.quant", reads=[fkey], writes=[qkey], dst_mem="buf", dst=i8[sl] + off, dst_stride=c,
                src_mem="buf", src=f32[sl] + 4 * off, src_stride=4 * c, rows=rows, cols=c, scale_bits=bits, zp=zp)
        em.emit("store", reads=[qkey], writes=[out_key], mem="buf", src=i8[sl] + off, src_stride=c,
                dst=out + e0 + off, dst_stride=c, rows=rows, cols=c)
    return {"tiles": {"chunk": chunk}}

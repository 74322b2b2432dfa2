"""Importing already-quantized ONNX models in QDQ form (QuantizeLinear -> DequantizeLinear pairs
around float ops, as onnxruntime's ``quantize_static`` writes them) into the integer ops.

Each activation pair ``dequantize(quantize(v, s, zp), s, zp)`` with per-tensor constant parameters
fixes v's quantization: the pair is removed and (s, zp) recorded (a u8 zero point becomes the i8 one,
``zp - 128``: ``(q_u8 - zp) * s == ((q_u8 - 128) - (zp - 128)) * s``). Weight and bias pairs fold
into f32 constants, ``q * s`` exactly, from which the rewrite recovers the same integers: symmetric
int8 weights span [-127, 127] per channel, so max|w| / 127 is their scale, and the bias divided by
``s_x * s_w`` rounds back to its i32 value. The rewrite (rewrite.py) then runs with these parameters
instead of calibrated ranges. Integer results equal onnxruntime's except where a requantization
lands within float rounding of a .5 tie (onnxruntime rescales in f32, nnc in 31-bit fixed point).
"""

from __future__ import annotations

import numpy as np

from nnc.ir import Module, const_value

from .scheme import QParams


def strip_qdq(module: Module) -> dict[str, QParams]:
    """Remove per-tensor activation quantize->dequantize pairs in place; return each value's
    parameters (keyed by value name)."""
    g = module.main
    fixed: dict[str, QParams] = {}
    for q in list(g.ops):
        if q.opname != "quantize" or q.attrs.get("block_size"):
            continue
        v = q.operands[0]
        if v.producer is not None and v.producer.opname == "const":
            continue
        s = const_value(module, q.operands[1])
        zp = const_value(module, q.operands[2]) if len(q.operands) > 2 else np.zeros((), np.int8)
        out = q.results[0]
        readers = [op for op, _ in out.uses]
        if s is None or zp is None or s.size != 1 or zp.size != 1 or not readers or \
                any(id(out) == id(o) for o in g.outputs) or zp.dtype not in (np.int8, np.uint8):
            continue
        ok = True
        for d in readers:
            ds = const_value(module, d.operands[1]) if d.opname == "dequantize" else None
            dz = const_value(module, d.operands[2]) if d.opname == "dequantize" and len(d.operands) > 2 \
                else np.zeros((), zp.dtype)
            if ds is None or dz is None or ds.size != 1 or float(ds) != float(s) or int(dz) != int(zp):
                ok = False
        if not ok:
            continue
        z = int(zp) - 128 if zp.dtype == np.uint8 else int(zp)
        fixed[v.name] = QParams(float(np.float32(s)), z)
        for d in readers:
            g.replace_all_uses(d.results[0], v)
            g.erase(d)
        g.erase(q)
    return fixed

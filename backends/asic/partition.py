"""Partitioning an integer graph into chip layers and host ops.

Walks the ops in order and claims fused patterns the chip runs:

- ``qconv``/``qmatmul`` -> ``requantize`` (its only reader) [-> ``qlut`` activation] [-> ``qadd`` with
  another int8 tensor]: a GEMM layer (a depthwise ``qconv`` becomes a vector-unit layer);
- a standalone ``qlut`` (int8 activation table) and a ``qmul`` of x [N,C,H,W] by a per-channel
  scale [N or 1,C,1,1] (squeeze-excite) on the vector unit;
- int8 ``max_pool``; ``cast(i8->i32)`` -> ``reduce_sum`` over H, W -> ``requantize`` (global average
  pooling); a same-shape ``qadd``;
- with ``input_quantize``, the per-tensor int8 ``quantize`` of an FP32 graph input (the vector unit's
  ``vec.quant`` reads the FP32 input from DRAM);
- ``reshape``/``flatten``/``squeeze``/``unsqueeze`` whose bytes do not move (the NHWC layout of a
  rank-4 tensor with H*W == 1 is its row-major layout) alias their input.

Everything else (quantize/dequantize of the model's float inputs and outputs, softmax, resize, ...)
runs on the host; values crossing between the two are transferred and charged in the report.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np

from nnc.ir import DType, Module, Op, Value, const_value

ALIAS_OPS = ("reshape", "flatten", "squeeze", "unsqueeze")


@dataclasses.dataclass
class Layer:
    kind: str                 # gemm | dw | maxpool | gap | qadd | lut | qmul | quant
    ops: list[Op]
    inputs: list[Value]       # activations read from DRAM
    output: Value
    spec: dict[str, Any]

    @property
    def name(self) -> str:
        return self.output.name


def _consts(m: Module, op: Op, idx: list[int]) -> list[np.ndarray | None] | None:
    out = []
    for i in idx:
        if i >= len(op.operands):
            out.append(None)
            continue
        c = const_value(m, op.operands[i])
        if c is None:
            return None
        out.append(c)
    return out


def _static(v: Value) -> bool:
    return v.type.shape is not None and v.type.is_static


def _requant(m: Module, uses: dict, outputs: set, v: Value, axis_ok: tuple[int, ...]) -> Op | None:
    """The requantize that is ``v``'s only reader, with constant parameters and an int8 result."""
    us = uses.get(id(v), [])
    if len(us) != 1 or id(v) in outputs:
        return None
    rq = us[0]
    if rq.opname != "requantize" or rq.attrs["dtype"] != DType.i8 or rq.operands[0] is not v:
        return None
    ps = _consts(m, rq, [1, 2])
    if ps is None:
        return None
    if any(p.size > 1 for p in ps) and rq.attrs["axis"] % len(v.type.shape) not in axis_ok:
        return None
    return rq


def _table(m: Module, uses: dict, outputs: set, v: Value) -> Op | None:
    """The ``qlut`` with a constant table that is ``v``'s only reader (an activation to fuse)."""
    us = uses.get(id(v), [])
    if len(us) != 1 or id(v) in outputs or us[0].opname != "qlut" or us[0].operands[0] is not v:
        return None
    return us[0] if const_value(m, us[0].operands[1]) is not None else None


def _fuse_table(m: Module, uses: dict, outputs: set, spec: dict, ops: list[Op], out: Value) -> tuple[list[Op], Value]:
    lut = _table(m, uses, outputs, out)
    if lut is None:
        return ops, out
    spec["lut"] = const_value(m, lut.operands[1])
    return ops + [lut], lut.results[0]


def _qmul_layer(op: Op) -> Layer | None:
    a, b = op.operands
    if not (_static(a) and _static(b)) or len(a.type.shape) != 4 or len(b.type.shape) != 4:
        return None
    if tuple(b.type.shape) == tuple(op.results[0].type.shape) and tuple(a.type.shape) != tuple(b.type.shape):
        a, b = b, a  # the scale is the first operand
        swapped = True
    else:
        swapped = False
    n, c = a.type.shape[:2]
    if tuple(a.type.shape) != tuple(op.results[0].type.shape) or tuple(b.type.shape[1:]) != (c, 1, 1) \
            or b.type.shape[0] not in (1, n):
        return None
    at = op.attrs
    za, zb = (at["b_zero_point"], at["a_zero_point"]) if swapped else (at["a_zero_point"], at["b_zero_point"])
    lo = max(-128, -128 if at["clip_min"] is None else at["clip_min"])
    hi = min(127, 127 if at["clip_max"] is None else at["clip_max"])
    attrs = {"a_zp": za, "b_zp": zb, "mult": at["multiplier"], "shift": at["shift"], "zp": at["zero_point"],
             "lo": lo, "hi": hi}
    return Layer("qmul", [op], [a, b], op.results[0], {"attrs": attrs})


def _clip(rq: Op) -> tuple[int, int]:
    lo, hi = rq.attrs["clip_min"], rq.attrs["clip_max"]
    return max(-128, -128 if lo is None else lo), min(127, 127 if hi is None else hi)


def _epilogue(m: Module, rq: Op) -> dict[str, Any]:
    mult, shift = _consts(m, rq, [1, 2])  # type: ignore[misc]
    lo, hi = _clip(rq)
    return {"mult": mult, "shift": shift, "zp": rq.attrs["zero_point"], "lo": lo, "hi": hi}


def _residual(uses: dict, outputs: set, v: Value, claimed: set[int]) -> tuple[Op, Value, bool] | None:
    us = uses.get(id(v), [])
    if len(us) != 1 or id(v) in outputs:
        return None
    q = us[0]
    if q.opname != "qadd" or id(q) in claimed or q.operands[0].type.shape != q.operands[1].type.shape \
            or q.operands[0] is q.operands[1]:
        return None
    first = q.operands[0] is v
    return q, q.operands[1] if first else q.operands[0], first


def _residual_spec(q: Op, conv_is_a: bool) -> dict[str, Any]:
    a = q.attrs
    pa = (a["a_zero_point"], a["a_multiplier"])
    pb = (a["b_zero_point"], a["b_multiplier"])
    mine, other = (pa, pb) if conv_is_a else (pb, pa)
    lo = max(-128, -128 if a["clip_min"] is None else a["clip_min"])
    hi = min(127, 127 if a["clip_max"] is None else a["clip_max"])
    return {"a_zp": mine[0], "a_mul": mine[1], "b_zp": other[0], "b_mul": other[1], "shift": a["shift"],
            "zp": a["zero_point"], "lo": lo, "hi": hi}


def _input_quantize(m: Module, op: Op) -> Layer | None:
    """The int8 per-tensor quantize of an FP32 graph input with constant parameters, as a chip layer."""
    x = op.operands[0]
    if op.opname != "quantize" or x.producer is not None or x.type.dtype != DType.f32 or not _static(x) \
            or not _static(op.results[0]) or op.attrs["dtype"] != DType.i8 or op.attrs["block_size"]:
        return None
    if not any(x is p for p in m.main.params):
        return None
    cs = _consts(m, op, [1, 2])
    if cs is None or cs[0].size != 1 or (cs[1] is not None and cs[1].size != 1):
        return None
    scale = np.float32(cs[0].reshape(-1)[0])
    if not np.isfinite(scale) or scale <= 0:
        return None
    zp = 0 if cs[1] is None else int(cs[1].reshape(-1)[0])
    return Layer("quant", [op], [x], op.results[0], {"scale": scale, "zp": zp})


def match_layers(m: Module, input_quantize: bool = False) -> tuple[list[tuple[int, Layer | Op]], dict[int, Value]]:
    """The schedule: (position, layer or host op) in execution order, and the alias map
    (value id -> the value whose DRAM bytes it shares). ``input_quantize``: the quantize of an FP32
    graph input is a chip layer (the vector unit's ``vec.quant``), not a host op."""
    g = m.main
    pos = {id(op): i for i, op in enumerate(g.ops)}
    uses: dict[int, list[Op]] = {}
    for op in g.ops:
        for v in op.operands:
            uses.setdefault(id(v), []).append(op)
    outputs = {id(v) for v in g.outputs}
    claimed: set[int] = set()
    chip: set[int] = set()      # values produced (or aliased) on the chip
    alias: dict[int, Value] = {}
    items: list[tuple[int, Layer | Op]] = []

    def claim(layer: Layer) -> None:
        for o in layer.ops:
            claimed.add(id(o))
        chip.add(id(layer.output))
        items.append((max(pos[id(o)] for o in layer.ops), layer))

    for op in g.ops:
        if id(op) in claimed or op.opname == "const":
            continue
        layer = _match(m, op, uses, outputs, claimed)
        if layer is None and input_quantize and id(op.results[0]) not in outputs:
            layer = _input_quantize(m, op)
        if layer is not None:
            claim(layer)
            continue
        if op.opname in ALIAS_OPS and id(op.operands[0]) in chip and _static(op.operands[0]) and \
                _static(op.results[0]) and _same_bytes(op.operands[0], op.results[0]):
            src = op.operands[0]
            alias[id(op.results[0])] = alias.get(id(src), src)
            chip.add(id(op.results[0]))
            claimed.add(id(op))
            continue
        items.append((pos[id(op)], op))
    items.sort(key=lambda e: e[0])
    return items, alias


def _same_bytes(a: Value, b: Value) -> bool:
    def flat_ok(v: Value) -> bool:
        s = v.type.shape
        return len(s) != 4 or s[2] * s[3] == 1 or s[1] == 1
    return flat_ok(a) and flat_ok(b)


def _match(m: Module, op: Op, uses: dict, outputs: set, claimed: set[int]) -> Layer | None:
    name = op.opname
    if name == "qconv":
        x, w = op.operands[0], op.operands[1]
        if not _static(x) or len(x.type.shape) != 4 or not _static(op.results[0]):
            return None
        cs = _consts(m, op, [1, 2])
        if cs is None:
            return None
        rq = _requant(m, uses, outputs, op.results[0], (1,))
        if rq is None:
            return None
        spec = {"op": op, "w": cs[0], "bias": cs[1], "epi": _epilogue(m, rq)}
        C, M, grp = x.type.shape[1], w.type.shape[0], op.attrs["group"]
        kind = "dw" if grp == C == M and w.type.shape[1] == 1 and grp > 1 else "gemm"
        ops, out, inputs = [op, rq], rq.results[0], [x]
        ops, out = _fuse_table(m, uses, outputs, spec, ops, out)
        res = _residual(uses, outputs, out, claimed) if kind == "gemm" else None
        if res is not None:
            q, other, first = res
            spec["residual"] = _residual_spec(q, first)
            spec["residual_value"] = other
            ops, out, inputs = ops + [q], q.results[0], [x, other]
        return Layer(kind, ops, inputs, out, spec)
    if name == "qmatmul":
        a = op.operands[0]
        if not _static(a) or len(a.type.shape) < 2 or len(a.type.shape) == 4:
            return None
        cs = _consts(m, op, [1, 2])
        if cs is None:
            return None
        rank = len(op.results[0].type.shape)
        rq = _requant(m, uses, outputs, op.results[0], (rank - 1,))
        if rq is None:
            return None
        spec = {"op": op, "w": cs[0], "bias": cs[1], "epi": _epilogue(m, rq)}
        ops, out, inputs = [op, rq], rq.results[0], [a]
        ops, out = _fuse_table(m, uses, outputs, spec, ops, out)
        res = _residual(uses, outputs, out, claimed)
        if res is not None:
            q, other, first = res
            spec["residual"] = _residual_spec(q, first)
            spec["residual_value"] = other
            ops, out, inputs = ops + [q], q.results[0], [a, other]
        return Layer("gemm", ops, inputs, out, spec)
    if name == "max_pool":
        x = op.operands[0]
        if x.type.dtype != DType.i8 or not _static(x) or len(x.type.shape) != 4 or op.attrs["with_indices"] \
                or op.attrs["storage_order"] or not _static(op.results[0]):
            return None
        return Layer("maxpool", [op], [x], op.results[0], {"op": op})
    if name == "cast" and op.operands[0].type.dtype == DType.i8 and op.attrs["to"] == DType.i32:
        x = op.operands[0]
        us = uses.get(id(op.results[0]), [])
        if not _static(x) or len(x.type.shape) != 4 or len(us) != 1 or id(op.results[0]) in outputs:
            return None
        rs = us[0]
        axes = rs.attrs.get("axes") if rs.opname == "reduce_sum" else None
        if axes is None or len(rs.operands) > 1 or sorted(a % 4 for a in axes) != [2, 3]:
            return None
        ops, s, offset = [op, rs], rs.results[0], 0
        add = uses.get(id(s), [None])[0]
        if add is not None and add.opname == "add" and len(uses[id(s)]) == 1 and id(s) not in outputs \
                and add.operands[0] is s:  # the quantizer's - count * zero_point
            c = const_value(m, add.operands[1])
            if c is None or c.size != 1 or add.results[0].type.shape != s.type.shape:
                return None
            ops, s, offset = ops + [add], add.results[0], int(c.reshape(-1)[0])
        rq = _requant(m, uses, outputs, s, (1,))
        if rq is None:
            return None
        return Layer("gap", ops + [rq], [x], rq.results[0], {"epi": _epilogue(m, rq), "offset": offset})
    if name == "qlut":
        table = const_value(m, op.operands[1])
        if table is None or not _static(op.operands[0]):
            return None
        return Layer("lut", [op], [op.operands[0]], op.results[0], {"lut": table})
    if name == "qmul":
        return _qmul_layer(op)
    if name == "qadd":
        a, b = op.operands
        if not (_static(a) and _static(b)) or a.type.shape != b.type.shape:
            return None
        return Layer("qadd", [op], [a, b], op.results[0], {"residual": _residual_spec(op, True)})
    return None

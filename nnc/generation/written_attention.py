"""Recognising an attention written out with matmuls in an exported decoder (docs/generation.md).

The TorchScript ONNX exporter writes ``transformers``' eager and SDPA attention as

    scores = matmul(q [* c], transpose(repeat_kv(present_key), last two axes) [* c]) [* c | / c]
    probs  = softmax(scores [+ bias], last axis) [with NaN -> 0]
    y      = matmul(probs, repeat_kv(present_value))

where ``repeat_kv`` (grouped-query heads: unsqueeze at axis 2, expand, reshape) is absent when
every query head has its own kv head and ``c`` are scalar constants. ``find_attention`` follows
that shape from a layer's present key and value to the final matmul and says what it found (the
query, the scale, the bias) so that the caller can replace it with one ``attention`` op; anything
else is ``None``, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Module, Op, Value
from nnc.ir.builder import const_value


@dataclass
class WrittenAttention:
    """One layer's written-out attention: ``y = softmax(q k^T * scale + bias) v``."""

    q: Value
    scale: float
    bias: Value | None  # the additive mask, as the model computes it
    output: Value  # the final matmul's result, which the fused attention replaces


def _scalar(module: Module, v: Value) -> float | None:
    c = const_value(module, v)
    if c is None or np.size(c) != 1:
        return None
    return float(np.asarray(c).reshape(()))


def _scaled(module: Module, op: Op, v: Value) -> float | None:
    """The scalar constant ``op`` (a mul) multiplies ``v`` by, else None."""
    if op.opname != "mul" or len(op.operands) != 2:
        return None
    other = op.operands[1] if op.operands[0] is v else op.operands[0]
    return _scalar(module, other)


def _only_reader(v: Value, skip_shape: bool = True) -> Op | None:
    """The one op reading ``v`` other than ``shape`` ops (which read no data), else None."""
    readers = {id(op): op for op, _ in v.uses if not (skip_shape and op.opname == "shape")}
    return next(iter(readers.values())) if len(readers) == 1 else None


def _repeated(v: Value) -> Value:
    """``v`` through ``repeat_kv`` (unsqueeze at 2, expand, reshape) when it is read that way."""
    op = _only_reader(v)
    if op is None or op.opname != "unsqueeze" or list(op.attrs.get("axes") or []) != [2]:
        return v
    expand = _only_reader(op.results[0])
    if expand is None or expand.opname != "expand" or expand.operands[0] is not op.results[0]:
        return v
    reshape = _only_reader(expand.results[0])
    if reshape is None or reshape.opname != "reshape" or reshape.operands[0] is not expand.results[0]:
        return v
    return reshape.results[0]


def _key_side(module: Module, present_key: Value) -> tuple[Op, float] | None:
    """(the scores matmul, the scalar applied to the keys) from the present key."""
    v, scale = _repeated(present_key), 1.0
    op = _only_reader(v)
    if op is not None and op.opname == "transpose" and list(op.attrs["perm"]) == [0, 1, 3, 2]:
        v = op.results[0]
        op = _only_reader(v)
        if op is not None and (c := _scaled(module, op, v)) is not None:
            scale *= c
            v = op.results[0]
            op = _only_reader(v)
        if op is not None and op.opname == "matmul" and op.operands[1] is v and op.operands[0] is not v:
            return op, scale
    return None


def find_attention(module: Module, present_key: Value, present_value: Value) -> WrittenAttention | None:
    """The attention reading ``present_key`` and ``present_value`` (module docstring), or None."""
    found = _key_side(module, present_key)
    if found is None:
        return None
    scores_op, scale = found
    q = scores_op.operands[0]
    if q.producer is not None and (c := _scaled(module, q.producer, q.producer.operands[0])) is not None \
            and _scalar(module, q.producer.operands[1]) is not None:
        scale *= c
        q = q.producer.operands[0]
    if q.type.rank != 4:
        return None
    v = scores_op.results[0]
    op = _only_reader(v, skip_shape=False)
    if op is not None and op.opname in ("mul", "div") and (c := _scalar(module, op.operands[1])) is not None \
            and op.operands[0] is v and c != 0:
        scale = scale * c if op.opname == "mul" else scale / c
        v = op.results[0]
        op = _only_reader(v, skip_shape=False)
    bias = None
    if op is not None and op.opname == "add":
        bias = op.operands[1] if op.operands[0] is v else op.operands[0]
        v = op.results[0]
        op = _only_reader(v, skip_shape=False)
    if op is None or op.opname != "softmax" or op.attrs["axis"] not in (-1, 3):
        return None
    v = op.results[0]
    readers = [u for u, _ in v.uses]
    nan = next((u for u in readers if u.opname == "isnan"), None)
    if nan is not None:  # where(isnan(p), 0, p): a fully masked row gives zeros (the op does too)
        guard = next((u for u in readers if u.opname == "where"), None)
        if guard is None or len(readers) != 2 or guard.operands[0] is not nan.results[0] or \
                guard.operands[2] is not v or _scalar(module, guard.operands[1]) != 0.0:
            return None
        v = guard.results[0]
    op = _only_reader(v, skip_shape=False)
    if op is None or op.opname != "matmul" or op.operands[0] is not v or \
            op.operands[1] is not _repeated(present_value):
        return None
    return WrittenAttention(q, scale, bias, op.results[0])

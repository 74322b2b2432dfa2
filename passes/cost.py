"""A static cost model: floating-point operations per op, from result and operand types.

Contractions (conv, conv_transpose, conv_weight_grad, matmul, gemm) count 2 x multiply-adds, the
work that dominates CNNs and transformers; every other op counts one operation per result element, which is the right
order of magnitude for elementwise and normalisation ops and is what rematerialisation needs to
rank recomputation choices. Non-static shapes count 0.
"""

from __future__ import annotations

import math

from nnc.ir import Op

CONTRACTIONS = ("conv", "conv_transpose", "conv_weight_grad", "matmul", "gemm")


def op_flops(op: Op) -> int:
    name = op.opname
    if name == "const":
        return 0
    out = op.results[0].type
    if not out.is_static:
        return 0
    if name in ("conv", "conv_transpose", "matmul", "gemm"):
        a, b = op.operands[0].type, op.operands[1].type
        if not (a.is_static and b.is_static):
            return 0
        if name == "conv":
            return 2 * out.numel * math.prod(b.shape[1:])
        if name == "conv_transpose":
            return 2 * a.numel * math.prod(b.shape[1:])
        if name == "matmul":
            return 2 * out.numel * (a.shape[-1] if a.shape else 1)
        k = a.shape[0] if op.attrs.get("trans_a") else a.shape[1]
        return 2 * out.numel * k
    if name == "conv_weight_grad":  # each weight sums one product per image and output position
        dy = op.operands[1].type
        return 2 * out.numel * math.prod(dy.shape[:1] + dy.shape[2:]) if dy.is_static else 0
    return sum(r.type.numel or 0 for r in op.results if r.type.is_static)


def contraction_flops(ops) -> int:
    """2 x multiply-adds of the contractions among ``ops`` (the usual "FLOPs" of a model)."""
    return sum(op_flops(op) for op in ops if op.opname in CONTRACTIONS)

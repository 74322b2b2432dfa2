"""Random ops: dropout in its identity form (ratio 0 or training 0: a copy and an all-true mask);
training-mode dropout, random_uniform, random_normal and bernoulli are refused.

nnc's reference draws from ``numpy.random.RandomState`` (the generator ONNX's test data came from).
Generated code cannot reproduce those streams without re-implementing numpy's legacy MT19937
sampling paths bit for bit, so these ops raise a ``TargetError`` naming the op rather than produce
numbers that silently differ from the reference.
"""

from __future__ import annotations

from llvmlite import ir

from nnc.ir import Op, TargetError

from ..llvm_types import I1, I8, I64, PTR
from .data_movement import emit_memcpy
from .registry import lowering


def _refuse(op: Op, why: str) -> TargetError:
    return TargetError(f"x86: {op.opname} {why}: the reference draws from numpy's RandomState, which generated "
                       f"code does not reproduce ({op.where()})")


@lowering("dropout")
def lower_dropout(k, op: Op) -> None:
    if len(op.operands) > 1:
        raise _refuse(op, "with a run-time ratio or training flag (possibly training mode)")
    ratio, training = op.attrs["ratio"], op.attrs["training"]
    if not (training == 0 or ratio == 0):
        raise _refuse(op, "in training mode")
    x = op.operands[0]
    nbytes = x.type.nbytes or 0
    emit_memcpy(k, lambda kb: kb.out(0), lambda kb: kb.arg(0), nbytes)
    if len(op.results) > 1:  # the mask: every element kept (bool true is the byte 1)
        memset = k.b.module.declare_intrinsic("llvm.memset", [PTR, I64])
        n = op.results[1].type.numel or 0
        k.b.call(memset, [k.out(1), ir.Constant(I8, 1), ir.Constant(I64, n), ir.Constant(I1, 0)])


@lowering("random_uniform", "random_normal", "bernoulli")
def lower_random(k, op: Op) -> None:
    raise _refuse(op, "is not supported")

"""Random ops: dropout in its identity form (ratio 0 or training 0: a copy and an all-true mask) and
``keyed_dropout`` (the counter-generator dropout training steps use, bit-exact with the reference).

nnc's reference draws from ``numpy.random.RandomState`` (the generator ONNX's test data came from).
Generated code does not reproduce those streams (numpy's legacy MT19937 sampling paths), so
training-mode ``dropout``, random_uniform, random_normal and bernoulli run as host steps of
segmented execution (``backends/x86/random_steps.py``) through the reference; the lowerings here
refuse them with a ``TargetError`` naming the op, for a caller that reaches them without segments.
"""

from __future__ import annotations

from llvmlite import ir

from nnc.ir import Op, TargetError
from nnc.ir.ops.random import _GOLDEN, _KEYMUL, _MIX1, _MIX2, keep_threshold

from ..llvm_types import I1, I8, I64, PTR
from .data_movement import emit_memcpy
from .loopkit import Loops, compute_type
from .reduce import element_chunks
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


@lowering("keyed_dropout")
def lower_keyed_dropout(k, op: Op) -> None:
    """The counter generator of ``ir/ops/random.py`` in wrapping 64-bit integer arithmetic, element
    by element (vectorisable: no state carried between elements), chunks in parallel."""
    x = op.operands[0]
    dt = x.dtype
    ct = compute_type(dt)
    n = x.type.numel or 0
    ratio, seed = float(op.attrs["ratio"]), int(op.attrs["seed"])
    thr = keep_threshold(ratio)
    if n == 0:
        return

    def c64(v: int) -> ir.Constant:
        return ir.Constant(I64, v % 2**64 if v >= 0 else v)

    def body(kb, lo, hi):
        L = Loops(kb, ct)
        b = kb.b
        key = b.load(kb.arg(1), typ=I64)
        base = b.xor(c64((seed % 2**64) * _GOLDEN % 2**64), b.mul(key, c64(_KEYMUL)))
        scale = L.f(1.0 / (1.0 - ratio))
        with L.loop(hi, "e", lo) as i:
            z = b.add(base, i)
            z = b.mul(b.xor(z, b.lshr(z, c64(30))), c64(_MIX1))
            z = b.mul(b.xor(z, b.lshr(z, c64(27))), c64(_MIX2))
            z = b.xor(z, b.lshr(z, c64(31)))
            keep = b.icmp_unsigned(">=", b.lshr(z, c64(40)), c64(thr))
            v = L.ld(kb.arg(0), i, dt)
            y = b.select(keep, b.fmul(v, scale), L.f(0.0))
            L.st(y, kb.out(0), i, dt)
            if len(op.results) > 1:
                mp = b.gep(kb.out(1), [i], source_etype=I8, inbounds=True)
                b.store(b.zext(keep, I8), mp)
    element_chunks(k, n, body)

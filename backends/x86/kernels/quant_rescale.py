"""x86 lowerings of the elementwise integer rescaling ops of the quantized-graph contract:
``requantize`` (where no kernel took it into its epilogue), ``qadd``, ``qmul`` and ``qlut``, as
broadcasting loop nests in i64, bit-exact against their references in ir/ops/quant.py."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op, TensorType

from ..llvm_types import I8, I64
from .broadcast_loops import emit_elementwise
from .quant_int8 import _gep, _imax, _imin
from .registry import lowering


@dataclass
class _View:
    """A shape/dtype stand-in so a per-channel vector broadcasts along its axis."""
    shape: tuple[int, ...]
    dtype: DType

    @property
    def type(self) -> TensorType:  # what KernelBuilder.shape reads (static: no frame slot needed)
        return TensorType(self.dtype, self.shape)


def _rne_shift(b: ir.IRBuilder, p: ir.Value, s: ir.Value) -> ir.Value:
    """round_half_to_even(p / 2**s) on i64, s in [0, 62]: (p + half - 1 + odd(p >> s)) >> s."""
    one = ir.Constant(I64, 1)
    q = b.ashr(p, s)
    half = b.ashr(b.shl(one, s), one)
    odd = b.and_(q, one)
    r = b.ashr(b.add(b.add(p, b.sub(half, one)), odd), s)
    return b.select(b.icmp_signed("==", s, ir.Constant(I64, 0)), p, r)


def _clamp_store(b: ir.IRBuilder, y: ir.Value, dt: DType, lo: int | None, hi: int | None) -> ir.Value:
    info = np.iinfo(dt.numpy)
    lo = info.min if lo is None else max(lo, int(info.min))
    hi = info.max if hi is None else min(hi, int(info.max))
    y = _imax(b, y, ir.Constant(I64, int(lo)))
    y = _imin(b, y, ir.Constant(I64, int(hi)))
    return b.trunc(y, ir.IntType(8 * dt.itemsize)) if dt.itemsize < 8 else y


@lowering("requantize", generic=True)
def lower_requantize(k, op: Op) -> None:
    x, mult, shift = op.operands
    shape = tuple(x.shape)
    rank = len(shape)

    def view(v) -> _View:
        if len(v.shape) == 0 or v.shape == (1,) or rank == 0:
            return _View((), v.dtype)
        axis = op.attrs["axis"] % rank
        dims = [1] * rank
        dims[axis] = v.shape[0]
        return _View(tuple(dims), v.dtype)

    out = op.results[0]
    zp = op.attrs["zero_point"]

    def body(b: ir.IRBuilder, el: list[ir.Value]) -> ir.Value:
        xv, m, s = (b.sext(e, I64) for e in el)
        y = b.add(_rne_shift(b, b.mul(xv, m), s), ir.Constant(I64, zp))
        return _clamp_store(b, y, out.dtype, op.attrs["clip_min"], op.attrs["clip_max"])

    emit_elementwise(k, 0, [k.arg(0), k.arg(1), k.arg(2)], [x, view(mult), view(shift)], out, body)


@lowering("qadd", generic=True)
def lower_qadd(k, op: Op) -> None:
    at = op.attrs
    s = ir.Constant(I64, at["shift"])

    def body(b: ir.IRBuilder, el: list[ir.Value]) -> ir.Value:
        av, bv = (b.sext(e, I64) for e in el)
        acc = b.add(b.mul(b.sub(av, ir.Constant(I64, at["a_zero_point"])), ir.Constant(I64, at["a_multiplier"])),
                    b.mul(b.sub(bv, ir.Constant(I64, at["b_zero_point"])), ir.Constant(I64, at["b_multiplier"])))
        y = b.add(_rne_shift(b, acc, s), ir.Constant(I64, at["zero_point"]))
        return _clamp_store(b, y, DType.i8, at["clip_min"], at["clip_max"])

    emit_elementwise(k, 0, [k.arg(0), k.arg(1)], list(op.operands), op.results[0], body)


@lowering("qmul", generic=True)
def lower_qmul(k, op: Op) -> None:
    at = op.attrs
    s = ir.Constant(I64, at["shift"])

    def body(b: ir.IRBuilder, el: list[ir.Value]) -> ir.Value:
        av, bv = (b.sext(e, I64) for e in el)
        da = b.sub(av, ir.Constant(I64, at["a_zero_point"]))
        db = b.sub(bv, ir.Constant(I64, at["b_zero_point"]))
        p = b.mul(b.mul(da, db), ir.Constant(I64, at["multiplier"]))
        y = b.add(_rne_shift(b, p, s), ir.Constant(I64, at["zero_point"]))
        return _clamp_store(b, y, DType.i8, at["clip_min"], at["clip_max"])

    emit_elementwise(k, 0, [k.arg(0), k.arg(1)], list(op.operands), op.results[0], body)


@lowering("qlut", generic=True)
def lower_qlut(k, op: Op) -> None:
    table = k.arg(1)

    def body(b: ir.IRBuilder, el: list[ir.Value]) -> ir.Value:
        return b.load(_gep(b, table, b.add(b.sext(el[0], I64), ir.Constant(I64, 128)), I8), typ=I8)

    emit_elementwise(k, 0, [k.arg(0)], [op.operands[0]], op.results[0], body)

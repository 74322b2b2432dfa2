"""Elementwise ops: one scalar expression per op, inside a broadcasting loop nest.

``SCALAR[opname](b, args, op)`` emits the scalar computation of one element; the same table serves
single ops and fused elementwise groups. The loop nest iterates the output in row-major order;
each operand advances by its broadcast strides (0 along broadcast dims), and the innermost loop is
simple enough for LLVM's loop vectoriser.
"""

from __future__ import annotations

from typing import Callable

from llvmlite import ir

from nnc.ir import DType, Op, Value

from ..llvm_types import I1, I64, const_int, for_range, ll_type
from .registry import lowering

ScalarFn = Callable[[ir.IRBuilder, list[ir.Value], Op], ir.Value]
SCALAR: dict[str, ScalarFn] = {}


def scalar(*names: str):
    def register(fn: ScalarFn) -> ScalarFn:
        for n in names:
            SCALAR[n] = fn
        return fn
    return register


def _dt(op: Op, i: int = 0) -> DType:
    return op.operands[i].dtype


def _intrinsic(b: ir.IRBuilder, name: str, x: ir.Value, *more: ir.Value) -> ir.Value:
    fn = b.module.declare_intrinsic(name, [x.type])
    return b.call(fn, [x, *more])


def _zero(t: ir.Type) -> ir.Constant:
    return ir.Constant(t, 0.0 if isinstance(t, (ir.FloatType, ir.DoubleType, ir.HalfType)) else 0)


# -- arithmetic -------------------------------------------------------------------------------------
@scalar("add")
def _add(b, a, op):
    return b.fadd(a[0], a[1]) if _dt(op).is_float else b.add(a[0], a[1])


@scalar("sub")
def _sub(b, a, op):
    return b.fsub(a[0], a[1]) if _dt(op).is_float else b.sub(a[0], a[1])


@scalar("mul")
def _mul(b, a, op):
    return b.fmul(a[0], a[1]) if _dt(op).is_float else b.mul(a[0], a[1])


@scalar("div")
def _div(b, a, op):
    dt = _dt(op)
    if dt.is_float:
        return b.fdiv(a[0], a[1])
    # integer division truncates; dividing by zero gives 0 (as the reference does), not a trap
    zero = _zero(a[1].type)
    is_zero = b.icmp_unsigned("==", a[1], zero)
    safe = b.select(is_zero, ir.Constant(a[1].type, 1), a[1])
    q = b.sdiv(a[0], safe) if dt.is_signed else b.udiv(a[0], safe)
    return b.select(is_zero, zero, q)


@scalar("neg")
def _neg(b, a, op):
    return b.fneg(a[0]) if _dt(op).is_float else b.neg(a[0])


@scalar("max", "min")
def _maxmin(b, a, op):
    x, y = a
    if _dt(op).is_float:
        pick_x = b.fcmp_unordered(">" if op.opname == "max" else "<", x, y)  # NaN in x propagates
        nan_y = b.fcmp_unordered("uno", y, y)
        return b.select(nan_y, y, b.select(pick_x, x, y))
    cmp = (b.icmp_signed if _dt(op).is_signed else b.icmp_unsigned)(">" if op.opname == "max" else "<", x, y)
    return b.select(cmp, x, y)


@scalar("relu")
def _relu(b, a, op):
    x = a[0]
    zero = _zero(x.type)
    if _dt(op).is_float:
        return b.select(b.fcmp_ordered("<", x, zero), zero, x)
    if not _dt(op).is_signed:
        return x
    return b.select(b.icmp_signed("<", x, zero), zero, x)


@scalar("abs")
def _abs(b, a, op):
    if _dt(op).is_float:
        return _intrinsic(b, "llvm.fabs", a[0])
    if not _dt(op).is_signed:
        return a[0]
    return _intrinsic(b, "llvm.abs", a[0], ir.Constant(I1, 0))


_FLOAT_INTRINSIC = {
    "sqrt": "llvm.sqrt", "exp": "llvm.exp", "log": "llvm.log", "floor": "llvm.floor", "ceil": "llvm.ceil",
    "round": "llvm.roundeven", "sin": "llvm.sin", "cos": "llvm.cos", "tan": "llvm.tan",
}


def _float_intrinsic(name: str) -> ScalarFn:
    def emit(b, a, op):
        return _intrinsic(b, _FLOAT_INTRINSIC[name], a[0])
    return emit


for _n in _FLOAT_INTRINSIC:
    SCALAR[_n] = _float_intrinsic(_n)


@scalar("reciprocal")
def _recip(b, a, op):
    return b.fdiv(ir.Constant(a[0].type, 1.0), a[0])


@scalar("sigmoid")
def _sigmoid(b, a, op):
    one = ir.Constant(a[0].type, 1.0)
    e = _intrinsic(b, "llvm.exp", b.fneg(a[0]))
    return b.fdiv(one, b.fadd(one, e))


@scalar("tanh")
def _tanh(b, a, op):
    # tanh(x) = 1 - 2 / (exp(2x) + 1): exact at the extremes (exp overflow gives 1, underflow -1)
    one = ir.Constant(a[0].type, 1.0)
    two = ir.Constant(a[0].type, 2.0)
    e = _intrinsic(b, "llvm.exp", b.fmul(two, a[0]))
    return b.fsub(one, b.fdiv(two, b.fadd(e, one)))


# -- comparisons and logic ----------------------------------------------------------------------
_CMP = {"equal": "==", "less": "<", "less_equal": "<=", "greater": ">", "greater_equal": ">="}


def _compare(name: str) -> ScalarFn:
    def emit(b, a, op):
        dt = _dt(op)
        pred = _CMP[name]
        if dt.is_float:
            c = b.fcmp_ordered(pred, a[0], a[1])
        elif dt.is_signed:
            c = b.icmp_signed(pred, a[0], a[1])
        else:
            c = b.icmp_unsigned(pred, a[0], a[1])
        return b.zext(c, ll_type(DType.bool))
    return emit


for _n in _CMP:
    SCALAR[_n] = _compare(_n)


@scalar("and", "or", "xor", "bitwise_and", "bitwise_or", "bitwise_xor")
def _logic(b, a, op):
    fn = {"and": b.and_, "or": b.or_, "xor": b.xor, "bitwise_and": b.and_, "bitwise_or": b.or_,
          "bitwise_xor": b.xor}[op.opname]
    return fn(a[0], a[1])


@scalar("not")
def _not(b, a, op):
    return b.xor(a[0], ir.Constant(a[0].type, 1))


@scalar("where")
def _where(b, a, op):
    return b.select(b.icmp_unsigned("!=", a[0], _zero(a[0].type)), a[1], a[2])


@scalar("identity")
def _identity(b, a, op):
    return a[0]


@scalar("cast")
def _cast(b, a, op):
    src, dst = op.operands[0].dtype, op.attrs["to"]
    x = a[0]
    if src is DType.bool:
        x = b.icmp_unsigned("!=", x, _zero(x.type))
        return b.uitofp(x, ll_type(dst)) if dst.is_float else b.zext(x, ll_type(dst))
    st, tt = ll_type(src), ll_type(dst)
    if dst is DType.bool:
        nz = b.fcmp_unordered("!=", x, _zero(st)) if src.is_float else b.icmp_unsigned("!=", x, _zero(st))
        return b.zext(nz, tt)
    if src.is_float and dst.is_float:
        if src.itemsize == dst.itemsize:
            return x
        return b.fptrunc(x, tt) if src.itemsize > dst.itemsize else b.fpext(x, tt)
    if src.is_float:
        return b.fptosi(x, tt) if dst.is_signed else b.fptoui(x, tt)
    if dst.is_float:
        return b.sitofp(x, tt) if src.is_signed else b.uitofp(x, tt)
    if src.itemsize == dst.itemsize:
        return x
    if src.itemsize > dst.itemsize:
        return b.trunc(x, tt)
    return b.sext(x, tt) if src.is_signed else b.zext(x, tt)


# -- the loop nest ----------------------------------------------------------------------------------
def broadcast_strides(v: Value, out_shape: tuple[int, ...]) -> list[int]:
    """Element strides of ``v`` over the output's dims (0 where ``v`` is broadcast)."""
    shape = (1,) * (len(out_shape) - len(v.shape)) + tuple(v.shape)
    strides, acc = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d] = 0 if shape[d] == 1 and out_shape[d] != 1 else acc
        acc *= shape[d]
    return strides


def emit_elementwise(k, out_index: int, operands: list[ir.Value], values: list[Value], out: Value,
                     body: Callable[[ir.IRBuilder, list[ir.Value]], ir.Value]) -> None:
    """Emit ``out[i] = body(operand elements at i)`` over ``out``'s shape with broadcasting."""
    b = k.b
    shape = tuple(out.shape)
    all_strides = [broadcast_strides(v, shape) for v in values]
    # merge adjacent dims along which every operand is contiguous (or broadcast the same way)
    dims: list[int] = []
    merged: list[list[int]] = [[] for _ in values]
    for d, n in enumerate(shape):
        if dims and all(s[d - 1] == s[d] * n or (s[d - 1] == 0 and s[d] == 0) for s in all_strides) and \
                all(ms[-1] == s[d - 1] for ms, s in zip(merged, all_strides)):
            dims[-1] *= n
            for ms, s in zip(merged, all_strides):
                ms[-1] = s[d]
            continue
        dims.append(n)
        for ms, s in zip(merged, all_strides):
            ms.append(s[d])
    if not dims:
        dims = [1]
        merged = [[0] for _ in values]

    def nest(level: int, offsets: list[ir.Value], flat: ir.Value) -> None:
        if level == len(dims):
            elems = [b.load(b.gep(ptr, [off], source_etype=ll_type(v.dtype), inbounds=True), typ=ll_type(v.dtype))
                     for ptr, off, v in zip(operands, offsets, values)]
            res = body(b, elems)
            b.store(res, b.gep(k.out(out_index), [flat], source_etype=ll_type(out.dtype), inbounds=True))
            return
        with for_range(b, dims[level], name=f"d{level}") as i:
            new_offsets = [b.add(b.mul(off, const_int(1)), b.mul(i, const_int(ms[level])))
                           if ms[level] else off for off, ms in zip(offsets, merged)]
            inner = 1
            for n in dims[level + 1:]:
                inner *= n
            new_flat = b.add(flat, b.mul(i, const_int(inner)))
            nest(level + 1, new_offsets, new_flat)

    zero = ir.Constant(I64, 0)
    nest(0, [zero for _ in values], zero)


@lowering(*SCALAR)
def lower_elementwise(k, op: Op) -> None:
    fn = SCALAR[op.opname]
    emit_elementwise(k, 0, [k.arg(i) for i in range(len(op.operands))], op.operands, op.results[0],
                     lambda b, elems: fn(b, elems, op))

"""Kernels of the bounded data-dependent ops (``ir/ops/bounded.py``): ``nonzero_bounded``,
``unique_bounded`` and ``topk_bounded`` (``nms_bounded`` is in ``nms.py``).

Each writes its results into buffers sized by a bound known from the operand shapes, zeroes the
unused tail, and stores the number of valid entries in its ``count`` result (an i64 scalar), which
the host reads after the run (``backends/x86/data_dependent.py``). All are shape-generic: dims
come from ``k.shape``.
"""

from __future__ import annotations

from llvmlite import ir

from nnc.ir import DType, Op, Value

from ..llvm_types import I1, I8, I64, PTR, const_int, for_range
from . import dims as dm
from .dims import Dim
from .loopkit import Loops
from .registry import lowering


def zero_fill(k, ptr: ir.Value, n: Dim, v: Value) -> None:
    """Zero ``n`` elements of ``v``'s dtype at ``ptr``."""
    if isinstance(n, int) and n == 0:
        return
    b = k.b
    fn = b.module.declare_intrinsic("llvm.memset", [PTR, I64])
    b.call(fn, [ptr, ir.Constant(I8, 0), dm.val(dm.mul(b, n, v.dtype.itemsize)), ir.Constant(I1, 0)])


def is_nonzero(L: Loops, ptr: ir.Value, i: ir.Value, dt: DType) -> ir.Value:
    """Element ``i`` is not zero (NaN is not zero; -0.0 is)."""
    b = L.b
    x = L.raw(ptr, i, dt)
    if dt is DType.bf16:
        return b.icmp_unsigned("!=", b.and_(x, ir.Constant(x.type, 0x7FFF)), ir.Constant(x.type, 0))
    if dt.is_float:
        return b.fcmp_unordered("!=", x, ir.Constant(x.type, 0.0))
    return b.icmp_unsigned("!=", x, ir.Constant(x.type, 0))


def store_i64(b: ir.IRBuilder, ptr: ir.Value, idx: Dim, value: ir.Value) -> None:
    b.store(value, b.gep(ptr, [dm.val(idx)], source_etype=I64, inbounds=True))


@lowering("nonzero_bounded", generic=True)
def lower_nonzero(k, op: Op) -> None:
    """Scan in row-major order; each non-zero element's coordinates go to the next column of the
    i64[rank, bound] result."""
    x = op.operands[0]
    b = k.b
    L = Loops(k)
    shape = k.shape(x)
    rank = len(shape)
    bound = k.shape(op.results[0])[1]
    zero_fill(k, k.out(0), dm.mul(b, rank, bound), op.results[0])
    count = L.var(const_int(0))
    strides = dm.row_major_strides(b, shape)
    with for_range(b, dm.val(dm.prod(b, shape)), "i") as i:
        fn = b.function
        hit, skip = fn.append_basic_block("nz.hit"), fn.append_basic_block("nz.skip")
        b.cbranch(is_nonzero(L, k.arg(0), i, x.dtype), hit, skip)
        b.position_at_end(hit)
        c = L.get(count)
        rest = i
        for d in range(rank):
            coord = b.udiv(rest, dm.val(strides[d])) if d < rank - 1 else rest
            if d < rank - 1:
                rest = b.urem(rest, dm.val(strides[d]))
            store_i64(b, k.out(0), b.add(b.mul(const_int(d), dm.val(bound)), c), coord)
        L.set(count, b.add(c, const_int(1)))
        b.branch(skip)
        b.position_at_end(skip)
    store_i64(b, k.out(1), 0, L.get(count))


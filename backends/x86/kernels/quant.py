"""x86 lowerings of the quantization ops: ``quantize``, ``dequantize`` and ``bitcast``.

The tensor is walked as ``[outer, axis, inner]`` so that the scale / zero point of an element is
found without division: per-tensor parameters have one entry, per-axis ones are indexed by the
axis position, blocked ones by ``(outer, axis // block, inner)``. Quantize divides in the input
precision (f64 for i32 input, as numpy promotes), rounds half to even, adds the zero point, maps
NaN to 0 and saturates; dequantize subtracts the zero point in f64, rounds to f32 and scales in
the scale's precision, exactly as the reference does.
"""

from __future__ import annotations

from nnc.ir import DType, Op

from ..llvm_types import F32, F64, I64
from . import dims as dm
from .dims import Dim
from .elementwise import SCALAR
from .loopkit import Loops, numel, operand, storage_type
from .registry import lowering


def _param_layout(k, op: Op) -> tuple[Dim, Dim, Dim, int, str]:
    """(outer, axis length, inner, block, kind) with kind in tensor / axis / block; the sizes are
    ints, or i64 values read at run time in shape-generic code (``KernelBuilder.shape``)."""
    x = op.operands[0]
    shape = k.shape(x)
    rank = len(shape)
    params = [op.operands[1]] + ([op.operands[2]] if operand(op, 2) is not None else [])
    if rank == 0 or all(numel(p.shape) == 1 and (len(p.shape) <= 1 or not op.attrs["block_size"]) for p in params):
        return dm.prod(k.b, shape), 1, 1, 1, "tensor"
    axis = op.attrs["axis"] % rank
    outer, inner = dm.prod(k.b, shape[:axis]), dm.prod(k.b, shape[axis + 1:])
    bs = op.attrs["block_size"]
    return outer, shape[axis], inner, bs, ("block" if bs else "axis")


def _generic(op: Op) -> str | None:
    """Shape-generic: the parameters (scale, zero point) must have static shapes."""
    if not all(v.type.is_static for v in op.operands[1:]):
        return f"{op.opname}: the scale and zero point must have static shapes"
    return None


def _emit(k, op: Op, element) -> None:
    """Call ``element(L, x_index, param_index)`` for every element of x."""
    L = Loops(k, F64)
    outer, n_axis, inner, bs, kind = _param_layout(k, op)
    with L.loop(outer, "o") as o:
        with L.loop(n_axis, "a") as a:
            if kind == "block":
                p_row = L.lin((o, dm.mul(k.b, dm.ceil_div(k.b, n_axis, bs), inner)), (k.b.sdiv(a, L.i(bs)), inner))
            with L.loop(inner, "n") as n:
                xi = L.lin((o, dm.mul(k.b, n_axis, inner)), (a, inner), n)
                if kind == "tensor":
                    pi = L.i(0)
                elif kind == "axis":
                    pi = a
                else:
                    pi = L.lin(p_row, n)
                element(L, xi, pi)


@lowering("quantize", generic=_generic)
def lower_quantize(k, op: Op) -> None:
    x, scale = op.operands[0], op.operands[1]
    zp = operand(op, 2)
    out_dt: DType = op.attrs["dtype"]
    info_lo, info_hi = {DType.i8: (-128, 127), DType.u8: (0, 255), DType.i16: (-32768, 32767),
                        DType.u16: (0, 65535), DType.i32: (-2**31, 2**31 - 1)}[out_dt]
    # x / scale runs in x's precision; an integer x divides in f64 (numpy's promotion)
    div_t = F32 if x.dtype in (DType.f32, DType.f16, DType.bf16) else F64

    def element(L: Loops, xi, pi) -> None:
        b = L.b
        xv = L.ld(k.arg(0), xi, x.dtype, div_t)
        sv = L.round_to(L.ld(k.arg(1), pi, scale.dtype, div_t), x.dtype) if x.dtype.is_float else \
            L.ld(k.arg(1), pi, scale.dtype, div_t)
        q = b.fdiv(xv, sv)
        if x.dtype in (DType.f16, DType.bf16):
            q = L.round_to(q, x.dtype)  # the quotient is an f16/bf16 value in the reference
        q = L.fcast(L.intr("llvm.roundeven", q), F64)
        if zp is not None:
            q = b.fadd(q, L.ld(k.arg(2), pi, zp.dtype, F64))
        q = b.select(b.fcmp_unordered("uno", q, q), L.f(0.0, F64), q)
        q = L.clamp(q, L.f(info_lo, F64), L.f(info_hi, F64))
        qi = b.fptosi(q, I64)
        t = storage_type(out_dt)
        b.store(b.trunc(qi, t) if t.width < 64 else qi, L.ptr(k.out(0), xi, out_dt))

    _emit(k, op, element)


@lowering("dequantize", generic=_generic)
def lower_dequantize(k, op: Op) -> None:
    x, scale = op.operands[0], op.operands[1]
    zp = operand(op, 2)
    out_dt = op.results[0].dtype
    mul_t = F64 if scale.dtype is DType.f64 else F32  # f32 * scale promotes as numpy does

    def element(L: Loops, xi, pi) -> None:
        b = L.b
        dx = L.ld(k.arg(0), xi, x.dtype, F64)
        if zp is not None:
            dx = b.fsub(dx, L.ld(k.arg(2), pi, zp.dtype, F64))
        y = b.fmul(L.fcast(L.fcast(dx, F32), mul_t), L.ld(k.arg(1), pi, scale.dtype, mul_t))
        L.st(y, k.out(0), xi, out_dt)

    _emit(k, op, element)


if "bitcast" not in SCALAR:  # the elementwise table may grow a scalar bitcast; do not register twice
    @lowering("bitcast")
    def lower_bitcast(k, op: Op) -> None:
        # same element size: the result is the operand's bytes (memmove: the buffers may coincide)
        L = Loops(k)
        nbytes = op.operands[0].type.nbytes or 0
        L.memcpy(k.out(0), k.arg(0), nbytes, move=True)

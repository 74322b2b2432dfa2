"""The AVX-512 VNNI dot products the INT8 kernels build on: ``vpdpbusd`` (four u8 x i8 products
per i32 lane) and ``vpdpwssd`` (two i16 x i16 products per i32 lane), both accumulating into 16 i32
lanes without saturation; on CPUs without VNNI, an exact emulation (widening multiplies and sums of
each lane's group of products)."""

from __future__ import annotations

from llvmlite import ir

from ..llvm_types import I8, I16, I32

V16 = ir.VectorType(I32, 16)


def intrinsic(mod: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    """The declaration of ``name`` in ``mod`` (made on first use)."""
    fn = mod.globals.get(name)
    return fn if fn is not None else ir.Function(mod, ir.FunctionType(ret, args), name=name)


def _dot(b: ir.IRBuilder, vnni: bool, name: str, group: int, unsigned_a: bool, acc: ir.Value, a: ir.Value,
         w: ir.Value) -> ir.Value:
    if vnni:
        return b.call(intrinsic(b.module, name, V16, [V16, V16, V16]), [acc, a, w])
    n = 16 * group
    narrow = ir.VectorType(I8 if group == 4 else I16, n)
    wide = ir.VectorType(I32, n)
    av = b.bitcast(a, narrow)
    prod = b.mul(b.zext(av, wide) if unsigned_a else b.sext(av, wide), b.sext(b.bitcast(w, narrow), wide))
    for j in range(group):
        part = b.shuffle_vector(prod, ir.Constant(wide, ir.Undefined),
                                ir.Constant(ir.VectorType(I32, 16), [group * i + j for i in range(16)]))
        acc = b.add(acc, part)
    return acc


def dpbusd(b: ir.IRBuilder, vnni: bool, acc: ir.Value, u8: ir.Value, s8: ir.Value) -> ir.Value:
    """acc + sum over each lane's four byte pairs of u8 (unsigned) x s8 (signed)."""
    return _dot(b, vnni, "llvm.x86.avx512.vpdpbusd.512", 4, True, acc, u8, s8)


def dpwssd(b: ir.IRBuilder, vnni: bool, acc: ir.Value, a: ir.Value, w: ir.Value) -> ir.Value:
    """acc + lo16(a) * lo16(w) + hi16(a) * hi16(w) per i32 lane (signed)."""
    return _dot(b, vnni, "llvm.x86.avx512.vpdpwssd.512", 2, False, acc, a, w)

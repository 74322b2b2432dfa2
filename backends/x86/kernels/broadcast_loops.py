"""The broadcasting loop nest shared by elementwise kernels and fused groups: ``out[i] = body(operand
elements at i)`` over the output's shape, each operand advancing by its broadcast strides, adjacent
contiguous dims merged, the outermost dim split over threads for large outputs, and bf16 widened to
f32 on load and rounded on store."""

from __future__ import annotations

import math
from typing import Callable

from llvmlite import ir

from nnc.ir import DType, Value

from .. import llvm_types as lt
from ..llvm_types import I64, const_int, for_range
from ..runtime import split_rows


def broadcast_strides(v: Value, out_shape: tuple[int, ...]) -> list[int]:
    """Element strides of ``v`` over the output's dims (0 where ``v`` is broadcast)."""
    shape = (1,) * (len(out_shape) - len(v.shape)) + tuple(v.shape)
    strides, acc = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d] = 0 if shape[d] == 1 and out_shape[d] != 1 else acc
        acc *= shape[d]
    return strides


def load_elem(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value, dt: DType) -> ir.Value:
    """Element ``index`` of a ``dt`` buffer in its register form (bf16 widened to f32)."""
    x = b.load(b.gep(ptr, [index], source_etype=lt.storage_type(dt), inbounds=True), typ=lt.storage_type(dt))
    return lt.bf16_to_f32(b, x) if dt is DType.bf16 else x


def emit_elementwise(k, out_index: int, operands: list[ir.Value], values: list[Value], out: Value,
                     body: Callable[[ir.IRBuilder, list[ir.Value]], ir.Value]) -> None:
    """Emit ``out[i] = body(operand elements at i)`` over ``out``'s shape with broadcasting.

    bf16 operands reach ``body`` as f32; a bf16 result is rounded from the f32 ``body`` returns."""
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

    def nest(b: ir.IRBuilder, ptrs: list[ir.Value], outp: ir.Value, level: int, offsets: list[ir.Value],
             flat: ir.Value, rows: tuple[ir.Value, ir.Value] | None = None) -> None:
        if level == len(dims):
            elems = [load_elem(b, ptr, off, v.dtype) for ptr, off, v in zip(ptrs, offsets, values)]
            res = body(b, elems)
            if out.dtype is DType.bf16:
                res = lt.f32_to_bf16(b, res)
            b.store(res, b.gep(outp, [flat], source_etype=lt.storage_type(out.dtype), inbounds=True))
            return
        lo, hi = rows if level == 0 and rows else (0, dims[level])
        with for_range(b, hi, name=f"d{level}", start=lo) as i:
            new_offsets = [b.add(off, b.mul(i, const_int(ms[level]))) if ms[level] else off
                           for off, ms in zip(offsets, merged)]
            inner = 1
            for n in dims[level + 1:]:
                inner *= n
            new_flat = b.add(flat, b.mul(i, const_int(inner)))
            nest(b, ptrs, outp, level + 1, new_offsets, new_flat)

    zero = ir.Constant(I64, 0)
    # >>> x86 thread pool (runtime.py, threads helper): a large output splits its outermost loop into
    # blocks of `rows` iterations run by the pool's threads (only when every pointer is a kernel
    # argument, which the outlined block can reload)
    outp = k.out(out_index)
    rows = 0
    if all(any(p is q for q in k.pointers) for p in [outp, *operands]):
        rows = split_rows(getattr(k.cg, "threads", 1), dims[0], math.prod(dims[1:]))
    if rows:
        def block(kb, j: ir.Value) -> None:
            lo = kb.b.mul(j, const_int(rows))
            hi = kb.b.add(lo, const_int(rows))
            hi = kb.b.select(kb.b.icmp_signed("<", hi, const_int(dims[0])), hi, const_int(dims[0]))
            nest(kb.b, [kb.local(p) for p in operands], kb.local(outp), 0, [zero for _ in values], zero, (lo, hi))

        k.parallel_for(-(-dims[0] // rows), block, name="rows")
        return
    # <<< x86 thread pool
    nest(k.b, operands, outp, 0, [zero for _ in values], zero)



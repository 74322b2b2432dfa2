"""The broadcasting loop nest shared by elementwise kernels and fused groups: ``out[i] = body(operand
elements at i)`` over the output's shape, each operand advancing by its broadcast strides, adjacent
contiguous dims merged, the outermost dim split over threads for large outputs, and bf16 widened to
f32 on load and rounded on store.

The innermost loop is a ``vector_loop``: its loads and stores carry an LLVM access group the loop
declares free of loop-carried dependencies (``llvm.loop.parallel_accesses``), and it asks for the
target's full vector width. Without that, LLVM guards the vector loop with pointer-overlap checks
that send in-place ops (output == first operand, the memory planner's favourite) to the scalar
loop, and it picks 8-lane ymm vectors on AVX-512 CPUs tuned to prefer 256 bits."""

from __future__ import annotations

import math
from contextlib import contextmanager
from typing import Callable, Iterator, Sequence

from llvmlite import ir
from llvmlite.ir.values import MDValue

from nnc.ir import DType, Value

from .. import llvm_types as lt
from ..llvm_types import I64, const_int, for_range
from ..runtime import split_rows
from . import dims as dm
from .dims import Dim


class _Distinct(MDValue):
    """A ``distinct`` metadata node (llvmlite only emits uniqued ones): loop IDs and access groups."""

    def descr(self, buf: list[str]) -> None:
        buf.append("distinct ")
        super().descr(buf)

    def __hash__(self) -> int:  # a loop ID refers to itself: hash and compare by identity
        return id(self)

    def __eq__(self, other: object) -> bool:
        return self is other


def _distinct(module: ir.Module, operands: list) -> _Distinct:
    return _Distinct(module, module._fix_metadata_operands(list(operands)), name=str(len(module.metadata)))


def vector_lanes(k, dtypes: list[DType]) -> int:
    """Vector lanes for a loop over elements of ``dtypes``: the target's width over the widest
    (f16/bf16 compute in f32, so they count as 4 bytes)."""
    size = max([4] + [8 if dt.itemsize >= 8 else 4 for dt in dtypes])
    return max(1, k.target.vector_bits // (8 * size))


@contextmanager
def vector_loop(b: ir.IRBuilder, count: ir.Value | int, lanes: int, name: str = "v", start: ir.Value | int = 0,
                predicate: bool = False) -> Iterator[ir.Value]:
    """``for (i = start; i < count; i++)`` whose iterations are independent: every load and store
    emitted in the body joins an access group that the loop declares free of loop-carried
    dependencies, and the vectoriser is asked for ``lanes`` lanes (``predicate``: masked vectors
    for the tail too, for short trip counts). Only for loops whose iterations truly touch disjoint
    elements (reading element i before writing element i is fine)."""
    if isinstance(count, int) and isinstance(start, int) and (count - start < 2 * lanes and not predicate or
                                                              count - start <= 2):
        lanes = 1  # too short for LLVM to vectorise (unmasked): a width hint would only print a remark
    def tag(latch: ir.Instruction, blocks: list[ir.Block]) -> None:
        tag_loop(latch, blocks, lanes, predicate=predicate)

    with for_range(b, count, name, start, on_latch=tag) as i:
        yield i


def tag_loop(latch: ir.Instruction, blocks: list[ir.Block], lanes: int, parallel: bool = True,
             predicate: bool = False) -> None:
    """Loop metadata on the back edge ``latch`` of a loop whose body is ``blocks``: a vector width
    hint (``lanes``), no unrolling before the vectoriser, and with ``parallel`` an access group on
    every load/store of the body, declared free of loop-carried dependencies."""
    mod = latch.parent.parent.module
    # a short constant trip count would otherwise be fully unrolled into scalar code before the
    # vectoriser sees the loop (the vectoriser still interleaves)
    props = [mod.add_metadata(["llvm.loop.unroll.disable"])]
    if parallel:
        group = _distinct(mod, [])
        for blk in blocks:
            for inst in blk.instructions:
                if isinstance(inst, (ir.LoadInstr, ir.StoreInstr)):
                    inst.set_metadata("llvm.access.group", group)
        props.append(mod.add_metadata(["llvm.loop.parallel_accesses", group]))
    # a width hint makes LLVM print a remark to stderr for every loop it then cannot vectorise:
    # give none to bodies with inner control flow (e.g. integer pow) or library calls (sinf).
    # (no llvm.loop.vectorize.enable either: "forcing" warns the same way)
    scalar = len(blocks) > 1 or any(
        isinstance(inst, ir.CallInstr) and not getattr(inst.callee, "name", "").startswith(("llvm.", "nnc.vm."))
        for inst in blocks[0].instructions)
    if lanes > 1 and not scalar:
        props.append(mod.add_metadata(["llvm.loop.vectorize.width", ir.Constant(ir.IntType(32), lanes)]))
        if predicate:
            props.append(mod.add_metadata(["llvm.loop.vectorize.predicate.enable", ir.Constant(ir.IntType(1), 1)]))
    loop_id = _distinct(mod, props)
    loop_id.operands = (loop_id, *loop_id.operands)
    latch.set_metadata("llvm.loop", loop_id)


def broadcast_strides(v: Value, out_shape: tuple[int, ...]) -> list[int]:
    """Element strides of ``v`` over the output's dims (0 where ``v`` is broadcast)."""
    shape = (1,) * (len(out_shape) - len(v.shape)) + tuple(v.shape)
    strides, acc = [0] * len(shape), 1
    for d in range(len(shape) - 1, -1, -1):
        strides[d] = 0 if shape[d] == 1 and out_shape[d] != 1 else acc
        acc *= shape[d]
    return strides


def dynamic_broadcast_strides(b: ir.IRBuilder, shape: Sequence[Dim], out_shape: Sequence[Dim]) -> list[Dim]:
    """``broadcast_strides`` for dims that may be run-time values: a run-time dim of 1 under a larger
    output dim is broadcast (stride 0), decided by a select at run time."""
    shape = [1] * (len(out_shape) - len(shape)) + list(shape)
    strides: list[Dim] = [0] * len(shape)
    acc: Dim = 1
    for d in range(len(shape) - 1, -1, -1):
        n, o = shape[d], out_shape[d]
        if isinstance(n, int):
            strides[d] = 0 if n == 1 and o != 1 else acc
        else:  # a run-time 1 under a bigger output dim is a broadcast
            one = b.icmp_signed("==", n, const_int(1))
            strides[d] = b.select(one, const_int(0), dm.val(acc))
        acc = dm.mul(b, acc, n)
    return strides


def load_elem(b: ir.IRBuilder, ptr: ir.Value, index: ir.Value, dt: DType) -> ir.Value:
    """Element ``index`` of a ``dt`` buffer in its register form (bf16 widened to f32)."""
    x = b.load(b.gep(ptr, [index], source_etype=lt.storage_type(dt), inbounds=True), typ=lt.storage_type(dt))
    return lt.bf16_to_f32(b, x) if dt is DType.bf16 else x


def _mergeable(all_strides: list[list[Dim]], merged: list[list[Dim]], d: int, n: Dim) -> bool:
    """Dims d-1 and d can be one loop: for every operand, stride[d-1] == stride[d] * n (or both 0)."""
    for s, ms in zip(all_strides, merged):
        a, c, last = s[d - 1], s[d], ms[-1]
        if not (isinstance(a, int) and isinstance(c, int) and isinstance(n, int) and isinstance(last, int)):
            if not (isinstance(a, int) and isinstance(c, int) and a == 0 and c == 0 and isinstance(last, int)
                    and last == 0):
                return False
            continue
        if not (a == c * n or (a == 0 and c == 0)) or last != a:
            return False
    return True


def emit_elementwise(k, out_index: int, operands: list[ir.Value], values: list[Value], out: Value,
                     body: Callable[[ir.IRBuilder, list[ir.Value]], ir.Value]) -> None:
    """Emit ``out[i] = body(operand elements at i)`` over ``out``'s shape with broadcasting.

    bf16 operands reach ``body`` as f32; a bf16 result is rounded from the f32 ``body`` returns."""
    def layout(kb) -> tuple[list[Dim], list[list[Dim]]]:
        """The loop dims and each operand's strides along them; run-time dims are read through
        ``kb`` (the kernel, or a parallel task, which has its own copy of the frame)."""
        if kb.generic:
            shape: tuple[Dim, ...] = kb.shape(out)
            all_strides = [dynamic_broadcast_strides(kb.b, kb.shape(v), shape) for v in values]
        else:
            shape = tuple(out.shape)
            all_strides = [broadcast_strides(v, shape) for v in values]
        # merge adjacent dims along which every operand is contiguous (or broadcast the same way);
        # run-time dims are merged only where that holds whatever their value
        dims: list[Dim] = []
        merged: list[list[Dim]] = [[] for _ in values]
        for d, n in enumerate(shape):
            if dims and _mergeable(all_strides, merged, d, n):
                dims[-1] = dm.mul(kb.b, dims[-1], n)
                for ms, s in zip(merged, all_strides):
                    ms[-1] = s[d]
                continue
            dims.append(n)
            for ms, s in zip(merged, all_strides):
                ms.append(s[d])
        if not dims:
            return [1], [[0] for _ in values]
        return dims, merged

    lanes = vector_lanes(k, [v.dtype for v in values] + [out.dtype])

    def nest(b: ir.IRBuilder, dims: list[Dim], merged: list[list[Dim]], ptrs: list[ir.Value], outp: ir.Value,
             level: int, offsets: list[ir.Value], flat: ir.Value, rows: tuple[ir.Value, ir.Value] | None = None
             ) -> None:
        if level == len(dims):
            elems = [load_elem(b, ptr, off, v.dtype) for ptr, off, v in zip(ptrs, offsets, values)]
            res = body(b, elems)
            if out.dtype is DType.bf16:
                res = lt.f32_to_bf16(b, res)
            b.store(res, b.gep(outp, [flat], source_etype=lt.storage_type(out.dtype), inbounds=True))
            return
        lo, hi = rows if level == 0 and rows else (0, dims[level])
        loop = vector_loop(b, hi, lanes, name=f"d{level}", start=lo) if level == len(dims) - 1 else \
            for_range(b, hi, name=f"d{level}", start=lo)
        with loop as i:
            new_offsets = [off if isinstance(ms[level], int) and not ms[level] else
                           b.add(off, dm.val(dm.mul(b, i, ms[level]))) for off, ms in zip(offsets, merged)]
            inner = dm.prod(b, dims[level + 1:])
            new_flat = b.add(flat, dm.val(dm.mul(b, i, inner)))
            nest(b, dims, merged, ptrs, outp, level + 1, new_offsets, new_flat)

    zero = ir.Constant(I64, 0)
    dims, merged = layout(k)
    # >>> x86 thread pool (runtime.py, threads helper): a large output splits its outermost loop into
    # blocks of `rows` iterations run by the pool's threads (only when every pointer is a kernel
    # argument, which the outlined block can reload)
    outp = k.out(out_index)
    rows = 0
    if all(any(p is q for q in k.pointers) for p in [outp, *operands]):
        rows = split_rows(getattr(k.cg, "threads", 1), dm.hint(dims[0], 1 << 12),
                          math.prod(dm.hint(d, 64) for d in dims[1:]))
    if rows:
        def block(kb, j: ir.Value) -> None:
            tdims, tmerged = layout(kb)
            n0 = dm.val(tdims[0])
            lo = kb.b.mul(j, const_int(rows))
            hi = kb.b.add(lo, const_int(rows))
            hi = kb.b.select(kb.b.icmp_signed("<", hi, n0), hi, n0)
            nest(kb.b, tdims, tmerged, [kb.local(p) for p in operands], kb.local(outp), 0, [zero for _ in values],
                 zero, (lo, hi))

        k.parallel_for(dm.val(dm.ceil_div(k.b, dims[0], rows)), block, name="rows")
        return
    # <<< x86 thread pool
    nest(k.b, dims, merged, operands, outp, 0, [zero for _ in values], zero)



"""Fused groups (``fused`` ops formed by the ``fuse`` pass): one kernel per group.

- ``elementwise``: one loop nest over the group's result (``emit_elementwise``: contiguous dims
  merged, the outer dim split over threads, the inner loop a full-width ``vector_loop``); each
  element evaluates the region's ops in order through the scalar table of ``elementwise.py``
  (vecmath polynomials for exp/erf/tanh/sigmoid), so intermediates live in vector registers.
- anchor kinds (``conv``, ``matmul``, ``gemm``): the anchor is lowered over the group's outer
  values (so constant weights are pre-packed), and the epilogue (bias, activation, residual add)
  runs inside the GEMM on each output tile right after its last K slice, while the tile is in L1
  (``_tile_epilogue``: per tile row, a masked full-width vector loop over the columns; a depthwise
  conv calls it once per finished channel plane). Where the anchor takes no such path (other
  dtypes) or an input cannot be addressed per tile row, the epilogue is a pass over the result
  buffer in the same kernel, in place.
- ``qconv`` / ``qmatmul`` (from the x86 ``fuse-requantize`` pass): the integer kernel with the
  requantize in its epilogue (``quant_fused.py``).
"""

from __future__ import annotations

import math
from typing import Callable

from llvmlite import ir

from nnc.ir import DType, Op, Value

from ..llvm_types import I64, PTR, const_int, for_range, ll_type, round_bf16
from . import quant_fused
from .broadcast_loops import vector_lanes, vector_loop
from .elementwise import SCALAR, broadcast_strides, emit_elementwise
from .registry import get_lowering, lowering


def _eval_region(b: ir.IRBuilder, body_ops: list[Op], env: dict[int, ir.Value]) -> None:
    for rop in body_ops:
        fn = SCALAR.get(rop.opname)
        if fn is None:
            raise NotImplementedError(f"no scalar form for {rop.opname} in a fused group")
        r = fn(b, [env[id(v)] for v in rop.operands], rop)
        # bf16 is carried in f32: round each intermediate as the unfused op's store would
        env[id(rop.results[0])] = round_bf16(b, r) if rop.results[0].dtype is DType.bf16 else r


def _fused_generic(op: Op) -> str | None:
    from .registry import why_not_generic

    if op.attrs["kind"] == "elementwise":
        return None
    return why_not_generic(op.regions[0].ops[0])


@lowering("fused", generic=_fused_generic)
def lower_fused(k, op: Op) -> None:
    region = op.regions[0]
    kind = op.attrs["kind"]
    if kind in quant_fused.KINDS:
        quant_fused.lower_fused_requantize(k, op)
        return
    out = region.outputs[0]
    if kind == "elementwise":
        params = region.params

        def body(b: ir.IRBuilder, elems: list[ir.Value]) -> ir.Value:
            env = {id(p): e for p, e in zip(params, elems)}
            _eval_region(b, region.ops, env)
            return env[id(out)]

        emit_elementwise(k, 0, [k.arg(i) for i in range(len(op.operands))], list(params), out, body)
        return
    anchor = region.ops[0]
    lower_anchor = get_lowering(anchor.opname)
    if lower_anchor is None:
        raise NotImplementedError(f"no x86 lowering for {anchor.opname}")
    index = {id(p): i for i, p in enumerate(region.params)}
    from ..codegen import KernelBuilder

    epilogue = region.ops[1:]
    # epilogue inputs: the anchor's result (read back from the output buffer) and group parameters
    anchor_out = anchor.results[0]
    used: list[Value] = []
    for rop in epilogue:
        for v in rop.operands:
            if v is not anchor_out and id(v) in index and v not in used:
                used.append(v)
    # lower the anchor as an op over the group's outer values, so a weight that is a module constant
    # is seen as one (const_array) and pre-packed at compile time, as for an unfused conv/matmul;
    # the epilogue's inputs ride along as extra pointers for the GEMM's per-tile epilogue
    outer = Op(anchor.opname, [op.operands[index[id(v)]] for v in anchor.operands], anchor.attrs,
               [r.type for r in anchor.results], [r.name for r in anchor.results], loc=anchor.loc)
    try:
        sub = KernelBuilder(k.cg, k.fn, outer, [k.out(0)] + [k.arg(index[id(v)]) for v in anchor.operands]
                            + [k.arg(index[id(v)]) for v in used], k.b)
        # the temporary op's results have the anchor's types: their run-time dims are the anchor's
        sub.shape_alias = {id(r): a for r, a in zip(outer.results, anchor.results)}
        if epilogue and not k.generic:  # shape-generic code: the epilogue is a pass over the result
            sub.tile_epilogue = _tile_epilogue(kind, out, anchor_out, epilogue, used, len(anchor.operands))
        lower_anchor(sub, outer)
    finally:
        outer.drop_operands()  # the temporary op must not stay among the outer values' uses
    k.b = sub.b
    for v in used:  # an epilogue input the anchor also packed (replaces=) is still read raw
        k.reads_raw(k.arg(index[id(v)]))
    if not epilogue or getattr(sub, "tile_epilogue_applied", False):
        return
    pointers = [k.out(0)] + [k.arg(index[id(v)]) for v in used]
    values = [anchor_out] + used

    def body(b: ir.IRBuilder, elems: list[ir.Value]) -> ir.Value:
        env = {id(v): e for v, e in zip(values, elems)}
        _eval_region(b, epilogue, env)
        return env[id(out)]

    emit_elementwise(k, 0, pointers, values, out, body)


def _tile_epilogue(kind: str, out: Value, anchor_out: Value, epilogue: list[Op], used: list[Value],
                   first_arg: int) -> Callable | None:
    """The epilogue as a GEMM tile callback (gemm.py's ``tile_epilogue``), or None when its inputs
    cannot be addressed per tile row (then it runs as a pass over the result).

    A tile row is a run of the result's trailing ("inner") dims: the spatial dims of a conv, the
    last dim of a matmul/gemm. Each input must be contiguous along the inner dims or broadcast
    over all of them; along the leading dims any broadcast is fine (a per-channel scale, a
    residual of the full shape)."""
    dt = out.dtype
    if dt not in (DType.f32, DType.f64) or any(v.dtype is not dt for v in used):
        return None
    shape = tuple(out.shape)
    ninner = len(shape) - 2 if kind == "conv" else 1
    lead, inner = shape[:len(shape) - ninner], shape[len(shape) - ninner:]
    inner_rm = [math.prod(inner[d + 1:]) for d in range(len(inner))]
    plans = []
    for v in used:
        st = broadcast_strides(v, shape)
        ist = [x for x, n in zip(st[len(lead):], inner) if n > 1]
        if all(x == 0 for x in ist):
            contiguous = False
        elif ist == [r for r, n in zip(inner_rm, inner) if n > 1]:
            contiguous = True
        else:
            return None
        plans.append((contiguous, [(n, x) for n, x in zip(lead, st[:len(lead)])]))
    et = ll_type(dt)
    # rows of one or two elements: no width hint (LLVM would not vectorise them and print a remark)
    hint = math.prod(inner) > 2

    def row_offset(b: ir.IRBuilder, row: ir.Value, lead_strides: list[tuple[int, int]]) -> ir.Value:
        off, rem = const_int(0), row
        for n, x in reversed(lead_strides):
            if x and n > 1:
                off = b.add(off, b.mul(b.srem(rem, const_int(n)), const_int(x)))
            rem = b.sdiv(rem, const_int(n))
        return off

    def tile(kb, row0: ir.Value, col0: ir.Value, mrem: ir.Value, nrem: ir.Value, cp: ir.Value, ldc: int) -> None:
        # the epilogue is a function of its own, never inlined: inlined into the GEMM task, LLVM
        # hoists its vector constants out of every loop and the microkernel's accumulators spill
        # (a 4x slower BERT FFN matmul with a gelu epilogue)
        ptrs = [kb.arg(first_arg + j) for j in range(len(plans))]
        fn = ir.Function(kb.cg.ll, ir.FunctionType(ir.VoidType(), [PTR, I64, I64, I64, I64] + [PTR] * len(ptrs)),
                         name=kb.cg.ll.get_unique_name(f"{kb.fn.name}.epilogue"))
        fn.linkage = "internal"
        fn.attributes.add("noinline")
        fn.attributes.add("nounwind")
        fcp, frow0, fcol0, fmrem, fnrem, *fptrs = fn.args
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        lanes = vector_lanes(kb, [dt]) if hint else 1
        with for_range(b, fmrem, "er") as r:
            row = b.add(frow0, r)
            crow = b.gep(fcp, [b.mul(r, const_int(ldc))], source_etype=et, inbounds=True)
            srcs = []
            for ptr, (contiguous, lead_strides) in zip(fptrs, plans):
                off = row_offset(b, row, lead_strides)
                base = b.gep(ptr, [b.add(off, fcol0) if contiguous else off], source_etype=et, inbounds=True)
                srcs.append((contiguous, base if contiguous else b.load(base, typ=et)))
            with vector_loop(b, fnrem, lanes, "ec", predicate=True) as col:
                q = b.gep(crow, [col], source_etype=et, inbounds=True)
                env = {id(anchor_out): b.load(q, typ=et)}
                for v, (contiguous, src) in zip(used, srcs):
                    env[id(v)] = b.load(b.gep(src, [col], source_etype=et, inbounds=True), typ=et) \
                        if contiguous else src
                _eval_region(b, epilogue, env)
                b.store(env[id(out)], q)
        b.ret_void()
        kb.b.call(fn, [cp, row0, col0, mrem, nrem] + ptrs)
    tile.inner = math.prod(inner)  # the anchor takes the callback only if its C rows are this long
    return tile

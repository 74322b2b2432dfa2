"""Fused groups (``fused`` ops formed by the ``fuse`` pass): one kernel per group.

- ``elementwise``: one loop nest over the group's result; each element evaluates the region's ops
  in order through the scalar table of ``elementwise.py``, so intermediates live in registers.
- anchor kinds (``conv``, ``matmul``, ``gemm``): the anchor's own kernel writes the result buffer,
  then the epilogue (bias, activation, residual add) runs over that buffer in the same kernel,
  in place, while it is still in cache.
"""

from __future__ import annotations

from llvmlite import ir

from nnc.ir import Op, Value

from .elementwise import SCALAR, emit_elementwise
from .registry import get_lowering, lowering


def _eval_region(b: ir.IRBuilder, body_ops: list[Op], env: dict[int, ir.Value]) -> None:
    for rop in body_ops:
        fn = SCALAR.get(rop.opname)
        if fn is None:
            raise NotImplementedError(f"no scalar form for {rop.opname} in a fused group")
        env[id(rop.results[0])] = fn(b, [env[id(v)] for v in rop.operands], rop)


@lowering("fused")
def lower_fused(k, op: Op) -> None:
    region = op.regions[0]
    kind = op.attrs["kind"]
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

    sub = KernelBuilder(k.cg, k.fn, anchor, [k.out(0)] + [k.arg(index[id(v)]) for v in anchor.operands], k.b)
    lower_anchor(sub, anchor)
    k.b = sub.b
    epilogue = region.ops[1:]
    if not epilogue:
        return
    # epilogue inputs: the anchor's result (read back from the output buffer) and group parameters
    anchor_out = anchor.results[0]
    used: list[Value] = []
    for rop in epilogue:
        for v in rop.operands:
            if v is not anchor_out and id(v) in index and v not in used:
                used.append(v)
    pointers = [k.out(0)] + [k.arg(index[id(v)]) for v in used]
    values = [anchor_out] + used

    def body(b: ir.IRBuilder, elems: list[ir.Value]) -> ir.Value:
        env = {id(v): e for v, e in zip(values, elems)}
        _eval_region(b, epilogue, env)
        return env[id(out)]

    emit_elementwise(k, 0, pointers, values, out, body)

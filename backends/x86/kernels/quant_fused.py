"""Lowering of the ``fused`` groups the ``fuse-requantize`` pass makes (kind ``qconv`` or
``qmatmul``): the anchor's kernel runs with the group's requantize in its epilogue, so the i32
accumulators go to int8 in registers and the group writes only the int8 tensor."""

from __future__ import annotations

import numpy as np

from nnc.ir import Op

from .requant_epilogue import RequantSpec, acc_bound

KINDS = ("qconv", "qmatmul")


def lower_fused_requantize(k, op: Op) -> None:
    from ..codegen import KernelBuilder
    from .quant_int8 import lower_qconv, lower_qmatmul

    region = op.regions[0]
    anchor, rq = region.ops
    index = {id(p): i for i, p in enumerate(region.params)}
    n = len(anchor.operands)
    mult, shift = rq.operands[1:]
    consts = k.cg.module.constants  # the fuse-requantize pass grouped only constant multipliers and shifts
    values = [np.asarray(consts[op.operands[index[id(v)]].producer.attrs["ref"]]).astype(np.int64)
              for v in (mult, shift)]
    spec = RequantSpec.build(rq.attrs, n, n + 1, *values, fma=k.target.has_fma)
    operands = [op.operands[index[id(v)]].producer for v in anchor.operands[1:3]]
    if operands and all(p is not None and p.opname == "const" for p in operands):  # the bound needs them
        w_b = [np.asarray(consts[p.attrs["ref"]]) for p in operands]
        spec.bound_accumulators(acc_bound(anchor, w_b[0], w_b[1] if len(w_b) > 1 else None), *values)
    outer = Op(anchor.opname, [op.operands[index[id(v)]] for v in anchor.operands], anchor.attrs,
               [r.type for r in anchor.results], [r.name for r in anchor.results], loc=anchor.loc)
    try:
        # the anchor's operands, then the requantize's multiplier and shift (read in place)
        ptrs = [k.out(0)] + [k.arg(index[id(v)]) for v in list(anchor.operands) + [mult, shift]]
        sub = KernelBuilder(k.cg, k.fn, outer, ptrs, k.b)
        sub.shape_alias = {id(r): a for r, a in zip(outer.results, anchor.results)}
        (lower_qconv if anchor.opname == "qconv" else lower_qmatmul)(sub, outer, requant=spec)
    finally:
        outer.drop_operands()
    k.b = sub.b
    for v in (mult, shift):  # a constant another kernel packed (replaces=) is still read raw here
        k.reads_raw(k.arg(index[id(v)]))

"""Lowering of the ``fused`` groups the ``fuse-requantize`` pass makes (kind ``qconv`` or
``qmatmul``): the anchor's kernel runs with the group's requantize in its epilogue, so the i32
accumulators go to int8 in registers and the group writes only the int8 tensor."""

from __future__ import annotations

import numpy as np

from nnc.ir import Op

from .requant_epilogue import RequantSpec

KINDS = ("qconv", "qmatmul")


def lower_fused_requantize(k, op: Op) -> None:
    from ..codegen import KernelBuilder
    from .quant_int8 import lower_qconv, lower_qmatmul

    region = op.regions[0]
    anchor, rq = region.ops
    index = {id(p): i for i, p in enumerate(region.params)}
    consts = k.cg.module.constants
    mult, shift = (consts[op.operands[index[id(v)]].producer.attrs["ref"]] for v in rq.operands[1:])
    acc = anchor.results[0]
    channels = acc.shape[1] if anchor.opname == "qconv" else acc.shape[-1]
    spec = RequantSpec.build(np.asarray(mult), np.asarray(shift), channels, rq.attrs)
    for v in rq.operands[1:]:  # baked into the kernel's packed constants
        k.cg.unread_args.add(id(k.arg(index[id(v)])))
    outer = Op(anchor.opname, [op.operands[index[id(v)]] for v in anchor.operands], anchor.attrs,
               [r.type for r in anchor.results], [r.name for r in anchor.results], loc=anchor.loc)
    try:
        sub = KernelBuilder(k.cg, k.fn, outer, [k.out(0)] + [k.arg(index[id(v)]) for v in anchor.operands], k.b)
        sub.shape_alias = {id(r): a for r, a in zip(outer.results, anchor.results)}
        (lower_qconv if anchor.opname == "qconv" else lower_qmatmul)(sub, outer, requant=spec)
    finally:
        outer.drop_operands()
    k.b = sub.b

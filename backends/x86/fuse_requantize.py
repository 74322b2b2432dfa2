"""``fuse-requantize`` (x86 preparation): a ``qconv`` or ``qmatmul`` whose only reader is a
``requantize`` with constant multiplier and shift becomes one ``fused`` group (kind ``qconv`` /
``qmatmul``) holding both, which the x86 backend lowers as the anchor's kernel with the
requantization (and its clip, i.e. the ReLU/ReLU6 the quantizer folded in) in the epilogue
(kernels/quant_fused.py). The i32 accumulator tensor then never exists: on MobileNetV2 that is 52
kernels and 52 passes over i32 tensors fewer. Groups are formed only where the anchor's kernel has
such an epilogue (the depthwise and VNNI qconv kernels, qmatmul), so the graph stays lowerable.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.ir import Module, Op
from nnc.passes.fuse import materialize_group
from nnc.passes.registry import Pass, register_pass


def _const(op: Op | None) -> bool:
    return op is not None and op.opname == "const"


def _fusable(rq: Op, module: Module, outputs: set[int]) -> bool:
    from .kernels.quant_int8 import qconv_path

    x = rq.operands[0]
    anchor = x.producer
    if anchor is None or anchor.opname not in ("qconv", "qmatmul") or len(x.uses) != 1 or id(x) in outputs:
        return False
    if not all(_const(v.producer) for v in rq.operands[1:]) or rq.results[0].dtype.itemsize != 1:
        return False
    if x.shape is None or not all(isinstance(d, int) for d in list(x.shape[1:]) + list(anchor.operands[0].shape[1:])):
        return False  # the kernels are static but for the batch
    rank = len(x.shape)
    channel_axis = 1 if anchor.opname == "qconv" else rank - 1
    if any(v.shape not in ((), (1,)) for v in rq.operands[1:]) and rq.attrs["axis"] % rank != channel_axis:
        return False
    if anchor.opname == "qconv":
        return qconv_path(anchor, module) != "direct"
    return _const(anchor.operands[1].producer) and (len(anchor.operands) == 2 or _const(anchor.operands[2].producer))


@dataclass
class FuseRequantize(Pass):
    def run(self, module: Module) -> bool:
        self.stats = {"fused": 0}
        for g in module.graphs.values():
            outputs = {id(v) for v in g.outputs}
            pairs = [(op.operands[0].producer, op) for op in g.ops
                     if op.opname == "requantize" and _fusable(op, module, outputs)]
            for anchor, rq in pairs:
                materialize_group(g, anchor.opname, [anchor, rq])
            self.stats["fused"] += len(pairs)
        return bool(self.stats["fused"])


register_pass("fuse-requantize")(FuseRequantize)

"""``reparameterize``: structural re-parameterisation of parallel conv branches (as in RepVGG).

A sum of branches that all read the same input ``x`` -- 2-D convs with constant weights (say 3x3 and
1x1), inference batch norms of ``x`` and ``x`` itself -- is one convolution, because convolution is
linear in its kernel: each branch's kernel is embedded, centred, in the largest kernel, batch norm
becomes a diagonal 1x1 kernel ``s`` with bias ``t``, the identity a diagonal kernel of ones; the
kernels and biases add up. Conditions: same strides and groups, dilation 1, paddings that line the
branches up, and each branch read only by the sum. Run it after ``fold-batchnorm`` so that each
conv+BN branch is already one conv.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Module, Op, Value, const_value

from .fold_batchnorm import bn_affine
from .registry import Pass, register_pass
from .rewrite import Pattern, Rewriter, apply_patterns


@dataclass
class Branch:
    kernel: np.ndarray  # [Cout, Cin/g, kh, kw], float64
    bias: np.ndarray  # [Cout], float64
    pads: tuple[int, int, int, int]  # top, left, bottom, right
    strides: tuple[int, int]
    group: int
    producer: Op | None


def _sum_terms(v: Value, rw: Rewriter, root: bool) -> list[Value]:
    p = v.producer
    if p is not None and p.opname == "add" and (root or (len(v.uses) == 1 and v not in rw.graph.outputs)) \
            and p.operands[0].type == p.operands[1].type == v.type:
        return _sum_terms(p.operands[0], rw, False) + _sum_terms(p.operands[1], rw, False)
    return [v]


def _branch(term: Value, x: Value, rw: Rewriter, channels: int, group: int) -> Branch | None:
    p = term.producer
    eye = np.zeros((channels, channels // group, 1, 1))
    cg = channels // group
    for co in range(channels):
        eye[co, co % cg, 0, 0] = 1.0
    if term is x:
        return Branch(eye, np.zeros(channels), (0, 0, 0, 0), (1, 1), group, None)
    if p is None or len(term.uses) != 1:
        return None
    if p.opname == "batch_norm" and p.operands[0] is x:
        aff = bn_affine(rw.module, p)
        if aff is None:
            return None
        s, t = aff
        return Branch(eye * s[:, None, None, None], t, (0, 0, 0, 0), (1, 1), group, p)
    if p.opname == "conv" and p.operands[0] is x and p.operands[1].type.rank == 4:
        w = const_value(rw.module, p.operands[1])
        b = const_value(rw.module, p.operands[2]) if len(p.operands) > 2 else np.zeros(w.shape[0]) \
            if w is not None else None
        if w is None or b is None or p.attrs["auto_pad"] not in ("NOTSET", ""):
            return None
        if any(d != 1 for d in (p.attrs["dilations"] or (1, 1))):
            return None
        pads = tuple(p.attrs["pads"] or (0, 0, 0, 0))
        strides = tuple(p.attrs["strides"] or (1, 1))
        return Branch(w.astype(np.float64), b.astype(np.float64).reshape(-1), (pads[0], pads[1], pads[2], pads[3]),
                      strides, p.attrs["group"], p)  # type: ignore[arg-type]
    return None


class MergeBranches(Pattern):
    opnames = ("add",)

    def rewrite(self, op: Op, rw: Rewriter) -> bool:
        out = op.results[0]
        if out.type.rank != 4 or not out.type.is_static or not out.dtype.is_float:
            return False
        # only start at the top of a chain of adds
        if len(out.uses) == 1 and out.uses[0][0].opname == "add" and out not in rw.graph.outputs:
            return False
        terms = _sum_terms(out, rw, True)
        convs = [t.producer for t in terms if t.producer is not None and t.producer.opname == "conv"]
        if len(terms) < 2 or not convs:
            return False
        x = convs[0].operands[0]
        group = convs[0].attrs["group"]
        channels = out.shape[1]
        branches = [_branch(t, x, rw, channels, group) for t in terms]
        if any(b is None for b in branches):
            return False
        if len({b.strides for b in branches}) != 1 or any(b.group != group for b in branches):  # type: ignore[union-attr]
            return False
        kh = max(b.kernel.shape[2] for b in branches)  # type: ignore[union-attr]
        kw = max(b.kernel.shape[3] for b in branches)  # type: ignore[union-attr]
        big = max(branches, key=lambda b: b.kernel.shape[2] * b.kernel.shape[3])  # type: ignore[union-attr]
        top, left, bottom, right = big.pads  # type: ignore[union-attr]
        kernel = np.zeros((channels, branches[0].kernel.shape[1], kh, kw))  # type: ignore[union-attr]
        bias = np.zeros(channels)
        for b in branches:
            h, w = b.kernel.shape[2:]  # type: ignore[union-attr]
            oy, ox = top - b.pads[0], left - b.pads[1]  # type: ignore[union-attr]
            if oy < 0 or ox < 0 or kh - h - oy != bottom - b.pads[2] or kw - w - ox != right - b.pads[3]:  # type: ignore
                return False  # the branches do not line up
            if b.kernel.shape[:2] != kernel.shape[:2]:  # type: ignore[union-attr]
                return False
            kernel[:, :, oy:oy + h, ox:ox + w] += b.kernel  # type: ignore[union-attr]
            bias += b.bias  # type: ignore[union-attr]
        dt = out.dtype.numpy
        bld = rw.builder_before(op)
        wv = bld.const(kernel.astype(dt), name=out.name + ".w")
        bv = bld.const(bias.astype(dt), name=out.name + ".b")
        attrs = dict(big.producer.attrs) if big.producer is not None else {}  # type: ignore[union-attr]
        attrs.update(pads=(top, left, bottom, right), group=group, dilations=(1, 1),
                     strides=branches[0].strides)  # type: ignore[union-attr]
        new = bld.op("conv", x, wv, bv, name=out.name + ".rep", **attrs)
        name = out.name
        rw.replace(op, [new])
        rw.graph.rename(new, name)
        return True


@register_pass("reparameterize")
@dataclass
class Reparameterize(Pass):
    def run(self, module: Module) -> bool:
        n = apply_patterns(module, [MergeBranches()])
        if n:
            self.note("merged", n)
        return n > 0

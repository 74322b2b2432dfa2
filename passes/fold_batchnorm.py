"""``fold-batchnorm``: fold inference batch norms into the conv or matmul/gemm that feeds them.

``batch_norm(conv(x, W, b))`` with constant parameters becomes ``conv(x, W', b')`` with
``s = scale / sqrt(var + eps)``, ``W' = W * s`` (per output channel) and ``b' = (b - mean) * s + bias``.
The same holds for a ``gemm``/``matmul`` with a constant weight whose output features are the batch
norm's channels (a 2-D activation ``[N, C]``). The producer must have no other reader. Folding is
done in float64 and rounded once to the weights' dtype.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Module, Op, const_value

from .registry import Pass, register_pass
from .rewrite import Pattern, Rewriter, apply_patterns


def bn_affine(module: Module, bn: Op) -> tuple[np.ndarray, np.ndarray] | None:
    """(s, t) with batch_norm(x) == x * s + t per channel, or None when a parameter is not constant."""
    params = [const_value(module, v) for v in bn.operands[1:]]
    if any(p is None for p in params):
        return None
    scale, bias, mean, var = (p.astype(np.float64).reshape(-1) for p in params)  # type: ignore[union-attr]
    s = scale / np.sqrt(var + bn.attrs["epsilon"])
    return s, bias - mean * s


class FoldIntoConv(Pattern):
    opnames = ("batch_norm",)

    def rewrite(self, bn: Op, rw: Rewriter) -> bool:
        x = bn.operands[0]
        conv = x.producer
        if conv is None or len(x.uses) != 1 or any(x is o for o in rw.graph.outputs):
            return False
        affine = bn_affine(rw.module, bn)
        if affine is None:
            return False
        s, t = affine
        if conv.opname == "conv":
            w = const_value(rw.module, conv.operands[1])
            if w is None:
                return False
            b = const_value(rw.module, conv.operands[2]) if len(conv.operands) > 2 else None
            if len(conv.operands) > 2 and b is None:
                return False
            dt = w.dtype
            w2 = (w.astype(np.float64) * s.reshape((-1,) + (1,) * (w.ndim - 1))).astype(dt)
            b0 = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)
            b2 = (b0 * s + t).astype(dt)
            bld = rw.builder_before(bn)
            wv = bld.const(w2, name=conv.operands[1].name + ".bn")
            bv = bld.const(b2, name=bn.results[0].name + ".bias")
            new = bld.op("conv", conv.operands[0], wv, bv, name=bn.results[0].name + ".f", **conv.attrs)
        elif conv.opname in ("gemm", "matmul") and x.type.rank == 2:
            w = const_value(rw.module, conv.operands[1])
            if w is None or w.ndim != 2:
                return False
            trans_b = conv.opname == "gemm" and conv.attrs["trans_b"]
            dt = w.dtype
            w2 = (w.astype(np.float64) * (s[:, None] if trans_b else s[None, :])).astype(dt)
            bld = rw.builder_before(bn)
            wv = bld.const(w2, name=conv.operands[1].name + ".bn")
            if conv.opname == "gemm":
                alpha, beta = conv.attrs["alpha"], conv.attrs["beta"]
                c = const_value(rw.module, conv.operands[2]) if len(conv.operands) > 2 else np.zeros(1)
                if c is None:
                    return False
                c2 = np.broadcast_to(c.astype(np.float64) * beta, x.type.shape) * s + t  # type: ignore[arg-type]
                if np.all(c2 == c2[:1]):
                    c2 = c2[:1]
                cv = bld.const(c2.astype(dt), name=bn.results[0].name + ".bias")
                attrs = dict(conv.attrs, beta=1.0, alpha=alpha)
                new = bld.op("gemm", conv.operands[0], wv, cv, name=bn.results[0].name + ".f", **attrs)
            else:
                mm = bld.op("matmul", conv.operands[0], wv, name=bn.results[0].name + ".mm")
                new = bld.op("add", mm, bld.const(t.astype(dt), name=bn.results[0].name + ".bias"),
                             name=bn.results[0].name + ".f")
        else:
            return False
        name = bn.results[0].name
        rw.replace(bn, [new])
        rw.graph.erase(conv)
        rw.graph.rename(new, name)
        return True


@register_pass("fold-batchnorm")
@dataclass
class FoldBatchNorm(Pass):
    def run(self, module: Module) -> bool:
        n = apply_patterns(module, [FoldIntoConv()])
        if n:
            self.note("folded", n)
        return n > 0

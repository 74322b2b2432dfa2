"""``batchnorm-affine``: an inference batch norm that no conv absorbed becomes ``x * s + t``.

``fold-batchnorm`` folds a batch norm into the conv or matmul that feeds it. A batch norm with no
such producer stays an op of its own: DenseNet's and pre-activation ResNets' ``batch_norm -> relu ->
conv`` (the norm reads a concat or a residual sum), a norm on a graph input. As ``batch_norm`` it is
a kernel, and the relu after it another pass over the same tensor. Written as ``mul`` and ``add``
with per-channel constants (``s = scale / sqrt(var + eps)``, ``t = bias - mean * s``, in float64,
rounded once to the tensor's dtype, shaped ``[C, 1, ...]`` to broadcast over axis 1), it is
elementwise, so ``fuse`` makes norm, activation and whatever elementwise ops follow one kernel.

Run it after ``reparameterize`` (which reads the batch norms of RepVGG-style identity branches) and
before ``fuse``. Only f32/f64 norms with constant parameters change; a norm whose parameters are
inputs (training) or of another dtype is left alone.
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.ir import DType, Module, Op

from .fold_batchnorm import bn_affine
from .registry import Pass, register_pass
from .rewrite import Pattern, Rewriter, apply_patterns


class BatchNormToAffine(Pattern):
    opnames = ("batch_norm",)

    def rewrite(self, bn: Op, rw: Rewriter) -> bool:
        x = bn.operands[0]
        if x.dtype not in (DType.f32, DType.f64) or x.type.rank < 2:
            return False
        affine = bn_affine(rw.module, bn)
        if affine is None:
            return False
        s, t = affine
        shape = (-1,) + (1,) * (x.type.rank - 2)
        dt = x.dtype.numpy
        name = bn.results[0].name
        bld = rw.builder_before(bn)
        scaled = bld.op("mul", x, bld.const(s.astype(dt).reshape(shape), name=name + ".scale"), name=name + ".mul")
        new = bld.op("add", scaled, bld.const(t.astype(dt).reshape(shape), name=name + ".shift"), name=name + ".f")
        rw.replace(bn, [new])
        rw.graph.rename(new, name)
        return True


@register_pass("batchnorm-affine")
@dataclass
class BatchNormAffine(Pass):
    def run(self, module: Module) -> bool:
        n = apply_patterns(module, [BatchNormToAffine()])
        if n:
            self.note("rewritten", n)
        return n > 0

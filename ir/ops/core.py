"""Structural ops: ``const`` (reads the constant pool) and ``identity``."""

from __future__ import annotations

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..registry import NOT_DIFFERENTIABLE, Trait, defop
from ..shape_rules import same_as


def _const_infer(ctx):  # the builder, parser and verifier type consts from the pool
    raise ctx.fail("const results are typed from the constant pool")


def _const_ref(**attrs):
    raise RuntimeError("the interpreter reads const ops from the constant pool")


defop("const", operands=(), attrs={"ref": AttrSpec(AttrKind.STR)}, infer=_const_infer,
      reference=_const_ref, traits=Trait.PURE, vjp=NOT_DIFFERENTIABLE, fold=False,
      doc="A tensor from the module's constant pool, named by ``ref``.")

defop("identity", operands=("x",), infer=same_as(0), reference=lambda x: np.array(x, copy=True),
      traits=Trait.PURE | Trait.SHAPE_ONLY, doc="Copies its operand.")


def _fused_infer(ctx):
    if len(ctx.regions) != 1:
        raise ctx.fail("a fused op owns exactly one region")
    body = ctx.regions[0]
    got = [p.type for p in body.params]
    if got != ctx.types:
        raise ctx.fail(f"region parameters {', '.join(map(str, got))} do not match operands "
                       f"{', '.join(map(str, ctx.types))}")
    return [v.type for v in body.outputs]


def _fused_ref(*inputs, kind, regions):
    return tuple(regions[0](*inputs))


defop("fused", operands=("inputs*",), results=("outs*",), attrs={"kind": AttrSpec(AttrKind.STR, "")},
      infer=_fused_infer, reference=_fused_ref, traits=Trait.PURE,
      doc="A group of ops run as one kernel; the region is the group's body (closed: it reads only "
          "its parameters, which are bound to the operands).")

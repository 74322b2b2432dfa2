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

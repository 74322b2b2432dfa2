"""``strength-reduce-pow``: replace ``pow`` by a constant exponent with cheaper ops.

    pow(x, 2)   -> mul(x, x)
    pow(x, 0.5) -> sqrt(x)
    pow(x, 1)   -> x

The example pass of docs/writing-a-pass.md: one file, one pattern, registered by name.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Module, Op, const_value
from nnc.passes import Pass, register_pass
from nnc.passes.rewrite import Pattern, Rewriter, apply_patterns


class PowByConstant(Pattern):
    opnames = ("pow",)

    def rewrite(self, op: Op, rw: Rewriter) -> bool:
        x, e = op.operands
        exponent = const_value(rw.module, e)
        out = op.results[0]
        if exponent is None or exponent.size != 1 or x.type != out.type or not x.dtype.is_float:
            return False  # only a scalar constant exponent, and no broadcasting by the exponent
        value = float(np.asarray(exponent).reshape(-1)[0])
        b = rw.builder_before(op)
        if value == 2.0:
            new = b.op("mul", x, x, name=out.name + ".sq")
        elif value == 0.5:
            new = b.op("sqrt", x, name=out.name + ".sqrt")
        elif value == 1.0:
            new = x
        else:
            return False
        rw.replace(op, [new])
        if new is not x:
            rw.graph.rename(new, out.name)  # keep the value's name in dumps
        return True


@register_pass("strength-reduce-pow")
@dataclass
class StrengthReducePow(Pass):
    def run(self, module: Module) -> bool:
        n = apply_patterns(module, [PowByConstant()])
        self.note("rewrites", n)
        return n > 0

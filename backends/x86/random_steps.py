"""Random ops whose numbers come from numpy's ``RandomState`` as host-sync steps of segmented execution.

nnc's semantics for ``random_uniform``, ``random_normal``, ``bernoulli`` and training-mode
``dropout`` are numpy's legacy ``RandomState`` streams (``ir/ops/random.py``: the generator ONNX's
own test data came from, so a seeded model gives ONNX's numbers). Generated code does not
re-implement MT19937 and numpy's sampling paths bit for bit, so on x86 these ops run on the host
between compiled segments, through the op's reference, and give the reference interpreter's numbers
exactly; the tensor work before and after them stays compiled. Dropout in its identity form (ratio
0, or not training) keeps its x86 kernel, and training steps use ``keyed_dropout``, whose counter
generator is generated code.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.ir import Op
from nnc.ir.interpreter import Interpreter

from .segments import SegmentContext, register_host_sync


def _dropout_draws(op: Op) -> bool:
    """Whether a dropout draws (the cases the x86 kernel refuses): a run-time ratio or training flag,
    or training mode with a ratio above 0."""
    if len(op.operands) > 1:
        return True
    return not (op.attrs["training"] == 0 or op.attrs["ratio"] == 0)


class ReferenceDrawStep:
    def __init__(self, op: Op, ctx: SegmentContext):
        self.op = op
        self.inputs = list(op.operands)
        self._interpreter = Interpreter(ctx.module)

    def run(self, args: list[np.ndarray]) -> list[np.ndarray]:
        return self._interpreter.run_op(self.op, list(args))

    def report(self) -> dict[str, Any]:
        seed = self.op.attrs.get("seed")
        return {"generator": "numpy RandomState (the reference's stream)",
                "seed": None if seed is None or seed != seed else seed}


@register_host_sync("random_uniform", "random_normal", "bernoulli",
                    why="it draws from numpy's RandomState, which generated code does not reproduce")
def build_draw(op: Op, ctx: SegmentContext) -> ReferenceDrawStep:
    return ReferenceDrawStep(op, ctx)


@register_host_sync("dropout", why="training-mode dropout draws its mask from numpy's RandomState",
                    applies=_dropout_draws)
def build_dropout(op: Op, ctx: SegmentContext) -> ReferenceDrawStep:
    return ReferenceDrawStep(op, ctx)

"""Ops whose output size depends on data, as host-sync steps of segmented execution (``segments.py``).

NonZero, Unique, NonMaxSuppression and TopK with a run-time ``k`` compile to a kernel of their
*bounded* form (``ir/ops/bounded.py``): generated x86 code that writes each result into a buffer
sized by an upper bound computed from the operand shapes, plus the count of valid entries. The step
runs that kernel (a one-op module compiled through the x86 path, shape-generic when the operands
have symbolic dims), reads the count on the host and hands the following segment the leading
``count`` entries along the result's count axis (a copy, contiguous). The buffers are the outputs
of the step's executable: ordinary host arrays, allocated per run at the bound.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.ir import Builder, Graph, InputError, Module, Op
from nnc.ir.ops.bounded import BOUNDED
from nnc.ir.registry import get_opdef

from .segments import SegmentContext, register_host_sync, symbolic_type, symbols_of


class BoundedStep:
    """Run ``op``'s bounded kernel, then trim its results to the count it wrote."""

    def __init__(self, op: Op, ctx: SegmentContext):
        name, axes = BOUNDED[op.opname]
        self.op = op
        self.inputs = list(op.operands)
        g = Graph("main")
        taken = symbols_of(op.operands)
        params = [g.add_param(f"in{i}", symbolic_type(v, taken)) for i, v in enumerate(op.operands)]
        m = Module(f"{ctx.module.name}.{op.opname}", {"main": g}, metadata=dict(ctx.module.metadata))
        schema = get_opdef(name).attrs
        bounded = Builder(m, g, loc=op.loc).create(name, params, {k: v for k, v in op.attrs.items() if k in schema},
                                                   names=[r.name for r in op.results] + ["count"])
        g.set_outputs(list(bounded.results), [f"out{i}" for i in range(len(op.results))] + ["count"])
        self.bounded = bounded
        self.axes = axes(bounded.attrs, len(op.operands[0].shape or ()))
        self.in_names = [p.name for p in g.params]
        self.exe = ctx.compile(m)

    def run(self, args: list[np.ndarray]) -> list[np.ndarray]:
        outs = self.exe.run(dict(zip(self.in_names, args)))
        count = int(outs["count"])
        return [buf if ax is None else np.ascontiguousarray(buf[(slice(None),) * ax + (slice(0, count),)])
                for buf, ax in ((outs[f"out{i}"], ax) for i, ax in enumerate(self.axes))]

    def report(self) -> dict[str, Any]:
        bound = ", ".join(str(r.type) for r in self.bounded.results[:-1])
        return {"kernel": self.bounded.opname, "bound": bound,
                "generic": type(self.exe).__name__ == "GenericExecutable"}


class TopKStep(BoundedStep):
    """The kernel stops on a k outside [0, n] too; this check says so in the op's terms."""

    def run(self, args: list[np.ndarray]) -> list[np.ndarray]:
        k, n = int(np.asarray(args[1]).reshape(-1)[0]), np.shape(args[0])[self.axes[0]]
        if not 0 <= k <= n:
            raise InputError(f"{self.op.where()}: k = {k} is outside [0, {n}] (the size of axis {self.axes[0]})")
        return super().run(args)


@register_host_sync("nonzero", "unique", "nms", why="its output size depends on data")
def build_bounded(op: Op, ctx: SegmentContext) -> BoundedStep:
    return BoundedStep(op, ctx)


@register_host_sync("topk", why="its output size is a run-time k", applies=lambda op: len(op.operands) > 1)
def build_topk(op: Op, ctx: SegmentContext) -> BoundedStep:
    return TopKStep(op, ctx)

"""Control flow and sequences on x86, as host-sync steps of segmented execution (``segments.py``).

- ``if``: the host reads the condition and runs the chosen branch's executable;
- ``loop`` / ``scan``: the host calls the body's executable once per iteration (the body is
  compiled once, at compile time: shape-generic when a carried value's dims change between
  iterations or are symbolic, per input signature only when the body has no shape-generic code),
  and slices and stacks scan inputs and outputs;
- ``sequence_map``: the body's executable once per element;
- the sequence and optional ops: host lists of arrays (or None) edited in Python.

Each region is compiled as a module of its own through ``ctx.compile`` (so a body with control flow
inside is segmented in turn). A region with no computation (it returns parameters or constants) is
not compiled. The steps run the ops' reference semantics (``ir/ops/control_flow.py``,
``ir/ops/tensor_sequence.py``) with compiled regions in place of interpreted ones, so the host logic
is the one the interpreter is tested with.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.ir import Graph, Op, TensorType

from ..compiled import NotShapeGeneric
from .segments import PerSignature, SegmentContext, register_host_sync, sub_module

CONTROL_FLOW = ("if", "loop", "scan", "sequence_map")
CONTAINERS = ("sequence_construct", "sequence_empty", "sequence_insert", "sequence_erase", "sequence_at",
              "sequence_length", "split_to_sequence", "concat_from_sequence", "optional", "optional_none",
              "optional_has_element", "optional_get_element")


def has_host_values(graph: Graph) -> bool:
    """Whether a graph's inputs or outputs are sequences or optionals (host values even when no op
    touches them)."""
    return any(not isinstance(v.type, TensorType) for v in list(graph.params) + list(graph.outputs))


class CompiledRegion:
    """A region as the reference semantics call it (``region(*args) -> results``; ``graph`` for its
    signature), running its compiled executable."""

    def __init__(self, graph: Graph, ctx: SegmentContext, name: str):
        self.graph = graph
        self.name = name
        self.exe: Any = None
        if any(op.opname != "const" for op in graph.ops):
            sm = sub_module(ctx.module, name, graph.ops, graph.params, graph.outputs)
            sm.main.output_names = [f"out{i}" for i in range(len(graph.outputs))]  # a value may be returned twice
            self.params = [p.name for p in sm.main.params]
            try:
                self.exe = ctx.compile(sm)
            except NotShapeGeneric as e:  # no shape-generic code for the body: compiled per signature
                self.exe = PerSignature(sm, ctx.compile, str(e))
        else:  # parameters and constants only: nothing to run
            self.consts = {id(op.results[0]): ctx.module.constants[op.attrs["ref"]] for op in graph.ops}

    def __call__(self, *args: Any) -> list[Any]:
        if self.exe is None:
            env = {**self.consts, **{id(p): a for p, a in zip(self.graph.params, args)}}
            return [env[id(v)] for v in self.graph.outputs]
        outs = self.exe.run(dict(zip(self.params, args)))
        return [outs[f"out{i}"] for i in range(len(self.graph.outputs))]

    def report(self) -> dict[str, Any]:
        if self.exe is None:
            return {"region": self.graph.name, "compiled": False}
        row = {"region": self.graph.name, "executable": type(self.exe).__name__}
        if isinstance(self.exe, PerSignature):
            row["per_signature"] = self.exe.reason
        return row


class ReferenceStep:
    """Runs ``op``'s reference semantics on the host, with its regions compiled."""

    def __init__(self, op: Op, ctx: SegmentContext):
        self.op = op
        self.inputs = list(op.operands)
        base = op.results[0].name if op.results else op.opname
        self.regions = [CompiledRegion(r, ctx, f"{base}.{r.name}") for r in op.regions]

    def run(self, args: list[Any]) -> list[Any]:
        op, d = self.op, self.op.opdef
        kwargs = dict(d.attrs_with_dynamic(op.attrs, args, static=False))
        if self.regions:
            kwargs["regions"] = self.regions
        dyn = d.dynamic_operand_indices()
        out = d.reference(*[a for i, a in enumerate(args) if i not in dyn], **kwargs)
        one_container = len(op.results) == 1 and not isinstance(op.results[0].type, TensorType)
        results = list(out) if isinstance(out, tuple) or (isinstance(out, list) and not one_container) else [out]
        return [np.array(a) if isinstance(r.type, TensorType) else a for r, a in zip(op.results, results)]

    def report(self) -> dict[str, Any]:
        return {"regions": [r.report() for r in self.regions]} if self.regions else {}


@register_host_sync(*CONTROL_FLOW, why="control flow: the host runs its compiled regions")
def build_control_flow(op: Op, ctx: SegmentContext) -> ReferenceStep:
    return ReferenceStep(op, ctx)


@register_host_sync(*CONTAINERS, why="its values are sequences or optionals, which the host holds")
def build_container(op: Op, ctx: SegmentContext) -> ReferenceStep:
    return ReferenceStep(op, ctx)

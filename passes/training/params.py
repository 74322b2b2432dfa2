"""Which weights train: the selection of trainable parameters and optimizer-free buffers.

A model imported for training (ONNX with ``weights="param"``, or the PyTorch frontend) carries its
float weights as graph parameters bound to their initial values (``Value.binding``). By default
every such parameter trains except the running statistics of batch norm (operands 3 and 4 of
``batch_norm`` / ``batch_norm_train``): those are *buffers*, updated by ``batch_norm_train`` in a
training-form model and constant otherwise. ``trainable=[names]`` restricts the set, ``frozen=[names]``
removes names from it; names are the model's own (ONNX initializer names). Frozen weights become
constants, so they cost nothing at run time.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Iterable

from nnc.ir import Builder, Graph, ModelError, Module, Value

_STAT_OPERANDS = {"batch_norm": (3, 4), "batch_norm_train": (3, 4)}


@dataclass
class Selection:
    """The bound parameters of a graph, sorted by role."""

    trainable: list[Value] = field(default_factory=list)
    buffers: list[Value] = field(default_factory=list)  # updated by the step, not by the optimizer
    frozen: list[Value] = field(default_factory=list)


def running_stats(graph: Graph) -> dict[int, tuple[Value, Value]]:
    """id(running-stat param) -> (the batch_norm_train op's result updating it, the op's result
    index), for training-form batch norms; inference-form stats map to nothing."""
    out: dict[int, tuple] = {}
    for op in graph.ops:
        if op.opname == "batch_norm_train":
            for i in (3, 4):
                out[id(op.operands[i])] = (op.results[i - 2], i - 2)
    return out


def select_parameters(module: Module, trainable: Iterable[str] | None = None,
                      frozen: Iterable[str] | None = None, graph: Graph | None = None) -> Selection:
    """Sort the bound parameters of ``graph`` (default main) into trainable, buffers and frozen."""
    g = graph if graph is not None else module.main
    bound = [p for p in g.params if p.binding is not None]
    names = {p.name for p in bound}
    stats: set[int] = set()
    for op in g.ops:
        for i in _STAT_OPERANDS.get(op.opname, ()):
            if i < len(op.operands):
                stats.add(id(op.operands[i]))
    want = None if trainable is None else list(trainable)
    drop = set(frozen or ())
    for n in list(want or []) + sorted(drop):
        if n not in names:
            known = ", ".join(sorted(names)[:8]) + (" ..." if len(names) > 8 else "")
            raise ModelError(f"no parameter named {n!r} in the model (parameters: {known or 'none'})")
    updated = running_stats(g)
    sel = Selection()
    for p in bound:
        if id(p) in stats:
            (sel.buffers if id(p) in updated else sel.frozen).append(p)
        elif not p.dtype.is_float or p.name in drop or (want is not None and p.name not in want):
            sel.frozen.append(p)
        else:
            sel.trainable.append(p)
    return sel


def freeze_values(module: Module, graph: Graph, values: Iterable[Value]) -> None:
    """Turn bound parameters into constants reading their pool entry (keeping their names)."""
    b = Builder(module, graph)
    b._index = 0
    for p in list(values):
        c = b.const_ref(p.binding, p.name + ".frozen")
        graph.replace_all_uses(p, c)
        graph.params.remove(p)
        graph._names.discard(p.name)
        graph.rename(c, p.name)

"""Reverse-mode automatic differentiation over the IR (the engine; ``nnc.passes.training.autodiff``
is its home for the training passes).

``grad(module, loss, wrt)`` appends to the loss's graph the ops that compute d loss / d w for each
``w`` in ``wrt`` and returns ``{w: gradient}``. It walks the forward ops that lie on a path from some
``w`` to the loss in reverse order and asks each op's VJP rule (``OpDef.vjp``, see
``nnc.ir.grads``) for the cotangents of its operands given those of its results; cotangents of a
value used several times are summed. Ops off that path are never differentiated, so an op without
a rule only matters when a gradient has to flow through it (then ``GradientError`` names it).

Symbolic dims (a batch ``N``, a sequence length ``seq``, ``?``) are differentiated without fixing
them: an op on the path whose shapes are not all static must have a rule declared shape-generic
(``nnc.ir.grads.shape_generic``), which takes the sizes it needs from ``shape`` ops evaluated at run
time; any other op with a symbolic shape is a ``GradientError`` naming it and why. The forward ops
are left untouched; the backward ops are inserted at the end of the graph, and those a rule built
for an operand that needs no gradient (a constant weight of a frozen layer, say) are deleted again.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..builder import Builder
from ..errors import GradientError
from ..graph import Graph, Module, Op, Value
from ..registry import NOT_DIFFERENTIABLE
from ..specialize import reinfer
from ..sym_names import named_types
from ..types import UNKNOWN, TensorType
from .util import reshape_like, zeros_like


def _on_path(graph: Graph, loss: Value, wrt: Sequence[Value]) -> list[Op]:
    """Forward ops (in program order) that depend on some ``wrt`` and that the loss depends on."""
    active: set[int] = {id(w) for w in wrt}
    forward: list[Op] = []
    for op in graph.ops:
        if any(id(v) in active for v in op.operands):
            forward.append(op)
            active.update(id(r) for r in op.results)
    needed: set[int] = {id(loss)}
    path: list[Op] = []
    for op in reversed(forward):
        if any(id(r) in needed for r in op.results):
            path.append(op)
            needed.update(id(v) for v in op.operands if id(v) in active)
    path.reverse()
    return path


def _check_shapes(op: Op) -> None:
    """Refuse what autodiff cannot differentiate: control flow, non-tensors, unknown ranks, and
    symbolic shapes reaching a rule that is not shape-generic."""
    from . import why_not_shape_generic

    if op.regions and op.opname != "fused":
        raise GradientError(f"cannot differentiate {op.where()}: autodiff through control flow "
                            "(if/loop/scan/sequence_map) is not supported")
    symbolic = None
    for v in list(op.operands) + list(op.results):
        if not isinstance(v.type, TensorType):
            raise GradientError(f"cannot differentiate {op.where()}: {v.name} is a {v.type}, "
                                "not a tensor (autodiff through sequences and optionals is not supported)")
        if v.type.shape is None:
            raise GradientError(f"cannot differentiate {op.opname}{op.where()}: {v.name} has an unknown rank "
                                f"({v.type}); give the input shapes")
        if symbolic is None and not v.type.is_static:
            symbolic = v
    if symbolic is not None:
        why = why_not_shape_generic(op)
        if why is not None:
            raise GradientError(f"cannot differentiate {op.where()} with symbolic dims ({symbolic.name}: "
                                f"{symbolic.type}): {why}; fix the dims (batch_size=N, input_shapes={{...}} or "
                                "dims={...}) to train at static shapes")


def compatible(a: TensorType, b: TensorType) -> bool:
    """Same dtype and rank, and dims that may be equal at run time: equal, or one of them not an
    int (``?``, or a symbol that the other's int pins, as a static weight pins a symbolic dim it
    multiplies with)."""
    if a.dtype != b.dtype or a.shape is None or b.shape is None or len(a.shape) != len(b.shape):
        return False
    return all(x == y or UNKNOWN in (x, y) or not (isinstance(x, int) and isinstance(y, int))
               and not (isinstance(x, str) and isinstance(y, str)) for x, y in zip(a.shape, b.shape))


def _rule(op: Op):
    rule = op.opdef.vjp
    if rule is None:
        raise GradientError(f"no gradient rule for op {op.opname!r}{op.where()}: it lies between the "
                            "trained parameters and the loss")
    return rule


def grad(module: Module, loss: Value, wrt: Sequence[Value], graph: Graph | None = None,
         seed: Value | None = None) -> dict[Value, Value]:
    """Append the backward pass for ``loss`` to ``graph`` (default ``module.main``) and return the
    gradient of ``loss`` with respect to each value in ``wrt`` (zeros when the loss does not depend
    on it). ``seed`` is the cotangent of the loss (default 1)."""
    g = graph if graph is not None else module.main
    if not loss.dtype.is_float:
        raise GradientError(f"the loss {loss.name} must be a float tensor, got {loss.type}")
    for w in wrt:
        if not w.dtype.is_float:
            raise GradientError(f"cannot differentiate with respect to {w.name} of type {w.type}")
    if seed is None:
        shape = loss.type.shape
        if shape is None or any(d != 1 for d in shape):
            raise GradientError(f"the loss {loss.name} must be a scalar, got {loss.type}")
    saved = _name_dims(module, g)
    try:
        result = _grad(module, g, loss, wrt, seed)
    finally:
        if saved:  # the forward values get their inferred types back; the backward ops follow them
            for v, t in saved:
                v.type = t
            reinfer(module)
    if saved:  # a gradient that only inference under the named dims knew to be w's shape says so again
        b = Builder(module, g, loc="grad")
        for w, c in result.items():
            if c.type != w.type:
                result[w] = reshape_like(b, c, w)
    return result


def _name_dims(module: Module, g: Graph) -> list[tuple[Value, TensorType]]:
    """Give the forward values of a symbolic graph, for the time of differentiation, types whose
    every dim is named (``sym_names.named_types``: ``?`` dims become the input symbol or shared
    formula name they stand for), so rules see which dims are equal and which were broadcast.
    Returns the (value, inferred type) pairs to restore."""
    values = list(g.params) + [r for op in g.ops for r in op.results]
    if all(not isinstance(v.type, TensorType) or v.type.is_static for v in values):
        return []
    named = named_types(module, g)
    if named is None:
        return []
    saved = []
    for v in values:
        t = named.get(id(v))
        if t is not None and t != v.type:
            saved.append((v, v.type))
            v.type = t
    return saved


def _grad(module: Module, g: Graph, loss: Value, wrt: Sequence[Value], seed: Value | None) -> dict[Value, Value]:
    path = _on_path(g, loss, wrt)
    for op in path:
        _check_shapes(op)
    start = len(g.ops)
    b = Builder(module, g, loc="grad")
    cts: dict[int, Value] = {}
    cts[id(loss)] = seed if seed is not None else b.const(np.ones(loss.type.shape, loss.dtype.numpy),
                                                           name=f"d_{loss.name}")

    def accumulate(v: Value, c: Value) -> None:
        if c.type != v.type and not compatible(c.type, v.type):
            raise GradientError(f"internal: gradient of {v.name} has type {c.type}, expected {v.type}")
        prev = cts.get(id(v))
        cts[id(v)] = c if prev is None else b.op("add", prev, c, name=f"d_{v.name}")

    for op in reversed(path):
        outs = [cts.get(id(r)) for r in op.results]
        if all(c is None for c in outs):
            continue
        rule = _rule(op)
        if rule is NOT_DIFFERENTIABLE:
            continue
        b.loc = f"grad:{op.loc}" if op.loc else "grad"
        ins = rule(b, op, outs)
        if len(ins) != len(op.operands):
            raise GradientError(f"internal: the rule of {op.opname} returned {len(ins)} cotangents for "
                                f"{len(op.operands)} operands")
        for v, c in zip(op.operands, ins):
            if c is not None and v.dtype.is_float:
                accumulate(v, c)
    result: dict[Value, Value] = {}
    b.loc = "grad"
    for w in wrt:
        c = cts.get(id(w))
        if c is None:
            c = (b.const(np.zeros(w.type.shape, w.dtype.numpy), name=f"d_{w.name}") if w.type.is_static
                 else zeros_like(b, w))
        elif c.type != w.type:  # a gradient with '?' dims: its value has w's shape
            c = reshape_like(b, c, w)
        result[w] = c
    _erase_dead(g, start, keep=set(map(id, result.values())))
    return result


def _erase_dead(g: Graph, start: int, keep: set[int]) -> None:
    """Delete backward ops (those at index >= start) whose results nobody uses."""
    outputs = {id(v) for v in g.outputs}
    changed = True
    while changed:
        changed = False
        for op in reversed(g.ops[start:]):
            if any(r.uses or id(r) in outputs or id(r) in keep for r in op.results):
                continue
            g.erase(op)
            changed = True

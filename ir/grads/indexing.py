"""Gradient rules: gathers, scatters, ``topk`` and ``max_unpool``.

A gather's cotangent is a scatter-add of the incoming cotangent into zeros at the same indices
(the embedding case, ``gather(table, ids, axis=0)``, becomes one ``scatter_nd`` with reduction
"add", which the x86 backend runs as a loop of row additions); a scatter's cotangent is a gather.
Indices, shapes and other integer operands get no cotangent.

Repeated indices: a gather sends every copy's cotangent back (the scatter adds them). A scatter
with reduction "none" writes repeated indices in order, so only the last write survives; its rule
still hands each update the cotangent of the element it targets (as torch's ``scatter`` does, whose
result for duplicates is itself unspecified). Reductions "max"/"min" share the cotangent evenly
among the tied winners (x and updates alike), as ``reduce_max`` does; "mul" divides the result by
each update, so an update equal to zero gets a NaN/inf cotangent (documented limitation).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..builder import Builder, const_value
from ..errors import GradientError
from ..graph import Op, Value
from . import register_vjp, shape_generic
from .util import reshape, scalar, shape_of, zeros


def static_attr(b: Builder, op: Op, attr: str, index: int) -> Any:
    """A dynamic attribute's value: the attribute, else the constant operand ``index`` (a list of
    numbers, or a number for a 0-d operand), else None when the operand is absent. A run-time
    operand raises GradientError: the rules need these values at compile time."""
    v = op.attrs.get(attr)
    if v is not None or index >= len(op.operands):
        return v
    operand = op.operands[index]
    c = const_value(b.module, operand)
    if c is None:
        raise GradientError(f"cannot differentiate {op.opname}{op.where()}: its {attr} ({operand.name}) is "
                            "only known at run time")
    if c.ndim == 0:
        return c.item()
    return [x.item() for x in c.reshape(-1)]


def index_const(b: Builder, array: np.ndarray, like: Value) -> Value:
    """An integer constant with the dtype of the index tensor ``like``."""
    return b.const(np.asarray(array, dtype=like.dtype.numpy), name="idx")


def gather_adjoint(b: Builder, g: Value, x: Value, ind: Value, axis: int) -> Value:
    """The cotangent of ``x`` in ``gather(x, ind, axis)``: ``g`` scatter-added into zeros."""
    xs, ishape = shape_of(x), shape_of(ind)
    a = axis % len(xs)
    z = zeros(b, xs, g)
    if a == 0:  # embedding lookup: one row per index, added in place
        idx = reshape(b, ind, ishape + (1,))
        return b.op("scatter_nd", z, idx, g, reduction="add")
    n = int(np.prod(ishape, dtype=np.int64))
    flat = xs[:a] + (n,) + xs[a + 1:]
    g2 = reshape(b, g, flat)
    idx = reshape(b, ind, (1,) * a + (n,) + (1,) * (len(xs) - a - 1))
    if shape_of(idx) != flat:
        idx = b.op("expand", idx, shape=list(flat))
    return b.op("scatter_elements", z, idx, g2, axis=a, reduction="add")


def _rest(op: Op, *first: Value | None) -> list[Value | None]:
    return list(first) + [None] * (len(op.operands) - len(first))


@register_vjp("gather")
def _gather(b, op, cts):
    x, ind = op.operands
    return [gather_adjoint(b, cts[0], x, ind, op.attrs["axis"]), None]


@register_vjp("gather_elements")
def _gather_elements(b, op, cts):
    x, ind = op.operands
    axis = op.attrs["axis"] % len(shape_of(x))
    return [b.op("scatter_elements", zeros(b, shape_of(x), x), ind, cts[0], axis=axis, reduction="add"), None]


def _batched_nd_indices(b: Builder, ind: Value, batch_dims: int) -> Value:
    """gather_nd indices with the batch coordinates prepended (depth batch_dims + k), so that
    scatter_nd (which has no batch_dims) can address the same elements."""
    ishape = shape_of(ind)
    if batch_dims == 0:
        return ind
    lead = ishape[:-1]
    grids = np.indices(ishape[:batch_dims])  # [batch_dims, *batch]
    coords = [np.broadcast_to(grids[i].reshape(ishape[:batch_dims] + (1,) * (len(lead) - batch_dims)), lead)
              for i in range(batch_dims)]
    c = index_const(b, np.stack(coords, axis=-1), ind)
    return b.op("concat", c, ind, axis=len(ishape) - 1)


@register_vjp("gather_nd")
def _gather_nd(b, op, cts):
    x, ind = op.operands
    idx = _batched_nd_indices(b, ind, op.attrs["batch_dims"])
    return [b.op("scatter_nd", zeros(b, shape_of(x), x), idx, cts[0], reduction="add"), None]


# -- scatters -------------------------------------------------------------------------------------

def _scatter_rule(b: Builder, op: Op, g: Value, gather, scatter) -> list[Value | None]:
    """Shared by scatter_elements and scatter_nd: ``gather(v)`` reads v at the op's indices,
    ``scatter(base, upd, reduction)`` writes upd at them."""
    x, ind, upd = op.operands
    red = op.attrs["reduction"]
    if red == "add":
        return [g, None, gather(g)]
    if red == "none":
        return [scatter(g, zeros(b, shape_of(upd), upd), "none"), None, gather(g)]
    out = op.results[0]
    if red == "mul":
        # out = x * prod(updates at the element): d/dx = out / x, computed without dividing by x as
        # the product of the updates alone; d/du_i = out / u_i
        prod_u = scatter(b.op("expand", scalar(b, 1.0, x), shape=list(shape_of(x))), upd, "mul")
        gout = b.op("mul", g, out)
        return [b.op("mul", g, prod_u), None, b.op("div", gather(gout), upd)]
    # max / min: the cotangent is shared evenly by every operand element equal to the result
    hit_x = b.op("cast", b.op("equal", x, out), to=x.dtype)
    hit_u = b.op("cast", b.op("equal", upd, gather(out)), to=x.dtype)
    count = scatter(hit_x, hit_u, "add")
    share = b.op("div", g, count)
    return [b.op("mul", share, hit_x), None, b.op("mul", gather(share), hit_u)]


@register_vjp("scatter_elements")
def _scatter_elements(b, op, cts):
    x, ind, _ = op.operands
    axis = op.attrs["axis"] % len(shape_of(x))

    def gather(v):
        return b.op("gather_elements", v, ind, axis=axis)

    def scatter(base, upd, red):
        return b.op("scatter_elements", base, ind, upd, axis=axis, reduction=red)
    return _scatter_rule(b, op, cts[0], gather, scatter)


@register_vjp("scatter_nd")
def _scatter_nd(b, op, cts):
    ind = op.operands[1]

    def gather(v):
        return b.op("gather_nd", v, ind, batch_dims=0)

    def scatter(base, upd, red):
        return b.op("scatter_nd", base, ind, upd, reduction=red)
    return _scatter_rule(b, op, cts[0], gather, scatter)


# -- topk, max_unpool -----------------------------------------------------------------------------

@register_vjp("topk")
def _topk(b, op, cts):
    x = op.operands[0]
    g = cts[0]
    if g is None:
        return _rest(op, None)
    axis = op.attrs["axis"] % len(shape_of(x))
    # the selected indices are distinct, so "add" into zeros is a plain placement
    dx = b.op("scatter_elements", zeros(b, shape_of(x), x), op.results[1], g, axis=axis, reduction="add")
    return _rest(op, dx)


@register_vjp("max_unpool")
def _max_unpool(b, op, cts):
    x, ind = op.operands[0], op.operands[1]
    g = cts[0]
    xs = shape_of(x)
    k = op.attrs["kernel_shape"]
    n = len(k)
    s = list(op.attrs["strides"] or [1] * n)
    p = list(op.attrs["pads"] or [0] * (2 * n))
    natural = tuple(xs[:2]) + tuple((xs[2 + i] - 1) * s[i] - p[i] - p[n + i] + k[i] for i in range(n))
    gs = shape_of(g)
    if gs != natural:  # the result is the natural unpooled tensor cropped or zero-padded at the end
        rank = len(gs)
        g = b.op("slice", g, starts=[0] * rank, ends=[min(a, c) for a, c in zip(gs, natural)],
                 axes=list(range(rank)), steps=[1] * rank)
        extra = [max(0, c - a) for a, c in zip(gs, natural)]
        if any(extra):
            g = b.op("pad", g, pads=[0] * rank + extra, value=0.0)
    total = int(np.prod(natural, dtype=np.int64))
    flat = reshape(b, g, (total,))
    dx = b.op("gather", flat, reshape(b, ind, (int(np.prod(xs, dtype=np.int64)),)), axis=0)
    return _rest(op, reshape(b, dx, xs))


@register_vjp("index_copy")
def _index_copy(b, op, cts):
    """x's cotangent is g with the written slices zeroed; the updates' is g read at the indices."""
    _, ind, upd = op.operands
    axis = op.attrs["axis"]
    g = cts[0]
    return [b.op("index_copy", g, ind, zeros(b, shape_of(upd), upd), axis=axis), None,
            b.op("gather", g, ind, axis=axis)]


def _embedding_lookup(op: Op) -> str | None:
    """gather with symbolic dims: only a lookup in a static table along axis 0 (an embedding; the
    indices, e.g. ``[batch, seq]``, may be symbolic)."""
    x = op.operands[0]
    if not x.type.is_static or op.attrs["axis"] % len(shape_of(x)) != 0:
        return f"only a lookup along axis 0 of a static table is supported ({x.name}: {x.type})"
    return None


shape_generic("gather", check=_embedding_lookup)

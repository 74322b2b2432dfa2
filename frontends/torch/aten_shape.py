"""Converters for ATen data movement: view/reshape, permute/transpose, expand, cat, split, slice,
select, squeeze/unsqueeze, flip, pad, repeat, and the gathers (embedding, index, index_select,
gather).

Size lists may hold run-time symbolic dims (dynamic shapes); ``TorchContext.reshape`` builds the
shape operand from them. ``select`` is a ``gather`` with a 0-d index, and ``flip`` a reversed
``slice``, so no IR op exists only for torch.
"""

from __future__ import annotations

import numpy as np

from nnc.ir import DType, Value

from .context import AtenNode, TorchContext
from .registry import aten

_BIG = 2**63 - 1


@aten("aten.view.default", "aten._unsafe_view.default", "aten.reshape.default", "aten.view_copy.default")
def view(ctx: TorchContext, node: AtenNode):
    x, size = node.positional[:2]
    size = list(size)
    if not all(isinstance(d, int) for d in size):
        static = node.static_out_shape()
        if static is not None:
            size = list(static)
        elif sum(1 for d in size if not isinstance(d, int)) == 1 and -1 not in size:
            size = [-1 if isinstance(d, Value) else d for d in size]
    return ctx.reshape(x, size)


@aten("aten.flatten.using_ints")
def flatten(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    r = max(x.type.rank, 1)
    start, end = ctx.axis(int(node.arg("start_dim", 0)), r), ctx.axis(int(node.arg("end_dim", -1)), r)
    if start == end or x.type.rank == 0:
        return ctx.op("reshape", x, shape=tuple(x.shape) if x.type.rank else (1,))
    shape = [0] * start + [-1] + [0] * (r - end - 1)
    return ctx.op("reshape", x, shape=tuple(shape))


@aten("aten.permute.default", "aten.permute_copy.default")
def permute(ctx: TorchContext, node: AtenNode):
    x, dims = node.positional[:2]
    r = x.type.rank
    return ctx.op("transpose", x, perm=tuple(ctx.axis(int(d), r) for d in dims))


@aten("aten.transpose.int", "aten.t.default", "aten.numpy_T.default")
def transpose(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    r = x.type.rank
    if r < 2:
        return x
    perm = list(range(r))
    if node.target == "aten.transpose.int":
        a, b = ctx.axis(int(node.positional[1]), r), ctx.axis(int(node.positional[2]), r)
    else:
        a, b = r - 2, r - 1
    perm[a], perm[b] = perm[b], perm[a]
    return ctx.op("transpose", x, perm=tuple(perm))


@aten("aten.expand.default", "aten.expand_copy.default", "aten.broadcast_to.default")
def expand(ctx: TorchContext, node: AtenNode):
    x, size = node.positional[:2]
    # -1 keeps the input's dim; the IR's broadcasting expand does that for a 1 in the target
    size = [1 if (isinstance(d, int) and d == -1) else d for d in size]
    shape = ctx.shape_operand(size)
    if isinstance(shape, tuple):
        return ctx.op("expand", x, shape=shape)
    return ctx.op_dynamic("expand", [x], {"shape": shape})


@aten("aten.cat.default", "aten.concat.default", "aten.concatenate.default")
def cat(ctx: TorchContext, node: AtenNode):
    xs = node.positional[0]
    dim = int(node.arg("dim", 0))
    out = node.out_dtype()
    rank = len(node.out_shape())
    # torch skips legacy empty 1-d tensors in a cat of higher rank
    xs = [ctx.cast(x, out) for x in xs if not (x.type.rank == 1 and x.shape[0] == 0 and rank > 1)]
    return ctx.op("concat", *xs, axis=ctx.axis(dim, rank)) if len(xs) > 1 else ctx.op("identity", xs[0])


@aten("aten.stack.default")
def stack(ctx: TorchContext, node: AtenNode):
    xs = node.positional[0]
    rank = len(node.out_shape())
    dim = ctx.axis(int(node.arg("dim", 0)), rank)
    parts = [ctx.op("unsqueeze", ctx.cast(x, node.out_dtype()), axes=(dim,)) for x in xs]
    return ctx.op("concat", *parts, axis=dim) if len(parts) > 1 else parts[0]


@aten("aten.split_with_sizes.default", "aten.split.Tensor", "aten.split_with_sizes_copy.default",
      "aten.split.sizes", "aten.unbind.int", "aten.chunk.default")
def split(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    dim = ctx.axis(int(node.arg("dim", 0)), x.type.rank)
    n = x.shape[dim]
    packet = node.target.split(".")[1]
    explicit = packet in ("split_with_sizes", "split_with_sizes_copy") or node.target == "aten.split.sizes"
    if not isinstance(n, int) and not explicit:  # explicit sizes need no dim size
        raise node.unsupported("splitting a symbolic dim")
    if packet == "unbind":
        parts = ctx.op("split", x, axis=dim, sizes=(1,) * n, n_results=n) if n > 1 else [x]
        return [ctx.op("squeeze", p, axes=(dim,)) for p in parts]
    if packet == "chunk":
        k = -(-n // int(node.positional[1]))
        sizes = [k] * (n // k) + ([n % k] if n % k else [])
    elif node.target == "aten.split.Tensor":
        k = int(node.positional[1])
        sizes = [k] * (n // k) + ([n % k] if n % k else [])
    else:
        sizes = ctx.ints(node.positional[1])
    if len(sizes) == 1:
        return [ctx.op("identity", x)]
    return ctx.op("split", x, axis=dim, sizes=tuple(sizes), n_results=len(sizes))


@aten("aten.slice.Tensor", "aten.slice_copy.Tensor")
def slice_(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    dim = ctx.axis(int(node.arg("dim", 0)), x.type.rank)
    start, end, step = node.args.get("start"), node.args.get("end"), node.arg("step", 1)
    start = 0 if start is None else start
    end = _BIG if end is None else end
    if isinstance(start, int) and isinstance(end, int) and isinstance(x.shape[dim], int):
        n = x.shape[dim]
        if start == 0 and end >= n and step == 1:
            return ctx.op("identity", x)
    dyn = {"starts": _vec(ctx, start), "ends": _vec(ctx, end), "axes": (dim,), "steps": (int(step),)}
    return ctx.op_dynamic("slice", [x], dyn)


def _vec(ctx: TorchContext, v) -> Value | tuple[int, ...]:
    if isinstance(v, Value):
        return ctx.op("reshape", ctx.cast(v, DType.i64), shape=(1,))
    return (int(v),)


@aten("aten.select.int", "aten.select_copy.int")
def select(ctx: TorchContext, node: AtenNode):
    x, dim, index = node.positional[:3]
    dim = ctx.axis(int(dim), x.type.rank)
    idx = ctx.cast(index, DType.i64) if isinstance(index, Value) else ctx.const(np.array(int(index), np.int64))
    return ctx.op("gather", x, idx, axis=dim)


@aten("aten.squeeze.dims", "aten.squeeze.dim", "aten.squeeze.default", "aten.squeeze_copy.dims")
def squeeze(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    r = x.type.rank
    # torch leaves dims that are not 1 alone; which are 1 is torch's own shape of the input where
    # nnc's is not static (a view to a run-time size list: [s0, s1, 3, 4, 8] is f32[?,?,?,?,?] here)
    src = getattr(node.fx.args[0], "meta", {}).get("val")
    known = tuple(src.shape) if src is not None and len(src.shape) == r else x.shape
    ones = [i for i, (d, t) in enumerate(zip(x.shape, known)) if d == 1 or (isinstance(t, int) and t == 1)]
    if node.target == "aten.squeeze.default":
        dims = ones
    else:
        dims = [ctx.axis(d, r) for d in ctx.ints(node.positional[1])] if r else []
        dims = [d for d in dims if d in ones]
    if not dims:
        return ctx.op("identity", x)
    return ctx.op("squeeze", x, axes=tuple(dims))


@aten("aten.unsqueeze.default", "aten.unsqueeze_copy.default")
def unsqueeze(ctx: TorchContext, node: AtenNode):
    x, dim = node.positional[:2]
    return ctx.op("unsqueeze", x, axes=(ctx.axis(int(dim), x.type.rank + 1),))


@aten("aten.flip.default")
def flip(ctx: TorchContext, node: AtenNode):
    x, dims = node.positional[:2]
    axes = tuple(ctx.axis(int(d), x.type.rank) for d in dims)
    if all(isinstance(x.shape[a], int) for a in axes):
        # a gather of reversed indices: a same-shape reversed slice reads as a no-op to -O simplify
        for a in axes:
            x = ctx.op("gather", x, ctx.const(np.arange(x.shape[a] - 1, -1, -1, dtype=np.int64)), axis=a)
        return x
    n = len(axes)
    return ctx.op("slice", x, starts=(-1,) * n, ends=(-_BIG,) * n, axes=axes, steps=(-1,) * n)


def _torch_pads(ctx: TorchContext, x: Value, pad: list) -> tuple[int, ...]:
    """torch's pad list (last dim first, (begin, end) pairs) -> the IR's all-begins-then-ends."""
    r = x.type.rank
    begins, ends = [0] * r, [0] * r
    for i in range(len(pad) // 2):
        begins[r - 1 - i], ends[r - 1 - i] = int(pad[2 * i]), int(pad[2 * i + 1])
    return tuple(begins + ends)


@aten("aten.constant_pad_nd.default", "aten.pad.default", "aten.reflection_pad1d.default",
      "aten.reflection_pad2d.default", "aten.reflection_pad3d.default", "aten.replication_pad1d.default",
      "aten.replication_pad2d.default", "aten.replication_pad3d.default")
def pad(ctx: TorchContext, node: AtenNode):
    x, p = node.positional[:2]
    packet = node.target.split(".")[1]
    mode = node.arg("mode", "constant") if packet == "pad" else (
        "reflect" if packet.startswith("reflection") else "replicate" if packet.startswith("replication")
        else "constant")
    mode = {"replicate": "edge", "circular": "wrap"}.get(mode, mode)
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise node.unsupported(f"padding mode {mode!r}")
    pads = _torch_pads(ctx, x, ctx.ints(p))
    value = node.arg("value", 0.0) if mode == "constant" else None
    return ctx.op("pad", x, pads=pads, mode=mode, value=None if value is None else float(value))


@aten("aten.repeat.default")
def repeat(ctx: TorchContext, node: AtenNode):
    x, reps = node.positional[0], ctx.ints(node.positional[1])
    if len(reps) > x.type.rank:
        x = ctx.op("reshape", x, shape=(1,) * (len(reps) - x.type.rank) + tuple(x.shape))
    return ctx.op("tile", x, repeats=tuple(reps))


@aten("aten.embedding.default")
def embedding(ctx: TorchContext, node: AtenNode):
    w, idx = node.positional[:2]
    return ctx.op("gather", w, idx, axis=0)


@aten("aten.index_select.default")
def index_select(ctx: TorchContext, node: AtenNode):
    x, dim, idx = node.positional[:3]
    return ctx.op("gather", x, idx, axis=ctx.axis(int(dim), x.type.rank))


@aten("aten.index_copy.default")
def index_copy(ctx: TorchContext, node: AtenNode):
    """Kept whole by the importer: a static KV cache's write (``cache.index_copy(2, positions, k)``)
    stays one op that a decoder updates in place."""
    x, dim, idx, src = node.positional[:4]
    return ctx.op("index_copy", x, idx, src, axis=ctx.axis(int(dim), x.type.rank))


@aten("aten.gather.default")
def gather(ctx: TorchContext, node: AtenNode):
    x, dim, idx = node.positional[:3]
    return ctx.op("gather_elements", x, idx, axis=ctx.axis(int(dim), x.type.rank))


@aten("aten.index.Tensor", "aten.index.Tensor_hacked_twin")
def index(ctx: TorchContext, node: AtenNode):
    x, indices = node.positional[:2]
    given = [(i, v) for i, v in enumerate(indices) if v is not None]
    if any(v.dtype == DType.bool for _, v in given):
        raise node.unsupported("boolean-mask indexing (data-dependent output size)")
    if len(given) == 1:
        axis, idx = given[0]
        return ctx.op("gather", x, idx, axis=axis)
    return _index_many(ctx, node, x, given)


def _index_many(ctx: TorchContext, node: AtenNode, x: Value, given: list[tuple[int, Value]]) -> Value:
    """``x[..., i0, ..., i1, ...]``: the index tensors broadcast together and are stacked on a new
    last axis for one ``gather_nd`` over the indexed dims, moved to the front. numpy's placement rule
    decides where the broadcast dims land: in place of the indexed dims when those are adjacent, in
    front otherwise."""
    idx = [ctx.cast(v, DType.i64) for _, v in given]
    shapes = [tuple(v.shape) for v in idx]
    nb = max(len(s) for s in shapes)
    if all(isinstance(d, int) for s in shapes for d in s):
        bshape = tuple(np.broadcast_shapes(*shapes))
        idx = [v if tuple(v.shape) == bshape else ctx.op("expand", v, shape=bshape) for v in idx]
    else:
        # symbolic dims: adding a broadcast zero (sum of every index times 0) broadcasts each index
        zero = ctx.op("mul", idx[0], ctx.scalar(0, DType.i64))
        for v in idx[1:]:
            zero = ctx.op("add", zero, ctx.op("mul", v, ctx.scalar(0, DType.i64)))
        idx = [ctx.op("add", v, zero) for v in idx]
    axes = [a for a, _ in given]
    rest = [a for a in range(x.type.rank) if a not in axes]
    if axes + rest != list(range(x.type.rank)):
        x = ctx.op("transpose", x, perm=tuple(axes + rest))
    stacked = ctx.op("concat", *[ctx.op("unsqueeze", v, axes=(nb,)) for v in idx], axis=nb)
    out = ctx.op("gather_nd", x, stacked, batch_dims=0)
    first = axes[0]
    adjacent = axes == list(range(first, first + len(axes)))
    if adjacent and first > 0:
        # out is [*bshape, *x.shape[rest]]; the rest dims before the indexed block go back in front
        perm = list(range(nb, nb + first)) + list(range(nb)) + list(range(nb + first, out.type.rank))
        out = ctx.op("transpose", out, perm=tuple(perm))
    return out


@aten("aten.tril.default", "aten.triu.default")
def trilu(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    return ctx.op_dynamic("trilu", [x], {"k": int(node.arg("diagonal", 0))}, upper=int("triu" in node.target))

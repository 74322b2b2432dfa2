"""Converters for ONNX shape ops: Reshape, Flatten, Transpose, Squeeze/Unsqueeze, Concat, Split,
Slice, Expand, Tile, Pad, Shape, Size, Constant(OfShape), Range, EyeLike, Trilu, DepthToSpace,
SpaceToDepth and CenterCropPad.

Parameters that later opsets moved from attributes to inputs become dynamic attributes of one IR
op. Shape queries on statically shaped values become constants here, so Shape -> Gather -> Concat
-> Reshape chains fold at import. Rare ops are decomposed (Flatten -> reshape, DepthToSpace ->
reshape + transpose + reshape, ConstantOfShape -> expand of a scalar).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from nnc.ir import DType, Value
from nnc.ir.shape_rules import dim_product

from ..context import ConvertContext, Node, dtype_from_onnx
from ..registry import converter

# -- helpers shared with the indexing and random converters --------------------------------------------

def shape_of(ctx: ConvertContext, x: Value) -> Value:
    """``x``'s shape as an i64 vector: a constant when static, else a run-time ``shape`` op."""
    if x.type.is_static:
        return ctx.const(np.array(x.shape, dtype=np.int64))
    if x.shape is None:
        raise ctx.node.unsupported("needs the input's rank") if ctx.node else ValueError("rank")
    return ctx.op("shape", x)


def dim_of(ctx: ConvertContext, x: Value, axis: int) -> Value:
    """Dim ``axis`` of ``x`` as a 0-d i64 value (a constant when static)."""
    d = x.shape[axis] if x.shape is not None else None
    if isinstance(d, int):
        return ctx.const(np.array(d, dtype=np.int64))
    return ctx.op("gather", shape_of(ctx, x), ctx.const(np.array(axis, dtype=np.int64)))


def _rank(node: Node, x: Value) -> int:
    if x.shape is None:
        raise node.unsupported("needs the input's rank")
    return len(x.shape)


# -- reshape family ---------------------------------------------------------------------------------

def reshape(ctx: ConvertContext, x: Value, shape: Value | Sequence[int], allowzero: int = 0) -> Value:
    """ONNX Reshape semantics: with allowzero=0 a 0 entry copies the input dim."""
    target = ctx.static_ints(shape) if isinstance(shape, Value) else tuple(shape)
    if target is None:
        return ctx.op_dynamic("reshape", [x], {"shape": shape}, copy_zero=0 if allowzero else 1)
    copy = 0
    if not allowzero and 0 in target:
        resolved = list(target)
        for i, d in enumerate(target):
            if d == 0 and x.shape is not None and i < len(x.shape) and isinstance(x.shape[i], int):
                resolved[i] = x.shape[i]
        target = tuple(resolved)
        copy = int(0 in target)  # a remaining 0 copies a symbolic dim (or a 0 dim: same result)
    return ctx.op("reshape", x, shape=target, copy_zero=copy)


@converter("Reshape")
def reshape_v1(ctx: ConvertContext, node: Node):
    return reshape(ctx, node.inputs[0], node.attr("shape"))


@converter("Reshape", since=5)
def reshape_v5(ctx: ConvertContext, node: Node):
    return reshape(ctx, node.inputs[0], node.inputs[1], node.attr("allowzero", 0))


@converter("Flatten")
def flatten(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    r = _rank(node, x)
    axis = node.attr("axis", 1)
    axis = axis + r if axis < 0 else axis
    outer, inner = dim_product(x.shape[:axis]), dim_product(x.shape[axis:])
    if isinstance(outer, int):
        return ctx.op("reshape", x, shape=(outer, -1 if not isinstance(inner, int) or outer == 0 else inner))
    if isinstance(inner, int) and inner:
        return ctx.op("reshape", x, shape=(-1, inner))
    if axis == 1:
        return ctx.op("reshape", x, shape=(0, -1), copy_zero=1)
    raise node.unsupported(f"flattening {x.type} at axis {axis} needs static dims on one side")


@converter("Transpose")
def transpose(ctx: ConvertContext, node: Node):
    return ctx.op("transpose", node.inputs[0], perm=node.attr("perm", None))


@converter("Squeeze")
def squeeze_v1(ctx: ConvertContext, node: Node):
    return ctx.op("squeeze", node.inputs[0], axes=node.attr("axes", None))


@converter("Squeeze", since=13)
def squeeze_v13(ctx: ConvertContext, node: Node):
    return ctx.op_dynamic("squeeze", [node.inputs[0]], {"axes": node.input(1)})


@converter("Unsqueeze")
def unsqueeze_v1(ctx: ConvertContext, node: Node):
    return ctx.op("unsqueeze", node.inputs[0], axes=node.attr("axes"))


@converter("Unsqueeze", since=13)
def unsqueeze_v13(ctx: ConvertContext, node: Node):
    return ctx.op_dynamic("unsqueeze", [node.inputs[0]], {"axes": node.inputs[1]})


@converter("Concat")
def concat(ctx: ConvertContext, node: Node):
    xs = [v for v in node.inputs if v is not None]
    return ctx.op("concat", *xs, axis=node.attr("axis", 1) if node.opset < 4 else node.attr("axis"))


@converter("Split")
def split(ctx: ConvertContext, node: Node):
    x, n = node.inputs[0], len(node.outputs)
    axis = node.attr("axis", 0)
    if node.opset >= 13 or (node.opset < 2 and node.input(1) is not None):
        sizes = node.input(1)
    else:
        sizes = node.attr("split", None)
    if sizes is None:
        n = node.attr("num_outputs", n)
        parts = ctx.op("split", x, axis=axis, num_outputs=n, n_results=n)
    else:
        parts = ctx.op_dynamic("split", [x], {"sizes": sizes}, axis=axis, n_results=n)
    return list(parts)


@converter("Slice")
def slice_v1(ctx: ConvertContext, node: Node):
    return ctx.op("slice", node.inputs[0], starts=node.attr("starts"), ends=node.attr("ends"),
                  axes=node.attr("axes", None))


@converter("Slice", since=10)
def slice_v10(ctx: ConvertContext, node: Node):
    names = ("starts", "ends", "axes", "steps")
    return ctx.op_dynamic("slice", [node.inputs[0]], {k: node.input(i + 1) for i, k in enumerate(names)})


@converter("Expand")
def expand(ctx: ConvertContext, node: Node):
    return ctx.op_dynamic("expand", [node.inputs[0]], {"shape": node.inputs[1]})


@converter("Tile", since=6)
def tile(ctx: ConvertContext, node: Node):
    return ctx.op_dynamic("tile", [node.inputs[0]], {"repeats": node.inputs[1]})


# -- pad ------------------------------------------------------------------------------------------

def _mode(node: Node) -> str:
    mode = node.attr("mode", "constant")
    if mode not in ("constant", "reflect", "edge", "wrap"):
        raise node.unsupported(f"pad mode {mode!r} (supported: constant, reflect, edge, wrap)")
    return mode


@converter("Pad")
def pad_v1(ctx: ConvertContext, node: Node):
    pads = node.attr("pads", None) or node.attr("paddings")  # opset 1 called them paddings
    return ctx.op("pad", node.inputs[0], pads=pads, value=node.attr("value", 0.0), mode=_mode(node))


@converter("Pad", since=2)
def pad_v2(ctx: ConvertContext, node: Node):
    return ctx.op("pad", node.inputs[0], pads=node.attr("pads"), value=node.attr("value", 0.0), mode=_mode(node))


@converter("Pad", since=11)
def pad_v11(ctx: ConvertContext, node: Node):
    x, pads, value, axes = node.inputs[0], node.inputs[1], node.input(2), node.input(3)
    mode = _mode(node)
    if value is not None and ctx.is_const(value):
        value = float(ctx.const_value(value).reshape(-1)[0])
    if axes is not None:
        pads = _full_pads(ctx, node, x, pads, axes)
    return ctx.op_dynamic("pad", [x], {"pads": pads, "value": value}, mode=mode)


def _full_pads(ctx: ConvertContext, node: Node, x: Value, pads: Value, axes: Value) -> Value:
    """Pads for every dim from pads for ``axes``: scatter them into zeros (folds when constant)."""
    r = _rank(node, x)
    i64 = np.int64
    ax = ctx.op("mod", ctx.cast(axes, DType.i64), ctx.const(np.array(r, i64)))
    where = ctx.op("concat", ax, ctx.op("add", ax, ctx.const(np.array(r, i64))), axis=0)
    return ctx.op("scatter_elements", ctx.const(np.zeros(2 * r, i64)), where, ctx.cast(pads, DType.i64), axis=0)


# -- shape queries --------------------------------------------------------------------------------

@converter("Shape")
def shape(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    start, end = node.attr("start", 0), node.attr("end", None)
    if x.shape is not None:
        dims = x.shape[start:end]
        if all(isinstance(d, int) for d in dims):
            return ctx.const(np.array(dims, dtype=np.int64))
    return ctx.op("shape", x, start=start, end=end)


@converter("Size")
def size(ctx: ConvertContext, node: Node):
    x = node.inputs[0]
    if x.type.is_static:
        return ctx.const(np.array(x.type.numel, dtype=np.int64))
    acc = ctx.const(np.array(1, dtype=np.int64))
    for i in range(_rank(node, x)):  # product of the run-time dims
        acc = ctx.op("mul", acc, dim_of(ctx, x, i))
    return acc


# -- generators -----------------------------------------------------------------------------------

@converter("Constant")
def constant(ctx: ConvertContext, node: Node):
    a = node.attrs
    if "value" in a:
        return ctx.const(np.asarray(a["value"]))
    if "value_float" in a:
        return ctx.const(np.array(a["value_float"], dtype=np.float32))
    if "value_floats" in a:
        return ctx.const(np.array(a["value_floats"], dtype=np.float32))
    if "value_int" in a:
        return ctx.const(np.array(a["value_int"], dtype=np.int64))
    if "value_ints" in a:
        return ctx.const(np.array(a["value_ints"], dtype=np.int64))
    kind = next(iter(a), "no value")
    raise node.unsupported(f"Constant with {kind!r} (only numeric tensors are supported)")


@converter("ConstantOfShape")
def constant_of_shape(ctx: ConvertContext, node: Node):
    value = node.attr("value", None)
    fill = np.zeros((), np.float32) if value is None else np.asarray(value).reshape(())
    return ctx.op_dynamic("expand", [ctx.const(fill)], {"shape": node.inputs[0]})


@converter("Range")
def range_(ctx: ConvertContext, node: Node):
    start, limit, delta = node.inputs
    return ctx.op("range", start, limit, delta)


@converter("EyeLike")
def eye_like(ctx: ConvertContext, node: Node):
    """1 where col == row + k: a compare of two ranges, which folds to a constant when static."""
    x = node.inputs[0]
    if x.shape is None or len(x.shape) != 2:
        raise node.unsupported(f"EyeLike needs a 2-D input, got {x.type}")
    dt = dtype_from_onnx(node.attr("dtype"), f"{node.describe()}: ") if "dtype" in node.attrs else x.dtype
    zero, one_ = ctx.const(np.array(0, np.int64)), ctx.const(np.array(1, np.int64))
    rows = ctx.op("range", zero, dim_of(ctx, x, 0), one_)
    cols = ctx.op("range", zero, dim_of(ctx, x, 1), one_)
    shifted = ctx.op("add", ctx.op("reshape", rows, shape=(-1, 1)), ctx.const(np.array(node.attr("k", 0), np.int64)))
    return ctx.cast(ctx.op("equal", shifted, ctx.op("reshape", cols, shape=(1, -1))), dt)


@converter("Trilu")
def trilu(ctx: ConvertContext, node: Node):
    return ctx.op_dynamic("trilu", [node.inputs[0]], {"k": node.input(1)}, upper=node.attr("upper", 1))


# -- block rearrangements -------------------------------------------------------------------------

def _nchw(node: Node, x: Value, c_div: int, hw_div: int) -> tuple[int, int, int, int]:
    """(N, C, H, W) with N = 0 when symbolic (reshape copies it)."""
    if x.shape is None or len(x.shape) != 4 or not all(isinstance(d, int) for d in x.shape[1:]):
        raise node.unsupported(f"needs a 4-D input with static C, H, W, got {x.type}")
    if x.shape[1] % c_div or x.shape[2] % hw_div or x.shape[3] % hw_div:  # type: ignore[operator]
        raise node.unsupported(f"{x.type} does not divide into blocks of {node.attr('blocksize')}")
    n = x.shape[0] if isinstance(x.shape[0], int) else 0
    return n, *x.shape[1:]  # type: ignore[return-value]


def _rearrange(ctx: ConvertContext, x: Value, first: Sequence[int], perm: Sequence[int],
               last: Sequence[int]) -> Value:
    copy = int(first[0] == 0)
    y = ctx.op("reshape", x, shape=tuple(first), copy_zero=copy)
    y = ctx.op("transpose", y, perm=tuple(perm))
    return ctx.op("reshape", y, shape=tuple(last), copy_zero=copy)


@converter("DepthToSpace")
def depth_to_space(ctx: ConvertContext, node: Node):
    x, b = node.inputs[0], node.attr("blocksize")
    n, c, h, w = _nchw(node, x, b * b, 1)
    last = (n, c // (b * b), h * b, w * b)
    if node.attr("mode", "DCR") == "DCR":
        return _rearrange(ctx, x, (n, b, b, c // (b * b), h, w), (0, 3, 4, 1, 5, 2), last)
    return _rearrange(ctx, x, (n, c // (b * b), b, b, h, w), (0, 1, 4, 2, 5, 3), last)


@converter("SpaceToDepth")
def space_to_depth(ctx: ConvertContext, node: Node):
    x, b = node.inputs[0], node.attr("blocksize")
    n, c, h, w = _nchw(node, x, 1, b)
    first, last = (n, c, h // b, b, w // b, b), (n, c * b * b, h // b, w // b)
    perm = (0, 3, 5, 1, 2, 4) if node.attr("mode", "DCR") == "DCR" else (0, 1, 3, 5, 2, 4)
    return _rearrange(ctx, x, first, perm, last)


@converter("CenterCropPad")
def center_crop_pad(ctx: ConvertContext, node: Node):
    """Crop (odd element at the end) then zero-pad (odd element at the end) each axis to the target;
    written with run-time shape arithmetic, which folds away when shapes are known."""
    x, want = node.inputs
    r = _rank(node, x)
    axes = tuple(a + r if a < 0 else a for a in node.attr("axes", tuple(range(r))))
    i64 = np.int64
    d = ctx.op("gather", shape_of(ctx, x), ctx.const(np.array(axes, i64)))
    t = ctx.cast(want, DType.i64)
    zero, two = ctx.const(np.array(0, i64)), ctx.const(np.array(2, i64))
    start = ctx.op("div", ctx.op("max", ctx.op("sub", d, t), zero), two)
    end = ctx.op("add", start, ctx.op("min", t, d))
    y = ctx.op_dynamic("slice", [x], {"starts": start, "ends": end, "axes": axes})
    total = ctx.op("max", ctx.op("sub", t, d), zero)
    before = ctx.op("div", total, two)
    pads = ctx.op("concat", before, ctx.op("sub", total, before), axis=0)
    return ctx.op_dynamic("pad", [y], {"pads": _full_pads(ctx, node, x, pads, ctx.const(np.array(axes, i64)))})

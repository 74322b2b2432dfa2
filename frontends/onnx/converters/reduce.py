"""Converters for ONNX reductions and scans: Reduce*, ArgMax/ArgMin, CumSum/CumProd, TopK.

ReduceSum/Mean/Max/Min/Prod map to one IR op each; ReduceL1, L2, LogSum, LogSumExp and SumSquare
are composed from them and elementwise ops. Axes moved from an attribute to an optional input in
ReduceSum-13 and in every other Reduce*-18 (with ``noop_with_empty_axes``); a run-time axes input
becomes the IR op's dynamic ``axes`` operand.
"""

from __future__ import annotations

from typing import Any

from nnc.ir import DType, Value

from ..context import ConvertContext, Node
from ..registry import converter

_CORE = {"ReduceSum": "sum", "ReduceMean": "mean", "ReduceMax": "max", "ReduceMin": "min", "ReduceProd": "prod"}
_COMPOSED = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def _axes(node: Node, axes_input_since: int) -> tuple[Any, int]:
    """(axes as a Value, tuple or None, noop_with_empty_axes) for either opset form."""
    if node.opset >= axes_input_since:
        return node.input(1), node.attr("noop_with_empty_axes", 0)
    return node.attr("axes", None), 0


def reduce(ctx: ConvertContext, kind: str, x: Value, axes: Any, keepdims: int, noop: int = 0) -> Value:
    """One ``reduce_<kind>`` op with compile-time or run-time axes."""
    return ctx.op_dynamic(f"reduce_{kind}", [x], {"axes": axes}, keepdims=keepdims, noop_with_empty_axes=noop)


def _core_reduce(ctx: ConvertContext, node: Node, since: int) -> Value:
    axes, noop = _axes(node, since)
    return reduce(ctx, _CORE[node.op_type], node.inputs[0], axes, node.attr("keepdims", 1), noop)


@converter(*_CORE)
def reduce_attr_axes(ctx: ConvertContext, node: Node):
    return _core_reduce(ctx, node, 10**9)


@converter("ReduceSum", since=13)
def reduce_sum_13(ctx: ConvertContext, node: Node):
    return _core_reduce(ctx, node, 13)


@converter("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", since=18)
def reduce_18(ctx: ConvertContext, node: Node):
    return _core_reduce(ctx, node, 18)


def _composed(ctx: ConvertContext, node: Node, since: int) -> Value:
    x = node.inputs[0]
    axes, noop = _axes(node, since)
    keep = node.attr("keepdims", 1)
    op = node.op_type
    if op == "ReduceSumSquare":
        return reduce(ctx, "sum", ctx.op("mul", x, x), axes, keep, noop)
    if op == "ReduceL1":
        return reduce(ctx, "sum", ctx.op("abs", x), axes, keep, noop)
    # the rest need exp/log/sqrt, which are float ops: integer inputs go through f64
    dt = x.dtype
    xf = ctx.cast(x, DType.f64) if not dt.is_float else x
    if op == "ReduceL2":
        out = ctx.op("sqrt", reduce(ctx, "sum", ctx.op("mul", xf, xf), axes, keep, noop))
    elif op == "ReduceLogSum":
        out = ctx.op("log", reduce(ctx, "sum", xf, axes, keep, noop))
    else:
        out = _log_sum_exp(ctx, xf, axes, keep, noop)
    return ctx.cast(out, dt)


def _log_sum_exp(ctx: ConvertContext, x: Value, axes: Any, keep: int, noop: int) -> Value:
    """log(sum(exp(x - m))) + m with m the max, so large inputs do not overflow; an infinite max
    (all -inf, or an empty reduction) is replaced by 0 so that it cannot produce inf - inf."""
    def finite_max(keepdims: int) -> Value:
        m = reduce(ctx, "max", x, axes, keepdims, noop)
        return ctx.op("where", ctx.op("isinf", m), ctx.scalar(0, x.dtype), m)

    shifted = ctx.op("exp", ctx.op("sub", x, finite_max(1)))
    return ctx.op("add", ctx.op("log", reduce(ctx, "sum", shifted, axes, keep, noop)), finite_max(keep))


@converter(*_COMPOSED)
def reduce_composed(ctx: ConvertContext, node: Node):
    return _composed(ctx, node, 10**9)


@converter(*_COMPOSED, since=18)
def reduce_composed_18(ctx: ConvertContext, node: Node):
    return _composed(ctx, node, 18)


@converter("ArgMax", "ArgMin")
def arg_reduce(ctx: ConvertContext, node: Node):
    return ctx.op(node.op_type.lower(), node.inputs[0], axis=node.attr("axis", 0), keepdims=node.attr("keepdims", 1),
                  select_last_index=node.attr("select_last_index", 0))


@converter("CumSum", "CumProd")
def cumulative(ctx: ConvertContext, node: Node):
    x, axis = node.inputs[0], node.inputs[1]
    return ctx.op_dynamic(node.op_type.lower(), [x], {"axis": axis}, exclusive=node.attr("exclusive", 0),
                          reverse=node.attr("reverse", 0))


@converter("TopK")
def topk_v1(ctx: ConvertContext, node: Node):
    return ctx.op("topk", node.inputs[0], k=node.attr("k"), axis=node.attr("axis", -1))


@converter("TopK", since=10)
def topk(ctx: ConvertContext, node: Node):
    return ctx.op_dynamic("topk", [node.inputs[0]], {"k": node.inputs[1]}, axis=node.attr("axis", -1),
                          largest=node.attr("largest", 1), sorted=node.attr("sorted", 1))

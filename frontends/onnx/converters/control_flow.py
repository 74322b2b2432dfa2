"""Converters for If, Loop and Scan (opset 8 and 9+), whose bodies become closed regions.

Each body is imported by ``ctx.import_region``: enclosing values it reads become trailing
operands of the op (closure conversion). An If whose condition is known at import is replaced by
the chosen branch. A loop-carried value (or scan state) whose shape changes in the body is
re-imported with the joined type until the body's types settle. Opset-8 Scan (a batch axis in
front of the sequence axis) becomes a scan over the batch whose body is a scan over the sequence.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.ir import Builder, DType, Graph, Value
from nnc.ir.types import OptionalType, TensorType, join_types

from ..context import ConvertContext, Node
from ..registry import converter

_MAX_TRIPS = np.iinfo(np.int64).max


def _graph(node: Node, name: str) -> Any:
    return node.attr(name).g


def _region(ctx: ConvertContext, node: Node, attr: str, types: list[Any], name: str):
    return ctx.import_region(_graph(node, attr), types, name)


def align_captures(parts: list[tuple[Graph, list[tuple[Value, Value]]]], first: int) -> list[Value]:
    """Give every region the same trailing parameters, one per value any of them captures (unused
    where a region does not read it); return those enclosing values in parameter order."""
    outer: list[Value] = []
    for _, caps in parts:
        for v, _p in caps:
            if not any(v is w for w in outer):
                outer.append(v)
    for region, caps in parts:
        own = {id(v): p for v, p in caps}
        params = []
        for v in outer:
            p = own.get(id(v))
            params.append(p if p is not None else region.add_param(v.name, v.type))
        region.params = region.params[:first] + params
    return outer


def inline_region(ctx: ConvertContext, region: Graph, args: list[Value]) -> list[Value]:
    """Copy a region's ops into the current graph, its parameters bound to ``args``."""
    env = {id(p): a for p, a in zip(region.params, args)}
    for op in region.ops:
        if op.opname == "const":
            new = [ctx.b.const_ref(op.attrs["ref"], op.results[0].name)]
        elif op.regions:
            new = ctx.b.create(op.opname, [env[id(v)] for v in op.operands], op.attrs,
                               [r.name for r in op.results], len(op.results),
                               regions=[r.clone() for r in op.regions]).results
        else:
            res = ctx.op(op.opname, *[env[id(v)] for v in op.operands], name=op.results[0].name,
                         n_results=len(op.results), **op.attrs)
            new = res if isinstance(res, list) else [res]
        for r, n in zip(op.results, new):
            env[id(r)] = n
    return [env[id(v)] for v in region.outputs]


@converter("If")
def if_(ctx: ConvertContext, node: Node):
    cond = node.inputs[0]
    then = _region(ctx, node, "then_branch", [], "then")
    other = _region(ctx, node, "else_branch", [], "else")
    known = ctx.const_value(cond)
    if known is not None and known.size == 1:
        region, caps = then if bool(known.reshape(-1)[0]) else other
        return inline_region(ctx, region, [v for v, _ in caps])
    captures = align_captures([then, other], 0)
    return ctx.b.create("if", [cond, *captures], {}, list(node.outputs), len(then[0].outputs),
                        regions=[then[0], other[0]]).results


def _declared(g: Any, i: int, default: TensorType) -> TensorType:
    from ..importer import value_type

    if i < len(g.input) and g.input[i].type.WhichOneof("value") == "tensor_type" \
            and g.input[i].type.tensor_type.HasField("shape"):
        t = value_type(g.input[i], "body input")
        if isinstance(t, TensorType) and t.dtype == default.dtype and t.is_static:
            return t
    return default


def _settle(ctx: ConvertContext, node: Node, attr: str, lead: list[Any], carried: list[Any],
            rest: list[Any], out_offset: int, name: str):
    """Import the body until each carried parameter's type covers what the body returns for it."""
    types = list(carried)
    for _ in range(4):
        region, caps = _region(ctx, node, attr, lead + types + rest, name)
        if len(region.outputs) < out_offset + len(types):
            raise node.unsupported(f"the body returns {len(region.outputs)} values, too few for "
                                   f"{len(types)} carried values")
        _wrap_optionals(ctx, region, types, out_offset)
        outs = [v.type for v in region.outputs[out_offset:out_offset + len(types)]]
        joined = [join_types(t, o) for t, o in zip(types, outs)]
        if any(j is None for j in joined):
            bad = next(i for i, j in enumerate(joined) if j is None)
            raise node.unsupported(f"carried value {bad} is {types[bad]} but the body returns {outs[bad]}")
        if joined == types:
            return region, caps, types
        types = joined
    raise node.unsupported("the types of the loop-carried values do not settle")


def _wrap_optionals(ctx: ConvertContext, region: Graph, types: list[Any], offset: int) -> None:
    """A carried optional that the body returns as a plain value (ONNX allows it) is wrapped into an
    optional inside the body, so the carried type stays one type."""
    b = Builder(ctx.module, region)
    outs = list(region.outputs)
    for i, t in enumerate(types):
        v = outs[offset + i]
        if isinstance(t, OptionalType) and not isinstance(v.type, OptionalType):
            outs[offset + i] = b.op("optional", v, name=f"{v.name}.opt")
    region.set_outputs(outs, region.output_names)


@converter("Loop")
def loop(ctx: ConvertContext, node: Node):
    g = _graph(node, "body")
    trip = node.input(0)
    cond = node.input(1)
    trip = ctx.const(np.array(_MAX_TRIPS, np.int64)) if trip is None else trip
    cond = ctx.const(np.array(True)) if cond is None else cond
    inits = [v for v in node.inputs[2:]]
    if any(v is None for v in inits):
        raise node.unsupported("an omitted loop-carried input has no value")
    lead = [_declared(g, 0, TensorType(DType.i64, ())), _declared(g, 1, TensorType(DType.bool, ()))]
    region, caps, _ = _settle(ctx, node, "body", lead, [v.type for v in inits], [], 1, "body")
    outer = align_captures([(region, caps)], 2 + len(inits))
    n_results = len(region.outputs) - 1
    return ctx.b.create("loop", [trip, cond, *inits, *outer], {"n_carried": len(inits)}, list(node.outputs),
                        n_results, regions=[region]).results


def _axes(node: Node, name: str, n: int, ranks: list[int | None]) -> tuple[int, ...]:
    given = node.attr(name, None)
    if not given:
        return ()
    out = []
    for a, r in zip(given, ranks):
        if a < 0:
            if r is None:
                raise node.unsupported(f"a negative {name} entry needs the rank of its value")
            a += r
        out.append(int(a))
    if len(out) != n:
        raise node.unsupported(f"{name} has {len(given)} entries for {n} values")
    return tuple(out)


def _rank(t: Any) -> int | None:
    return t.rank if isinstance(t, TensorType) else None


def _slice_type(t: Any, axis: int) -> Any:
    if not isinstance(t, TensorType) or t.shape is None:
        return t
    return t.with_shape(t.shape[:axis] + t.shape[axis + 1:])


@converter("Scan", since=9)
def scan(ctx: ConvertContext, node: Node):
    nx = node.attr("num_scan_inputs")
    ins = list(node.inputs)
    ns = len(ins) - nx
    states, xs = ins[:ns], ins[ns:]
    in_axes = _axes(node, "scan_input_axes", nx, [_rank(x.type) for x in xs])
    slices = [_slice_type(x.type, in_axes[i] if in_axes else 0) for i, x in enumerate(xs)]
    region, caps, _ = _settle(ctx, node, "body", [], [v.type for v in states], slices, 0, "body")
    outer = align_captures([(region, caps)], ns + nx)
    ys = region.outputs[ns:]
    attrs = {"n_state": ns, "n_scan_inputs": nx, "scan_input_axes": in_axes,
             "scan_input_directions": tuple(node.attr("scan_input_directions", ())),
             "scan_output_axes": _axes(node, "scan_output_axes", len(ys), [(_rank(y.type) or 0) + 1 for y in ys]),
             "scan_output_directions": tuple(node.attr("scan_output_directions", ()))}
    return ctx.b.create("scan", [*states, *xs, *outer], attrs, list(node.outputs), len(region.outputs),
                        regions=[region]).results


@converter("Scan", since=8)
def scan8(ctx: ConvertContext, node: Node):
    """Opset 8: inputs (sequence_lens?, states..., xs...), all batched on axis 0, scanned on axis 1."""
    if node.input(0) is not None:
        raise node.unsupported("sequence_lens is not supported (every batch entry scans the full length)")
    nx = node.attr("num_scan_inputs")
    ins = list(node.inputs[1:])
    ns = len(ins) - nx
    states, xs = ins[:ns], ins[ns:]
    inner_states = [_slice_type(v.type, 0) for v in states]
    inner_slices = [_slice_type(_slice_type(x.type, 0), 0) for x in xs]
    inner, caps, st = _settle(ctx, node, "body", [], inner_states, inner_slices, 0, "body")
    inner_caps = align_captures([(inner, caps)], ns + nx)
    dirs = tuple(node.attr("directions", ()))
    # the outer body: one batch entry, whose sequence the inner scan walks
    outer_body = Graph("batch")
    per_entry = [outer_body.add_param(f"{v.name}.entry", t) for v, t in zip(states, st)]
    per_entry += [outer_body.add_param(f"{x.name}.entry", _slice_type(x.type, 0)) for x in xs]
    cap_params = [outer_body.add_param(v.name, v.type) for v in inner_caps]
    saved = ctx.b.graph, ctx.b._index
    ctx.b.graph, ctx.b._index = outer_body, None
    try:
        res = ctx.b.create("scan", [*per_entry, *cap_params],
                           {"n_state": ns, "n_scan_inputs": nx, "scan_input_directions": dirs},
                           [f"{o}.entry" for o in node.outputs], len(inner.outputs), regions=[inner]).results
    finally:
        ctx.b.graph, ctx.b._index = saved
    outer_body.set_outputs(list(res), [f"out{i}" for i in range(len(res))])
    return ctx.b.create("scan", [*states, *xs, *inner_caps], {"n_state": 0, "n_scan_inputs": ns + nx},
                        list(node.outputs), len(res), regions=[outer_body]).results

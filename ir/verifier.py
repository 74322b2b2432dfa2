"""The IR verifier: SSA, order, operand counts, attribute schemas, and inferred == declared types.

``verify_module`` raises ``VerifyError`` naming the graph, the op and the broken rule: a value with
two producers (two ops, or an op and a parameter), declared result types that contradict type
inference, an operand used before its definition (with the ops of a cycle named when there is
one). Tests run it after every pass, and the driver runs it with ``--verify-each``.
"""

from __future__ import annotations

from .attrs import coerce_attr
from .builder import const_value
from .errors import TypeInferenceError, VerifyError
from .graph import Graph, Module, Op, Value
from .registry import has_op


def verify_module(m: Module) -> None:
    for key, arr in m.constants.items():
        t = m.constant_types.get(key)
        if t is None or t.dtype.numpy != arr.dtype or t.shape != tuple(arr.shape):
            raise VerifyError(f"constant @{key}: data {arr.dtype}{list(arr.shape)} does not match its type {t}")
    for g in m.graphs.values():
        verify_graph(g, m)


def verify_graph(g: Graph, m: Module) -> None:
    defined: set[int] = set()
    definer: dict[str, str] = {}  # value name -> what defines it ("parameter" or op.where())

    def fail(msg: str, op: Op | None = None) -> VerifyError:
        where = f" at {op.where()}" if op is not None else ""
        return VerifyError(f"graph @{g.name}{where}: {msg}")

    def define(v: Value, op: Op | None) -> None:
        by = "parameter" if op is None else op.where()
        if id(v) in defined and definer[v.name] == by:
            raise fail(f"%{v.name} is defined twice by {by}: it is listed twice in the graph", op)
        if id(v) in defined:
            raise fail(f"%{v.name} has two producers: {definer[v.name]} and {by}", op)
        if v.name in definer:
            raise fail(f"%{v.name} is defined twice: by {definer[v.name]} and by {by}", op)
        definer[v.name] = by
        defined.add(id(v))

    for p in g.params:
        if p.producer is not None:
            raise fail(f"parameter %{p.name} is also a result of {p.producer.where()}")
        if p.binding is not None and p.binding not in m.constant_types:
            raise fail(f"parameter %{p.name} is bound to missing constant @{p.binding}")
        if p.binding is not None and m.constant_types[p.binding] != p.type:
            raise fail(f"parameter %{p.name}: {p.type} but @{p.binding} is {m.constant_types[p.binding]}")
        define(p, None)
    for op in g.ops:
        if not has_op(op.opname):
            raise fail(f"unknown op {op.opname!r}", op)
        for i, v in enumerate(op.operands):
            if id(v) not in defined:
                raise fail(f"operand {i} %{v.name} is not defined before use{_why_undefined(g, v)}", op)
            if (op, i) not in v.uses:
                raise fail(f"use-list of %{v.name} misses operand {i}", op)
        for i, r in enumerate(op.results):
            if r.producer is None:
                raise fail(f"result %{r.name} is a graph parameter (a value with no producer)", op)
            if r.producer is not op:
                raise fail(f"result %{r.name} has two producers: this op and {r.producer.where()}", op)
            if r.index != i:
                raise fail(f"result %{r.name} is result {i} but records index {r.index}", op)
        _verify_op(op, m, fail)
        for region in op.regions:
            verify_graph(region, m)
        for r in op.results:
            define(r, op)
    for v in g.outputs:
        if id(v) not in defined:
            raise fail(f"returned value %{v.name} is not defined")
    if len(g.output_names) != len(g.outputs):
        raise fail("output names and returned values differ in number")
    if len(set(g.output_names)) != len(g.output_names):
        raise fail(f"duplicate output names {g.output_names}")


def _why_undefined(g: Graph, v: Value) -> str:
    """Why an operand was not defined before its use: a cycle (named op by op), ops out of
    topological order, or a value from outside the graph. Runs only on the failure path, so the
    linear check above stays the cost of verifying a valid graph."""
    import networkx as nx  # see Graph.to_networkx: kept off the import path of nnc

    nxg = g.to_networkx()
    try:
        cycle = nx.find_cycle(nxg)
    except nx.NetworkXNoCycle:
        cycle = None
    if cycle:
        steps = [f"{src.where()} --%{nxg.edges[src, dst, k]['value']}-->" for src, dst, k in cycle]
        return f": the ops form a cycle: {' '.join(steps)} {cycle[0][0].where()}"
    p = v.producer
    if p is not None and any(op is p for op in g.ops):
        return (f": its producer {p.where()} comes later (position {g.ops.index(p)}); the ops are not in "
                "topological order")
    if any(q is v for q in g.params):
        return ""
    return ": it is not a parameter or a result of an op of this graph"


def _verify_op(op: Op, m: Module, fail) -> None:
    d = op.opdef
    if op.opname == "const":
        key = op.attrs.get("ref")
        if key not in m.constant_types:
            raise fail(f"reads missing constant @{key}", op)
        if op.results[0].type != m.constant_types[key]:
            raise fail(f"typed {op.results[0].type} but @{key} is {m.constant_types[key]}", op)
        return
    lo, hi = d.operand_range()
    n = len(op.operands)
    if n < lo or (hi is not None and n > hi):
        raise fail(f"has {n} operands; the schema allows {lo}..{'' if hi is None else hi}", op)
    if set(op.attrs) != set(d.attrs):
        raise fail(f"attributes {sorted(op.attrs)} differ from the schema's {sorted(d.attrs)}", op)
    for k, spec in d.attrs.items():
        try:
            if coerce_attr(k, spec, op.attrs[k]) != op.attrs[k]:
                raise fail(f"attribute {k}={op.attrs[k]!r} is not in canonical form", op)
        except (TypeError, ValueError) as e:
            raise fail(str(e), op) from None
    consts = [const_value(m, v) for v in op.operands]
    try:
        want = d.run_infer([v.type for v in op.operands], op.attrs, consts, len(op.results), op.regions)
    except TypeInferenceError as e:
        raise fail(f"type inference failed: {e}", op) from None
    got = [r.type for r in op.results]
    if want != got:
        raise fail(f"declared result types {', '.join(map(str, got))} but inference gives "
                   f"{', '.join(map(str, want))}", op)

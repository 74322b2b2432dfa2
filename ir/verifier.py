"""The IR verifier: SSA, order, operand counts, attribute schemas, and inferred == declared types.

``verify_module`` raises ``VerifyError`` naming the graph, the op and the broken rule. Tests run it
after every pass, and the driver runs it with ``--verify-each``.
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
    names: set[str] = set()

    def fail(msg: str, op: Op | None = None) -> VerifyError:
        where = f" at {op.where()}" if op is not None else ""
        return VerifyError(f"graph @{g.name}{where}: {msg}")

    def define(v: Value, op: Op | None) -> None:
        if v.name in names:
            raise fail(f"%{v.name} is defined twice", op)
        names.add(v.name)
        defined.add(id(v))

    for p in g.params:
        if p.producer is not None:
            raise fail(f"parameter %{p.name} has a producer")
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
                raise fail(f"operand {i} %{v.name} is not defined before use", op)
            if (op, i) not in v.uses:
                raise fail(f"use-list of %{v.name} misses operand {i}", op)
        for i, r in enumerate(op.results):
            if r.producer is not op or r.index != i:
                raise fail(f"result %{r.name} does not point back to its op", op)
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

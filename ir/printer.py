"""The textual form of the IR: readable, diff-friendly, and exactly re-parseable.

    module @mlp {source="onnx"}

    graph @main(%x: f32[N,784]) -> (logits: f32[N,10]) {
      %fc1.w = const @fc1.w : f32[784,512]
      %h = matmul(%x, %fc1.w) : f32[N,512]
      %s = const dense<[1, 512]> : i64[2]
      ...
      return %logits
    }

Weights print by reference (``@key``); constants of at most ``INLINE_LIMIT`` elements print inline
as ``dense<...>``. Attributes equal to their schema default are omitted. The parser in
``parser.py`` reads exactly this grammar; ``print(parse(print(m))) == print(m)``.
"""

from __future__ import annotations

import json
import re

import numpy as np

from .attrs import format_attr, format_float
from .graph import Graph, Module, Op, Value

INLINE_LIMIT = 8
_BARE = re.compile(r"^[A-Za-z0-9_.$/\-]+$")


def fmt_name(name: str) -> str:
    return name if _BARE.match(name) and not name.startswith("-") else json.dumps(name)


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_.]*$")


def fmt_key(name: str) -> str:
    """An output name or metadata key: bare when it is an identifier, else JSON-quoted."""
    return name if _IDENT.match(name) and name not in ("true", "false", "nan", "inf") else json.dumps(name)


def fmt_value(v: Value) -> str:
    return "%" + fmt_name(v.name)


def fmt_scalar(x: object) -> str:
    if isinstance(x, (bool, np.bool_)):
        return "true" if x else "false"
    if isinstance(x, (int, np.integer)):
        return str(int(x))
    return format_float(float(x))  # type: ignore[arg-type]


def fmt_dense(arr: np.ndarray) -> str:
    def rec(a: np.ndarray) -> str:
        if a.ndim == 0:
            return fmt_scalar(a[()])
        return "[" + ", ".join(rec(a[i]) for i in range(a.shape[0])) + "]"

    return f"dense<{rec(np.asarray(arr))}>"


def fmt_attrs(op: Op) -> str:
    d = op.opdef
    parts = []
    for k, spec in d.attrs.items():
        v = op.attrs.get(k)
        if v is None or (not spec.required and v == spec.default):
            continue
        parts.append(f"{k}={format_attr(spec.kind, v)}")
    return " {" + ", ".join(parts) + "}" if parts else ""


class Printer:
    def __init__(self, module: Module | None):
        self.module = module
        self.lines: list[str] = []

    def emit(self, indent: int, text: str) -> None:
        self.lines.append("  " * indent + text)

    def graph(self, g: Graph, indent: int = 0) -> None:
        params = []
        for p in g.params:
            s = f"{fmt_value(p)}: {p.type}"
            if p.binding is not None:
                s += f" = @{fmt_name(p.binding)}"
            params.append(s)
        outs = ", ".join(f"{fmt_key(n)}: {v.type}" for n, v in zip(g.output_names, g.outputs))
        self.emit(indent, f"graph @{fmt_name(g.name)}({', '.join(params)}) -> ({outs}) {{")
        for op in g.ops:
            self.op(op, indent + 1)
        self.emit(indent + 1, "return " + ", ".join(fmt_value(v) for v in g.outputs))
        self.emit(indent, "}")

    def op(self, op: Op, indent: int) -> None:
        lhs = ", ".join(fmt_value(r) for r in op.results)
        lhs = lhs + " = " if lhs else ""
        types = ", ".join(str(r.type) for r in op.results)
        if op.opname == "const":
            key = op.attrs["ref"]
            arr = self.module.constants.get(key) if self.module is not None else None
            t = op.results[0].type
            if arr is not None and arr.size <= INLINE_LIMIT:
                body = fmt_dense(arr)
            else:
                body = f"@{fmt_name(key)}"
            self.emit(indent, f"{lhs}const {body} : {t}")
            return
        args = ", ".join(fmt_value(v) for v in op.operands)
        line = f"{lhs}{op.opname}({args}){fmt_attrs(op)}"
        if op.results:
            line += f" : {types}"
        if not op.regions:
            self.emit(indent, line)
            return
        self.emit(indent, line + " {")
        for region in op.regions:
            self.graph(region, indent + 1)
        self.emit(indent, "}")


def print_graph(g: Graph, module: Module | None = None) -> str:
    p = Printer(module)
    p.graph(g)
    return "\n".join(p.lines) + "\n"


def print_module(m: Module) -> str:
    p = Printer(m)
    meta = ""
    if m.metadata:
        meta = " {" + ", ".join(f"{fmt_key(k)}={json.dumps(v)}" for k, v in sorted(m.metadata.items())) + "}"
    p.emit(0, f"module @{fmt_name(m.name)}{meta}")
    for g in m.graphs.values():
        p.emit(0, "")
        p.graph(g)
    return "\n".join(p.lines) + "\n"

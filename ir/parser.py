"""Parser for the textual IR printed by ``printer.py``.

Types in the text are taken as written (not re-inferred), so a parsed module can be checked by the
verifier. Constants printed by reference (``@key``) have their type but no data unless ``weights``
supplies them; inline ``dense<...>`` constants carry their data.
"""

from __future__ import annotations

import json
import re
from typing import Any, Mapping

import numpy as np

from .attrs import AttrKind
from .dtypes import DType
from .errors import ParseError
from .graph import Graph, Module, Op, Value
from .registry import get_opdef, has_op
from .types import OptionalType, SequenceType, TensorType, ValueType

_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\n]+|//[^\n]*)
  | (?P<arrow>->)
  | (?P<num>-?(?:\d+\.?\d*(?:[eE][+-]?\d+)?|inf\b|nan\b))
  | (?P<str>"(?:[^"\\]|\\.)*")
  | (?P<value>%(?:[A-Za-z0-9_.$/\-]+|"(?:[^"\\]|\\.)*"))
  | (?P<symbol>@(?:[A-Za-z0-9_.$/\-]+|"(?:[^"\\]|\\.)*"))
  | (?P<ident>[A-Za-z_][A-Za-z0-9_.]*)
  | (?P<punct>[(){}\[\]<>,:=*?])
""", re.VERBOSE)


class _Tokens:
    def __init__(self, text: str):
        self.text = text
        self.toks: list[tuple[str, str, int]] = []
        pos = 0
        while pos < len(text):
            m = _TOKEN.match(text, pos)
            if not m:
                raise self.error_at(pos, f"unexpected character {text[pos]!r}")
            kind = m.lastgroup
            if kind != "ws":
                self.toks.append((kind, m.group(), pos))  # type: ignore[arg-type]
            pos = m.end()
        self.toks.append(("eof", "", len(text)))
        self.i = 0

    def error_at(self, pos: int, msg: str) -> ParseError:
        line = self.text.count("\n", 0, pos) + 1
        col = pos - (self.text.rfind("\n", 0, pos) + 1) + 1
        src = self.text.splitlines()[line - 1] if self.text.splitlines() else ""
        return ParseError(f"line {line}, col {col}: {msg}\n  {src.strip()}")

    def error(self, msg: str) -> ParseError:
        return self.error_at(self.toks[self.i][2], msg)

    def peek(self, k: int = 0) -> tuple[str, str]:
        t = self.toks[min(self.i + k, len(self.toks) - 1)]
        return t[0], t[1]

    def next(self) -> tuple[str, str]:
        t = self.toks[self.i]
        self.i += 1
        return t[0], t[1]

    def accept(self, text: str) -> bool:
        if self.toks[self.i][1] == text and self.toks[self.i][0] in ("punct", "ident", "arrow"):
            self.i += 1
            return True
        return False

    def expect(self, text: str) -> None:
        if not self.accept(text):
            raise self.error(f"expected {text!r}, found {self.peek()[1]!r}")

    def expect_kind(self, kind: str) -> str:
        k, v = self.next()
        if k != kind:
            self.i -= 1
            raise self.error(f"expected {kind}, found {v!r}")
        return v


def _unquote(text: str) -> str:
    return json.loads(text) if text.startswith('"') else text


class Parser:
    def __init__(self, text: str, weights: Mapping[str, np.ndarray] | None):
        self.t = _Tokens(text)
        self.weights = dict(weights or {})

    # -- module -------------------------------------------------------------------------------
    def module(self) -> Module:
        m = Module()
        self.m = m
        if self.t.accept("module"):
            m.name = _unquote(self.t.expect_kind("symbol")[1:])
            if self.t.accept("{"):
                while not self.t.accept("}"):
                    key = self._name()
                    self.t.expect("=")
                    m.metadata[key] = json.loads(self.t.expect_kind("str"))
                    self.t.accept(",")
        while self.t.peek()[0] != "eof":
            g = self.graph()
            if g.name in m.graphs:
                raise self.t.error(f"graph @{g.name} defined twice")
            m.graphs[g.name] = g
        if not m.graphs:
            raise self.t.error("a module needs at least one graph")
        return m

    def _name(self) -> str:
        k, v = self.t.next()
        if k in ("ident", "str"):
            return _unquote(v)
        self.t.i -= 1
        raise self.t.error(f"expected a name, found {v!r}")

    # -- graph --------------------------------------------------------------------------------
    def graph(self) -> Graph:
        self.t.expect("graph")
        g = Graph(_unquote(self.t.expect_kind("symbol")[1:]))
        env: dict[str, Value] = {}
        self.t.expect("(")
        while not self.t.accept(")"):
            name = _unquote(self.t.expect_kind("value")[1:])
            self.t.expect(":")
            ty = self.type()
            binding = None
            if self.t.accept("="):
                binding = _unquote(self.t.expect_kind("symbol")[1:])
                self._declare_constant(binding, ty)
            self._define(g, env, name)
            env[name] = g.add_param(name, ty, binding)
            self.t.accept(",")
        self.t.expect("->")
        self.t.expect("(")
        out_names, out_types = [], []
        while not self.t.accept(")"):
            out_names.append(self._name())
            self.t.expect(":")
            out_types.append(self.type())
            self.t.accept(",")
        self.t.expect("{")
        while not self.t.accept("return"):
            g.ops.append(self.op(g, env))
        outs = [self._use(env)]
        while self.t.accept(","):
            outs.append(self._use(env))
        self.t.expect("}")
        if len(outs) != len(out_names):
            raise self.t.error(f"graph @{g.name} declares {len(out_names)} results but returns {len(outs)}")
        for v, ty, n in zip(outs, out_types, out_names):
            if v.type != ty:
                raise self.t.error(f"result {n!r} declared {ty} but %{v.name} is {v.type}")
        g.set_outputs(outs, out_names)
        return g

    def _define(self, g: Graph, env: dict[str, Value], name: str) -> None:
        if name in env:
            raise self.t.error(f"%{name} is defined twice")

    def _use(self, env: dict[str, Value]) -> Value:
        name = _unquote(self.t.expect_kind("value")[1:])
        if name not in env:
            self.t.i -= 1
            raise self.t.error(f"use of undefined value %{name}")
        return env[name]

    def _declare_constant(self, key: str, ty: TensorType, data: np.ndarray | None = None) -> None:
        m = self.m
        if data is None and key in self.weights:
            data = np.asarray(self.weights[key])
        if key in m.constant_types and m.constant_types[key] != ty:
            raise self.t.error(f"constant @{key} used as {ty} and as {m.constant_types[key]}")
        if data is not None:
            data = data.astype(ty.dtype.numpy, copy=False)
            if ty.shape is not None and tuple(data.shape) != ty.shape:
                try:
                    data = data.reshape(ty.shape)
                except ValueError:
                    raise self.t.error(f"constant @{key} has shape {list(data.shape)}, declared {ty}") from None
            m.constants[key] = data
        m.constant_types[key] = ty

    # -- ops ----------------------------------------------------------------------------------
    def op(self, g: Graph, env: dict[str, Value]) -> Op:
        names: list[str] = []
        if self.t.peek()[0] == "value":
            names.append(_unquote(self.t.next()[1][1:]))
            while self.t.accept(","):
                names.append(_unquote(self.t.expect_kind("value")[1:]))
            self.t.expect("=")
        opname = self.t.expect_kind("ident")
        if opname == "const":
            return self._const(g, env, names)
        if not has_op(opname):
            self.t.i -= 1
            raise self.t.error(f"unknown op {opname!r}")
        d = get_opdef(opname)
        self.t.expect("(")
        operands = []
        while not self.t.accept(")"):
            operands.append(self._use(env))
            self.t.accept(",")
        attrs: dict[str, Any] = {}
        if self.t.accept("{"):
            while not self.t.accept("}"):
                key = self.t.expect_kind("ident")
                if key not in d.attrs:
                    raise self.t.error(f"{opname} has no attribute {key!r}")
                self.t.expect("=")
                attrs[key] = self._attr_value(d.attrs[key].kind)
                self.t.accept(",")
        try:
            attrs = d.complete_attrs(attrs)
        except Exception as e:  # schema violations become parse errors with a position
            raise self.t.error(str(e)) from None
        types: list[TensorType] = []
        if names:
            self.t.expect(":")
            types.append(self.type())
            while self.t.accept(","):
                types.append(self.type())
        if len(types) != len(names):
            raise self.t.error(f"{len(names)} results but {len(types)} types")
        regions = []
        if self.t.accept("{"):
            while not self.t.accept("}"):
                regions.append(self.graph())
        for n in names:
            self._define(g, env, n)
        op = Op(opname, operands, attrs, types, names, regions)
        for r in op.results:
            env[r.name] = r
            g._names.add(r.name)
        return op

    def _const(self, g: Graph, env: dict[str, Value], names: list[str]) -> Op:
        if len(names) != 1:
            raise self.t.error("const has exactly one result")
        if self.t.accept("dense"):
            self.t.expect("<")
            lit = self._literal()
            self.t.expect(">")
            self.t.expect(":")
            ty = self.type()
            try:
                data = np.array(lit, dtype=ty.dtype.numpy if ty.dtype is not DType.bf16 else np.float64)
                data = data.astype(ty.dtype.numpy).reshape(ty.shape)  # type: ignore[arg-type]
            except (ValueError, TypeError) as e:
                raise self.t.error(f"bad dense literal for {ty}: {e}") from None
            key = names[0]
            k = 1
            while key in self.m.constant_types:
                key = f"{names[0]}_{k}"
                k += 1
            self._declare_constant(key, ty, data)
        else:
            key = _unquote(self.t.expect_kind("symbol")[1:])
            self.t.expect(":")
            ty = self.type()
            self._declare_constant(key, ty)
        self._define(g, env, names[0])
        op = Op("const", [], {"ref": key}, [ty], names)
        env[names[0]] = op.results[0]
        g._names.add(names[0])
        return op

    # -- literals and types -------------------------------------------------------------------
    def type(self) -> ValueType:
        if self.t.peek()[1] in ("seq", "opt") and self.t.peek(1)[1] == "<":
            kind = self.t.next()[1]
            self.t.expect("<")
            inner = self.type()
            self.t.expect(">")
            if kind == "seq":
                if not isinstance(inner, TensorType):
                    raise self.t.error("a sequence holds tensors")
                return SequenceType(inner)
            if isinstance(inner, OptionalType):
                raise self.t.error("an optional cannot hold an optional")
            return OptionalType(inner)
        k, v = self.t.next()
        try:
            dt = DType.parse(v)
        except ValueError:
            self.t.i -= 1
            raise self.t.error(f"expected a dtype, found {v!r}") from None
        self.t.expect("[")
        if self.t.accept("*"):
            self.t.expect("]")
            return TensorType(dt, None)
        dims: list[int | str] = []
        while not self.t.accept("]"):
            k, v = self.t.next()
            if k == "num" and v.isdigit():
                dims.append(int(v))
            elif k == "ident" or v == "?":
                dims.append(v)
            else:
                self.t.i -= 1
                raise self.t.error(f"bad dim {v!r}")
            self.t.accept(",")
        return TensorType(dt, tuple(dims))

    def _literal(self) -> Any:
        k, v = self.t.next()
        if v == "[":
            items = []
            while not self.t.accept("]"):
                items.append(self._literal())
                self.t.accept(",")
            return items
        if k == "num":
            return float(v) if any(c in v for c in ".eEni") else int(v)
        if k == "str":
            return json.loads(v)
        if k == "ident":
            if v in ("true", "false"):
                return v == "true"
            return v
        self.t.i -= 1
        raise self.t.error(f"expected a literal, found {v!r}")

    def _attr_value(self, kind: AttrKind) -> Any:
        lit = self._literal()
        if kind is AttrKind.DTYPE:
            return DType.parse(lit)
        return lit


def parse_module(text: str, weights: Mapping[str, np.ndarray] | None = None) -> Module:
    """Parse module text. ``weights`` supplies data for constants printed by reference."""
    return Parser(text, weights).module()

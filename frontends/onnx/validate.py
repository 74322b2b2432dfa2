"""Checks of an ONNX model against the ONNX specification, made before anything is converted.

Three levels: the model header (IR version and opsets this onnx package knows), the graph (every
value name produced exactly once), and each node against its op schema from ``onnx.defs`` (input and
output counts, attribute names, types and presence, input element types allowed by the schema's
type constraints). A node that passes cannot feed a converter the wrong number of inputs or an
attribute of the wrong kind, so converters stay free of such checks. Ops onnx has no schema for at
all (custom domains, made-up names) are left to the converter table, which refuses what it lacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from typing import Sequence

import onnx
from onnx import defs

from nnc.ir import DType, ModelError, TensorType, Value

from .context import node_label, onnx_dtype

_Option = defs.OpSchema.FormalParameterOption
_CHECKER_PREFIX = re.compile(r"^Node\(.*?\) with schema\(.*?\) ")  # we name the node our way


def describe_node(node: onnx.NodeProto, opset: int | None) -> str:
    domain = "" if node.domain in ("", "ai.onnx") else node.domain
    dom = f"{domain}." if domain else ""
    at = f" (opset {opset})" if opset is not None else ""
    return f"{dom}{node.op_type} node {node_label(node)!r}{at}"


# -- the model header ------------------------------------------------------------------------------
def _domain_name(domain: str) -> str:
    return domain or "ai.onnx"


def check_versions(proto: onnx.ModelProto) -> None:
    """Refuse IR versions and opsets newer than the installed onnx package knows: their ops may mean
    something nnc's converters (written against these schemas) do not implement."""
    if proto.ir_version > onnx.IR_VERSION:
        raise ModelError(f"model IR version {proto.ir_version} is newer than the newest supported IR version "
                         f"{onnx.IR_VERSION} (onnx {onnx.__version__})")
    known = defs.C.schema_version_map()
    seen: dict[str, int] = {}
    for o in proto.opset_import:
        domain = "" if o.domain == "ai.onnx" else o.domain
        if domain in seen and seen[domain] != o.version:
            raise ModelError(f"opset_import lists domain {_domain_name(domain)!r} twice "
                             f"(versions {seen[domain]} and {o.version})")
        seen[domain] = o.version
        if o.version < 1:
            raise ModelError(f"opset_import: domain {_domain_name(domain)!r} has version {o.version} "
                             f"(versions start at 1)")
        if domain in known and o.version > known[domain][1]:
            raise ModelError(f"opset {o.version} of domain {_domain_name(domain)!r} is newer than the newest "
                             f"supported opset {known[domain][1]} (onnx {onnx.__version__})")


# -- the graph ---------------------------------------------------------------------------------------
def check_single_producers(graph: onnx.GraphProto) -> None:
    """Every value name is defined once: by a graph input, an initializer or one node output. (An
    initializer may also be listed as an input: before IR version 4 that was how weights were declared.)"""
    producer: dict[str, str] = {}

    def define(name: str, who: str) -> None:
        if not name:
            return
        if name in producer:
            raise ModelError(f"value {name!r} is produced twice: by {producer[name]} and by {who}")
        producer[name] = who

    init_names = {t.name for t in graph.initializer}
    for vi in graph.input:
        if vi.name not in init_names:
            define(vi.name, f"graph input {vi.name!r}")
    for t in graph.initializer:
        define(t.name, f"initializer {t.name!r}")
    for node in graph.node:
        for i, out in enumerate(node.output):
            define(out, f"{node.op_type} node {node_label(node)!r} (output {i})")


# -- nodes against their schema -----------------------------------------------------------------------
@dataclass(frozen=True)
class _Formal:
    name: str
    option: _Option
    allowed: frozenset[str] | None  # tensor types, None when the schema does not restrict them
    type_param: str | None  # the constraint name shared with other parameters, if any
    homogeneous: bool


@dataclass(frozen=True)
class _Schema:
    since: int
    min_input: int
    max_input: int
    min_output: int
    max_output: int
    inputs: tuple[_Formal, ...]
    outputs: tuple[_Formal, ...]
    attributes: dict[str, tuple[int, bool]]  # name -> (AttributeProto type, required)
    deprecated: bool


def _formals(params: Sequence, constraints: dict[str, frozenset[str]]) -> tuple[_Formal, ...]:
    out = []
    for p in params:
        if p.type_str in constraints:
            allowed, param = constraints[p.type_str], p.type_str
        elif p.type_str.startswith("tensor("):
            allowed, param = frozenset([p.type_str]), None
        else:
            allowed, param = None, None
        if allowed is not None and not any(t.startswith("tensor(") for t in allowed):
            allowed = None  # sequences, maps: nnc has no such values, the converter says so
        out.append(_Formal(p.name, p.option, allowed, param, bool(p.is_homogeneous)))
    return tuple(out)


@lru_cache(maxsize=None)
def _first_versions() -> dict[tuple[str, str], int]:
    """(domain, op type) -> the opset that introduced the op, for every op the onnx package knows."""
    first: dict[tuple[str, str], int] = {}
    for s in defs.get_all_schemas_with_history():
        key = (s.domain, s.name)
        first[key] = min(first.get(key, s.since_version), s.since_version)
    return first


@lru_cache(maxsize=None)
def _schema(op_type: str, opset: int, domain: str) -> _Schema | None:
    try:
        s = defs.get_schema(op_type, opset, domain)
    except defs.SchemaError:
        return None
    constraints = {c.type_param_str: frozenset(c.allowed_type_strs) for c in s.type_constraints}
    attrs = {name: (int(a.type), bool(a.required)) for name, a in s.attributes.items()}
    return _Schema(s.since_version, s.min_input, s.max_input, s.min_output, s.max_output,
                   _formals(s.inputs, constraints), _formals(s.outputs, constraints), attrs, bool(s.deprecated))


def _formal_at(formals: tuple[_Formal, ...], i: int) -> _Formal | None:
    if i < len(formals):
        return formals[i]
    if formals and formals[-1].option == _Option.Variadic:
        return formals[-1]
    return None


def _type_str(dt: DType) -> str:
    return f"tensor({onnx.TensorProto.DataType.Name(onnx_dtype(dt)).lower()})"


def _count(what: str, n: int, lo: int, hi: int) -> str | None:
    if lo <= n <= hi:
        return None
    if lo == hi:
        want = f"exactly {lo}"
    elif hi >= 2**31 - 1:
        want = f"at least {lo}"
    else:
        want = f"{lo} to {hi}"
    return f"has {n} {what}{'' if n == 1 else 's'}, the schema wants {want}"


def _attr_type_name(t: int) -> str:
    return onnx.AttributeProto.AttributeType.Name(t) if t in onnx.AttributeProto.AttributeType.values() else str(t)


def check_node(node: onnx.NodeProto, domain: str, opset: int, inputs: Sequence[Value | None]) -> None:
    """Check one node against the schema of its op at the model's opset; a ``ModelError`` naming the
    node, its op type and opset says what breaks the schema. ``inputs`` are the IR values bound to
    the node's inputs (None for an omitted optional one), whose dtypes are checked."""
    s = _schema(node.op_type, opset, domain)
    if s is None:
        since = _first_versions().get((domain, node.op_type))
        if since is not None:  # a known op, used before it existed (not a custom op: those have no schema)
            raise ModelError(f"{describe_node(node, opset)}: {node.op_type} does not exist in opset {opset} of "
                             f"domain {_domain_name(domain)!r}; it was introduced in opset {since}")
        return

    def fail(why: str) -> ModelError:
        return ModelError(f"{describe_node(node, opset)}: {why}")

    problem = _count("input", len(node.input), s.min_input, s.max_input) or \
        _count("output", len(node.output), s.min_output, s.max_output)
    if problem:
        raise fail(problem)
    for kind, names, formals in (("input", node.input, s.inputs), ("output", node.output, s.outputs)):
        for i, name in enumerate(names):
            f = _formal_at(formals, i)
            if not name and f is not None and f.option != _Option.Optional:
                raise fail(f"{kind} {i} ({f.name}) is required but not given")
    for a in node.attribute:
        if a.name not in s.attributes:
            raise fail(f"unknown attribute {a.name!r} (the schema has: {', '.join(sorted(s.attributes)) or 'none'})")
        want = s.attributes[a.name][0]
        if a.type != want:
            raise fail(f"attribute {a.name!r} is {_attr_type_name(a.type)}, the schema wants {_attr_type_name(want)}")
    given = {a.name for a in node.attribute}
    for name, (_, required) in s.attributes.items():
        if required and name not in given:
            raise fail(f"required attribute {name!r} is missing")
    _check_input_types(node, s, inputs, fail)
    if s.deprecated:
        return  # the checker refuses deprecated forms outright; nnc still converts some (GroupNormalization-18)
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for a in node.attribute):
        return  # checked alone, a body that reads outer-scope values looks unsorted to the checker
    try:  # the rules onnx.defs does not expose, such as BatchNormalization's allowed output counts {1, 3}
        onnx.checker.check_node(node, _checker_context(domain, opset))
    except onnx.checker.ValidationError as e:
        first = str(e).strip().splitlines()[0]
        raise fail(_CHECKER_PREFIX.sub("", first).rstrip(".")) from None


@lru_cache(maxsize=None)
def _checker_context(domain: str, opset: int) -> onnx.checker.C.CheckerContext:
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = onnx.IR_VERSION
    ctx.opset_imports = {domain: opset}
    return ctx


def _check_input_types(node: onnx.NodeProto, s: _Schema, inputs: Sequence[Value | None], fail) -> None:
    bound: dict[str, tuple[str, int]] = {}  # type parameter -> (the type it took, at which input)
    for i, v in enumerate(inputs):
        f = _formal_at(s.inputs, i)
        if v is None or f is None or f.allowed is None or not isinstance(v.type, TensorType):
            continue  # sequences and optionals: their converters check them
        t = _type_str(v.dtype)
        if t not in f.allowed:
            allowed = ", ".join(sorted(a[7:-1] for a in f.allowed if a.startswith("tensor(")))
            raise fail(f"input {i} ({f.name}, {node.input[i]!r}) has element type {t[7:-1]}, "
                       f"the schema allows {allowed}")
        if f.type_param is None or (f.option == _Option.Variadic and not f.homogeneous):
            continue
        first = bound.setdefault(f.type_param, (t, i))
        if first[0] != t:
            raise fail(f"inputs {first[1]} ({node.input[first[1]]!r}) and {i} ({node.input[i]!r}) share type "
                       f"{f.type_param} but have element types {first[0][7:-1]} and {t[7:-1]}")

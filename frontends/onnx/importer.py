"""ONNX ModelProto -> nnc Module.

Graph inputs become parameters; initializers become constants (or bound, trainable parameters
with ``weights="param"``); each node goes through the converter registered for its op type and
opset. Nodes whose every input is constant fold at import, so shape subgraphs
(Shape -> Gather -> Concat -> Reshape) disappear when shapes are known. An op with no converter but
an ONNX function body (LayerNormalization in old opsets, Celu, ...) is expanded into that body.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from nnc.ir import Builder, Graph, ModelError, Module, NncError, UnsupportedOpError, Value
from nnc.ir.types import UNKNOWN, OptionalType, SequenceType, TensorType, ValueType

from .context import ConvertContext, Node, decode_attribute, dtype_from_onnx, node_label, onnx_dtype
from .loader import load_model_and_weights, tensor_to_array
from .registry import lookup
from .validate import check_node, check_single_producers, check_versions, describe_node

# What a converter (or the importer around it) raises when a malformed model slips past the schema
# checks: turned into a ModelError naming the node, so no raw exception leaves the importer.
_UNTYPED = (AttributeError, IndexError, KeyError, TypeError, ValueError, ZeroDivisionError)

_SYMBOL_CLEAN = re.compile(r"[^A-Za-z0-9_]")


def import_model(source: Any, weights: str = "const", fold: bool = True, name: str | None = None) -> Module:
    """Import an ONNX model (path, bytes or ModelProto) as an nnc Module.

    weights: ``"const"`` turns initializers into constants (inference), ``"param"`` into graph
    parameters bound to their initial values (training; ``freeze`` later makes them constants).
    """
    if weights not in ("const", "param"):
        raise ValueError("weights must be 'const' or 'param'")
    proto, base_dir, arrays = load_model_and_weights(source)
    check_versions(proto)
    try:
        return Importer(proto, base_dir, weights, fold, name, arrays).run()
    except _UNTYPED as e:  # outside any node (node errors are named in convert_node)
        raise ModelError(f"malformed model ({type(e).__name__}: {e})") from e


def _symbol(text: str) -> str:
    s = _SYMBOL_CLEAN.sub("_", text)
    return s if s and not s[0].isdigit() else f"d_{s}"


def value_type(vi: onnx.ValueInfoProto, where: str) -> ValueType:
    return type_from_proto(vi.type, f"{where} {vi.name!r}")


def type_from_proto(tp: onnx.TypeProto, where: str) -> ValueType:
    """A tensor, a sequence of tensors, or an optional of either."""
    kind = tp.WhichOneof("value")
    if kind == "sequence_type":
        elem = type_from_proto(tp.sequence_type.elem_type, f"{where} (sequence element)")
        if not isinstance(elem, TensorType):
            raise UnsupportedOpError(f"{where}: sequences of {elem} are not supported, only of tensors")
        return SequenceType(elem)
    if kind == "optional_type":
        elem = type_from_proto(tp.optional_type.elem_type, f"{where} (optional element)")
        if isinstance(elem, OptionalType):
            raise UnsupportedOpError(f"{where}: optionals of optionals are not supported")
        return OptionalType(elem)
    if kind != "tensor_type":
        raise UnsupportedOpError(f"{where}: {kind or 'untyped'} values are not supported, only tensors, "
                                 "sequences of tensors and optionals")
    tt = tp.tensor_type
    dt = dtype_from_onnx(tt.elem_type, f"{where}: ")
    if not tt.HasField("shape"):
        return TensorType(dt, None)
    dims: list[int | str] = []
    for d in tt.shape.dim:
        if d.HasField("dim_value") and d.dim_value >= 0:
            dims.append(int(d.dim_value))
        elif d.HasField("dim_param") and d.dim_param:
            dims.append(_symbol(d.dim_param))
        else:
            dims.append(UNKNOWN)
    return TensorType(dt, tuple(dims))


class _Scope(dict):
    """The names a subgraph sees: its own, then the enclosing scope's. An enclosing value used here
    becomes a parameter of the region on first use (closure conversion) and is recorded in
    ``captures``; an enclosing constant is re-read from the pool instead, so it stays foldable."""

    def __init__(self, parent: dict[str, Value], region: Graph, builder: Builder):
        super().__init__()
        self.parent = parent
        self.region = region
        self.builder = builder
        self.captures: list[tuple[Value, Value]] = []  # (enclosing value, region parameter)

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self.parent

    def __missing__(self, name: str) -> Value:
        seen = _peek(self.parent, name)
        p = seen.producer
        if p is not None and p.opname == "const" and self.builder.module.has_data(p.attrs["ref"]):
            v = self.builder.const_ref(p.attrs["ref"], name)  # no capture in the scopes between either
        else:
            outer = self.parent[name]  # captured by every enclosing region up to its definition
            v = self.region.add_param(name, outer.type)
            self.captures.append((outer, v))
        self[name] = v
        return v


def _peek(scope: dict[str, Value], name: str) -> Value:
    """The value ``name`` is bound to in ``scope`` or the scopes enclosing it, without capturing."""
    while dict.__contains__(scope, name) is False and isinstance(scope, (_Scope, _Overlay)):
        scope = scope.parent
    return dict.__getitem__(scope, name)


class _Overlay(dict):
    """Names added on top of a scope (a function body's locals); reads fall through to it."""

    def __init__(self, parent: dict[str, Value]):
        super().__init__()
        self.parent = parent

    def __contains__(self, name: object) -> bool:
        return dict.__contains__(self, name) or name in self.parent

    def __missing__(self, name: str) -> Value:
        return self.parent[name]


class Importer:
    def __init__(self, proto: onnx.ModelProto, base_dir: Path | None, weights: str, fold: bool, name: str | None,
                 arrays: dict[str, np.ndarray] | None = None):
        self.proto = proto
        self.arrays = arrays or {}  # top-level initializers already decoded (loader.load_model_and_weights)
        self.base_dir = base_dir
        self.weights = weights
        self.opsets = {("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in proto.opset_import}
        self.opsets.setdefault("", 1)
        gname = name or proto.graph.name or "model"
        self.module = Module(name=_symbol(gname) if gname else "model")
        self.module.metadata = {"source": "onnx", "opset": str(self.opsets[""])}
        if proto.producer_name:
            self.module.metadata["producer"] = proto.producer_name
        self.graph = self.module.add_graph(Graph("main"))
        self.b = Builder(self.module, self.graph)
        self.ctx = ConvertContext(self.module, self.b, fold)
        self.ctx.import_region = self.import_region
        self.env: dict[str, Value] = {}
        self.reserved: set[str] = set()  # ONNX value names, kept for the values they name
        self.named: set[int] = set()  # ids of values that already carry an ONNX name
        self.functions = {(f.domain, f.name): f for f in proto.functions}  # model-local functions

    def run(self) -> Module:
        g = self.proto.graph
        check_single_producers(g)
        for vi in list(g.output) + list(g.value_info):
            self.reserved.add(vi.name)
        for n in g.node:
            self.reserved.update(o for o in n.output if o)
        self.reserved -= {vi.name for vi in g.input} | {t.name for t in g.initializer}
        self.graph._names.update(self.reserved)
        inits = {t.name: t for t in g.initializer}
        for vi in g.input:
            if vi.name in inits:
                continue  # an initializer listed as an input (IR < 4): a weight, not a run-time input
            self.env[vi.name] = self.graph.add_param(vi.name, value_type(vi, "input"))
            self.named.add(id(self.env[vi.name]))
        for t in g.initializer:
            self._initializer(t)
        for node in g.node:
            self.convert_node(node, self.opsets)
        outs, names = [], []
        for vi in g.output:
            if vi.name not in self.env:
                raise ModelError(f"graph output {vi.name!r} is not produced by any node")
            outs.append(self._checked_output(vi))
            names.append(vi.name)
        self.graph.set_outputs(outs, names)
        return self.module

    def _checked_output(self, vi: onnx.ValueInfoProto) -> Value:
        """The value behind a graph output, whose declared element type (if any) must be the computed one."""
        v = self.env[vi.name]
        if not isinstance(v.type, TensorType):
            want = value_type(vi, "graph output") if vi.type.WhichOneof("value") else None
            if want is not None and want.dtype != v.type.dtype:
                raise ModelError(f"graph output {vi.name!r} is declared {want} but the graph computes {v.type}")
            return v
        declared = vi.type.tensor_type.elem_type if vi.type.WhichOneof("value") == "tensor_type" else 0
        if declared and declared != onnx_dtype(v.dtype):
            known = declared in onnx.TensorProto.DataType.values()
            name = onnx.TensorProto.DataType.Name(declared) if known else str(declared)
            raise ModelError(f"graph output {vi.name!r} is declared {name} but the graph computes {v.dtype} "
                             f"(produced by {v.producer.opname if v.producer else 'a graph input'} {v.name!r})")
        return v

    def _initializer(self, t: onnx.TensorProto) -> None:
        arr = self.arrays[t.name] if t.name in self.arrays else tensor_to_array(t, self.base_dir)
        dtype_from_onnx(t.data_type, f"initializer {t.name!r}: ")
        if self.weights == "param" and arr.dtype.kind == "f":
            key = self.module.add_constant(t.name, arr)
            self.env[t.name] = self.graph.add_param(t.name, self.module.constant_type(key), binding=key)
        else:
            key = self.module.add_constant(t.name, arr)
            self.env[t.name] = self.b.const_ref(key, t.name)
        self.named.add(id(self.env[t.name]))

    # -- nodes --------------------------------------------------------------------------------
    def convert_node(self, node: onnx.NodeProto, opsets: dict[str, int], env: dict[str, Value] | None = None) -> None:
        env = self.env if env is None else env
        domain = "" if node.domain == "ai.onnx" else node.domain
        inputs: list[Value | None] = []
        for i, name in enumerate(node.input):
            if not name:
                inputs.append(None)
            elif name in env:
                inputs.append(env[name])
            else:
                raise ModelError(f"{describe_node(node, opsets.get(domain))}: input {i} {name!r} "
                                 f"is not defined before use (graph not in topological order?)")
        if domain not in opsets:
            raise UnsupportedOpError(f"{describe_node(node, None)}: domain {domain!r} is not imported by the model")
        opset = opsets[domain]
        check_node(node, domain, opset, inputs)
        n = Node(node, inputs, opset, {})
        prev_node, self.ctx.node = self.ctx.node, n
        self.b.loc = node_label(node)
        try:
            n.attrs.update((a.name, decode_attribute(a)) for a in node.attribute)
            fn = lookup(domain, node.op_type, opset)
            if fn is not None:
                results = fn(self.ctx, n)
            else:
                results = self._expand_function(node, n, opsets)
        except NncError as e:
            if n.describe() in str(e):
                raise
            raise type(e)(f"{n.describe()}: {e}") from e.__cause__  # keeps the safety net's chain
        except _UNTYPED as e:
            # a malformed node the schema allows (or an op without a schema) tripped the converter
            raise ModelError(f"{n.describe()}: malformed node ({type(e).__name__}: {e})") from e
        finally:
            self.ctx.node = prev_node
        if isinstance(results, Value):
            results = [results]
        results = list(results)
        for i, out in enumerate(node.output):
            if not out:
                continue
            if i >= len(results) or results[i] is None:
                raise n.unsupported(f"output {i} ({out!r}) is not supported")
            v = results[i]
            if v.producer is not None and v.name != out and id(v) not in self.named:
                # name the result after the ONNX value; a value that already carries an ONNX name
                # (Identity, inference Dropout) is aliased instead
                self.graph._names.discard(v.name)
                v.name = out if out in self.reserved else self.graph.claim_name(out)
                self.named.add(id(v))
            env[out] = v

    # -- subgraphs ----------------------------------------------------------------------------
    def import_region(self, gp: onnx.GraphProto, formal_types: list[ValueType | None],
                      name: str) -> tuple[Graph, list[tuple[Value, Value]]]:
        """Import an ONNX subgraph as a closed region: its inputs become the first parameters (typed
        ``formal_types``, or as the subgraph declares where None), enclosing values it reads become
        further parameters. Returns the region and its captures, (enclosing value, parameter) pairs."""
        region = Graph(name)
        b = Builder(self.module, region, loc=self.b.loc)
        scope = _Scope(self.env, region, b)
        reserved = {o for n in gp.node for o in n.output if o} | {vi.name for vi in gp.output}
        reserved -= {vi.name for vi in gp.input}
        saved = (self.graph, self.b, self.ctx.b, self.env, self.reserved)
        self.graph, self.b, self.ctx.b, self.env, self.reserved = region, b, b, scope, reserved
        try:
            for i, vi in enumerate(gp.input):
                t = formal_types[i] if i < len(formal_types) and formal_types[i] is not None else \
                    value_type(vi, f"{name} input")
                scope[vi.name] = region.add_param(vi.name, t)
                self.named.add(id(scope[vi.name]))
            region._names.update(reserved)
            for t in gp.initializer:
                key = self.module.add_constant(t.name, tensor_to_array(t, self.base_dir))
                scope[t.name] = b.const_ref(key, t.name)
            for node in gp.node:
                self.convert_node(node, self.opsets)
            outs = []
            for vi in gp.output:
                if vi.name not in scope:
                    raise ModelError(f"subgraph {gp.name or name!r}: output {vi.name!r} is not produced by any node")
                outs.append(scope[vi.name])
        finally:
            self.graph, self.b, self.ctx.b, self.env, self.reserved = saved
        region.set_outputs(outs, [vi.name for vi in gp.output])
        return region, scope.captures

    def _expand_function(self, node: onnx.NodeProto, n: Node, opsets: dict[str, int]) -> list[Value | None]:
        """Inline the ONNX function body of an op that has no converter of its own."""
        body = self.functions.get((node.domain, node.op_type)) or _function_body(node, n)
        if body is None:
            from .registry import supported

            near = sorted(t for (d, t) in supported() if d == n.domain)
            if not near:
                raise n.unsupported(f"operator {n.op_type!r} is not supported: nnc has no converters for domain "
                                    f"{n.domain!r}; supported domains: "
                                    f"{', '.join(sorted({d or 'ai.onnx' for d, _ in supported()}))}")
            raise n.unsupported(f"operator {n.op_type!r} is not supported by nnc "
                                f"({len(near)} ONNX ops are; see `nnc ops`)")
        inner_opsets = dict(opsets)
        inner_opsets.update({("" if o.domain == "ai.onnx" else o.domain): int(o.version) for o in body.opset_import})
        local: dict[str, Value] = {}
        for formal, actual in zip(body.input, n.inputs):
            if actual is not None:
                local[formal] = actual
        attrs = _schema_defaults(node, n.opset)
        attrs.update({a.name: a for a in node.attribute})
        prefix = (node.output[0] if node.output else node.op_type) + "."
        for inner in body.node:
            inner = _bind_attributes(inner, attrs, body)
            renamed = onnx.NodeProto()
            renamed.CopyFrom(inner)
            del renamed.output[:]
            renamed.output.extend(prefix + o if o else "" for o in inner.output)
            del renamed.input[:]
            renamed.input.extend(i if i in local else (prefix + i if i else "") for i in inner.input)
            scoped = _Overlay(self.env)
            scoped.update(local)
            self.convert_node(renamed, inner_opsets, scoped)
            for o in inner.output:
                if o:
                    local[o] = scoped[prefix + o]
            for o in renamed.output:
                if o and o in scoped:
                    local[o] = scoped[o]
        return [local.get(o) for o in body.output]


def _function_body(node: onnx.NodeProto, n: Node) -> onnx.FunctionProto | None:
    try:
        schema = onnx.defs.get_schema(node.op_type, n.opset, node.domain)
    except Exception:  # noqa: BLE001 - unknown op
        return None
    fb = None
    try:
        if schema.has_context_dependent_function:
            types = []
            for v in n.inputs:
                tp = onnx.TypeProto()
                if v is not None:
                    from .context import onnx_dtype

                    tp.tensor_type.elem_type = onnx_dtype(v.dtype)
                    if v.shape is not None:
                        shp = tp.tensor_type.shape
                        for d in v.shape:
                            dim = shp.dim.add()
                            if isinstance(d, int):
                                dim.dim_value = d
                types.append(tp.SerializeToString())
            versions = [x for x in schema.context_dependent_function_opset_versions if x <= n.opset]
            if versions:
                fb = schema.get_context_dependent_function_with_opset_version(
                    max(versions), node.SerializeToString(), types)
        if not fb and schema.has_function:
            versions = [x for x in schema.function_opset_versions if x <= n.opset]
            if versions:
                fb = schema.get_function_with_opset_version(max(versions))
    except Exception:  # noqa: BLE001 - onnx refuses to build a body for this node
        return None
    if not fb:
        return None
    f = onnx.FunctionProto()
    f.ParseFromString(fb if isinstance(fb, bytes) else fb.SerializeToString())
    return f if f.node else None


def _schema_defaults(node: onnx.NodeProto, opset: int) -> dict[str, onnx.AttributeProto]:
    """The op schema's attribute defaults, which function bodies may reference."""
    try:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
    except Exception:  # noqa: BLE001
        return {}
    out = {}
    for name, a in schema.attributes.items():
        if a.default_value is not None and a.default_value.type != onnx.AttributeProto.UNDEFINED:
            d = onnx.AttributeProto()
            d.CopyFrom(a.default_value)
            d.name = name
            out[name] = d
    return out


def _bind_attributes(inner: onnx.NodeProto, outer: dict[str, onnx.AttributeProto],
                     body: onnx.FunctionProto) -> onnx.NodeProto:
    """Replace attribute references (``ref_attr_name``) in a function body node by the caller's."""
    if not any(a.ref_attr_name for a in inner.attribute):
        return inner
    out = onnx.NodeProto()
    out.CopyFrom(inner)
    del out.attribute[:]
    defaults = {a.name: a for a in body.attribute_proto}
    for a in inner.attribute:
        if a.ref_attr_name:
            src = outer.get(a.ref_attr_name) or defaults.get(a.ref_attr_name)
            if src is None:
                continue
            b = onnx.AttributeProto()
            b.CopyFrom(src)
            b.name = a.name
            out.attribute.append(b)
        else:
            out.attribute.append(a)
    return out

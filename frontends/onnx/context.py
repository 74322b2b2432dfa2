"""What an ONNX converter works with: the node (inputs as IR values, decoded attributes) and a
context that builds IR ops, folds constants and reads compile-time values."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import onnx
from onnx import numpy_helper

from nnc.ir import Builder, DType, Module, UnsupportedOpError, Value, const_value
from nnc.ir.attrs import REQUIRED
from nnc.ir.interpreter import Interpreter
from nnc.ir.registry import get_opdef
from nnc.ir.types import TensorType

# Results larger than this are not folded at import time unless every input is already constant
# (then the work happens once at compile time instead of at every run, so it is always worth it).
_TENSOR_DTYPES: dict[int, DType] = {
    onnx.TensorProto.FLOAT: DType.f32, onnx.TensorProto.DOUBLE: DType.f64, onnx.TensorProto.FLOAT16: DType.f16,
    onnx.TensorProto.BFLOAT16: DType.bf16, onnx.TensorProto.INT64: DType.i64, onnx.TensorProto.INT32: DType.i32,
    onnx.TensorProto.INT16: DType.i16, onnx.TensorProto.INT8: DType.i8, onnx.TensorProto.UINT64: DType.u64,
    onnx.TensorProto.UINT32: DType.u32, onnx.TensorProto.UINT16: DType.u16, onnx.TensorProto.UINT8: DType.u8,
    onnx.TensorProto.BOOL: DType.bool,
}
_ONNX_OF: dict[DType, int] = {v: k for k, v in _TENSOR_DTYPES.items()}


def dtype_from_onnx(elem_type: int, where: str = "") -> DType:
    try:
        return _TENSOR_DTYPES[elem_type]
    except KeyError:
        known = elem_type in onnx.TensorProto.DataType.values()
        name = onnx.TensorProto.DataType.Name(elem_type) if known else elem_type
        raise UnsupportedOpError(f"{where}tensor element type {name} is not supported "
                                 f"(supported: {', '.join(sorted(str(d) for d in _ONNX_OF))})") from None


def onnx_dtype(dt: DType) -> int:
    return _ONNX_OF[dt]


def node_label(node: onnx.NodeProto) -> str:
    """The name a node goes by in messages: its name, else its first output, else its op type."""
    if node.name:
        return node.name
    first = next((o for o in node.output if o), None)
    return first if first is not None else f"<unnamed {node.op_type}>"


class Node:
    """One ONNX node as a converter sees it."""

    def __init__(self, proto: onnx.NodeProto, inputs: list[Value | None], opset: int, attrs: dict[str, Any]):
        self.proto = proto
        self.op_type = proto.op_type
        self.domain = proto.domain or ""
        self.name = proto.name
        self.inputs = inputs
        self.outputs = list(proto.output)
        self.opset = opset
        self.attrs = attrs

    def input(self, i: int) -> Value | None:
        return self.inputs[i] if i < len(self.inputs) else None

    def attr(self, name: str, default: Any = REQUIRED) -> Any:
        if name in self.attrs:
            return self.attrs[name]
        if default is REQUIRED:
            raise UnsupportedOpError(f"{self.describe()}: missing required attribute {name!r}")
        return default

    def describe(self) -> str:
        dom = f"{self.domain}." if self.domain else ""
        return f"{dom}{self.op_type} node {node_label(self.proto)!r} (opset {self.opset})"

    def unsupported(self, why: str) -> UnsupportedOpError:
        return UnsupportedOpError(f"{self.describe()}: {why}")


def decode_attribute(a: onnx.AttributeProto) -> Any:
    t = onnx.AttributeProto
    if a.type == t.INT:
        return int(a.i)
    if a.type == t.FLOAT:
        return float(a.f)
    if a.type == t.STRING:
        return a.s.decode("utf-8", errors="replace")
    if a.type == t.INTS:
        return tuple(int(v) for v in a.ints)
    if a.type == t.FLOATS:
        return tuple(float(v) for v in a.floats)
    if a.type == t.STRINGS:
        return tuple(s.decode("utf-8", errors="replace") for s in a.strings)
    if a.type == t.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type in (t.GRAPH, t.GRAPHS):
        return a  # control flow: converters that support it decode the subgraph themselves
    if a.type == t.TENSORS:
        return [numpy_helper.to_array(x) for x in a.tensors]
    return a


class ConvertContext:
    def __init__(self, module: Module, builder: Builder, fold: bool = True):
        self.module = module
        self.b = builder
        self.fold = fold
        self.node: Node | None = None
        self._folder = Interpreter(module)
        # set by the importer: import_region(GraphProto, formal types, name) -> (Graph, captures)
        self.import_region: Any = None

    # -- values -------------------------------------------------------------------------------
    def const_value(self, v: Value | None) -> np.ndarray | None:
        return None if v is None else const_value(self.module, v)

    def is_const(self, v: Value | None) -> bool:
        return self.const_value(v) is not None

    def const(self, array: Any, dtype: Any = None, name: str | None = None) -> Value:
        return self.b.const(array, name=name or self._name("const"), dtype=dtype)

    def scalar(self, value: Any, dtype: DType, name: str | None = None) -> Value:
        """A 0-d constant of the given IR dtype."""
        return self.const(np.asarray(value).astype(dtype.numpy), name=name)

    def static_ints(self, v: Value | None) -> tuple[int, ...] | None:
        a = self.const_value(v)
        return None if a is None else tuple(int(x) for x in a.reshape(-1))

    def _name(self, what: str) -> str:
        base = self.node.outputs[0] if self.node and self.node.outputs and self.node.outputs[0] else "v"
        return f"{base}.{what}"

    # -- ops ----------------------------------------------------------------------------------
    def op(self, opname: str, *operands: Value, name: str | None = None, n_results: int | None = None,
           **attrs: Any) -> Any:
        """Create an IR op, folding it to constants when every operand is a constant."""
        d = get_opdef(opname)
        op = self.b.create(opname, operands, attrs, [name or self._name(opname)], n_results)
        results: list[Value] = op.results
        if self.fold and d.fold and d.is_pure and all(self.is_const(v) for v in operands):
            arrays = self._folder.run_op(op, [self.const_value(v) for v in operands])
            g = self.b.graph
            idx = g.ops.index(op)
            folded = []
            for r, a in zip(op.results, arrays):
                self.b._index = idx
                key = self.module.add_constant(r.name, np.asarray(a, order="C"))
                folded.append(self.b.const_ref(key, r.name + ".c"))
                idx += 1
            self.b.set_insertion_end()
            for r, f in zip(op.results, folded):
                g.replace_all_uses(r, f)
            g.erase(op)
            results = folded
        if len(d.results) == 1 and not d.variadic_results:
            return results[0]
        return results

    def op_dynamic(self, opname: str, data: Sequence[Value], dynamic: dict[str, Value | Any | None],
                   name: str | None = None, **attrs: Any) -> Any:
        """Create an op with dynamic attributes (see ``ir/registry.py``): a constant or Python value
        becomes the attribute; a run-time value becomes the operand. Dynamic operands follow
        ``data`` in schema order, so a run-time one forces the ones before it to be operands too."""
        d = get_opdef(opname)
        inv = {operand: attr for attr, operand in d.dynamic.items()}
        dyn_names = [n for n in d.operand_names[len(data):]]
        operands = list(data)
        runtime = [n for n in dyn_names
                   if isinstance(dynamic.get(inv[n]), Value) and not self.is_const(dynamic[inv[n]])]
        last = max((dyn_names.index(n) for n in runtime), default=-1)
        for i, operand in enumerate(dyn_names):
            attr = inv[operand]
            v = dynamic.get(attr)
            if i <= last:
                if v is None:
                    raise self.node.unsupported(f"{attr!r} must be given when a later parameter is dynamic") \
                        if self.node else ValueError(attr)
                operands.append(v if isinstance(v, Value) else self.const(np.asarray(v)))
            elif isinstance(v, Value):
                a = self.const_value(v)
                listed = a is not None and (a.ndim or d.attrs[attr].kind.value in ("ints", "floats"))
                attrs[attr] = None if a is None else a.reshape(-1).tolist() if listed else a.item()
            elif v is not None:
                attrs[attr] = v
        kind_list = {k: s.kind for k, s in d.attrs.items()}
        for k, v in list(attrs.items()):
            if k in kind_list and kind_list[k].value in ("int", "float") and isinstance(v, list):
                attrs[k] = v[0]
        return self.op(opname, *operands, name=name, **attrs)

    def cast(self, v: Value, dtype: DType) -> Value:
        return v if v.dtype == dtype else self.op("cast", v, to=dtype)

    def type_of(self, v: Value) -> TensorType:
        return v.type

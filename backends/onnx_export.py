"""Export an nnc Module (typically after optimisation) as an ONNX model that Netron and onnx.checker open.

- Ops that are ONNX ops with the same meaning become standard nodes (``conv`` -> Conv, ``gemm`` -> Gemm,
  ``reshape`` with a known shape -> Reshape, ...), so the importer reads them back through its own converters.
- Every other op (nnc-only ops such as ``sgd_update`` or ``qconv``, and ops whose nnc form has no ONNX
  spelling, e.g. a ``max_pool`` returning indices) becomes a node of the ``ai.nnc`` domain: its op type
  is the nnc op name and its attributes are the op's own (a dtype as its name). The importer's
  ``ai.nnc`` converters (frontends/onnx/converters/nnc_domain.py) rebuild the op from them.
- A ``fused`` op becomes a call of an ONNX local function (domain ``ai.nnc.fused``), one function per
  group, whose body is the group's ops; Netron shows it as a node you can open.
- Constants become initializers (or ``Constant`` nodes inside a function body).

Control-flow ops, which own nested graphs other than fused groups, are not exported (an error names them).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from nnc.ir import Graph, Module, Op, UnsupportedOpError
from nnc.ir.attrs import AttrKind
from nnc.ir.dtypes import DType
from nnc.ir.types import TensorType

NNC_DOMAIN = "ai.nnc"
FUSED_DOMAIN = "ai.nnc.fused"
OPSET = 18

# nnc ops that are ONNX ops with the same operands and no attributes
_SAME = {n: "".join(p.capitalize() for p in n.split("_")) for n in (
    "abs acos acosh add and asin asinh atan atanh ceil cos cosh div equal erf exp floor greater less log "
    "max min mul neg not or pow reciprocal relu round sigmoid sign sin sinh softplus sqrt sub tan tanh where "
    "xor identity").split()}
_SAME.update({"matmul": "MatMul", "greater_equal": "GreaterOrEqual", "less_equal": "LessOrEqual",
              "isnan": "IsNaN"})


def onnx_elem_type(dt: DType) -> int:
    if dt is DType.bf16:
        return onnx.TensorProto.BFLOAT16
    return helper.np_dtype_to_tensor_dtype(dt.numpy)


def _value_info(name: str, t: TensorType) -> onnx.ValueInfoProto:
    shape = None if t.shape is None else [d if isinstance(d, (int, str)) else None for d in t.shape]
    return helper.make_tensor_value_info(name, onnx_elem_type(t.dtype), shape)


def _tensor(arr: np.ndarray, name: str) -> onnx.TensorProto:
    if arr.dtype == DType.bf16.numpy:
        t = helper.make_tensor(name, onnx.TensorProto.BFLOAT16, arr.shape,
                               np.ascontiguousarray(arr).view(np.uint16).ravel().tolist())
        return t
    return numpy_helper.from_array(np.ascontiguousarray(arr), name)


def _pool_attrs(a: dict[str, Any], extra: tuple[str, ...]) -> dict[str, Any]:
    out = {k: a[k] for k in ("strides", "pads", "dilations") if a.get(k)}
    out["kernel_shape"] = a["kernel_shape"]
    if a["auto_pad"] != "NOTSET":
        out["auto_pad"] = a["auto_pad"]
    out.update({k: a[k] for k in extra})
    return out


class _Writer:
    """Writes one nnc graph (the main graph or a fused body) as ONNX nodes."""

    def __init__(self, exporter: "OnnxExporter", in_function: bool):
        self.x = exporter
        self.in_function = in_function
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []

    def const_input(self, arr: np.ndarray, hint: str) -> str:
        name = self.x.fresh(hint)
        if self.in_function:
            self.nodes.append(helper.make_node("Constant", [], [name], value=_tensor(arr, name)))
        else:
            self.initializers.append(_tensor(arr, name))
        return name

    def node(self, op_type: str, inputs: list[str], outputs: list[str], domain: str = "", **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op_type, inputs, outputs, name=outputs[0] if outputs else op_type,
                                           domain=domain, **attrs))

    def op(self, op: Op) -> None:
        ins = [v.name for v in op.operands]
        outs = [r.name for r in op.results]
        if op.opname == "const":
            arr = self.x.module.constants.get(op.attrs["ref"])
            if arr is None:
                raise UnsupportedOpError(f"const %{op.results[0].name}: weight @{op.attrs['ref']} has no data "
                                         "to export")
            t = _tensor(arr, outs[0])
            if self.in_function:
                self.nodes.append(helper.make_node("Constant", [], outs, value=t))
            else:
                self.initializers.append(t)
            return
        if op.opname == "fused":
            fname = self.x.function(op)
            self.node(fname, ins, outs, domain=FUSED_DOMAIN)
            return
        if op.regions:
            raise UnsupportedOpError(f"{op.opname} %{outs[0]}: ops with nested graphs are not exported to ONNX")
        if not self.standard(op, ins, outs):
            self.nnc_node(op, ins, outs)

    def standard(self, op: Op, ins: list[str], outs: list[str]) -> bool:
        """Write ``op`` as a standard ONNX node when it has one with the same meaning; else False."""
        a, name = op.attrs, op.opname
        if name in _SAME:
            self.node(_SAME[name], ins, outs)
        elif name == "conv":
            kw = {k: a[k] for k in ("strides", "pads", "dilations") if a[k]}
            if a["auto_pad"] != "NOTSET":
                kw["auto_pad"] = a["auto_pad"]
            self.node("Conv", ins, outs, group=a["group"], **kw)
        elif name == "gemm":
            self.node("Gemm", ins, outs, alpha=a["alpha"], beta=a["beta"], transA=a["trans_a"], transB=a["trans_b"])
        elif name == "max_pool" and not a["with_indices"]:
            self.node("MaxPool", ins, outs, **_pool_attrs(a, ("ceil_mode", "storage_order")))
        elif name == "avg_pool" and all(d == 1 for d in a["dilations"]):  # ONNX has dilations from opset 19
            a = {**a, "dilations": ()}
            self.node("AveragePool", ins, outs, **_pool_attrs(a, ("ceil_mode", "count_include_pad")))
        elif name in ("softmax", "log_softmax", "concat", "gather"):
            self.node({"softmax": "Softmax", "log_softmax": "LogSoftmax", "concat": "Concat",
                       "gather": "Gather"}[name], ins, outs, axis=a["axis"])
        elif name == "transpose":
            self.node("Transpose", ins, outs, **({"perm": a["perm"]} if a["perm"] is not None else {}))
        elif name == "batch_norm":
            self.node("BatchNormalization", ins, outs, epsilon=a["epsilon"])
        elif name == "lrn":
            self.node("LRN", ins, outs, size=a["size"], alpha=a["alpha"], beta=a["beta"], bias=a["bias"])
        elif name == "layer_norm":
            self.node("LayerNormalization", ins, outs, axis=a["axis"], epsilon=a["epsilon"],
                      stash_type=onnx_elem_type(a["stash_type"]))
        elif name == "reshape" and len(ins) == 1 and a["shape"] is not None:
            shape = self.const_input(np.asarray(a["shape"], np.int64), outs[0] + ".shape")
            self.node("Reshape", [ins[0], shape], outs, allowzero=0 if a["copy_zero"] else 1)
        elif name.startswith("reduce_") and len(ins) == 1 and name[7:] in ("mean", "sum", "max", "min", "prod"):
            axes = [] if a["axes"] is None else [self.const_input(np.asarray(a["axes"], np.int64), outs[0] + ".axes")]
            self.node("Reduce" + name[7:].capitalize(), ins + axes, outs, keepdims=a["keepdims"],
                      noop_with_empty_axes=a["noop_with_empty_axes"])
        elif name == "clip" and len(ins) == 1:
            dt = op.operands[0].dtype.numpy
            bounds = ["" if a[k] is None else self.const_input(np.asarray(a[k], dt), f"{outs[0]}.{k}")
                      for k in ("min", "max")]
            while bounds and not bounds[-1]:
                bounds.pop()
            self.node("Clip", ins + bounds, outs)
        elif name == "isinf":
            self.node("IsInf", ins, outs, detect_positive=a["detect_positive"], detect_negative=a["detect_negative"])
        elif name == "split" and len(ins) == 1 and (a["sizes"] is not None or a["num_outputs"] is not None):
            if a["sizes"] is not None:
                sizes = self.const_input(np.asarray(a["sizes"], np.int64), outs[0] + ".sizes")
                self.node("Split", ins + [sizes], outs, axis=a["axis"])
            else:
                self.node("Split", ins, outs, axis=a["axis"], num_outputs=a["num_outputs"])
        elif name == "cast":
            self.node("Cast", ins, outs, to=onnx_elem_type(a["to"]))
        elif name == "slice" and len(ins) == 1 and a["starts"] is not None and a["ends"] is not None:
            extra = [self.const_input(np.asarray(a[k], np.int64), f"{outs[0]}.{k}")
                     for k in ("starts", "ends", "axes", "steps") if a[k] is not None]
            if a["steps"] is not None and a["axes"] is None:  # steps is the 5th input: axes spelled out
                extra.insert(2, self.const_input(np.arange(len(a["starts"]), dtype=np.int64), outs[0] + ".axes"))
            self.node("Slice", ins + extra, outs)
        elif name == "pad" and len(ins) == 1 and a["pads"] is not None:
            extra = [self.const_input(np.asarray(a["pads"], np.int64), outs[0] + ".pads")]
            if a["value"] is not None:
                extra.append(self.const_input(np.asarray(a["value"], op.operands[0].dtype.numpy), outs[0] + ".value"))
            self.node("Pad", ins + extra, outs, mode=a["mode"])
        elif name == "resize" and len(ins) == 1 and (a["scales"] or a["sizes"]):  # () and None: not given
            roi = "" if not a["roi"] else self.const_input(np.asarray(a["roi"], np.float32), outs[0] + ".roi")
            scales = "" if not a["scales"] else self.const_input(np.asarray(a["scales"], np.float32),
                                                                 outs[0] + ".scales")
            extra = [roi, scales] + ([] if not a["sizes"] else
                                     [self.const_input(np.asarray(a["sizes"], np.int64), outs[0] + ".sizes")])
            kw = {k: a[k] for k in ("mode", "coordinate_transformation_mode", "nearest_mode", "cubic_coeff_a",
                                    "exclude_outside", "extrapolation_value", "antialias", "keep_aspect_ratio_policy")}
            if a["axes"] is not None:
                kw["axes"] = list(a["axes"])
            self.node("Resize", ins + extra, outs, **kw)
        else:
            return False
        return True

    def nnc_node(self, op: Op, ins: list[str], outs: list[str]) -> None:
        attrs = {}
        for k, spec in op.opdef.attrs.items():
            v = op.attrs.get(k)
            if v is None:
                continue
            if spec.kind is AttrKind.DTYPE:
                attrs[k] = helper.make_attribute(k, str(v))
            elif spec.kind in (AttrKind.INTS, AttrKind.FLOATS, AttrKind.STRS) and not v:
                kind = {AttrKind.INTS: onnx.AttributeProto.INTS, AttrKind.FLOATS: onnx.AttributeProto.FLOATS,
                        AttrKind.STRS: onnx.AttributeProto.STRINGS}[spec.kind]
                attrs[k] = helper.make_attribute(k, [], attr_type=kind)
            else:
                attrs[k] = helper.make_attribute(k, list(v) if isinstance(v, tuple) else v)
        n = helper.make_node(op.opname, ins, outs, name=outs[0] if outs else op.opname, domain=NNC_DOMAIN)
        n.attribute.extend(attrs.values())
        self.nodes.append(n)
        self.x.used_nnc = True


class OnnxExporter:
    def __init__(self, module: Module):
        self.module = module
        self.functions: list[onnx.FunctionProto] = []
        self.used_nnc = False
        self._names: set[str] = {v.name for v in module.main.values()}

    def fresh(self, hint: str) -> str:
        name, i = hint, 0
        while name in self._names:
            i += 1
            name = f"{hint}.{i}"
        self._names.add(name)
        return name

    def function(self, op: Op) -> str:
        body: Graph = op.regions[0]
        w = _Writer(self, in_function=True)
        for inner in body.ops:
            w.op(inner)
        outputs = [v.name for v in body.outputs]
        fname = f"{op.attrs.get('kind') or 'group'}_{len(self.functions)}".replace(" ", "_")
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(NNC_DOMAIN, 1)]
        self.functions.append(helper.make_function(FUSED_DOMAIN, fname, [p.name for p in body.params], outputs,
                                                   w.nodes, opsets))
        return fname

    def run(self, name: str | None = None) -> onnx.ModelProto:
        g = self.module.main
        w = _Writer(self, in_function=False)
        inputs = []
        for p in g.params:
            if p.binding is not None and self.module.has_data(p.binding):
                w.initializers.append(_tensor(self.module.constants[p.binding], p.name))
            else:
                inputs.append(_value_info(p.name, p.type))
        for op in g.ops:
            w.op(op)
        outputs = []
        for oname, v in zip(g.output_names, g.outputs):
            if oname != v.name:  # a graph output named apart from its value: an Identity gives it the name
                w.node("Identity", [v.name], [oname])
            outputs.append(_value_info(oname, v.type))
        out_names = set(g.output_names)
        info = [_value_info(r.name, r.type) for op in g.ops if op.opname != "const" for r in op.results
                if r.name not in out_names]
        graph = helper.make_graph(w.nodes, name or self.module.name, inputs, outputs, w.initializers,
                                  value_info=info)
        opsets = [helper.make_opsetid("", OPSET), helper.make_opsetid(NNC_DOMAIN, 1),
                  helper.make_opsetid(FUSED_DOMAIN, 1)]
        model = helper.make_model(graph, opset_imports=opsets, functions=self.functions, producer_name="nnc")
        model.ir_version = 9
        return model


def export_onnx(module: Module, name: str | None = None) -> onnx.ModelProto:
    """The main graph of ``module`` as an ONNX ModelProto (fused groups as local functions, nnc-only ops
    in the ``ai.nnc`` domain)."""
    return OnnxExporter(module).run(name)

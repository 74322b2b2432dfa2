"""``torch.export`` program -> nnc Module.

``torch.export`` traces an ``nn.Module`` into an ATen FX graph; ``run_decompositions`` lowers it to
core ATen, except for a few ops nnc keeps whole because the IR has a high-level op for them
(``scaled_dot_product_attention`` -> ``attention``, ``layer_norm``, ``group_norm``, ``hardswish``,
``silu``, ``linear``, ``matmul``, ``pad``, ``index_copy``: a KV-cache write) and the backends do
better with one op than with its decomposition. Parameters and buffers become constants named by their torch names
(``layer1.0.conv1.weight``), or, with ``weights="param"``, trainable parameters become graph
parameters bound to those constants. User inputs are named after ``forward``'s parameters, and
symbolic dims from ``dynamic_shapes`` become nnc symbols named after their ``Dim``. Each
``call_function`` node goes through the converter registered for its ATen overload
(``registry.py``); anything else raises one ``UnsupportedOpError`` naming the op and module path.
"""

from __future__ import annotations

import inspect
import operator
import re
from typing import Any, Mapping, Sequence

import numpy as np

from nnc.ir import Builder, DType, Graph, ModelError, Module, NncError, UnsupportedOpError, Value

from .context import AtenNode, TorchContext, dtype_from_torch, module_path
from .registry import lookup, supported

_CLEAN = re.compile(r"[^A-Za-z0-9_.$/\-]")

# kept whole by run_decompositions: each maps to one high-level IR op (see the module docstring)
_KEEP = ("scaled_dot_product_attention.default", "layer_norm.default", "group_norm.default",
         "hardswish.default", "hardsigmoid.default", "silu.default", "mish.default", "softplus.default",
         "linear.default", "matmul.default", "pad.default", "index_copy.default")

# nodes that only assert facts about shapes or metadata at run time
_SKIP = ("aten._assert_tensor_metadata.default", "aten._assert_scalar.default", "aten.sym_constrain_range.default",
         "aten.sym_constrain_range_for_size.default", "aten._assert_async.msg")

# FX names of ATen internals, shortened for dumps: _native_batch_norm_legit_no_training -> batch_norm
_SHORT = re.compile(r"native_|_legit_no_training|_legit_functional|_legit|_with_indices|_default")

_SYM_BINARY = {operator.add: "add", operator.sub: "sub", operator.mul: "mul", operator.floordiv: "div"}


def require_torch() -> Any:
    try:
        import torch
    except ImportError:
        raise ModelError("the PyTorch frontend needs torch (pip install 'nnc[torch]')") from None
    return torch


def decomposition_table() -> dict:
    torch = require_torch()
    table = torch.export.default_decompositions()
    for name in _KEEP:
        packet, overload = name.split(".")
        table.pop(getattr(getattr(torch.ops.aten, packet), overload), None)
    return table


def export(module: Any, example_args: Sequence[Any], dynamic_shapes: Any = None,
           kwargs: Mapping[str, Any] | None = None) -> Any:
    """``torch.export.export`` with nnc's error reporting."""
    torch = require_torch()
    if isinstance(example_args, torch.Tensor) or not isinstance(example_args, (tuple, list)):
        example_args = (example_args,)
    try:
        return torch.export.export(module, tuple(example_args), kwargs=dict(kwargs or {}) or None,
                                   dynamic_shapes=dynamic_shapes)
    except Exception as e:  # noqa: BLE001 - torch raises many kinds; give one clear error
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelError(f"torch.export could not trace {type(module).__name__}: {first}") from e


def from_torch(module: Any, example_args: Sequence[Any], dynamic_shapes: Any = None,
               weights: str = "const", name: str | None = None) -> Module:
    """Export ``module`` with ``example_args`` and import the program."""
    ep = export(module, example_args, dynamic_shapes)
    names = forward_input_names(module)
    dims = dim_names(ep, dynamic_shapes, names)
    return import_program(ep, weights=weights, name=name or type(module).__name__, input_names=names,
                          symbols=dims)


def forward_input_names(module: Any) -> list[str] | None:
    try:
        sig = inspect.signature(module.forward)
    except (TypeError, ValueError):
        return None
    return [p.name for p in sig.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


def dim_names(ep: Any, dynamic_shapes: Any, input_names: list[str] | None) -> dict[str, str]:
    """torch's symbol (``s77``) -> the name of the ``Dim`` the user gave for it."""
    if dynamic_shapes is None:
        return {}
    user = [s for s in ep.graph_signature.input_specs if s.kind.name == "USER_INPUT"]
    nodes = {n.name: n for n in ep.graph.nodes if n.op == "placeholder"}
    specs = list(dynamic_shapes.values()) if isinstance(dynamic_shapes, Mapping) else list(dynamic_shapes)
    if isinstance(dynamic_shapes, Mapping) and input_names:
        specs = [dynamic_shapes.get(n) for n in input_names]
    if len(specs) == 1 and len(user) > 1 and isinstance(specs[0], (tuple, list)):
        specs = list(specs[0])  # forward(*args): one spec per positional argument, nested in a tuple
    out: dict[str, str] = {}
    for spec, inp in zip(specs, user):
        if spec is None:
            continue
        val = nodes[inp.arg.name].meta.get("val")
        items = spec.items() if isinstance(spec, Mapping) else enumerate(spec)
        for i, dim in items:
            dname = getattr(dim, "__name__", None)
            if dname and val is not None and i < len(val.shape) and not isinstance(val.shape[i], int):
                out[str(val.shape[i])] = _symbol(dname)
    return out


def _symbol(text: str) -> str:
    s = re.sub(r"[^A-Za-z0-9_]", "_", text)
    return s if s and not s[0].isdigit() else f"d_{s}"


def to_numpy(t: Any) -> np.ndarray:
    torch = require_torch()
    t = t.detach().cpu().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(DType.bf16.numpy).copy()
    return t.numpy().copy()


def import_program(ep: Any, weights: str = "const", name: str | None = None,
                   input_names: Sequence[str] | None = None, symbols: Mapping[str, str] | None = None) -> Module:
    """Import a ``torch.export.ExportedProgram`` (decomposed here to core ATen) as a Module."""
    if weights not in ("const", "param"):
        raise ValueError("weights must be 'const' or 'param'")
    try:
        ep = ep.run_decompositions(decomposition_table())
    except Exception as e:  # noqa: BLE001
        raise ModelError(f"torch.export could not decompose the program to core ATen: {e}") from e
    return Importer(ep, weights, name, input_names, symbols or {}).run()


def missing_converters(ep: Any) -> list[tuple[str, str]]:
    """(ATen overload, FX node name) of every call in ``ep``, decomposed as ``import_program`` does,
    that has no converter: ``import_program`` stops at the first, this lists them all."""
    ep = ep.run_decompositions(decomposition_table())
    out = []
    for fx in ep.graph.nodes:
        name = str(fx.target)
        if fx.op != "call_function" or name in _SKIP or name.startswith("aten._assert"):
            continue
        if getattr(fx.target, "_schema", None) is not None and name != "aten.sym_size.int" and lookup(name) is None:
            out.append((name, fx.name))
    return out


class Importer:
    def __init__(self, ep: Any, weights: str, name: str | None, input_names: Sequence[str] | None,
                 symbols: Mapping[str, str]):
        self.ep = ep
        self.weights = weights
        self.input_names = list(input_names or [])
        self.symbols = dict(symbols)
        self.module = Module(name=_symbol(name or "model"))
        torch = require_torch()
        self.module.metadata = {"source": "torch", "torch": torch.__version__.split("+")[0]}
        self.graph = self.module.add_graph(Graph("main"))
        self.b = Builder(self.module, self.graph)
        self.ctx = TorchContext(self.module, self.b, True)
        self.env: dict[str, Any] = {}
        self.named: set[int] = set()

    # -- placeholders -------------------------------------------------------------------------
    def run(self) -> Module:
        sig = self.ep.graph_signature
        self.bn_stats = {a.name for n in self.ep.graph.nodes
                         if n.op == "call_function" and "batch_norm" in str(n.target)
                         for a in n.args[3:5] if hasattr(a, "name")}
        specs = {s.arg.name: s for s in sig.input_specs}
        user = [s.arg.name for s in sig.input_specs if s.kind.name == "USER_INPUT"]
        names = dict(zip(user, self.input_names)) if len(self.input_names) >= len(user) else {}
        for fx in self.ep.graph.nodes:
            if fx.op == "placeholder":
                self._placeholder(fx, specs.get(fx.name), names.get(fx.name, fx.name))
            elif fx.op == "call_function":
                self._call(fx)
            elif fx.op == "output":
                self._outputs(fx)
            else:
                raise UnsupportedOpError(f"FX node {fx.name!r} ({fx.op} {fx.target}) is not supported: "
                                         f"nnc imports flat core-ATen graphs (no control flow or submodules)")
        self._drop_unused_constants()
        return self.module

    def _drop_unused_constants(self) -> None:
        """Constants nothing reads (a batch norm's ``num_batches_tracked``, a weight folded into a
        transposed copy, scalars of folded ops) leave the graph and the pool."""
        g = self.graph
        for op in reversed(list(g.ops)):
            if op.opname == "const" and not op.results[0].uses and all(op.results[0] is not o for o in g.outputs):
                g.erase(op)
        used = {op.attrs["ref"] for op in g.ops if op.opname == "const"} | \
            {p.binding for p in g.params if p.binding is not None}
        for key in [k for k in self.module.constants if k not in used]:
            del self.module.constants[key]
            self.module.constant_types.pop(key, None)

    def _placeholder(self, fx: Any, spec: Any, user_name: str) -> None:
        kind = spec.kind.name if spec is not None else "USER_INPUT"
        val = fx.meta.get("val")
        if kind == "USER_INPUT":
            if not hasattr(val, "shape"):
                raise UnsupportedOpError(f"input {user_name!r}: only tensor inputs are supported, got "
                                         f"{type(val).__name__} (torch.export specialises Python scalars)")
            from nnc.ir.types import TensorType

            dims = tuple(d if isinstance(d, int) else self.symbols.get(str(d), _symbol(str(d))) for d in val.shape)
            t = TensorType(dtype_from_torch(val.dtype, f"input {user_name!r}: "), dims)
            self.env[fx.name] = self.graph.add_param(_CLEAN.sub("_", user_name), t)
        elif kind in ("PARAMETER", "BUFFER", "CONSTANT_TENSOR"):
            target = spec.target
            tensor = self.ep.state_dict[target] if target in self.ep.state_dict else self.ep.constants[target]
            arr = to_numpy(tensor)
            dtype_from_torch(tensor.dtype, f"{kind.lower()} {target!r}: ")
            key = self.module.add_constant(target, arr)
            trainable = kind == "PARAMETER" and arr.dtype.kind == "f" and getattr(tensor, "requires_grad", True)
            # batch-norm running statistics are bound too: the training step updates them as buffers
            if self.weights == "param" and (trainable or fx.name in self.bn_stats):
                self.env[fx.name] = self.graph.add_param(target, self.module.constant_type(key), binding=key)
            else:
                self.env[fx.name] = self.b.const_ref(key, target)
        else:
            raise UnsupportedOpError(f"placeholder {fx.name!r}: {kind} inputs are not supported")
        self.named.add(id(self.env[fx.name]))

    # -- nodes --------------------------------------------------------------------------------
    def _arg(self, a: Any) -> Any:
        torch_fx = require_torch().fx
        if isinstance(a, torch_fx.Node):
            if a.name not in self.env:
                raise ModelError(f"FX node {a.name!r} is used before it is defined")
            return self.env[a.name]
        if isinstance(a, (list, tuple)):
            return [self._arg(x) for x in a]
        return a

    def _call(self, fx: Any) -> None:
        target = fx.target
        tname = str(target)
        if tname in _SKIP or tname.startswith("aten._assert"):
            return
        if target is operator.getitem:
            src, i = self._arg(fx.args[0]), fx.args[1]
            v = src[i] if isinstance(src, list) else None
            if v is None:
                path, cls = module_path(fx)
                where = f" in module {path!r} ({cls})" if path else ""
                raise UnsupportedOpError(f"output {i} of {fx.args[0].target} node {fx.args[0].name!r}{where} "
                                         f"is not supported")
            self.env[fx.name] = v
            return
        if target in _SYM_BINARY or tname == "aten.sym_size.int":
            self.env[fx.name] = self._symbolic(fx, target)
            return
        schema = getattr(target, "_schema", None)
        if schema is None:
            raise UnsupportedOpError(f"FX node {fx.name!r} calls {tname}, which is not an ATen op")
        args: dict[str, Any] = {}
        for i, spec in enumerate(schema.arguments):
            if i < len(fx.args):
                args[spec.name] = self._arg(fx.args[i])
            elif spec.name in fx.kwargs:
                args[spec.name] = self._arg(fx.kwargs[spec.name])
            elif spec.has_default_value():
                args[spec.name] = spec.default_value
            else:
                args[spec.name] = None
        node = AtenNode(fx, tname, args, [self._arg(a) for a in fx.args])
        path = node.path
        short = _SHORT.sub("", fx.name).lstrip("_") or fx.name
        node.result_name = _CLEAN.sub("_", f"{path}/{short}" if path else short)
        fn = lookup(tname)
        if fn is None:
            raise node.unsupported(f"ATen op {tname} is not supported by nnc ({len(supported())} ATen overloads are; "
                                   f"see docs/torch-frontend.md)")
        prev, self.ctx.node = self.ctx.node, node
        self.b.loc = node.result_name
        try:
            results = fn(self.ctx, node)
        except NncError as e:
            if node.describe() in str(e):
                raise
            raise type(e)(f"{node.describe()}: {e}") from None
        finally:
            self.ctx.node = prev
        if isinstance(results, (list, tuple)):
            results = list(results)
            for i, v in enumerate(results):
                if isinstance(v, Value):
                    self._name(v, node.result_name if i == 0 else f"{node.result_name}.{i}")
        elif isinstance(results, Value):
            self._name(results, node.result_name)
        self.env[fx.name] = results

    def _name(self, v: Value, name: str) -> None:
        if v.producer is not None and id(v) not in self.named:
            self.graph.rename(v, name)
            self.named.add(id(v))

    def _symbolic(self, fx: Any, target: Any) -> Value:
        """A run-time integer of a dynamic-shape graph (``sym_size`` and arithmetic on it), as a
        0-d i64 value; a static one is a Python int."""
        ctx = self.ctx
        if str(target) == "aten.sym_size.int":
            x, dim = self._arg(fx.args[0]), int(fx.args[1])
            d = x.shape[dim] if x.shape is not None else None
            if isinstance(d, int):
                return d
            dim = dim % x.type.rank
            s = ctx.op("shape", x, start=dim, end=dim + 1, name=fx.name)
            return ctx.op("reshape", s, shape=(), name=fx.name + ".s")
        a, b = (self._arg(x) for x in fx.args)
        if not isinstance(a, Value) and not isinstance(b, Value):
            return _SYM_BINARY_PY[target](a, b)
        a, b = ctx.tensor(a, DType.i64), ctx.tensor(b, DType.i64)
        return ctx.op(_SYM_BINARY[target], a, b, name=fx.name)

    # -- outputs ------------------------------------------------------------------------------
    def _outputs(self, fx: Any) -> None:
        specs = self.ep.graph_signature.output_specs
        flat = list(fx.args[0])
        outs: list[Value] = []
        for spec, a in zip(specs, flat):
            if spec.kind.name != "USER_OUTPUT":
                # buffer updates (a train-mode BatchNorm's running statistics) are results of the
                # batch_norm_train ops, which the training step writes back; inference drops them
                continue
            v = self._arg(a)
            if not isinstance(v, Value):
                raise UnsupportedOpError(f"output {len(outs)}: only tensor outputs are supported, got {v!r}")
            if any(v is o for o in outs) or v.producer is None or v.producer.opname == "const":
                v = self.b.op("identity", v, name="output")
            outs.append(v)
        names = ["output"] if len(outs) == 1 else [f"output_{i}" for i in range(len(outs))]
        self.graph.set_outputs(outs, names)


_SYM_BINARY_PY = {operator.add: operator.add, operator.sub: operator.sub, operator.mul: operator.mul,
                  operator.floordiv: operator.floordiv}

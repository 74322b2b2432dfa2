"""The Python API: import, parse, compile and run models.

    import nnc
    m = nnc.from_onnx("model.onnx")           # -> nnc.ir.Module; str(m) is the text IR
    cm = nnc.compile("model.onnx", target="reference")
    outs = cm.run({"x": x})                   # dict keyed by output name
    y = cm(x)                                 # positional; an array or a tuple
    cm = nnc.compile("model.onnx", target="x86", threads=2, cache=False, quiet=True)

Targets that need static shapes (x86) compile a model with symbolic dims or run-time shape inputs
(a Reshape whose shape is an input) on its first run, for that run's input shapes and shape-input
values, and keep one executable per distinct signature (``Specializer``); a static model compiles
at once. Options go to the backend (see ``nnc.backends.x86`` for x86's).
"""

from __future__ import annotations

import collections
import inspect
import os
import zipfile
from typing import Any, Callable, Mapping

import numpy as np

from nnc.frontends.onnx import import_model
from nnc.ir import DType, InputError, ModelError, Module, NncError, ParseError, parse_module, verify_module
from nnc.ir.interpreter import check_feeds
from nnc.ir.specialize import specialize

from .pipeline import optimize, split_options
from .report import build_report
from .targets import get_backend

MODES = ("infer", "train")


def from_onnx(model: Any, weights: str = "const") -> Module:
    """Import an ONNX model (a path, bytes or an ``onnx.ModelProto``) as an nnc ``Module``."""
    return import_model(model, weights=weights)


def from_torch(module: Any, example_args: Any = (), dynamic_shapes: Any = None, weights: str = "const") -> Module:
    """Import a PyTorch ``nn.Module`` through ``torch.export`` (core ATen) as an nnc ``Module``;
    also takes an ``ExportedProgram`` or a ``.pt2`` path (then ``example_args`` is not needed).
    ``dynamic_shapes`` is torch.export's; its ``Dim`` names become nnc symbols. ``weights="param"``
    makes each trainable parameter a graph parameter bound to the constant of its torch name."""
    from nnc.frontends.torch.importer import from_torch as import_torch
    from nnc.frontends.torch.importer import import_program
    from nnc.frontends.torch.loader import is_exported_program, is_pt2_path, load_pt2

    if is_pt2_path(module):
        return load_pt2(module, weights=weights)
    if is_exported_program(module):
        return import_program(module, weights=weights)
    return import_torch(module, example_args, dynamic_shapes, weights=weights)


def parse(text: str, weights: Mapping[str, np.ndarray] | None = None) -> Module:
    """Parse textual IR. ``weights`` supplies the data of constants printed by reference."""
    return parse_module(text, weights)


def load_module(model: Any, example_args: Any = None, dynamic_shapes: Any = None) -> Module:
    """Anything nnc accepts as a model -> Module: a Module, an ONNX path/ModelProto/bytes, a
    ``.nnc`` text file (with weights from a sibling ``.npz`` when present), a torch ``nn.Module``
    (with ``example_args``), a ``torch.export.ExportedProgram`` or a ``.pt2`` file."""
    if isinstance(model, Module):
        return model
    from nnc.frontends.torch.loader import is_exported_program, is_pt2_path, is_torch_module

    if is_torch_module(model):
        if example_args is None:
            raise InputError("compiling a torch nn.Module needs example_args=(tensor, ...) to trace it")
        return from_torch(model, example_args, dynamic_shapes)
    if is_exported_program(model) or is_pt2_path(model):
        return from_torch(model)
    if isinstance(model, (str, os.PathLike)) and str(model).endswith(".nnc"):
        return _load_text_ir(str(model))
    return import_model(model)


def _from_npz(a: np.ndarray) -> np.ndarray:
    # numpy stores ml_dtypes' bfloat16 as raw 2-byte records; bf16 is the only such dtype nnc has
    return a.view(DType.bf16.numpy) if a.dtype.kind == "V" and a.dtype.itemsize == 2 else a


def _load_text_ir(path: str) -> Module:
    if not os.path.exists(path):
        raise ModelError(f"{path}: no such file")
    if os.path.isdir(path):
        raise ModelError(f"{path}: is a directory, not an nnc text IR file")
    weights = None
    npz = path[:-4] + ".npz"
    if os.path.exists(npz):
        try:
            with np.load(npz, allow_pickle=False) as z:
                weights = {k: _from_npz(z[k]) for k in z.files}
        except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
            raise ModelError(f"{npz}: cannot read the weights of {path}: {e}") from None
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except UnicodeDecodeError:
        raise ModelError(f"{path}: not an nnc text IR file (not UTF-8 text)") from None
    except OSError as e:
        raise ModelError(f"{path}: cannot read: {e.strerror}") from None
    try:
        return parse_module(text, weights)
    except ParseError as e:
        raise ParseError(f"{path}: {e}") from None


class CompiledModel:
    """A compiled model: ``run(feeds) -> {output name: array}`` or ``model(*arrays)``."""

    def __init__(self, module: Module, executable: Any, target: str, report: dict[str, Any] | None = None):
        self.module = module
        self.executable = executable
        self.target = target
        self.report: dict[str, Any] = report or {}
        g = module.main
        self.input_names = [p.name for p in g.params if p.binding is None]
        self.output_names = list(g.output_names)
        self.input_types = {p.name: p.type for p in g.params if p.binding is None}
        self.output_types = dict(zip(g.output_names, (v.type for v in g.outputs)))

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not isinstance(feeds, Mapping):
            raise InputError("run() takes a dict of input name -> array; call the model directly for positional inputs")
        return self.executable.run(feeds)

    def __call__(self, *arrays: Any) -> Any:
        if len(arrays) != len(self.input_names):
            raise InputError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                             f"got {len(arrays)}")
        outs = self.run(dict(zip(self.input_names, arrays)))
        vals = tuple(outs[n] for n in self.output_names)
        return vals[0] if len(vals) == 1 else vals

    def __repr__(self) -> str:
        return (f"<CompiledModel target={self.target} inputs={self.input_names} outputs={self.output_names}>")


def compile(model: Any, target: str = "reference", mode: str = "infer", example_args: Any = None,  # noqa: A001
            dynamic_shapes: Any = None, **options: Any) -> CompiledModel:
    """Compile ``model`` (a path, ``onnx.ModelProto``, ``Module``, torch ``nn.Module`` with
    ``example_args``, ``ExportedProgram`` or ``.pt2`` path) for ``target``.

    Pipeline options (``opt_level``, ``passes``, ``verify_each``, ``print_ir_after``, ``dump_dir``,
    ... see ``nnc/pipeline.py``) shape the optimisation; the rest go to the backend (x86: ``cpu``,
    ``target_features``, ``opt``, ``threads``, ``cache``, ``quiet``). ``CompiledModel.report`` says
    what the passes did, the kernels and the memory plan (docs/compile-report.md)."""
    if mode not in MODES:
        raise NncError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
    backend = get_backend(target)
    if mode == "train":  # a TrainingSession (docs/training.md)
        from .training import compile_training

        torch_args = {k: v for k, v in (("example_args", example_args), ("dynamic_shapes", dynamic_shapes))
                      if v is not None}  # an nn.Module is traced with these (load_module)
        return compile_training(model, target, **torch_args, **options)  # type: ignore[return-value]
    module = load_module(model, example_args, dynamic_shapes)
    _check_weights(module, model)
    pipe, options = split_options(dict(options))
    default_passes = getattr(inspect.getmodule(backend), "DEFAULT_PASSES", None)
    if default_passes:  # a backend that quantizes itself (asic) also needs the calibration options
        options.update({k: pipe[k] for k in ("calibration", "observer") if pipe.get(k) is not None})
        if "passes" not in pipe and "opt_level" not in pipe:
            pipe["passes"] = default_passes  # the float graph its quantizer expects
    module, records, pipeline = optimize(module, mode, pipe)
    if getattr(inspect.getmodule(backend), "STATIC_SHAPES", False) and not _is_static(module):
        # optimise again once shapes are known: folding and fusion need static shapes
        replay = {k: v for k, v in pipe.items() if k in ("opt_level", "passes", "disable_passes", "pass_plugins")}

        def specialised(m: Module, opts: Mapping[str, Any]) -> Any:
            return backend(optimize(m, mode, replay)[0], opts)

        executable: Any = Specializer(module, specialised, options)
    else:
        executable = backend(module, options)
    report = build_report(module, records, target, mode, pipeline)
    if getattr(executable, "target_report", None) is not None:
        report[target] = executable.target_report  # e.g. report["asic"]: latency, energy, layers
    return CompiledModel(module, executable, target, report)


# -- specialisation for targets that need static shapes ----------------------------------------
def shape_inputs(module: Module) -> list[str]:
    """The inputs whose *values* decide shapes: those feeding a dynamic operand (a reshape's shape,
    a slice's starts...) that is not a constant, or a scalar operand of an op whose result shape
    is unknown although every operand's shape is known (``range``'s limit, a one-hot depth; not
    ``nonzero``'s tensor, whose output size is data, not a parameter). The walk stops at ``shape``
    ops, which read only their operand's shape (known once the input shapes are)."""
    g = module.main
    params = {id(p): p.name for p in g.params if p.binding is None}
    stack = []
    for op in g.ops:
        for i in op.opdef.dynamic_operand_indices():
            if i < len(op.operands):
                stack.append(op.operands[i])
        if op.operands and all(v.type.is_static for v in op.operands) and \
                not all(r.type.is_static for r in op.results):
            stack.extend(v for v in op.operands if v.type.rank == 0)
    seen: set[int] = set()
    found: set[str] = set()
    while stack:
        v = stack.pop()
        if id(v) in seen:
            continue
        seen.add(id(v))
        if id(v) in params:
            found.add(params[id(v)])
        elif v.producer is not None and v.producer.opname not in ("const", "shape"):
            stack.extend(v.producer.operands)
    return [p.name for p in g.params if p.name in found]


def _is_static(module: Module) -> bool:
    return all(p.type.is_static for p in module.main.params) and not shape_inputs(module)


class Specializer:
    """The executable of a model with symbolic dims or run-time shape inputs on a static-shape
    target: each run is compiled for its input shapes and the values of its shape inputs
    (``ir.specialize``), once per distinct signature; the most recent ``keep`` are kept."""

    keep = 32

    def __init__(self, module: Module, backend: Callable[..., Any], options: Mapping[str, Any]):
        verify_module(module)  # a malformed model fails at compile time, not at its first run
        self.module = module
        self.backend = backend
        self.options = dict(options)
        self.shape_inputs = shape_inputs(module)
        self.executables: collections.OrderedDict[tuple, Any] = collections.OrderedDict()

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        g = self.module.main
        args = check_feeds(g, feeds, self.module)  # the interpreter's checks: dtypes, shapes, symbols
        arrays = {p.name: a for p, a in zip(g.params, args)}
        values = {n: np.asarray(arrays[n]) for n in self.shape_inputs}
        key = tuple((n, a.dtype.str, a.shape) for n, a in arrays.items()) + \
            tuple((n, a.tobytes()) for n, a in values.items())
        exe = self.executables.get(key)
        if exe is None:
            shapes = {n: a.shape for n, a in arrays.items() if n not in values}
            exe = self.backend(specialize(self.module, shapes, values), self.options)
            self.executables[key] = exe
            if len(self.executables) > self.keep:
                self.executables.popitem(last=False)
        else:
            self.executables.move_to_end(key)
        return exe.run({n: a for n, a in feeds.items() if n not in values})


def load(path: str | os.PathLike) -> CompiledModel:
    """Load a shared library written by ``nnc compile MODEL --target x86 -o model.so``."""
    from nnc.backends.x86.aot import load as load_library

    return load_library(path)


def _check_weights(module: Module, source: Any) -> None:
    """Text IR parsed without its weights can be printed but not compiled: say which are missing."""
    missing = sorted(k for k in module.constant_types if not module.has_data(k))
    if not missing:
        return
    names = ", ".join("@" + k for k in missing[:4]) + (f" and {len(missing) - 4} more" if len(missing) > 4 else "")
    where = ""
    if isinstance(source, (str, os.PathLike)) and str(source).endswith(".nnc"):
        where = f"{source}: "
        names += f" (expected in {str(source)[:-4]}.npz, written beside it by 'nnc compile -o')"
    raise ModelError(f"{where}no data for weight(s) {names}")

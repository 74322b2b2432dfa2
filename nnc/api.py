"""The Python API: import, parse, compile, run, save and load models.

    import nnc
    m = nnc.from_onnx("model.onnx")           # -> nnc.ir.Module; str(m) is the text IR
    cm = nnc.compile("model.onnx", target="reference")
    outs = cm.run({"x": x})                   # dict keyed by output name
    y = cm(x)                                 # positional; an array or a tuple
    cm = nnc.compile("model.onnx", target="x86", threads=2, cache=False, quiet=True)
    cm.save("model.so")                       # the same machine code as a shared library
    lib = nnc.load("model.so")                # a CompiledModel again, with the same report

``compile`` is the one route from a model to something that runs: the CLI (``compile -o``, ``run``,
``bench``), the ONNX backend API and ``torch.compile(backend="nnc")`` all call it. Options are one
``CompileOptions`` (``nnc.backends.options``), validated against the target and mode before any work.
Targets that need static shapes compile a model with symbolic dims on its first run, per input
signature (``nnc.specializer``), unless ``dims={"N": 1}`` fixes them at compile time.
"""

from __future__ import annotations

import os
from typing import Any

from nnc.backends.compiled import CompiledModel, NotShapeGeneric
from nnc.backends.options import MODES, CompileOptions, as_options
from nnc.backends.registry import get_backend
from nnc.backends.registry import load as load_artifact
from nnc.ir import NncError, TargetError
from nnc.ir.specialize import bind_dims, input_symbols

from .loading import check_weights, from_onnx, from_torch, load_module, parse
from .pipeline import optimize
from .report import build_report
from .specializer import Specializer, is_static, shape_inputs

__all__ = ["MODES", "CompiledModel", "CompileOptions", "Specializer", "compile", "from_onnx", "from_torch", "load",
           "load_module", "parse", "shape_inputs"]


def compile(model: Any, target: str = "reference", mode: str = "infer", example_args: Any = None,  # noqa: A001
            dynamic_shapes: Any = None, options: CompileOptions | None = None, **kwargs: Any) -> Any:
    """Compile ``model`` (a path, ``onnx.ModelProto``, ``Module``, torch ``nn.Module`` with
    ``example_args``, ``ExportedProgram`` or ``.pt2`` path) for ``target``.

    Keyword options are the fields of ``CompileOptions`` (pipeline: ``opt_level``, ``passes``,
    ``print_ir_after``...; ``quantize``/``calibration``/``observer``; ``dims``; x86: ``cpu``,
    ``target_features``, ``opt``, ``threads``, ``cache``; asic: ``asic_preset``...; training:
    ``loss``, ``optimizer``, ``lr``...), or pass a ready ``options=CompileOptions(...)``. An option
    that does not apply to the target or mode is an ``NncError``. Returns a ``CompiledModel``
    (``mode="train"``: a ``TrainingSession``); its ``report`` says what the passes did, the kernels
    and the memory plan (docs/compile-report.md)."""
    if options is not None:
        if kwargs:
            raise NncError(f"give options=CompileOptions(...) or keyword options, not both ({', '.join(kwargs)})")
        opts = options
    else:
        opts = as_options(target, mode, kwargs)
    backend = get_backend(opts.target)
    backend.check(opts)
    if opts.mode == "train":  # a TrainingSession (docs/training.md)
        from .training import compile_training

        return compile_training(model, backend, opts, example_args, dynamic_shapes)
    module = load_module(model, example_args, dynamic_shapes)
    check_weights(module, model)
    if opts.dims:
        module = bind_dims(module, opts.dims)
    pipe = opts.pipeline_options()
    if backend.default_passes and "passes" not in pipe:
        pipe["passes"] = backend.default_passes  # e.g. the float graph the asic's quantizer expects
    module, records, pipeline = optimize(module, opts.mode, pipe)
    shapes: dict[str, Any] | None = None
    executable: Any = None
    if backend.static_shapes and not is_static(module):
        if backend.shape_generic:  # one compile for every value of the symbolic dims, if the backend can
            try:
                executable = backend.compile(module, opts)
                shapes = {"generic": True, "symbols": input_symbols(module)}
            except NotShapeGeneric as e:
                if opts.max_dims:  # the bounds are for shape-generic code: say why there is none
                    raise TargetError(f"{e}; max_dims (--max-dim) bound the dims of shape-generic code, so they "
                                      f"cannot apply to this model") from None
                shapes = {"generic": False, "reason": str(e)}
        else:
            shapes = {"generic": False, "reason": f"target {backend.name!r} compiles static shapes only"}
        if executable is None:
            # compile per input shape, optimising again once shapes are known (folding and fusion do more)
            replay = {k: v for k, v in pipe.items() if k in ("opt_level", "passes", "disable_passes", "pass_plugins")}
            executable = Specializer(module, lambda m: backend.compile(optimize(m, opts.mode, replay)[0], opts))
    else:
        executable = backend.compile(module, opts)
    report = build_report(module, records, backend.name, opts.mode, pipeline)
    if shapes is not None:
        report["shapes"] = shapes
        bounded = getattr(executable, "bounded", None)
        if shapes["generic"] and bounded is not None:  # max_dims: planned once, at the bounds
            report["memory"] = {**report.get("memory", {}), "planned": True, "at_bounds": bounded.maxima,
                                "arena_bytes": bounded.arena_bytes, "used_formula": bounded.used_formula(),
                                "reason": "symbolic dims bounded by max_dims: the arena is planned at the bounds "
                                          "and serves every smaller shape; used_formula gives the bytes used at "
                                          "given dims (cm.executable.memory_at(feeds), .shapes_seen())"}
        elif shapes["generic"]:
            report["memory"] = {**report.get("memory", {}), "planned": False,
                                "reason": "symbolic dims: the arena is planned for the first input shape at run "
                                          "time, and from the second on its offsets are formulas of the dims "
                                          "(report['memory']['formula'] once derived; cm.executable.memory_at(feeds), "
                                          ".shapes_seen())"
                                          + (f"; max_dims could not bound it: {executable.bounded_reason}"
                                             if getattr(executable, "bounded_reason", None) else "")}
            if hasattr(executable, "memory_report"):  # filled in when the formulas are derived
                executable.memory_report = report["memory"]
    report["options"] = opts.report()
    if opts.dims:
        report["bound_dims"] = dict(opts.dims)
    if getattr(executable, "target_report", None) is not None:
        report[backend.name] = executable.target_report  # e.g. report["asic"]: latency, energy, layers
    return CompiledModel(module, executable, backend, report, opts)


def load(path: str | os.PathLike) -> CompiledModel:
    """A model saved with ``CompiledModel.save`` (``nnc compile -o``): ``model.so`` (x86) or
    ``model.nnc`` (reference), as a ``CompiledModel`` with the report it was compiled with."""
    return load_artifact(os.fspath(path))

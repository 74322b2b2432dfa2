"""The x86 target as the driver sees it: compile through LLVM, save as a shared library, load one.

``save`` links the object code the compile produced (``exe.compiled``) into ``model.so`` with its
header and manifest, so a saved library runs exactly the machine code of the JIT model it came
from; ``load`` gives back a ``CompiledModel`` with the manifest's interface and the same report.
"""

from __future__ import annotations

from typing import Any, Mapping

from nnc.ir import Module, TargetError

from ..compiled import Backend, CompiledModel
from ..options import CompileOptions
from . import aot
from . import compile as compile_x86
from .generic import GenericExecutable
from .segments import SegmentedExecutable


class X86Backend(Backend):
    name = "x86"
    static_shapes = True
    shape_generic = True  # symbolic dims compile to code that reads them at run time (generic.py)
    options = frozenset({"cpu", "target_features", "opt", "threads", "keep_llvm", "profile"})
    artifact_suffixes = (".so",)
    emit_forms = ("llvm", "asm", "obj")

    def compile(self, module: Module, options: CompileOptions) -> Any:
        return compile_x86(module, options.backend_options())

    def artifact_files(self, path: str) -> list[str]:
        return aot.library_files(path)

    def write(self, model: CompiledModel, path: str) -> list[str]:
        if isinstance(model.executable, GenericExecutable):
            symbols = ", ".join(model.report.get("shapes", {}).get("symbols") or ["?"])
            raise TargetError(f"x86: the model has symbolic input dims ({symbols}) and compiled to shape-generic "
                              f"code, whose per-shape memory plan is made in Python at run time; a library has a C "
                              f"entry point, so fix the dims at compile time to save it as a library: dims={{...}} "
                              f"(CLI: --dim NAME=SIZE)")
        if isinstance(model.executable, SegmentedExecutable):
            raise TargetError(f"x86: the model runs as segments with the host between them "
                              f"({model.executable.target_report['segments']['reason']}); a library has one C entry "
                              f"point, so it cannot be saved as one (run it from Python: nnc.compile(...).run)")
        exe = _static_executable(model, "save it as a library")
        aot.write_library(exe, path, model.report, bound=model.report.get("bound_dims"))
        return aot.library_files(path)

    def load(self, path: str) -> CompiledModel:
        ex = aot.load(path)
        man = ex.manifest
        options = CompileOptions(target=self.name, threads=int(man.get("threads", 1)))
        return CompiledModel(None, ex, self, dict(man.get("report") or {}), options,
                             inputs=dict(ex.inputs), outputs=dict(ex.outputs))

    def profile(self, model: CompiledModel, feeds: Mapping[str, Any], runs: int) -> Any:
        from .profile import profile_model  # the profiler is only loaded when asked for

        return profile_model(model, feeds, runs)

    def emit(self, model: CompiledModel, form: str) -> bytes:
        if form not in self.emit_forms:
            return super().emit(model, form)
        compiled = _static_executable(model, f"emit {form}").compiled
        if form == "obj":
            return compiled.entry.object_code
        text = compiled.llvm_ir if form == "llvm" else compiled.assembly
        if text is None:
            raise TargetError(f"x86: emit {form!r} needs the LLVM module, which a compile keeps only when asked: "
                              f"compile with keep_llvm=True (nnc compile --emit {form} does)")
        return text.encode()


def _static_executable(model: CompiledModel, what: str) -> Any:
    exe = model.executable
    if isinstance(exe, SegmentedExecutable):
        raise TargetError(f"x86: the model compiled to {exe.target_report['segments']['compiled']} segments with "
                          f"host steps between them ({exe.target_report['segments']['reason']}), not one module: "
                          f"it cannot {what}")
    if getattr(exe, "compiled", None) is None:
        symbols = sorted({str(d) for t in model.input_types.values() for d in (t.shape or ())
                          if not isinstance(d, int)})
        if symbols:
            fix = ", ".join(f"{s}=1" for s in symbols)
            raise TargetError(f"x86: the model has symbolic input dims ({', '.join(symbols)}) and compiles per input "
                              f"shape at run time; to {what}, fix them at compile time: dims={{{fix}}} "
                              f"(CLI: --dim {symbols[0]}=1)")
        if getattr(exe, "shape_inputs", None):
            raise TargetError(f"x86: the model's shapes depend on the values of {', '.join(exe.shape_inputs)} and "
                              f"compile per run; a library has static shapes, so it cannot {what}")
        raise TargetError(f"x86: this model holds no object code to {what} (it was loaded from a library)")
    return exe

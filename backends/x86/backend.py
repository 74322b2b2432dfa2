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
from .executable import X86Executable
from .frame_formulas import derive
from .generic import GenericExecutable
from .schedule import tuning_text
from .segments import SegmentedExecutable


class X86Backend(Backend):
    name = "x86"
    static_shapes = True
    shape_generic = True  # symbolic dims compile to code that reads them at run time (generic.py)
    options = frozenset({"cpu", "target_features", "opt", "threads", "keep_llvm", "profile", "max_dims", "tuning_db"})
    artifact_suffixes = (".so",)
    emit_forms = ("llvm", "asm", "obj")

    def compile(self, module: Module, options: CompileOptions) -> Any:
        opts = options.backend_options()
        max_dims = opts.pop("max_dims", None)  # not a code generation option: the code is the same
        exe = compile_x86(module, opts)
        if max_dims:
            if isinstance(exe, SegmentedExecutable):
                raise TargetError(f"x86: max_dims (--max-dim) bounds the dims of one shape-generic entry point, but "
                                  f"this model runs as segments with the host between them "
                                  f"({exe.target_report['segments']['reason']})")
            if not isinstance(exe, GenericExecutable):
                raise TargetError(f"x86: max_dims (--max-dim) bounds the symbolic dims of shape-generic code, but this "
                                  f"model compiled to static code ({_why_static(module, options)})")
            exe.set_max_dims(max_dims)
        return exe

    def summary(self, model: CompiledModel) -> str:
        """With a tuning database: how many tunable kernels took its schedules, and the gains it records."""
        rep = (getattr(model.executable, "target_report", None) or {}).get("tuning")
        return tuning_text(rep) if rep else ""

    def artifact_files(self, path: str) -> list[str]:
        return aot.library_files(path)

    def write(self, model: CompiledModel, path: str) -> list[str]:
        exe = model.executable
        if isinstance(exe, GenericExecutable):
            if not exe.max_dims:
                symbols = model.report.get("shapes", {}).get("symbols") or ["N"]
                raise TargetError(f"x86: the model has symbolic input dims ({', '.join(symbols)}); a library takes "
                                  f"them at run time up to maxima its arena is planned for: give max_dims={{...}} "
                                  f"(CLI: {' '.join(f'--max-dim {s}=SIZE' for s in symbols)}), or fix them with "
                                  f"dims={{...}} (CLI: --dim NAME=SIZE) for code specialised to one shape")
            formulas = exe.bounded.ff if exe.bounded is not None else derive(exe.layout, exe.max_dims)
            aot.write_library(exe, path, model.report, formulas=formulas)
            return aot.library_files(path)
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

    def writes_given_outputs(self, model: CompiledModel) -> bool:
        # the JIT's code writes into the given buffers (a KV cache fed and bound as one is updated
        # in place); other executables (per-shape, loaded libraries) copy into them
        return isinstance(model.executable, (X86Executable, GenericExecutable))

    def run_into(self, model: CompiledModel, feeds: Mapping[str, Any], outputs: Mapping[str, Any]) -> dict[str, Any]:
        if self.writes_given_outputs(model):
            return model.executable.run(feeds, outputs)
        return super().run_into(model, feeds, outputs)

    def check_profile(self, model: CompiledModel) -> None:
        from .profile import check_profilable

        check_profilable(model)

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


def _why_static(module: Module, options: CompileOptions) -> str:
    if options.dims:
        return "its dims are fixed with dims= / --dim"
    if all(not isinstance(d, str) for p in module.main.params for d in (p.type.shape or ())):
        return "its inputs have no symbolic dims"
    return "some op or shape needs per-shape code; see report['shapes']"

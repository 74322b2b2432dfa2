"""The simulated ASIC as the driver sees it: it takes the float graph after its own pipeline
(``DEFAULT_PASSES``), quantizes it to int8 itself, and has no saved artifact (its program runs
only inside the simulator; ``nnc compile --target asic --emit asm`` prints it)."""

from __future__ import annotations

from typing import Any

from nnc.ir import Module, TargetError

from ..compiled import Backend, CompiledModel
from ..options import CompileOptions
from . import DEFAULT_PASSES
from . import compile as compile_asic


class AsicBackend(Backend):
    name = "asic"
    static_shapes = True
    default_passes = DEFAULT_PASSES
    quantizes_itself = True
    options = frozenset({"asic_preset", "asic_config", "functional"})
    emit_forms = ("asm",)

    def compile(self, module: Module, options: CompileOptions) -> Any:
        opts = options.backend_options()
        for k in ("calibration", "observer"):  # it quantizes itself, so it reads the calibration options
            if getattr(options, k) is not None:
                opts[k] = getattr(options, k)
        return compile_asic(module, opts)

    def why_no_artifact(self) -> str:
        return "its program runs only in the simulator; use --emit asm for the program or --report for the timing"

    def summary(self, model: CompiledModel) -> str:
        from .export import text_table

        if self.name not in model.report:  # symbolic dims: the program is built per input signature at run time
            dims = ", ".join(f"{n}: {t}" for n, t in model.input_types.items())
            raise TargetError(f"asic: the model has symbolic input dims ({dims}); the ASIC program and its report "
                              f"need static shapes (fix them with --dim NAME=SIZE)")
        return text_table(model.report[self.name])

    def emit(self, model: CompiledModel, form: str) -> bytes:
        if form != "asm":
            return super().emit(model, form)
        if not hasattr(model.executable, "asm"):
            raise TargetError("asic: the model has symbolic input dims; the program needs static shapes (--dim)")
        return model.executable.asm().encode()

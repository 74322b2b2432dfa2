"""``CompileOptions``: every option of a compile, typed and validated in one place.

``nnc.compile(model, target=..., mode=..., **options)`` and every CLI command build one of these
(``CompileOptions.make``), so a flag means the same everywhere and an option that cannot apply is an
error that says why, never silently dropped. Each field says which part of the compile reads it:

- ``pipeline``: the optimisation pipeline (``nnc/pipeline.py``), any target;
- ``quantize``: post-training quantization, inference only;
- ``shape``: fixing symbolic input dims (``dims``), any target;
- ``driver``: how the compile behaves (progress output), any target;
- ``backend``: read by a backend; a backend declares the names it takes (``Backend.options``), and
  giving another target's option is an error;
- ``train``: the training step (loss, optimizer), ``mode="train"`` only.

Unset fields are ``None``: consumers apply their own defaults, and ``given()`` lists what the
caller actually set (for reports, the cache key and error messages).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

from nnc.ir import NncError

MODES = ("infer", "train")
QUANTIZE_MODES = ("int8", "qdq", "int8-weights", "int4-weights")
WEIGHT_ONLY_MODES = ("int8-weights", "int4-weights")  # float activations, quantized matmul weights
QUANTIZE_GROUPS = (32, 64, 128)
QUANTIZE_HEADS = ("int8", "int4", "float")  # the output layer of a weight-only model
OBSERVERS = ("minmax", "percentile", "entropy")


def _scope(kind: str, help: str) -> Any:  # noqa: A002 - the field's documentation
    return field(default=None, metadata={"scope": kind, "help": help})


@dataclass
class CompileOptions:
    target: str = "reference"
    mode: str = "infer"
    # -- the pipeline (docs/passes.md)
    opt_level: int | None = _scope("pipeline", "optimisation level 0..3 (-O)")
    passes: str | None = _scope("pipeline", "an explicit pipeline string replacing the preset")
    disable_passes: list[str] | None = _scope("pipeline", "passes to skip")
    pass_plugins: list[str] | None = _scope("pipeline", "Python files that register passes")
    verify_each: bool | None = _scope("pipeline", "verify the IR after every pass")
    print_ir_before: list[str] | None = _scope("pipeline", "print the IR before these passes ('all')")
    print_ir_after: list[str] | None = _scope("pipeline", "print the IR after these passes ('all')")
    print_ir_after_change: bool | None = _scope("pipeline", "print only when a pass changed the IR")
    time_passes: bool | None = _scope("pipeline", "print the time of each pass")
    dump_dir: str | None = _scope("pipeline", "write the IR after each pass into this folder")
    explain_fusion: bool | None = _scope("pipeline", "record why fusion candidates were rejected")
    # -- post-training quantization (docs/quantization.md)
    quantize: str | None = _scope("quantize", "int8 (quantize), qdq (run an imported QDQ model in integers), "
                                              "int8-weights or int4-weights (weight-only, float activations)")
    quantize_group: int | None = _scope("quantize", "int4-weights: reduction elements per scale (32, 64, 128; "
                                                    "default 32)")
    quantize_asymmetric: bool | None = _scope("quantize", "int8/int4-weights: a zero point per block (default: "
                                                          "symmetric, none)")
    quantize_head: str | None = _scope("quantize", "int8/int4-weights: the output layer (a product whose result "
                                                   "is a model output: a language model's head): int8 per channel "
                                                   "(default), int4 (int4-weights only) or float")
    calibration: Any = _scope("quantize", "calibration feeds: an .npz path or a list of feed dicts")
    observer: str | None = _scope("quantize", "minmax, percentile or entropy")
    # -- shapes
    dims: dict[str, int] | None = _scope("shape", "sizes of symbolic input dims, fixed at compile time")
    # -- the driver
    quiet: bool | None = _scope("driver", "no progress output")
    # -- backends (each declares which of these it takes)
    cpu: str | None = _scope("backend", "x86: CPU name to compile for")
    target_features: str | None = _scope("backend", "x86: LLVM feature list")
    opt: int | None = _scope("backend", "x86: LLVM optimisation level")
    threads: int | None = _scope("backend", "x86: threads per model")
    # the compilation cache is the driver's to ask for: a target without one (reference) compiles
    # nothing to cache, so cache=False holds there too
    cache: bool | None = _scope("driver", "use the compilation cache of targets that have one (x86)")
    cache_dir: str | None = _scope("driver", "the compilation cache's folder")
    keep_llvm: bool | None = _scope("backend", "x86: keep the optimised LLVM IR for emit('llvm'|'asm')")
    profile: bool | None = _scope("backend", "x86: time every kernel inside the entry point (cm.profile)")
    max_dims: dict[str, int] | None = _scope("backend", "x86: maxima of symbolic input dims: runs check them, and a "
                                                       "library takes the dims at run time up to them")
    tuning_db: Any = _scope("backend", "x86: tuning database of kernel schedules (a path or a TuningDB; "
                                       "default $NNC_TUNING_DB), docs/tuning.md")
    asic_preset: str | None = _scope("backend", "asic: machine preset (edge, x1)")
    asic_config: Any = _scope("backend", "asic: JSON path or dict merged over the preset")
    functional: bool | None = _scope("backend", "asic: simulate bit-exactly on run (default True)")
    # -- training (docs/training.md)
    loss: str | None = _scope("train", "loss on the model's output")
    loss_output: str | None = _scope("train", "the output the loss is attached to")
    label_name: str | None = _scope("train", "name of the labels input")
    reduction: str | None = _scope("train", "loss reduction")
    label_smoothing: float | None = _scope("train", "cross-entropy label smoothing")
    gradients: bool | None = _scope("train", "also return the gradients")
    trainable: list[str] | None = _scope("train", "only these parameters train")
    frozen: list[str] | None = _scope("train", "parameters not to train")
    optimizer: str | None = _scope("train", "sgd, adam or adamw")
    lr: float | None = _scope("train", "learning rate")
    momentum: float | None = _scope("train", "sgd momentum")
    dampening: float | None = _scope("train", "sgd dampening")
    nesterov: bool | None = _scope("train", "sgd Nesterov momentum")
    weight_decay: float | None = _scope("train", "weight decay")
    betas: tuple[float, float] | None = _scope("train", "adam betas")
    beta1: float | None = _scope("train", "adam beta1")
    beta2: float | None = _scope("train", "adam beta2")
    eps: float | None = _scope("train", "adam epsilon")
    batch_size: int | None = _scope("train", "the static batch size of the step")
    input_shapes: dict[str, Any] | None = _scope("train", "static input shapes of the step")
    memory_budget: Any = _scope("train", "rematerialise to fit this arena (bytes, '64MB' or a fraction)")

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def make(cls, target: str = "reference", mode: str = "infer", **options: Any) -> CompileOptions:
        """Options from keyword arguments; unknown names are an ``NncError`` listing the known ones.
        ``None`` values count as not given. Call ``check(backend)`` to validate against a target."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in options if k not in known)
        if unknown:
            raise NncError(f"unknown compile option(s) {', '.join(unknown)}; known options: "
                           f"{', '.join(sorted(known - {'target', 'mode'}))}")
        if mode not in MODES:
            raise NncError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        return cls(target=target, mode=mode, **{k: v for k, v in options.items() if v is not None})

    def replace(self, **changes: Any) -> CompileOptions:
        return dataclasses.replace(self, **changes)

    # -- what was set --------------------------------------------------------------------------
    def given(self, scope: str | None = None) -> dict[str, Any]:
        """The options set (not None), optionally only those of one scope."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
                if "scope" in f.metadata and getattr(self, f.name) is not None
                and (scope is None or f.metadata["scope"] == scope)}

    def report(self) -> dict[str, Any]:
        """The options as given, for the compile report (JSON: arrays and feed lists are described)."""
        out: dict[str, Any] = {"target": self.target, "mode": self.mode}
        for k, v in self.given().items():
            out[k] = v if isinstance(v, (str, int, float, bool, list, tuple, dict)) and k != "calibration" or \
                isinstance(v, str) else f"<{type(v).__name__}>"
        return out

    def backend_options(self) -> dict[str, Any]:
        """The backend-scoped options that were set, plus the driver's (quiet, cache) that backends
        honour."""
        return {**self.given("backend"), **self.given("driver")}

    def pipeline_options(self) -> dict[str, Any]:
        """What ``nnc.pipeline.optimize`` reads: the pipeline, quantization and ``memory_budget``."""
        out = {**self.given("pipeline"), **self.given("quantize")}
        if self.memory_budget is not None:
            out["memory_budget"] = self.memory_budget
        return out

    def train_options(self) -> dict[str, Any]:
        return {k: v for k, v in self.given("train").items() if k != "memory_budget"}

    # -- validation ------------------------------------------------------------------------------
    def check(self, backend_name: str, backend_options: Iterable[str], quantizes_itself: bool = False) -> None:
        """Raise ``NncError`` for an option that cannot apply to this target and mode."""
        takes = set(backend_options)
        for name in self.given("backend"):
            if name not in takes:
                owner = _FIELDS[name].metadata["help"].split(":")[0]
                raise NncError(f"option {_flag(name)} applies to --target {owner} only, not {backend_name}")
        if self.mode == "train":
            for name in self.given("quantize"):
                raise NncError(f"option {_flag(name)} applies to inference (--mode infer), not training")
        else:
            for name in self.train_options():
                raise NncError(f"option {_flag(name)} applies to --mode train only")
            if self.memory_budget is not None:
                raise NncError("option --memory-budget applies to --mode train only")
        if self.quantize is not None and self.quantize not in QUANTIZE_MODES:
            raise NncError(f"quantize={self.quantize!r}: choose one of {', '.join(QUANTIZE_MODES)}")
        if self.observer is not None and self.observer not in OBSERVERS:
            raise NncError(f"observer={self.observer!r}: choose one of {', '.join(OBSERVERS)}")
        if quantizes_itself:
            if self.quantize is not None:
                raise NncError(f"--target {backend_name} always quantizes to int8 itself; drop --quantize")
            if self.opt_level is not None:
                raise NncError(f"--target {backend_name} runs its own float pipeline before quantizing; -O does "
                               f"not apply (use --passes to replace that pipeline)")
        elif self.mode == "infer" and self.quantize not in ("int8", "qdq"):
            for name in ("calibration", "observer"):
                if getattr(self, name) is not None:
                    raise NncError(f"option {_flag(name)} needs --quantize int8")
        self._check_weight_only()
        if self.opt_level is not None and self.opt_level not in (0, 1, 2, 3):
            raise NncError(f"opt_level={self.opt_level!r}: choose 0, 1, 2 or 3")
        if self.opt_level is not None and self.passes is not None:
            raise NncError("give -O or --passes, not both (--passes replaces the -O preset)")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise NncError(f"threads={self.threads!r}: give a positive number of threads")
        for sym, size in (self.dims or {}).items():
            if not isinstance(size, int) or size < 0:
                raise NncError(f"dims: {sym}={size!r} is not a size (a non-negative integer)")
        for sym, size in (self.max_dims or {}).items():
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise NncError(f"max_dims: {sym}={size!r} is not a maximum (a positive integer)")
            if sym in (self.dims or {}):
                raise NncError(f"{sym} is both fixed (--dim) and bounded (--max-dim); give one")


    def _check_weight_only(self) -> None:
        if self.quantize_group is not None:
            if self.quantize != "int4-weights":
                raise NncError(f"option --quantize-group applies to --quantize int4-weights only"
                               f"{'' if self.quantize is None else f', not {self.quantize}'}")
            if self.quantize_group not in QUANTIZE_GROUPS or isinstance(self.quantize_group, bool):
                raise NncError(f"quantize_group={self.quantize_group!r}: choose one of "
                               f"{', '.join(map(str, QUANTIZE_GROUPS))}")
        if self.quantize_asymmetric is not None and self.quantize not in WEIGHT_ONLY_MODES:
            raise NncError(f"option --quantize-asymmetric applies to --quantize {' or '.join(WEIGHT_ONLY_MODES)} only")
        if self.quantize_head is not None:
            if self.quantize not in WEIGHT_ONLY_MODES:
                raise NncError(f"option --quantize-head applies to --quantize {' or '.join(WEIGHT_ONLY_MODES)} only")
            if self.quantize_head not in QUANTIZE_HEADS or (self.quantize_head == "int4" and
                                                             self.quantize != "int4-weights"):
                allowed = QUANTIZE_HEADS if self.quantize == "int4-weights" else ("int8", "float")
                raise NncError(f"quantize_head={self.quantize_head!r} with {self.quantize}: choose one of "
                               f"{', '.join(allowed)}")


def _flag(name: str) -> str:
    special = {"opt_level": "-O", "disable_passes": "--disable-pass", "pass_plugins": "--load-pass-plugin",
               "frozen": "--freeze", "dims": "--dim",
               "max_dims": "--max-dim"}
    return special.get(name, "--" + name.replace("_", "-"))


_FIELDS = {f.name: f for f in dataclasses.fields(CompileOptions)}


def as_options(target: str, mode: str, options: Mapping[str, Any] | CompileOptions) -> CompileOptions:
    """A ``CompileOptions`` from keyword options, or the given one with target and mode set."""
    if isinstance(options, CompileOptions):
        return options.replace(target=target, mode=mode)
    return CompileOptions.make(target, mode, **options)

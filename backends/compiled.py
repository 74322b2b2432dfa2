"""The compiled model and the backend interface: what every target produces and declares.

``CompiledModel`` is what ``nnc.compile`` returns and what ``nnc.load`` gives back from a saved
artifact: ``run(feeds)``, a positional call, the compile ``report``, and ``save(path)``, which asks
the backend that compiled it to write the artifact (an x86 shared library, reference text IR). It
lives here, below the driver, so that backends can build it without importing ``nnc``.

``Backend`` is the declared interface of a target: its name, whether it needs static shapes, its
default pipeline (``None``: the ``-O`` presets), the options it takes, and ``compile``, ``save``,
``load``. Backends register once in ``nnc.backends.registry``; the driver asks them, never their
modules.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar, Mapping

import numpy as np

from nnc.ir import InputError, Module, TargetError, TensorType

from .options import CompileOptions


class NotShapeGeneric(TargetError):
    """A backend that compiles symbolic dims into its code cannot do so for this model (an op
    without a shape-generic kernel, a shape that depends on data); the message says why. The driver
    then compiles per input shape (``nnc.specializer``) and reports the reason."""


class CompiledModel:
    """A compiled model: ``run(feeds) -> {output name: array}`` or ``model(*arrays)``.

    ``module`` is the optimised IR (``None`` for a model loaded from a library, whose interface
    comes from its manifest); ``executable`` is the backend's; ``report`` the compile report
    (docs/compile-report.md), the same after ``save`` and ``nnc.load``."""

    def __init__(self, module: Module | None, executable: Any, backend: Backend,
                 report: dict[str, Any] | None = None, options: CompileOptions | None = None,
                 inputs: Mapping[str, TensorType] | None = None, outputs: Mapping[str, TensorType] | None = None):
        self.module = module
        self.executable = executable
        self.backend = backend
        self.report: dict[str, Any] = report or {}
        self.options = options or CompileOptions(target=backend.name)
        if inputs is None or outputs is None:
            assert module is not None, "a CompiledModel needs a module or its interface"
            g = module.main
            inputs = {p.name: p.type for p in g.params if p.binding is None}
            outputs = dict(zip(g.output_names, (v.type for v in g.outputs)))
        self.input_types = dict(inputs)
        self.output_types = dict(outputs)
        self.input_names = list(self.input_types)
        self.output_names = list(self.output_types)

    @property
    def target(self) -> str:
        return self.backend.name

    def run(self, feeds: Mapping[str, Any], outputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """The outputs for ``feeds``. ``outputs`` optionally gives the caller's buffers for some
        outputs (exact shape and dtype); on x86 the code writes into them, so an output bound to an
        input's buffer is updated in place where its op allows (a decoder's KV cache)."""
        if type(feeds) is not dict and not isinstance(feeds, Mapping):  # the ABC check costs ~0.1 us
            raise InputError("run() takes a dict of input name -> array; call the model directly for positional inputs")
        if not outputs:
            return self.executable.run(feeds)
        return self.backend.run_into(self, feeds, outputs)

    def __call__(self, *arrays: Any) -> Any:
        if len(arrays) == 1 and isinstance(arrays[0], Mapping):
            raise InputError("calling the model takes its inputs as positional arrays "
                             f"({', '.join(self.input_names)}); use run(feeds) for a dict of name -> array")
        if len(arrays) != len(self.input_names):
            raise InputError(f"expected {len(self.input_names)} inputs ({', '.join(self.input_names)}), "
                             f"got {len(arrays)}")
        outs = self.run(dict(zip(self.input_names, arrays)))
        if len(self.output_names) == 1:
            return outs[self.output_names[0]]
        return tuple([outs[n] for n in self.output_names])

    def save(self, path: str | os.PathLike) -> list[str]:
        """Write the compiled model as its backend's artifact; returns the files written. All or
        nothing: on an error no file is left half-written."""
        return self.backend.save(self, os.fspath(path))

    def profile(self, feeds: Mapping[str, Any], runs: int = 10) -> Any:
        """Run ``runs`` times with per-kernel timing and return the backend's profile (x86:
        ``nnc.backends.x86.profile.Profile``, with ``to_table()`` and ``to_chrome_trace()``;
        docs/profiling.md). The model itself runs unchanged: the backend builds a profiling twin."""
        if not isinstance(feeds, Mapping):
            raise InputError("profile() takes a dict of input name -> array")
        if not isinstance(runs, int) or runs < 1:
            raise InputError(f"profile(): runs={runs!r}, give a positive number of runs")
        return self.backend.profile(self, feeds, runs)

    def emit(self, form: str) -> bytes:
        """An intermediate stage of this compile (x86: ``llvm``, ``asm``, ``obj``)."""
        return self.backend.emit(self, form)

    def __repr__(self) -> str:
        return f"<CompiledModel target={self.target} inputs={self.input_names} outputs={self.output_names}>"


class Backend:
    """A compilation target. Subclasses set the class attributes and implement ``compile``."""

    name: ClassVar[str] = ""
    static_shapes: ClassVar[bool] = False      # the driver specialises symbolic dims per run first
    shape_generic: ClassVar[bool] = False      # ...unless this backend compiles them (NotShapeGeneric if not)
    default_passes: ClassVar[str | None] = None  # None: the -O presets; else the pipeline it needs
    quantizes_itself: ClassVar[bool] = False   # takes the float graph and quantizes (asic)
    options: ClassVar[frozenset[str]] = frozenset()  # the backend-scoped CompileOptions it reads
    artifact_suffixes: ClassVar[tuple[str, ...]] = ()  # what save() writes; empty: cannot save
    emit_forms: ClassVar[tuple[str, ...]] = ()

    def compile(self, module: Module, options: CompileOptions) -> Any:
        """An executable (``run(feeds)``) for an optimised module; it may carry ``target_report``,
        the backend's section of the compile report."""
        raise NotImplementedError

    def check(self, options: CompileOptions) -> None:
        options.check(self.name, self.options, self.quantizes_itself)

    def check_artifact_path(self, path: str) -> None:
        """Raise ``TargetError`` unless ``save(path)`` can write an artifact there."""
        if not self.artifact_suffixes:
            raise TargetError(f"target {self.name!r} cannot save a compiled model ({self.why_no_artifact()})")
        if not path.endswith(self.artifact_suffixes):
            raise TargetError(f"target {self.name!r} writes {' or '.join('*' + s for s in self.artifact_suffixes)}; "
                              f"got {path!r}")

    def save(self, model: CompiledModel, path: str) -> list[str]:
        self.check_artifact_path(path)
        return self.write(model, path)

    def why_no_artifact(self) -> str:
        return "it has no artifact format"

    def write(self, model: CompiledModel, path: str) -> list[str]:
        raise NotImplementedError

    def artifact_files(self, path: str) -> list[str]:
        """Every file ``save(path)`` writes (a report must not be written over one of them)."""
        return [path]

    def load(self, path: str) -> CompiledModel:
        raise TargetError(f"target {self.name!r} has no loadable artifact")

    def writes_given_outputs(self, model: CompiledModel) -> bool:
        """Whether ``run_into`` has the code write into the given buffers (so an output bound to
        an input's buffer is updated in place) rather than copy a fresh result into them."""
        return False

    def run_into(self, model: CompiledModel, feeds: Mapping[str, Any],
                 outputs: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``model.run`` with caller-given output buffers. This default runs, then copies into
        them; a backend whose code can write there directly overrides it."""
        unknown = sorted(set(outputs) - set(model.output_names))
        if unknown:
            raise InputError(f"unknown output(s) {', '.join(unknown)}; the outputs are {', '.join(model.output_names)}")
        res = model.executable.run(feeds)
        for name, buf in outputs.items():
            if not isinstance(buf, np.ndarray) or buf.shape != res[name].shape or buf.dtype != res[name].dtype:
                raise InputError(f"output {name!r}: the given buffer must be {res[name].dtype}{list(res[name].shape)}")
            np.copyto(buf, res[name])
            res[name] = buf
        return res

    def summary(self, model: CompiledModel) -> str:
        """Text the CLI prints after a compile (the asic's per-layer table); empty by default."""
        return ""

    def check_profile(self, model: CompiledModel) -> None:
        """Raise the TargetError ``profile`` would, before anything runs (``nnc run --profile``)."""
        raise TargetError(f"target {self.name!r} has no kernel profiler (x86 has: --target x86)")

    def profile(self, model: CompiledModel, feeds: Mapping[str, Any], runs: int) -> Any:
        self.check_profile(model)

    def emit(self, model: CompiledModel, form: str) -> bytes:
        forms = ", ".join(self.emit_forms) or "none"
        raise TargetError(f"target {self.name!r} cannot emit {form!r} (its forms: {forms})")

    def __repr__(self) -> str:
        return f"<Backend {self.name}>"

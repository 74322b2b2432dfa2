"""The ``reference`` target: the IR interpreter behind the backend interface.

It is the slowest target and the most trustworthy: every other backend is tested against it. Its
artifact is the optimised module as text IR: ``save("model.nnc")`` writes ``model.nnc`` (the IR),
``model.npz`` (the weights) and ``model.json`` (format, interface and the compile report), and
``load`` reads them back into a ``CompiledModel`` with the same report.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from nnc.ir import Interpreter, ModelError, Module, verify_module

from ..artifact import json_bytes, load_text_ir, nnc_version, read_manifest, sibling, text_ir_files, write_files
from ..compiled import Backend, CompiledModel
from ..options import CompileOptions

FORMAT = "nnc-ir"
FORMAT_VERSION = 1


class ReferenceExecutable:
    target = "reference"

    def __init__(self, module: Module):
        self.module = module
        self._interp = Interpreter(module)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self._interp.run(feeds)


def compile(module: Module, options: Mapping[str, Any] | None = None) -> ReferenceExecutable:  # noqa: A001
    verify_module(module)
    return ReferenceExecutable(module)


class ReferenceBackend(Backend):
    name = "reference"
    artifact_suffixes = (".nnc",)

    def compile(self, module: Module, options: CompileOptions) -> ReferenceExecutable:
        return compile(module)

    def artifact_files(self, path: str) -> list[str]:
        return [path, sibling(path, ".npz"), sibling(path, ".json")]

    def write(self, model: CompiledModel, path: str) -> list[str]:
        if model.module is None:
            raise ModelError("this model has no IR module to save (it was loaded from a library)")
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "nnc_version": nnc_version(),
                    "target": self.name, "ir": path.rsplit("/", 1)[-1], "report": model.report}
        files = {**text_ir_files(model.module, path), sibling(path, ".json"): json_bytes(manifest)}
        write_files(files)
        return list(files)

    def load(self, path: str) -> CompiledModel:
        module = load_text_ir(path)
        manifest = read_manifest(sibling(path, ".json")) or {}
        if manifest and manifest.get("format") != FORMAT:
            raise ModelError(f"{sibling(path, '.json')}: not an {FORMAT} manifest (format {manifest.get('format')!r})")
        return CompiledModel(module, compile(module), self, manifest.get("report") or {},
                             CompileOptions(target=self.name))

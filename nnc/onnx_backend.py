"""nnc as an ONNX backend (``onnx.backend.base.Backend``), so the official backend test suite runs:

    onnx.backend.test.BackendTest(nnc.onnx_backend.Backend, __name__)           # x86 (LLVM)
    onnx.backend.test.BackendTest(nnc.onnx_backend.ReferenceBackend, __name__)  # the interpreter

``Backend.prepare(model, device="CPU", **options)`` passes nnc compile options (``cache``,
``threads``, ``cpu``, ``target_features``, ``opt``) through; compiles are quiet.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import warnings
from typing import Any, Iterable, Sequence

import numpy as np
import onnx
from onnx.backend.base import Backend as _OnnxBackend
from onnx.backend.base import BackendRep

import nnc


class NncRep(BackendRep):
    def __init__(self, compiled: nnc.CompiledModel):
        self.compiled = compiled

    def run(self, inputs: Any, **kwargs: Any) -> tuple[np.ndarray, ...]:
        names = self.compiled.input_names
        if isinstance(inputs, dict):
            feeds = dict(inputs)
        else:
            if isinstance(inputs, np.ndarray):
                inputs = [inputs]
            feeds = dict(zip(names, inputs))
        outs = self.compiled.run(feeds)
        return tuple(outs[n] for n in self.compiled.output_names)


class _NncBackend(_OnnxBackend):
    target = "reference"

    @classmethod
    def is_compatible(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> bool:
        return True

    @classmethod
    def prepare(cls, model: onnx.ModelProto, device: str = "CPU", **kwargs: Any) -> NncRep:
        super().prepare(model, device, **kwargs)
        # keyword arguments are nnc compile options, validated by nnc.compile (an unknown or
        # inapplicable one is an NncError, not ignored); compiles are quiet unless asked otherwise
        return NncRep(nnc.compile(model, target=cls.target, **{"quiet": True, **kwargs}))

    @classmethod
    def run_node(cls, node: onnx.NodeProto, inputs: Sequence[np.ndarray], device: str = "CPU",
                 outputs_info: Any = None, **kwargs: Any) -> tuple[np.ndarray, ...]:
        raise NotImplementedError("nnc runs whole models; use prepare()")

    @classmethod
    def supports_device(cls, device: str) -> bool:
        return device == "CPU"


class ReferenceBackend(_NncBackend):
    """Runs models on nnc's reference interpreter."""

    target = "reference"


class Backend(_NncBackend):
    """Compiles models for the host x86 CPU (LLVM). Models with symbolic dims or run-time shape
    inputs are compiled on their first run, per input signature."""

    target = "x86"


# -- which ONNX ops run on x86 ------------------------------------------------------------------
def x86_op_coverage(cases: Iterable[Any] | None = None, use_cache: bool = True,
                    quiet: bool = True) -> dict[str, tuple[int, int]]:
    """ONNX op ("Conv", "com.microsoft.X") -> (forms that run on x86, forms imported).

    A form is one official node test of the op (single-node, not a function expansion): it runs on
    x86 when every IR op its import emits has an x86 lowering. Generating the node tests costs
    ~15 s (onnx computes their expected outputs), so the table is cached beside the compilation
    cache, keyed by the onnx version and the source of the frontend, IR, passes and x86 backend.
    """
    from nnc.backends.x86.kernels.registry import lowered_ops
    from nnc.backends.x86.segments import host_sync_ops

    path = None
    if cases is None and use_cache:
        path = _coverage_cache_path()
        try:
            with open(path) as f:
                return {k: (int(a), int(b)) for k, (a, b) in json.load(f).items()}
        except (OSError, ValueError, TypeError):
            pass
    if cases is None:
        from onnx.backend.test.loader import load_model_tests

        if not quiet and sys.stderr.isatty():  # progress for a person waiting, not for logs
            print("nnc: tabling x86 coverage from the ONNX node tests (once; cached after)...", file=sys.stderr)

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            cases = load_model_tests(kind="node")
    lowered = lowered_ops() | host_sync_ops()  # host-sync ops run as host steps (segments.py)
    table: dict[str, list[int]] = {}
    for case in cases:
        nodes = case.model.graph.node
        if case.name.endswith("_expanded") or len(nodes) != 1:
            continue
        n = nodes[0]
        op = f"{n.domain}.{n.op_type}" if n.domain not in ("", "ai.onnx") else n.op_type
        try:
            module = nnc.from_onnx(case.model)
        except nnc.NncError:
            continue
        row = table.setdefault(op, [0, 0])
        row[1] += 1
        row[0] += _ir_ops(module) <= lowered
    result = {k: (a, b) for k, (a, b) in sorted(table.items())}
    if path is not None:
        try:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path + ".tmp", "w") as f:
                json.dump(result, f)
            os.replace(path + ".tmp", path)
        except OSError:
            pass
    return result


def _ir_ops(module: Any) -> set[str]:
    names: set[str] = set()
    todo = list(module.graphs.values())
    while todo:
        g = todo.pop()
        for op in g.ops:
            if op.opname != "const":
                names.add(op.opname)
            todo.extend(op.regions)
    return names


def _coverage_cache_path() -> str:
    from nnc.backends.x86.cache import cache_dir, code_fingerprint
    from nnc.frontends import onnx as onnx_frontend

    h = hashlib.sha256(f"onnx {onnx.__version__} {code_fingerprint()}".encode())
    root = os.path.dirname(os.path.abspath(onnx_frontend.__file__))
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if name.endswith(".py"):
                with open(os.path.join(folder, name), "rb") as f:
                    h.update(name.encode() + f.read())
    return os.path.join(cache_dir(), f"onnx-ops-{h.hexdigest()[:24]}.json")

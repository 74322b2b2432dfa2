"""nnc as an ONNX backend (``onnx.backend.base.Backend``), so the official backend test suite runs:

    onnx.backend.test.BackendTest(nnc.onnx_backend.ReferenceBackend, __name__)
"""

from __future__ import annotations

from typing import Any, Sequence

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
        return NncRep(nnc.compile(model, target=cls.target))

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

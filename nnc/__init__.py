"""nnc: a neural-network compiler.

This package wires the layers together (``nnc.ir``, ``nnc.frontends``, ``nnc.passes``,
``nnc.backends``); see docs/ and ARCHITECTURE for the map.
"""

__version__ = "0.1.0"

from nnc.ir import InputError, IRError, ModelError, NncError, ParseError, TargetError, UnsupportedOpError, VerifyError  # noqa: E402

from .api import CompiledModel, compile, from_onnx, from_torch, load, load_module, parse  # noqa: E402

__all__ = [
    "__version__", "CompiledModel", "compile", "from_onnx", "from_torch", "load", "load_module", "parse",
    "NncError", "ModelError", "UnsupportedOpError", "InputError", "IRError", "ParseError", "VerifyError",
    "TargetError",
]

"""nnc: a neural-network compiler.

This package wires the layers together (``nnc.ir``, ``nnc.frontends``, ``nnc.passes``,
``nnc.backends``); see docs/ and ARCHITECTURE for the map.
"""

from nnc.backends.artifact import nnc_version
from nnc.ir import InputError, IRError, ModelError, NncError, ParseError, TargetError, UnsupportedOpError, VerifyError

from . import codecs
from .api import CompiledModel, CompileOptions, compile, from_onnx, from_torch, load, load_module, parse

__version__ = nnc_version()
codecs.install()  # the image decoder behind image_decode (Pillow, imported on first use)

__all__ = [
    "__version__", "CompiledModel", "CompileOptions", "compile", "from_onnx", "from_torch", "load", "load_module",
    "parse", "NncError", "ModelError", "UnsupportedOpError", "InputError", "IRError", "ParseError", "VerifyError",
    "TargetError",
]

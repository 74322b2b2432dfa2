"""The ONNX frontend: ``import_model(path_or_proto) -> Module``."""

from .importer import import_model

__all__ = ["import_model"]

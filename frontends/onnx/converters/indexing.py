"""Converters for ONNX indexing ops (to be filled in)."""

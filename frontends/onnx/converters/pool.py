"""Converters for ONNX pool ops (to be filled in)."""

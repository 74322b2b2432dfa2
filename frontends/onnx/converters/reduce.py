"""Converters for ONNX reduce ops (to be filled in)."""

"""Converters for ONNX signal ops (to be filled in)."""

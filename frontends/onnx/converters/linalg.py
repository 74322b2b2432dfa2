"""Converters for ONNX linalg ops (to be filled in)."""

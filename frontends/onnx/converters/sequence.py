"""Converters for ONNX sequence ops (to be filled in)."""

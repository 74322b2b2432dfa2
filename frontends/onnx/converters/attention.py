"""Converters for ONNX attention ops (to be filled in)."""

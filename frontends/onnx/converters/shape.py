"""Converters for ONNX shape ops (to be filled in)."""

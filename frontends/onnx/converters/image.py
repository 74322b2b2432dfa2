"""Converters for ONNX image ops (to be filled in)."""

"""Converters for ONNX conv ops (to be filled in)."""

"""Converters for ONNX normalization ops (to be filled in)."""

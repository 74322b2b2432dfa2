"""Converters for ONNX random ops (to be filled in)."""

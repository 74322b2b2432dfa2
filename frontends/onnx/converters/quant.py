"""Converters for ONNX quant ops (to be filled in)."""

"""The error of a model that generation cannot run as a decoder (docs/generation.md)."""

from __future__ import annotations

from nnc.ir import ModelError


class NotADecoderError(ModelError):
    """The model is not a decoder step with an explicit KV cache, nor an ONNX decoder with past
    key/values that can be made one; the message says what was expected."""

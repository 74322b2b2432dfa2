"""Compiling per input signature: the driver's name for ``nnc.backends.specializer`` (which lives
with the backends, so that the x86 host steps can specialise a segment the same way)."""

from __future__ import annotations

from nnc.backends.specializer import Specializer, is_static, shape_inputs

__all__ = ["Specializer", "is_static", "shape_inputs"]

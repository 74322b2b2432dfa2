"""Reverse-mode autodiff for the training passes: ``grad(module, loss, wrt)``.

The engine lives with the gradient rules in the IR layer (``nnc.ir.grads.engine``), because some
rules (the recurrent ops) differentiate an unrolled subgraph with it and the ONNX ``Gradient`` op
imports through it; the passes use it from here. See docs/autodiff.md.
"""

from __future__ import annotations

from nnc.ir.grads.engine import grad

__all__ = ["grad"]

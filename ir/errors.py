"""The nnc exception hierarchy.

Every error nnc raises on purpose is an ``NncError``; the CLI turns one into a single line on stderr
and a non-zero exit status. The hierarchy lives in the IR layer because every other layer raises
these, and the IR imports nothing above it.
"""

from __future__ import annotations


class NncError(Exception):
    """Base class of every error nnc raises on purpose."""


class ModelError(NncError):
    """The model file is missing, unreadable, corrupt, or breaks the format's rules."""


class UnsupportedOpError(NncError):
    """The model uses an operator (or an operator form) that nnc cannot import or compile."""


class InputError(NncError):
    """Run-time inputs do not match the model: missing, unexpected, wrong shape or dtype."""


class IRError(NncError):
    """Malformed IR: a verifier failure, a type-inference failure or a parse error."""


class ParseError(IRError):
    """The textual IR could not be parsed; the message carries line and column."""


class VerifyError(IRError):
    """The verifier rejected a graph; the message names the op and the broken rule."""


class TypeInferenceError(IRError):
    """An op's operands or attributes are inconsistent, so its result types cannot be inferred."""


class TargetError(NncError):
    """An unknown target, or a target that cannot compile this module."""


class GradientError(NncError):
    """Autodiff cannot differentiate the graph: an op on the path from the parameters to the loss has
    no gradient rule, a symbolic shape, or the loss is not a float scalar."""

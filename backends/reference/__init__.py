"""The ``reference`` target: the IR interpreter behind the backend interface.

It is the slowest target and the most trustworthy: every other backend is tested against it.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from nnc.ir import Interpreter, Module, verify_module


class ReferenceExecutable:
    target = "reference"

    def __init__(self, module: Module):
        self.module = module
        self._interp = Interpreter(module)

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self._interp.run(feeds)


def compile(module: Module, options: Mapping[str, Any] | None = None) -> ReferenceExecutable:  # noqa: A001
    verify_module(module)
    return ReferenceExecutable(module)

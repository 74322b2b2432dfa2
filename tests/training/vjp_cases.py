"""Sample operands and attributes for checking each gradient rule against finite differences.

``CASES[op]`` is a list of ``(operands, attrs)`` or ``(operands, attrs, options)`` where options
go to ``check_op_grad`` (``const_operands``, ``n_results``, ``rtol``). Operands are float64 (the
check's precision depends on it) unless the op needs integers (indices, conditions). Inputs avoid
kinks (|x| near 0 for relu/abs, ties for max) where a finite difference is not a derivative.
"""

from __future__ import annotations

import numpy as np

_rng = np.random.default_rng(1234)


def A(*shape: int) -> np.ndarray:
    return _rng.standard_normal(shape)


def P(*shape: int) -> np.ndarray:
    """Positive, away from zero."""
    return np.abs(A(*shape)) + 0.5


def U(*shape: int) -> np.ndarray:
    """In (-0.8, 0.8): the domain of asin/acos/atanh."""
    return _rng.uniform(-0.8, 0.8, shape)


UNARY = ["neg", "exp", "tanh", "sigmoid", "relu", "leaky_relu", "elu", "softplus", "erf", "gelu", "abs",
         "sin", "cos", "tan", "sinh", "cosh", "atan", "asinh", "reciprocal", "hard_sigmoid", "hard_swish",
         "identity"]

CASES: dict[str, list[tuple]] = {n: [([A(3, 4)], {})] for n in UNARY}
CASES.update({
    "log": [([P(3, 4)], {})],
    "sqrt": [([P(3, 4)], {})],
    "asin": [([U(3, 4)], {})],
    "acos": [([U(3, 4)], {})],
    "atanh": [([U(3, 4)], {})],
    "acosh": [([P(3, 4) + 1.0], {})],
    "gelu": [([A(3, 4)], {}), ([A(3, 4)], {"approximate": "tanh"})],
    "leaky_relu": [([A(3, 4)], {"alpha": 0.2})],
    "elu": [([A(3, 4)], {"alpha": 0.7})],
    "add": [([A(3, 4), A(4)], {}), ([A(2, 1, 4), A(3, 1)], {})],
    "sub": [([A(3, 4), A(1, 4)], {})],
    "mul": [([A(3, 4), A(3, 1)], {})],
    "div": [([A(3, 4), P(4)], {})],
    "pow": [([P(3, 4), A(4)], {})],
    "max": [([A(3, 4), A(4)], {})],
    "min": [([A(3, 4), A(3, 1)], {})],
    "where": [([A(3, 4) > 0, A(3, 4), A(4)], {})],
    "clip": [([A(3, 4)], {"min": -0.5, "max": 0.5}), ([A(3, 4)], {"min": 0.1})],
    "cast": [([A(3, 4)], {"to": "f32"}, {"rtol": 1e-3, "eps": 1e-3})],
    "matmul": [([A(2, 3, 4), A(4, 5)], {}), ([A(4), A(2, 4, 5)], {}), ([A(3, 4), A(4)], {}),
               ([A(2, 1, 3, 4), A(3, 4, 2)], {})],
    "gemm": [([A(4, 3), A(5, 4), A(5)], {"trans_a": 1, "trans_b": 1, "alpha": 0.5, "beta": 2.0}),
             ([A(3, 4), A(4, 5), A(3, 5)], {"alpha": 0.5}), ([A(3, 4), A(5, 4)], {"trans_b": 1})],
    "reduce_sum": [([A(3, 4, 5)], {"axes": [1], "keepdims": 0}), ([A(3, 4)], {"keepdims": 1})],
    "reduce_mean": [([A(3, 4, 5)], {"axes": [0, 2], "keepdims": 1})],
    "reduce_max": [([A(3, 4, 5)], {"axes": [-1], "keepdims": 0})],
    "reduce_min": [([A(3, 4, 5)], {"axes": [1], "keepdims": 1})],
    "reshape": [([A(3, 4)], {"shape": [2, 6]})],
    "squeeze": [([A(3, 1, 4)], {"axes": [1]})],
    "unsqueeze": [([A(3, 4)], {"axes": [0, 2]})],
    "transpose": [([A(3, 4, 5)], {"perm": [2, 0, 1]}), ([A(3, 4)], {})],
    "expand": [([A(3, 1)], {"shape": [2, 3, 4]})],
    "concat": [([A(3, 4), A(3, 2), A(3, 1)], {"axis": 1})],
    "split": [([A(6, 5)], {"axis": 0, "sizes": [2, 4]}, {"n_results": 2})],
    "slice": [([A(6, 5)], {"starts": [1, -3], "ends": [5, 100], "axes": [0, 1]})],
    "pad": [([A(3, 4)], {"pads": [1, -1, 2, 0]})],
})

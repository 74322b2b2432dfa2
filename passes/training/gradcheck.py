"""Numerical checks of gradient rules (in the manner of JAX's ``check_grads``).

``check_op_grad`` builds a one-op module in float64, differentiates a random linear functional of
its float results with ``autodiff.grad``, and compares the directional derivative along random
directions with central finite differences of the same functional, all on the reference
interpreter. A rule author runs it on a few shapes and attribute sets of their op; the registry
test (tests/training/test_vjp_rules.py) runs it for every differentiable op.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from nnc.ir import Builder, DType, Graph, Module, interpret, tensor

from .autodiff import grad


class GradCheckError(AssertionError):
    """The analytic and numerical directional derivatives disagree."""


def build_op_module(opname: str, operands: Sequence[np.ndarray], attrs: dict[str, Any] | None = None,
                    const_operands: Sequence[int] = (), seed: int = 0,
                    n_results: int | None = None) -> tuple[Module, list[str]]:
    """A module computing ``sum_i <r_i, result_i>`` for fixed random ``r_i`` over the op's float
    results, with the float operands (except ``const_operands``) as inputs and the loss plus each
    input's gradient as outputs. Returns the module and the names of the differentiated inputs."""
    rng = np.random.default_rng(seed)
    m = Module(opname)
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    vals, wrt = [], []
    for i, a in enumerate(operands):
        a = np.asarray(a)
        if a.dtype.kind == "f" and i not in const_operands:
            v = g.add_param(f"x{i}", tensor(DType.from_numpy(a.dtype), list(a.shape)))
            wrt.append(v)
        else:
            v = b.const(a, name=f"c{i}")
        vals.append(v)
    res = b.create(opname, vals, attrs or {}, n_results=n_results).results
    loss = None
    for r in res:
        if not r.dtype.is_float or r.type.shape is None:
            continue
        weights = b.const(rng.standard_normal([int(d) for d in r.type.shape]).astype(r.dtype.numpy))
        term = b.op("reduce_sum", b.op("mul", r, weights), keepdims=0)
        loss = term if loss is None else b.op("add", loss, term)
    if loss is None:
        raise ValueError(f"{opname} has no float result to differentiate")
    grads = grad(m, loss, wrt)
    g.set_outputs([loss] + [grads[w] for w in wrt], ["loss"] + [f"d_{w.name}" for w in wrt])
    return m, [w.name for w in wrt]


def check_op_grad(opname: str, operands: Sequence[np.ndarray], attrs: dict[str, Any] | None = None,
                  const_operands: Sequence[int] = (), eps: float = 1e-6, rtol: float = 1e-5,
                  atol: float = 1e-8, directions: int = 3, seed: int = 0, n_results: int | None = None) -> None:
    """Raise ``GradCheckError`` unless the op's gradient rule matches central differences.

    Float operands should be float64 (the check's precision rests on it). ``const_operands`` are
    operand indices held constant (weights of a frozen layer, say)."""
    m, names = build_op_module(opname, operands, attrs, const_operands, seed, n_results)
    feeds = {f"x{i}": np.asarray(a) for i, a in enumerate(operands) if f"x{i}" in names}
    out = interpret(m, feeds)
    rng = np.random.default_rng(seed + 1)
    for k in range(directions):
        dirs = {n: rng.standard_normal(feeds[n].shape).astype(feeds[n].dtype) for n in names}
        analytic = sum(float(np.sum(out[f"d_{n}"].astype(np.float64) * dirs[n])) for n in names)
        plus = interpret(m, {n: feeds[n] + eps * dirs[n] for n in names})["loss"]
        minus = interpret(m, {n: feeds[n] - eps * dirs[n] for n in names})["loss"]
        numeric = float((plus.astype(np.float64) - minus.astype(np.float64)).sum() / (2 * eps))
        if not np.isclose(analytic, numeric, rtol=rtol, atol=atol):
            raise GradCheckError(f"{opname} {attrs or {}}: direction {k}: analytic {analytic!r} != "
                                 f"numeric {numeric!r} (rtol {rtol}, atol {atol})")

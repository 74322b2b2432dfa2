"""Every gradient rule declared shape-generic, on the cases of ``vjp_cases.CASES`` with the leading
(batch) dim of the inputs made symbolic: it either gives the gradients the static graph gives at
the same shapes (run on the reference interpreter), or autodiff refuses it with a ``GradientError``
that names the op (a case that is not batch-like, e.g. a concat along the batch axis)."""

from __future__ import annotations

import numpy as np
import pytest
from vjp_cases import CASES

from nnc.ir import Builder, DType, GradientError, Graph, Module, interpret, tensor
from nnc.ir.grads import _SHAPE_GENERIC, why_not_shape_generic
from nnc.passes.training.autodiff import grad

# rules the cases must exercise symbolically (not refused): the ones a CNN or an encoder needs
MUST_PASS = {"add", "mul", "sub", "div", "relu", "gelu", "exp", "tanh", "matmul", "gemm", "reduce_sum",
             "reduce_mean", "reduce_max", "softmax", "log_softmax", "layer_norm", "batch_norm", "conv",
             "max_pool", "avg_pool", "reshape", "transpose", "squeeze", "unsqueeze", "split"}


def _module(name: str, operands: list[np.ndarray], attrs: dict, options: dict, symbolic: bool,
            weight_shapes: list | None = None) -> tuple[Module, list[str], list]:
    """``gradcheck.build_op_module``'s graph (loss = sum of each float result times fixed random
    weights; outputs the loss and the inputs' gradients). ``symbolic``: the leading dim is ``N`` on
    every differentiated input of rank >= 2 whose leading size is the first one's, and the weights
    have a 1 where a result dim is symbolic (one row for every batch entry); the static twin takes
    the same weights (``weight_shapes`` from the symbolic one). Returns the module, the
    differentiated inputs and the weights' shapes."""
    m = Module(name)
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    rng = np.random.default_rng(0)
    lead = next(a.shape[0] for a in operands if a.dtype.kind == "f" and a.ndim >= 2)
    vals, wrt = [], []
    for i, a in enumerate(operands):
        if a.dtype.kind == "f" and i not in options.get("const_operands", ()):
            shape = list(a.shape)
            if symbolic and a.ndim >= 2 and shape[0] == lead:
                shape[0] = "N"
            v = g.add_param(f"x{i}", tensor(DType.from_numpy(a.dtype), shape))
            wrt.append(v)
        else:
            v = b.const(a, name=f"c{i}")
        vals.append(v)
    loss, shapes = None, []
    results = [r for r in b.create(name, vals, attrs, n_results=options.get("n_results")).results
               if r.dtype.is_float and r.type.shape is not None]
    for k, r in enumerate(results):
        shape = weight_shapes[k] if weight_shapes else [1 if isinstance(d, str) else d for d in r.type.shape]
        shapes.append(shape)
        w = b.const(rng.standard_normal(shape).astype(r.dtype.numpy))
        term = b.op("reduce_sum", b.op("mul", r, w), keepdims=0)
        loss = term if loss is None else b.op("add", loss, term)
    grads = grad(m, loss, wrt)
    g.set_outputs([loss] + [grads[w] for w in wrt], ["loss"] + [f"d_{w.name}" for w in wrt])
    return m, [w.name for w in wrt], shapes


_PARAMS = [pytest.param(name, i, id=f"{name}-{i}") for name in sorted(CASES) if name in _SHAPE_GENERIC
           for i in range(len(CASES[name]))
           if any(np.asarray(a).dtype.kind == "f" and np.asarray(a).ndim >= 2 for a in CASES[name][i][0])]


@pytest.mark.parametrize("name,i", _PARAMS)
def test_shape_generic_rule_matches_the_static_rule(name: str, i: int):
    case = CASES[name][i]
    operands, attrs = [np.asarray(o) for o in case[0]], case[1]
    options = {k: v for k, v in (case[2] if len(case) > 2 else {}).items() if k in ("const_operands", "n_results")}
    try:
        sym, names, shapes = _module(name, operands, attrs, options, symbolic=True)
    except GradientError as e:
        assert name in str(e) or "broadcast" in str(e), e
        assert name not in MUST_PASS or i > 0, f"{name}: {e}"
        return
    feeds = {f"x{j}": operands[j] for j in range(len(operands)) if f"x{j}" in names}
    got = interpret(sym, feeds)
    assert any(not p.type.is_static for p in sym.main.params)
    want = interpret(_module(name, operands, attrs, options, symbolic=False, weight_shapes=shapes)[0], feeds)
    np.testing.assert_allclose(got["loss"], want["loss"], rtol=1e-12, atol=1e-12)
    for n in names:
        np.testing.assert_allclose(got[f"d_{n}"], want[f"d_{n}"], rtol=1e-10, atol=1e-12, err_msg=n)


def test_the_cases_cover_the_rules_an_encoder_and_a_cnn_need():
    covered = {name for name in MUST_PASS if any(p.values[0] == name for p in _PARAMS)}
    assert covered == MUST_PASS


def test_a_rule_not_declared_shape_generic_says_so():
    from nnc.ir.graph import Op  # noqa: F401  (the check takes any op)

    m = Module("m")
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", tensor("f64", ["N", 4]))
    op = Builder(m, g).create("cumsum", [x], {"axis": 1})
    assert why_not_shape_generic(op) == "its gradient rule needs static shapes"

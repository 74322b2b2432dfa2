"""Dims as formulas (ir/sym_dims.py): SymInt arithmetic, the formula helpers, and the shape evaluation
of a graph whose reshape targets come from Shape -> Gather -> Concat."""

from __future__ import annotations

import numpy as np

from nnc.ir import Builder, Graph, Module, tensor
from nnc.ir.ops.shape import _slice_len
from nnc.ir.sym_dims import SymbolicShapeEvaluator, SymInt, evaluate, expr_of, is_monotone, same, text


def sym(name: str, value: int) -> SymInt:
    return SymInt(value, ("sym", name))


def test_arithmetic_keeps_the_formula_and_the_value() -> None:
    b, s = sym("b", 3), sym("s", 7)
    n = (b * s * 64 - 1) // 4 + 1
    assert int(n) == (3 * 7 * 64 - 1) // 4 + 1 and isinstance(n, SymInt)
    assert evaluate(n.expr, {"b": 2, "s": 5}) == (2 * 5 * 64 - 1) // 4 + 1
    assert text((s - b).expr) == "(s+(b*-1))" and text((2 * b * 3).expr) == "(b*6)"  # constants folded
    assert not isinstance(b * 0, SymInt) and expr_of(5) == ("const", 5)
    assert same((b * s * 4).expr, (s * 2 * b * 2).expr) and not same((b * s).expr, (b + s).expr)


def test_monotone_is_judged_from_the_form() -> None:
    b, s = sym("b", 3), sym("s", 7)

    def ones(e: tuple) -> int:
        return evaluate(e, {"b": 1, "s": 1})

    assert is_monotone((b * (s - 1) * 4).expr, ones)  # s - 1 >= 0 at s = 1, so the product grows
    assert is_monotone(((s + 3) // 2).expr, ones)
    assert not is_monotone(((s - b) * 4).expr, ones)
    assert not is_monotone((s % 4).expr, ones)


def test_slice_length_as_arithmetic_matches_python() -> None:
    class Dim(int):
        pass

    for d in range(6):
        for start in range(-8, 9):
            for end in range(-8, 9):
                for step in (-3, -2, -1, 1, 2, 3):
                    assert _slice_len(Dim(d), start, end, step) == len(range(d)[start:end:step])


def test_reshape_targets_computed_from_shapes_become_formulas() -> None:
    m = Module("heads")
    g = m.add_graph(Graph())
    bld = Builder(m, g)
    x = g.add_param("x", tensor("f32", ["b", "s", 8]))
    shape = bld.op("shape", x)
    b = bld.op("gather", shape, bld.const(np.array([0], np.int64)), axis=0)
    s = bld.op("gather", shape, bld.const(np.array([1], np.int64)), axis=0)
    target = bld.op("concat", b, s, bld.const(np.array([2, 4], np.int64)), axis=0)
    y = bld.op("reshape", x, target)
    z = bld.op("reshape", y, bld.const(np.array([-1, 4], np.int64)))
    g.set_outputs([z], ["z"])
    types = SymbolicShapeEvaluator(m, g).symbolic_types([[sym("b", 3), sym("s", 5), 8]])
    ydims = [expr_of(d) for d in types[id(y)].shape]
    assert ydims == [("sym", "b"), ("sym", "s"), ("const", 2), ("const", 4)]
    rows = expr_of(types[id(z)].shape[0])
    assert evaluate(rows, {"b": 2, "s": 9}) == 2 * 9 * 2

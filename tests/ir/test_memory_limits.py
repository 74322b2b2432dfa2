"""The memory bound (ir/memory_limits.py) and the interpreter's size guard: a tensor beyond the
machine's memory is a typed error naming the value and its size, raised before numpy allocates."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir import Builder, Graph, InputError, Module, interpret, memory_limits, tensor
from nnc.ir.memory_limits import check_allocation, format_bytes, memory_limit, physical_memory_bytes

TIB = 1 << 40


def outer_sum(n: int, m: int, batch: str | int = 1) -> Module:
    """x[batch, n, 1] + y[1, m] -> [batch, n, m]: small inputs, an f32 intermediate of 4*n*m bytes per batch."""
    mod = Module()
    g = mod.add_graph(Graph())
    b = Builder(mod, g)
    x = g.add_param("x", tensor("f32", [batch, n, 1]))
    y = g.add_param("y", tensor("f32", [1, m]))
    s = b.op("add", x, y)
    g.set_outputs([b.op("reduce_sum", s, axes=[1, 2], keepdims=0)], ["total"])
    return mod


def test_physical_memory_is_the_default_bound(monkeypatch):
    monkeypatch.delenv(memory_limits.ENV, raising=False)
    phys = physical_memory_bytes()
    assert phys is not None and phys > 1 << 26  # a Linux machine with more than 64 MiB
    assert memory_limit() == phys


@pytest.mark.parametrize("text, want", [("4096", 4096), ("512M", 512 << 20), ("2GiB", 2 << 30), ("1.5k", 1536)])
def test_env_override(monkeypatch, text, want):
    monkeypatch.setenv(memory_limits.ENV, text)
    assert memory_limit() == want


def test_format_and_check():
    assert format_bytes(3_958_241_859_584) == "3.6 TiB (3,958,241,859,584 bytes)"
    assert format_bytes(17) == "17 B (17 bytes)"
    check_allocation(1 << 20, "%small", InputError)  # fine
    with pytest.raises(InputError, match=r"%huge needs 3\.6 TiB .*more than this machine can give"):
        check_allocation(3_958_241_859_584, "%huge", InputError)


def test_interpreter_refuses_a_3_6_tib_intermediate_before_allocating():
    n = m = 994_873  # 4 * n * m = 3.6 TiB, from two 4 MB inputs
    mod = outer_sum(n, m)
    feeds = {"x": np.zeros((1, n, 1), np.float32), "y": np.zeros((1, m), np.float32)}
    assert 3.5 * TIB < 4 * n * m < 3.7 * TIB
    with pytest.raises(InputError) as err:
        interpret(mod, feeds)
    msg = str(err.value)
    assert "add -> %" in msg and "f32[1,994873,994873]" in msg and "3.6 TiB" in msg, msg


def test_symbolic_dims_are_checked_with_the_bound_sizes(monkeypatch):
    mod = outer_sum(64, 64, batch="N")
    feeds = {"y": np.ones((1, 64), np.float32)}
    monkeypatch.setenv(memory_limits.ENV, "1M")
    small = interpret(mod, {**feeds, "x": np.ones((2, 64, 1), np.float32)})  # 32 KiB intermediate
    np.testing.assert_array_equal(small["total"], [2 * 64 * 64] * 2)
    interpret(mod, {**feeds, "x": np.ones((64, 64, 1), np.float32)})  # exactly the bound: allowed
    with pytest.raises(InputError, match=r"f32\[N,64,64\]\) needs 1\.0 MiB \(1,064,960 bytes\)"):
        interpret(mod, {**feeds, "x": np.ones((65, 64, 1), np.float32)})  # N=65: 65*64*64*4 bytes

"""``index_copy`` (the KV-cache write) on x86 against the interpreter and an independent numpy
formula, and output buffers given by the caller (``CompiledModel.run(feeds, outputs=...)``): an
output bound to its input's buffer is updated in place, rows outside the indices untouched."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, Graph, InputError, Module, interpret, tensor

RNG = np.random.default_rng(5)


def cache_write(symbolic: bool) -> Module:
    """present = index_copy(cache, positions, new) along axis 2, and something reading it."""
    m = Module("t")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    cache = g.add_param("cache", tensor("f32", [2, 3, 10, 4]))
    pos = g.add_param("pos", tensor("i64", ["S"] if symbolic else [2]))
    new = g.add_param("new", tensor("f32", [2, 3, "S" if symbolic else 2, 4]))
    present = b.op("index_copy", cache, pos, new, axis=2)
    g.set_outputs([present, b.op("mul", present, present)], ["present", "square"])
    return m


def numpy_index_copy(x: np.ndarray, idx: np.ndarray, upd: np.ndarray) -> np.ndarray:
    out = x.copy()
    out[:, :, idx] = upd
    return out


@pytest.mark.parametrize("symbolic", [False, True])
def test_index_copy_and_in_place_output(symbolic: bool) -> None:
    m = cache_write(symbolic)
    cm = nnc.compile(m, target="x86", cache=False, quiet=True)
    assert cm.report.get("shapes", {"generic": True})["generic"] is True
    for idx in ([7, 3], [0, 9]) if not symbolic else ([7, 3], [5], [0, 1, 2, 9]):
        idx = np.array(idx)
        f = {"cache": RNG.standard_normal((2, 3, 10, 4), np.float32), "pos": idx,
             "new": RNG.standard_normal((2, 3, len(idx), 4), np.float32)}
        want = numpy_index_copy(f["cache"], idx, f["new"])
        np.testing.assert_array_equal(interpret(m, f)["present"], want)
        got = cm.run(f)  # fresh outputs: the input is left as it was
        np.testing.assert_array_equal(got["present"], want)
        assert not np.shares_memory(got["present"], f["cache"])
        before = f["cache"].copy()
        buf = f["cache"]
        got = cm.run(f, outputs={"present": buf})  # the cache bound as its own present
        assert got["present"] is buf
        np.testing.assert_array_equal(buf, want)
        np.testing.assert_array_equal(got["square"], want * want)  # readers see the written cache
        keep = np.setdiff1d(np.arange(10), idx)
        np.testing.assert_array_equal(buf[:, :, keep], before[:, :, keep])


def test_out_of_range_position_and_bad_output_buffers() -> None:
    cm = nnc.compile(cache_write(False), target="x86", cache=False, quiet=True)
    f = {"cache": np.zeros((2, 3, 10, 4), np.float32), "pos": np.array([10, 0]),
         "new": np.ones((2, 3, 2, 4), np.float32)}
    with pytest.raises(InputError, match="index 10 is out of range"):
        cm.run(f)
    f["pos"] = np.array([1, 2])
    with pytest.raises(InputError, match="given buffer"):
        cm.run(f, outputs={"present": np.zeros((2, 3, 10, 4), np.float64)})
    with pytest.raises(InputError, match="given buffer"):
        cm.run(f, outputs={"present": np.zeros((2, 3, 4, 10), np.float32).transpose(0, 1, 3, 2)})
    with pytest.raises(InputError, match="unknown output"):
        cm.run(f, outputs={"nope": np.zeros(1)})


def test_reference_target_copies_into_given_outputs() -> None:
    m = cache_write(False)
    cm = nnc.compile(m, target="reference")
    f = {"cache": RNG.standard_normal((2, 3, 10, 4), np.float32), "pos": np.array([4, 2]),
         "new": RNG.standard_normal((2, 3, 2, 4), np.float32)}
    want = numpy_index_copy(f["cache"], f["pos"], f["new"])
    buf = np.empty_like(want)
    got = cm.run(f, outputs={"present": buf})
    assert got["present"] is buf
    np.testing.assert_array_equal(buf, want)

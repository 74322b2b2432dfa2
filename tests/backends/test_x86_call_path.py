"""The Python side of one x86 call: the fast path for feeds that are exactly the inputs' arrays
(``executable.exact_feeds``), the cheap data addresses (``data_address``) and the fresh outputs.

Every result is exact (adds and relus of small floats); every bad feed must still raise the
interpreter's ``InputError`` with its message, whichever path it takes.
"""

from __future__ import annotations

import types

import numpy as np
import pytest

import nnc
from nnc.backends.x86.executable import X86Executable, data_address, exact_feeds
from nnc.ir import Builder, Graph, InputError, Module, tensor
from nnc.ir.interpreter import check_inputs


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))


def two_in_two_out() -> Module:
    m = Module("io")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [3, 4]))
    y = g.add_param("y", tensor("f32", [3, 4]))
    g.set_outputs([b.op("add", x, y, name="s"), b.op("relu", x, name="r")], ["s", "r"])
    return m


@pytest.fixture(scope="module")
def cm():
    return nnc.compile(two_in_two_out(), target="x86", threads=1, quiet=True)


def feeds(seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {k: rng.integers(-8, 8, (3, 4)).astype(np.float32) for k in ("x", "y")}


def expect(f: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {"s": f["x"] + f["y"], "r": np.maximum(f["x"], 0)}


def check(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    assert list(got) == list(want)
    for k in want:
        assert got[k].dtype == want[k].dtype and got[k].shape == want[k].shape
        np.testing.assert_array_equal(got[k], want[k])


def test_the_executable_takes_the_fast_path_for_exact_feeds(cm):
    assert isinstance(cm.executable, X86Executable)
    f = feeds(0)
    assert exact_feeds(cm.executable._input_specs, f) is not None
    check(cm.run(f), expect(f))
    s, r = cm(f["x"], f["y"])
    check({"s": s, "r": r}, expect(f))


def test_outputs_are_fresh_arrays_the_next_call_does_not_touch(cm):
    f0, f1 = feeds(1), feeds(2)
    first = cm.run(f0)
    kept = {k: v.copy() for k, v in first.items()}
    second = cm.run(f1)
    check(first, kept)
    check(second, expect(f1))
    assert all(not np.shares_memory(first[k], second[k]) for k in first)
    assert all(v.flags.owndata and v.flags.writeable for v in second.values())


def test_non_contiguous_read_only_and_other_mappings_give_the_same_results(cm):
    f = feeds(3)
    wide = np.zeros((3, 8), np.float32)
    wide[:, ::2] = f["x"]
    fortran = np.asfortranarray(f["y"])
    assert not wide[:, ::2].flags.c_contiguous and not fortran.flags.c_contiguous
    check(cm.run({"x": wide[:, ::2], "y": fortran}), expect(f))
    ro = {k: v.copy() for k, v in f.items()}
    for v in ro.values():
        v.setflags(write=False)
    check(cm.run(ro), expect(f))
    proxy = types.MappingProxyType(f)  # not a dict: the full check, same answer
    assert exact_feeds(cm.executable._input_specs, proxy) is None
    check(cm.run(proxy), expect(f))


def _message(inputs, f) -> str:
    with pytest.raises(InputError) as e:
        check_inputs(inputs, f)
    return str(e.value)


@pytest.mark.parametrize("bad", ["dtype", "shape", "missing", "extra", "big_endian", "list", "rank"])
def test_bad_feeds_raise_the_interpreters_error(cm, bad):
    f = feeds(4)
    if bad == "dtype":
        f["x"] = f["x"].astype(np.float64)
    elif bad == "shape":
        f["y"] = np.zeros((4, 3), np.float32)
    elif bad == "missing":
        del f["y"]
    elif bad == "extra":
        f["z"] = f["x"]
    elif bad == "big_endian":
        f["x"] = f["x"].astype(">f4")
    elif bad == "list":
        f["x"] = f["x"].tolist()  # float64 once numpy reads it
    else:
        f["y"] = np.zeros((3, 4, 1), np.float32)
    assert exact_feeds(cm.executable._input_specs, f) is None
    want = _message(cm.executable.interface.inputs, f)
    with pytest.raises(InputError) as e:
        cm.run(f)
    assert str(e.value) == want


def test_given_output_buffers_still_take_the_checked_route(cm):
    f = feeds(5)
    buf = np.full((3, 4), 7.0, np.float32)
    out = cm.run(f, outputs={"r": buf})
    assert out["r"] is buf
    check(out, expect(f))
    with pytest.raises(InputError, match="output 1"):
        cm.run(f, outputs={"r": np.zeros((3, 4), np.float64)})


@pytest.mark.parametrize("make", [
    lambda: np.arange(12, dtype=np.float32).reshape(3, 4),
    lambda: np.frombuffer(bytes(64), dtype=np.int32),  # read-only
    lambda: np.zeros((0, 5), np.float32),  # no byte to point at
    lambda: np.zeros((), np.int64),
    lambda: np.arange(20, dtype=np.float64)[4:],  # a view at an offset
])
def test_data_address_is_the_arrays_data_pointer(make):
    a = make()
    assert data_address(a) == a.ctypes.data


def test_exact_feeds_needs_static_tensor_inputs():
    assert exact_feeds(None, {"x": np.zeros(1, np.float32)}) is None


def test_a_loaded_library_takes_the_same_route(cm, tmp_path):
    cm.save(tmp_path / "io.so")
    lib = nnc.load(tmp_path / "io.so")
    f = feeds(6)
    check(lib.run(f), expect(f))
    assert exact_feeds(lib.executable._input_specs, f) is not None
    first = lib.run(f)
    second = lib.run(feeds(7))
    check(first, expect(f))
    assert not np.shares_memory(first["s"], second["s"])
    check(lib.run({"x": np.asfortranarray(f["x"]), "y": f["y"]}), expect(f))
    bad = {**f, "y": f["y"].astype(np.float64)}
    with pytest.raises(InputError) as e:
        lib.run(bad)
    assert str(e.value) == _message(lib.executable.interface.inputs, bad)


def test_calling_with_a_dict_says_to_use_run(cm):
    """``cm(x, y)`` takes positional arrays; a dict there used to fail deep in the feed check with
    "unsupported dtype object". It is a one-line error naming ``run``."""
    f = feeds(5)
    with pytest.raises(InputError, match=r"positional arrays \(x, y\); use run\(feeds\)"):
        cm(f)
    s, r = cm(f["x"], f["y"])
    check({"s": s, "r": r}, expect(f))

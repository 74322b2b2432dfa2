"""Control flow and sequences on x86: host steps between compiled segments, bodies compiled once
(``backends/x86/host_steps.py`` on ``segments.py``), checked against onnxruntime."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import nnc
from nnc.backends.x86.segments import Segment, SegmentedExecutable
from nnc.ir import Builder, Graph, Module, tensor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "frontends"))
from onnx_cf_models import loop_until, nested_if_in_loop, run_onnxruntime, scan_rnn  # noqa: E402


def _executables(exe) -> list:
    """Every compiled executable under a segmented one: its segments' and its regions', at any depth."""
    out = []
    for piece in exe.pieces:
        found = [piece.exe] if isinstance(piece, Segment) else \
            [r.exe for r in getattr(piece.step, "regions", []) if r.exe is not None]
        for e in found:
            out.extend(_executables(e) if isinstance(e, SegmentedExecutable) else [e])
    return out


def test_one_compile_serves_every_trip_count():
    model = nested_if_in_loop()
    cm = nnc.compile(model, target="x86", quiet=True)
    exe = cm.executable
    assert isinstance(exe, SegmentedExecutable)
    exes = _executables(exe)
    before = [id(e) for e in exes]
    # code compiled at compile time: shape-generic for the 'd'-sized values, static for the parity test;
    # none compiled per input signature
    kinds = [type(e).__name__ for e in exes]
    assert set(kinds) == {"GenericExecutable", "X86Executable"}, kinds
    compiles = exe.compiles
    for trips, d in [(0, 3), (1, 5), (4, 5), (9, 2)]:
        x = np.random.default_rng(trips).standard_normal(d).astype(np.float32)
        feeds = {"x": x, "M": np.array(trips, np.int64)}
        np.testing.assert_allclose(cm.run(feeds)["acc"], run_onnxruntime(model, feeds)[0], rtol=1e-6)
    assert [id(e) for e in _executables(exe)] == before  # the same executables
    assert exe.compiles == compiles  # nothing compiled per run
    steps = [p for p in cm.report["x86"]["segments"]["pieces"] if "host_step" in p]
    assert len(steps) == 1 and steps[0]["host_step"].startswith("loop")


@pytest.mark.parametrize("x", [[1.0, 2.0, 3.0], [0.125, 0.25, 0.0]])
def test_data_dependent_loop(x):
    model = loop_until(limit=10.0)
    feeds = {"x": np.array(x, np.float32)}
    got = nnc.compile(model, target="x86", quiet=True).run(feeds)
    want = run_onnxruntime(model, feeds)
    np.testing.assert_array_equal(got["s"], want[0])
    np.testing.assert_array_equal(got["ss"], want[1])


def test_scan_rnn_body_compiles_once_for_every_length():
    model = scan_rnn(hidden=4)
    cm = nnc.compile(model, target="x86", quiet=True)
    exes = _executables(cm.executable)
    assert [type(e).__name__ for e in exes] == ["X86Executable"]  # the body (static: one step); the host slices, stacks
    compiles = cm.executable.compiles
    rng = np.random.default_rng(0)
    for length in (1, 3, 16):
        feeds = {"h0": rng.standard_normal(4).astype(np.float32),
                 "xs": rng.standard_normal((length, 4)).astype(np.float32)}
        got = cm.run(feeds)
        want = run_onnxruntime(model, feeds)
        np.testing.assert_allclose(got["h_last"], want[0], rtol=1e-5, atol=1e-6)  # f32 tanh/matmul rounding
        np.testing.assert_allclose(got["ys"], want[1], rtol=1e-5, atol=1e-6)
    assert _executables(cm.executable) == exes and cm.executable.compiles == compiles


def test_tensor_ops_around_a_host_op_run_in_compiled_segments():
    m = Module(name="seg")
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", tensor("f32", [4]))
    b = Builder(m, g)
    y = b.op("relu", x, name="y")
    s = b.op("split_to_sequence", y, axis=0, keepdims=0, name="s")
    n = b.op("sequence_length", s, name="n")
    last = b.op("sequence_at", s, b.const(np.array(-1, np.int64), name="minus1"), name="last")
    z = b.op("mul", last, b.const(np.array(3.0, np.float32), name="three"), name="z")
    g.set_outputs([n, z], ["n", "z"])
    cm = nnc.compile(m, target="x86", quiet=True)
    pieces = cm.report["x86"]["segments"]["pieces"]
    assert [p.get("host_step", "segment").split(" ")[0] for p in pieces] == \
        ["segment", "split_to_sequence", "sequence_length", "sequence_at", "segment"]
    out = cm.run({"x": np.array([1, -2, 3, -4], np.float32)})
    assert out["n"] == 4 and out["z"] == np.float32(0.0)
    out = cm.run({"x": np.array([1, -2, 3, 5], np.float32)})
    assert out["z"] == np.float32(15.0)


def test_fixing_a_dim_binds_it_inside_the_regions_too(tmp_path):
    model = nested_if_in_loop()
    cm = nnc.compile(model, target="x86", dims={"d": 4}, quiet=True)
    feeds = {"x": np.arange(4, dtype=np.float32), "M": np.array(5, np.int64)}
    np.testing.assert_allclose(cm.run(feeds)["acc"], run_onnxruntime(model, feeds)[0], rtol=1e-6)
    with pytest.raises(nnc.TargetError, match="runs as segments"):
        cm.save(str(tmp_path / "m.so"))

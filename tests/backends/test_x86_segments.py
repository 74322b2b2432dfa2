"""Segmented execution on x86 (``backends/x86/segments.py``): a graph with a host-sync op runs as
compiled segments with host steps between them, as one executable to the driver.

NonZero is the host-sync op used here (its kernels are tested with the other data-dependent ops in
test_x86_data_dependent.py). Expected values come from numpy.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnc
from nnc import cli
from nnc.backends.x86.segments import HOST_SYNC, SegmentedExecutable, register_host_sync
from nnc.ir import TargetError

RNG = np.random.default_rng(5)


def relu_nonzero_square(shape: list) -> onnx.ModelProto:
    """x -> relu -> NonZero -> cast -> square: compute before and after the host step."""
    nodes = [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["idx"]),
             helper.make_node("Cast", ["idx"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "f"], ["sq"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                          [helper.make_tensor_value_info("idx", TensorProto.INT64, None),
                           helper.make_tensor_value_info("sq", TensorProto.FLOAT, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def expected(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    idx = np.array(np.nonzero(np.maximum(x, 0)), dtype=np.int64).reshape(x.ndim, -1)
    return idx, idx.astype(np.float32) ** 2


def check(cm, x: np.ndarray) -> None:
    out = cm.run({"x": x})
    idx, sq = expected(x)
    assert out["idx"].dtype == np.int64 and out["idx"].shape == idx.shape
    np.testing.assert_array_equal(out["idx"], idx)
    np.testing.assert_array_equal(out["sq"], sq)


def test_static_model_runs_as_segments_and_reports_them():
    cm = nnc.compile(relu_nonzero_square([3, 5]), target="x86", cache=False, quiet=True)
    assert isinstance(cm.executable, SegmentedExecutable)
    seg = cm.report["x86"]["segments"]
    assert seg["compiled"] == 2 and seg["host_steps"] == 1
    assert "nonzero" in seg["reason"] and "depends on data" in seg["reason"]
    step = [p for p in seg["pieces"] if "host_step" in p][0]
    assert step["kernel"] == "nonzero_bounded" and step["bound"] == "i64[2,15]"
    for x in (RNG.standard_normal((3, 5)).astype(np.float32), -np.ones((3, 5), np.float32),
              np.ones((3, 5), np.float32)):  # some, none (count 0), all
        check(cm, x)


def test_one_compile_serves_every_size_and_count():
    cm = nnc.compile(relu_nonzero_square(["N", 4]), target="x86", cache=False, quiet=True)
    assert cm.report["shapes"] == {"generic": True, "symbols": ["N"]}
    exe = cm.executable
    assert exe.compiles == 3  # segment, the NonZero kernel, segment
    assert all(p["generic"] for p in cm.report["x86"]["segments"]["pieces"])
    counts = set()
    for n in (1, 3, 7, 0, 20):
        for x in (RNG.standard_normal((n, 4)).astype(np.float32), np.zeros((n, 4), np.float32)):
            check(cm, x)
            counts.add(int(np.count_nonzero(x > 0)))
    assert len(counts) >= 4 and exe.compiles == 3


def test_segments_use_the_compile_cache(tmp_path):
    model = relu_nonzero_square([2, 3])
    first = nnc.compile(model, target="x86", cache_dir=str(tmp_path), quiet=True)
    again = nnc.compile(model, target="x86", cache_dir=str(tmp_path), quiet=True)
    assert first.executable.cache_status == "miss" and again.executable.cache_status == "hit"
    check(again, RNG.standard_normal((2, 3)).astype(np.float32))


def test_saving_a_segmented_model_is_a_typed_error(tmp_path):
    cm = nnc.compile(relu_nonzero_square([2, 3]), target="x86", cache=False, quiet=True)
    with pytest.raises(TargetError, match="segments"):
        cm.save(tmp_path / "m.so")


def test_cli_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "m.onnx"
    onnx.save(relu_nonzero_square(["N", 4]), path)
    x = RNG.standard_normal((6, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", x)
    status = cli.main(["run", str(path), "--target", "x86", "--input", f"x={tmp_path / 'x.npy'}",
                       "--output-dir", str(tmp_path / "out"), "-q"])
    assert status == 0, capsys.readouterr()
    np.testing.assert_array_equal(np.load(tmp_path / "out" / "idx.npy"), expected(x)[0])


def test_the_registry_refuses_a_second_registration():
    assert "nonzero" in HOST_SYNC
    with pytest.raises(ValueError, match="twice"):
        register_host_sync("nonzero", why="again")(lambda op, ctx: None)


def test_a_segment_without_shape_generic_kernels_compiles_per_signature():
    """CumSum has no shape-generic kernel: the segment after the NonZero compiles per count."""
    nodes = [helper.make_node("NonZero", ["x"], ["nz"]), helper.make_node("Cast", ["nz"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("CumSum", ["f", "ax"], ["y"])]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [6])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                          initializer=[onnx.numpy_helper.from_array(np.array(1, np.int64), "ax")])
    cm = nnc.compile(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), target="x86", cache=False,
                     quiet=True)
    piece = cm.report["x86"]["segments"]["pieces"][-1]
    assert "no shape-generic kernel" in piece["per_signature"]
    for x in ([1, 0, 2, 0, 3, 0], [0] * 6, [1] * 6, [1, 0, 2, 0, 3, 0]):
        x = np.array(x, np.float32)
        np.testing.assert_array_equal(cm.run({"x": x})["y"], np.cumsum(np.array(np.nonzero(x), np.float32), axis=1))
    assert cm.executable.compiles == 4  # the NonZero kernel, then the segment for counts 3, 0 and 6


def test_memory_of_each_generic_segment_at_the_sizes_met():
    cm = nnc.compile(relu_nonzero_square(["N", 4]), target="x86", cache=False, quiet=True)
    x = np.ones((5, 4), np.float32)
    mem = cm.executable.memory_at({"x": x})
    assert [m["segment"] for m in mem] == [0, 1]
    assert mem[1]["dims"] == {"idx_1": 20}  # the count after the host step: every element
    assert all(m["lower_bound_bytes"] <= m["arena_bytes"] for m in mem)
    assert [s["segment"] for s in cm.executable.shapes_seen()] == [0, 1]


def test_a_new_kind_of_host_sync_op_plugs_in(monkeypatch):
    """The contract control flow builds on: a registered builder gets the op and a context whose
    ``compile`` is the x86 path; its step runs between the compiled segments."""
    from nnc.backends import x86
    from nnc.backends.x86.segments import HostSync, symbolic_type
    from nnc.ir import Builder, Graph, Module, tensor

    class Toy:  # neg as x * -1, compiled as a module of its own (a nested graph, for control flow)
        def __init__(self, op, ctx):
            self.inputs = list(op.operands)
            m = Module("toy")
            g = m.add_graph(Graph())
            b = Builder(m, g)
            g.set_outputs([b.op("mul", g.add_param("a", symbolic_type(op.operands[0])), b.const(np.float32(-1)))],
                          ["out"])
            self.exe = ctx.compile(m)
            self.runs = 0

        def run(self, args):
            self.runs += 1
            return [self.exe.run({"a": args[0]})["out"]]

        def report(self):
            return {"runs": self.runs}

    monkeypatch.setitem(HOST_SYNC, "neg", HostSync("neg", "a toy host step", Toy))
    m = Module("t")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", ["N", 3]))
    y = b.op("add", b.op("neg", b.op("exp", x)), b.const(np.float32(1.0)))
    g.set_outputs([y], ["y"])
    exe = x86.compile(m, {"cache": False, "quiet": True})
    assert isinstance(exe, SegmentedExecutable) and exe.compiles == 3
    assert exe.report()["segments"]["reason"].endswith("a toy host step")
    for n in (1, 4):
        a = RNG.standard_normal((n, 3)).astype(np.float32)
        # f32 exp is within a few ulp of numpy's; 1 - e^x cancels, so the error is absolute (~1e-7)
        np.testing.assert_allclose(exe.run({"x": a})["y"], 1 - np.exp(a), rtol=1e-6, atol=1e-6)
    assert [p for p in exe.report()["segments"]["pieces"] if "host_step" in p][0]["runs"] == 2

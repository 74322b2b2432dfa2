"""The x86 kernel profiler: counters read inside the entry point, a table, a Chrome trace."""

from __future__ import annotations

import json
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.backends.x86.profile import kernel_times_from_trace
from nnc.ir import TargetError

CNN = "examples/cnn.onnx"


def _feeds(cm, seed=0):
    rng = np.random.default_rng(seed)
    return {n: rng.standard_normal(t.shape).astype(np.float32) for n, t in cm.input_types.items()}


def _conv_stack(layers=4, channels=64, size=112) -> onnx.ModelProto:
    """A ResNet-style stack of 3x3 convs with ReLU: ~0.92 GFLOP per layer (as a direct conv; the
    Winograd path does 2.25x fewer multiplies), ~1.1 ms per layer on the 2-core machine."""
    rng = np.random.default_rng(1)
    nodes, inits, x = [], [], "x"
    for i in range(layers):
        w = (rng.standard_normal((channels, channels, 3, 3)) * 0.05).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes.append(helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1], name=f"conv{i}"))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        x = f"r{i}"
    g = helper.make_graph(nodes, "convs", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                         [1, channels, size, size])],
                          [helper.make_tensor_value_info(x, TensorProto.FLOAT, [1, channels, size, size])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.fixture(scope="module")
def cnn():
    return nnc.compile(CNN, target="x86", cache=False)


def test_profile_describes_every_kernel_and_matches_the_model(cnn):
    feeds = _feeds(cnn)
    p = cnn.profile(feeds, runs=5)
    exe, ops = cnn._profile_twin
    assert [f"{k.result}" for k in p.kernels] == [op.results[0].name for op in ops]
    assert len(p.kernels) == len(exe.interface.kernels) > 0
    assert all(k.seconds > 0 for k in p.kernels)
    # the twin computes what the model computes
    ref, out = cnn.run(feeds), exe.run(feeds)
    for name in ref:
        np.testing.assert_array_equal(out[name], ref[name])
    # FLOPs of a conv kernel, computed here from its shapes: 2 * out elements * (C_in * kh * kw)
    conv = next(k for k in p.kernels if "conv" in k.ops)
    op = ops[conv.index]
    w = next(v for v in op.operands if len(v.type.shape) == 4 and v.type.shape[0] == op.results[0].type.shape[1])
    assert conv.flops == 2 * op.results[0].type.numel * int(np.prod(w.type.shape[1:]))
    assert conv.gflops == pytest.approx(conv.flops / conv.seconds / 1e9)
    assert sum(k.share for k in p.kernels) == pytest.approx(p.kernel_sum / p.total)
    # the twin is built once
    cnn.profile(feeds, runs=1)
    assert cnn._profile_twin[0] is exe


def test_model_without_profile_option_has_no_counters(cnn):
    with pytest.raises(TargetError, match="without profile=True"):
        cnn.executable.run_profiled(_feeds(cnn))
    assert cnn.options.profile is None


def test_table_is_sorted_by_time_and_names_the_slowest(cnn):
    p = cnn.profile(_feeds(cnn), runs=3)
    table = p.to_table()
    rows = [line for line in table.splitlines()[2:] if line[:4].strip().isdigit()]
    times = [float(line.split()[1]) for line in rows]
    assert times == sorted(times, reverse=True)
    slowest = max(p.kernels, key=lambda k: k.seconds)
    assert f"%{slowest.result}" in rows[0]
    assert f"{len(p.kernels)} kernels" in table


def test_chrome_trace_has_one_span_per_kernel_inside_the_entry(cnn, tmp_path):
    p = cnn.profile(_feeds(cnn), runs=3)
    path = tmp_path / "trace.json"
    p.save_trace(path)
    trace = json.loads(path.read_text())
    spans = [e for e in trace["traceEvents"] if e.get("cat") == "kernel"]
    entry = next(e for e in trace["traceEvents"] if e.get("cat") == "entry")
    assert len(spans) == len(p.kernels)
    assert all(e["ph"] == "X" and e["tid"] == 0 for e in spans)
    starts = [e["ts"] for e in spans]
    assert starts == sorted(starts)  # kernels run in code order on the main thread
    assert all(0 <= e["ts"] and e["ts"] + e["dur"] <= entry["dur"] + 1e-3 for e in spans)
    times = kernel_times_from_trace(path)
    assert times == {k.result: pytest.approx(k.seconds) for k in p.kernels}


def test_kernel_times_add_up_to_the_run_time():
    """On a model whose run takes several ms: the kernels' sum is within 10% of the entry point's
    time (the same clock), and of the run time measured from Python with the model's own code."""
    cm = nnc.compile(_conv_stack(layers=10), target="x86", cache=False)
    feeds = _feeds(cm)
    ratios, walls = _interleaved(cm, feeds)
    assert min(walls) > 5e-3, "the model is too small for a meaningful comparison"
    # each round's kernel sum over the plain runs next to it (load changes slowly against a round);
    # the median round, as a burst of load from elsewhere spoils a round, not the median
    assert float(np.median(ratios)) == pytest.approx(1.0, rel=0.10), ratios


def _interleaved(cm, feeds, rounds=5):
    """Profiles (3 runs each) and plain runs of the model's own code, taken in turns so that a change
    of load on a shared machine affects both; each profile's kernel times are checked against its
    entry point's time as it comes, run by run. Returns each round's kernel sum over the median of
    its plain runs, and every plain run's time."""
    cm.run(feeds)
    ratios, walls = [], []
    for _ in range(rounds):
        p = cm.profile(feeds, runs=3)
        # run by run (the same run's kernels and entry point): load cannot split the two sides
        assert p.coverage == pytest.approx(1.0, rel=0.10), p.run_coverage
        assert all(0 < c <= 1.0 for c in p.run_coverage)  # kernels lie inside the entry point
        plain = []
        for _ in range(3):
            t0 = time.perf_counter()
            cm.run(feeds)
            plain.append(time.perf_counter() - t0)
        ratios.append(p.kernel_sum / float(np.median(plain)))
        walls += plain
    return ratios, walls


def test_reference_target_has_no_profiler():
    cm = nnc.compile(CNN, target="reference")
    with pytest.raises(TargetError, match="no kernel profiler"):
        cm.profile(_feeds(cm))


def test_profile_option_is_x86_only():
    with pytest.raises(nnc.ir.NncError, match="--target x86 only"):
        nnc.compile(CNN, target="reference", profile=True)


def test_code_without_profile_has_no_counters_and_with_it_has():
    plain = nnc.compile(_conv_stack(layers=1), target="x86", keep_llvm=True, threads=2).emit("llvm").decode()
    timed = nnc.compile(CNN, target="x86", keep_llvm=True, profile=True, threads=1).emit("llvm").decode()
    assert "nnc_pool" in plain  # the pool is there, and not instrumented
    assert "nnc_profile" not in plain and "clock_gettime" not in plain
    assert "@nnc_profile" in timed and timed.count("call i32 @clock_gettime") == 2 * (len(
        nnc.compile(CNN, target="x86", keep_llvm=True).executable.interface.kernels) + 1)
    assert "nnc_profile_threads" not in timed  # one thread: no pool to time


def test_profile_twin_from_the_compilation_cache(tmp_path):
    """A cache hit keeps no IR: the profiler rebuilds the kernel list from the prepared module."""
    first = nnc.compile(CNN, target="x86", cache_dir=str(tmp_path))
    a = first.profile(_feeds(first), runs=2)
    again = nnc.compile(CNN, target="x86", cache_dir=str(tmp_path))
    b = again.profile(_feeds(again), runs=2)
    assert again._profile_twin[0].cache_status == "hit"
    assert [(k.result, k.ops, k.shapes, k.flops) for k in a.kernels] == \
        [(k.result, k.ops, k.shapes, k.flops) for k in b.kernels]


def test_pool_threads_get_tracks_with_their_chunks_inside_the_kernel():
    cm = nnc.compile(_conv_stack(layers=2), target="x86", cache=False, threads=2)
    p = cm.profile(_feeds(cm), runs=3)
    events = p.to_chrome_trace()["traceEvents"]
    kernels = {e["args"]["index"]: e for e in events if e.get("cat") == "kernel"}
    chunks = [e for e in events if e.get("cat") == "chunks"]
    assert {e["tid"] for e in chunks} <= {0, 1} and any(e["tid"] == 1 for e in chunks)  # the worker took work
    assert any(e["ph"] == "M" and e["tid"] == 1 and e["args"]["name"] == "pool worker 1" for e in events)
    for e in chunks:
        k = kernels[e["args"]["kernel"]]
        # the job is published after the kernel's start stamp; the caller waits for the last chunk
        assert k["ts"] <= e["ts"] and e["ts"] + e["dur"] <= k["ts"] + k["dur"]
        assert 0 < e["args"]["busy_us"] <= e["dur"] + 1e-3
    single = nnc.compile(_conv_stack(layers=1, size=28), target="x86", cache=False, threads=1)
    assert single.profile(_feeds(single), runs=1).thread_spans == []


def test_a_model_compiled_with_profile_is_its_own_twin():
    cm = nnc.compile(CNN, target="x86", cache=False, profile=True)
    p = cm.profile(_feeds(cm), runs=2)
    assert cm._profile_twin[0] is cm.executable and len(p.kernels) == len(cm.executable.interface.kernels)


def test_models_that_cannot_be_profiled_say_why(tmp_path):
    cm = nnc.compile(CNN, target="x86")
    cm.save(tmp_path / "cnn.so")
    loaded = nnc.load(tmp_path / "cnn.so")
    with pytest.raises(TargetError, match="loaded from a library"):
        loaded.profile(_feeds(loaded))
    symbolic = nnc.compile("examples/mlp.onnx", target="x86")  # input f32[N,784]: compiled per shape
    with pytest.raises(TargetError, match="symbolic.*--dim N=1"):
        symbolic.profile({"x": np.zeros((2, 784), np.float32)})

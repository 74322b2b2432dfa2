"""The ASIC's host partition: the ops the chip cannot take (hard-swish, hard-sigmoid, the
squeeze-excite multiply, float global average pooling, quantize/dequantize) are compiled by the x86
backend and run by it, give the same results as the interpreter path, and their time on the
preset's host CPU model is in the report, the text table, the trace and the total latency."""

from __future__ import annotations

import math

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.backends import asic
from nnc.backends.asic.export import chrome_trace, layer_chart_svg, text_table
from nnc.backends.asic.sim.runner import run_program
from nnc.ir import Builder, DType, Graph, Module, TargetError, TensorType, UnsupportedOpError, interpret

# a host CPU with round numbers so expected times are computed by hand below
# vector_activations off: the activations and squeeze-excite multiplies stay float, on the host
# host_stream_bands 1: the serial timeline (test_the_input_streams_in_bands: the presets' streaming)
# input_quantize host: the input quantize is a host op too (the presets quantize on the chip:
# test_asic_input_quantize.py)
HOST = {"host_gflops": 10.0, "host_gbps": 5.0, "host_op_overhead_ns": 100.0, "vector_activations": False,
        "host_stream_bands": 1, "input_quantize": "host"}


def _se_onnx(path: str) -> None:
    """conv -> hard-swish -> squeeze-excite (GAP, 1x1 conv, relu, 1x1 conv, hard-sigmoid, multiply)
    -> 1x1 conv, as in a MobileNetV3 block."""
    rng = np.random.default_rng(3)

    def init(name: str, shape: tuple, scale: float) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * scale).astype(np.float32), name)

    inits = [init("w1", (8, 3, 3, 3), 0.4), init("b1", (8,), 0.1), init("wr", (4, 8, 1, 1), 0.5),
             init("br", (4,), 0.1), init("we", (8, 4, 1, 1), 0.5), init("be", (8,), 0.1),
             init("w2", (6, 8, 1, 1), 0.4)]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("HardSwish", ["c1"], ["h1"]),
             helper.make_node("GlobalAveragePool", ["h1"], ["s"]),
             helper.make_node("Conv", ["s", "wr", "br"], ["r"]), helper.make_node("Relu", ["r"], ["rr"]),
             helper.make_node("Conv", ["rr", "we", "be"], ["e"]),
             helper.make_node("HardSigmoid", ["e"], ["gate"], alpha=1 / 6, beta=0.5),
             helper.make_node("Mul", ["h1", "gate"], ["scaled"]),
             helper.make_node("Conv", ["scaled", "w2"], ["y"])]
    graph = helper.make_graph(nodes, "se", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 12, 12])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, 12, 12])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def se_model(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("se") / "se.onnx")
    _se_onnx(path)
    rng = np.random.default_rng(4)
    calib = [{"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)} for _ in range(3)]
    x = {"x": rng.standard_normal((1, 3, 12, 12)).astype(np.float32)}
    return path, calib, x


def _compile(path, calib, **options):
    return nnc.compile(path, target="asic", calibration=calib, **{"asic_config": HOST, **options})


def test_host_ops_run_on_x86_and_match_the_interpreter(se_model):
    path, calib, x = se_model
    cm = _compile(path, calib)
    exe = cm.executable
    ops = [op.opname for seg in exe.host for op in seg.ops]
    assert {"hard_swish", "hard_sigmoid", "mul", "quantize", "dequantize"} <= set(ops)
    assert ops == cm.report["asic"]["host_ops"]  # every host op is in exactly one segment, in order
    assert all(seg.engine == "x86" and seg.executable is not None for seg in exe.host)
    got = cm.run(x)["y"]
    # the same program with its host ops on the reference interpreter, and the whole integer graph on
    # the interpreter: bit-identical (x86's f32 hard-swish/hard-sigmoid/dequantize round like numpy's
    # here, and every float value is requantized to int8 before the chip reads it)
    on_interp = run_program(exe.program, exe.module, x, exe.timeline, host=None)["y"]
    assert np.array_equal(got, on_interp)
    assert np.array_equal(got, interpret(exe.module, x)["y"])


def test_each_host_segment_matches_the_interpreter_op_by_op(se_model):
    path, calib, x = se_model
    exe = _compile(path, calib).executable
    interp = nnc.ir.Interpreter(exe.module)
    rng = np.random.default_rng(5)
    for seg in exe.host:
        args = []
        for v in seg.inputs:  # random inputs of the right type, including values outside calibration
            shape = tuple(int(d) for d in v.type.shape)
            if v.type.dtype == DType.i8:
                args.append(rng.integers(-128, 128, shape).astype(np.int8))
            else:
                args.append((rng.standard_normal(shape) * 4).astype(np.float32))
        assert seg.engine == "x86"
        ref = dict(zip([id(v) for v in seg.inputs], args))
        for op in seg.ops:
            arrays = [ref[id(v)] if id(v) in ref else interp.run_op(v.producer, [])[0] for v in op.operands]
            for r, a in zip(op.results, interp.run_op(op, arrays)):
                ref[id(r)] = a
        want = [ref[id(v)] for v in seg.outputs]
        got = seg.run(args, interp, None)
        for g, w in zip(got, want):
            assert g.dtype == w.dtype and g.shape == w.shape
            if g.dtype == np.float32:
                # the reference evaluates hard-swish x * clip(x / 6 + 0.5, 0, 1) in f64 and rounds once;
                # x86 in f32, where x / 6 + 0.5 cancels near x = -3: an absolute error up to |x| * 2^-23
                # (observed: 8 ulps of a result near 0), plus the result's own rounding
                tol = 2.0 ** -23 * np.abs(w).max() + np.spacing(np.abs(w))
                assert np.all(np.abs(g.astype(np.float64) - w) <= tol), [op.opname for op in seg.ops]
            else:  # the requantized int8 values (what the chip reads) agree exactly on these inputs
                assert np.array_equal(g, w), [op.opname for op in seg.ops]


def test_host_time_is_in_the_report_and_the_latency(se_model):
    path, calib, _ = se_model
    cm = _compile(path, calib)
    r = cm.report["asic"]
    h = r["host"]
    assert h["model"] == "roofline" and h["cpu"] and h["gflops"] == 10.0 and h["gbps"] == 5.0
    assert len(h["ops"]) == len(r["host_ops"]) > 0
    for o in h["ops"]:
        assert o["cycles"] > 0 and o["us"] > 0 and o["engine"] == "x86"
        assert o["end_cycle"] - o["start_cycle"] == o["cycles"]
    assert h["cycles"] == sum(o["cycles"] for o in h["ops"]) > 0
    # hard-swish on f32[1,8,12,12] (1152 elements): 5 flops per element, reads and writes 4 bytes each:
    # max(5760 / 10 GFLOP/s, 9216 B / 5 GB/s) + 100 ns = max(576, 1843.2) + 100 ns -> 1944 cycles at 1 GHz
    hs = [o for o in h["ops"] if o["op"] == "hard_swish"]
    assert len(hs) == 1 and hs[0]["flops"] == 5760 and hs[0]["bytes"] == 9216 and hs[0]["cycles"] == 1944
    assert hs[0]["bound"] == "memory"
    # the timeline is serial: chip segments, transfers and host compute add up to the latency
    tl = cm.executable.timeline
    chip = sum(int(tm.cycles - tm.start.min()) for tm in tl.segments)
    assert r["cycles"] == chip + r["transfers"]["cycles"] + h["cycles"]
    assert math.isclose(h["share"], h["cycles"] / r["cycles"])
    assert h["exposed_cycles"] == h["cycles"] + r["transfers"]["cycles"]  # nothing overlaps the chip
    # host ops and chip layers do not overlap
    spans = sorted([(o["start_cycle"], o["end_cycle"]) for o in h["ops"]]
                   + [(la["start_cycle"], la["end_cycle"]) for la in r["layers"]])
    for o in h["ops"]:
        assert not any(s < o["end_cycle"] and o["start_cycle"] < e for s, e in spans
                       if (s, e) != (o["start_cycle"], o["end_cycle"]))
    # a host twice as fast (compute and memory) at the same overhead: less host time, lower latency
    fast = _compile(path, calib, asic_config={**HOST, "host_gflops": 20.0, "host_gbps": 10.0},
                    functional=False).report["asic"]
    assert fast["host"]["cycles"] < h["cycles"] and fast["cycles"] < r["cycles"]


def test_the_input_streams_in_bands(se_model):
    """The input quantize makes its rows in order, so it hands them over in bands: the chip starts when
    the first band is there and each load of the input waits for the band holding its last byte."""
    path, calib, x = se_model
    runs = {b: _compile(path, calib, asic_config={**HOST, "host_stream_bands": b}) for b in (1, 4)}
    serial, streamed = runs[1].report["asic"], runs[4].report["asic"]
    assert np.array_equal(runs[1].run(x)["y"], runs[4].run(x)["y"])
    assert streamed["cycles"] < serial["cycles"]
    assert streamed["host"]["cycles"] == serial["host"]["cycles"]  # the same host work, overlapped
    assert streamed["host"]["exposed_cycles"] < serial["host"]["exposed_cycles"]
    bands = [t for t in streamed["transfers"]["list"] if t["what"].startswith("to chip (band")]
    assert len(bands) == 4 and sum(t["bytes"] for t in bands) == 3 * 12 * 12  # the int8 input, once
    # the first host op (the input quantize) makes band b by (b + 1) / 4 of its time; the link is serial
    q = streamed["host"]["ops"][0]
    assert q["op"] == "quantize"
    prev = q["start_cycle"]
    for b, t in enumerate(bands):
        assert t["start_cycle"] == max(q["start_cycle"] + math.ceil(q["cycles"] * (b + 1) / 4), prev)
        prev = t["end_cycle"]
    exe = runs[4].executable
    prog, tm = exe.program, exe.timeline.segments[0]
    assert int(tm.start.min()) >= bands[0]["end_cycle"]
    xin = prog.placement[id(prog.imports[0][0])]
    n = xin.nbytes
    seg = prog.segments[0]
    loads = 0
    for k, ins in enumerate(prog.instrs[seg.start:seg.end]):
        a = ins.args
        if ins.op == "load" and a["rows"] and xin.addr <= a["src"] < xin.addr + n:
            last = a["src"] + (a["rows"] - 1) * a["src_stride"] + a["cols"] - 1 - xin.addr
            assert tm.start[k] >= bands[last * 4 // n]["end_cycle"]
            loads += 1
    assert loads > 0


def test_host_time_in_the_table_and_trace(se_model):
    path, calib, _ = se_model
    cm = _compile(path, calib)
    table = text_table(cm.report["asic"])
    rows = [line for line in table.splitlines() if "host (x86" in line]
    assert len(rows) == len(cm.report["asic"]["host_ops"])
    assert "hard_swish" in table and "transfer" in table and "host compute" in table
    ev = chrome_trace(cm.executable.program, cm.executable.timeline)["traceEvents"]
    host = [e for e in ev if e["ph"] == "X" and e["tid"] == 6]
    assert len(host) == len(cm.report["asic"]["host_ops"]) and all(e["dur"] > 0 for e in host)
    svg = layer_chart_svg(cm.report["asic"])
    assert svg.count("<title>host ") == len(host)  # one host bar per host op (test_asic_export.py: the rest)


def test_an_op_x86_rejects_falls_back_to_the_interpreter(se_model, monkeypatch):
    from nnc.backends import x86

    real = x86.compile

    def no_hard_sigmoid(module, options=None):
        if any(op.opname == "hard_sigmoid" for op in module.main.ops):
            raise UnsupportedOpError("x86: hard_sigmoid is not supported (test)")
        return real(module, options)

    path, calib, x = se_model
    ref = _compile(path, calib).run(x)["y"]
    monkeypatch.setattr(x86, "compile", no_hard_sigmoid)
    cm = _compile(path, calib)
    exe = cm.executable
    engines = {op.opname: seg.engine for seg in exe.host for op in seg.ops}
    assert engines["hard_sigmoid"] == "interpreter" and engines["hard_swish"] == "x86"
    assert sum(seg.engine == "interpreter" for seg in exe.host) == 1  # only that op, its segment split
    fb = cm.report["asic"]["host"]["fallback"]
    assert fb == [{"ops": ["hard_sigmoid"], "reason": "UnsupportedOpError: x86: hard_sigmoid is not supported (test)"}]
    assert [o["engine"] for o in cm.report["asic"]["host"]["ops"] if o["op"] == "hard_sigmoid"] == ["interpreter"]
    assert np.array_equal(cm.run(x)["y"], ref)


def test_a_model_without_host_ops_has_no_host_time():
    rng = np.random.default_rng(8)
    m = Module()
    g = m.add_graph(Graph("main"))
    xv = g.add_param("x", TensorType(DType.i8, (1, 8, 6, 6)))
    b = Builder(m)
    y = b.op("qconv", xv, b.const(rng.integers(-128, 128, (8, 8, 3, 3)).astype(np.int8)),
             b.const(rng.integers(-999, 999, (8,)).astype(np.int32)), pads=(1, 1, 1, 1))
    q = b.op("requantize", y, b.const(np.int32(1 << 30)), b.const(np.int32(40)))
    g.set_outputs([q], ["y"])
    exe = asic.compile(m)
    r = exe.report
    assert r["host_ops"] == [] and exe.host == []
    assert r["host"]["cycles"] == 0 and r["host"]["ops"] == [] and r["host"]["share"] == 0
    chip = sum(int(tm.cycles - tm.start.min()) for tm in exe.timeline.segments)
    assert r["cycles"] == chip + r["transfers"]["cycles"]
    assert "host compute" not in text_table(r)


def test_a_value_sized_at_run_time_is_refused_naming_it() -> None:
    """NonZero's count is known only once the model runs: the ASIC's timing is computed at compile
    time, so the compile is a TargetError naming the op (it was a ValueError from the host report)."""
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["y"])], "nz",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.INT64, None)])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    cal = [{"x": np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)}]
    with pytest.raises(TargetError, match=r"asic: nonzero -> %y .* known only at run time"):
        nnc.compile(m, target="asic", calibration=cal, quiet=True)

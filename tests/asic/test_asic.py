"""The simulated ASIC: bit-exact against a plain numpy int8 reference on random shapes (ragged
tiles, padding, stride, groups, saturation), timing properties (SCALE-Sim per-fold formula in ideal
bandwidth mode, cycles >= MACs / array size, utilization <= 1, latency monotone in bandwidth), the
assembler round trip, config overrides, and compile/CLI end to end."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc.backends import asic
from nnc.backends.asic.isa import assemble, disassemble
from nnc.ir import Builder, DType, Graph, Module, TargetError, TensorType, verify_module


def rne_shift(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """round half to even of p / 2**s with Python-int exactness (independent of the IR's helper)."""
    out = np.empty(p.shape, dtype=np.int64)
    for idx, (v, k) in enumerate(zip(p.ravel().tolist(), np.broadcast_to(s, p.shape).ravel().tolist())):
        q, r = divmod(int(v), 1 << int(k))
        half = 1 << int(k) >> 1
        out.flat[idx] = q + (1 if k and (r > half or (r == half and q & 1)) else 0)
    return out


def np_conv(x, w, b, stride, pad, zp, group):
    """Direct numpy int64 convolution with zero-point padding (NCHW, OIHW)."""
    N, C, H, W = x.shape
    M, cg, kh, kw = w.shape
    xp = np.full((N, C, H + 2 * pad, W + 2 * pad), zp, np.int64)
    xp[:, :, pad:pad + H, pad:pad + W] = x
    OH, OW = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    y = np.zeros((N, M, OH, OW), np.int64)
    mg = M // group
    for m in range(M):
        g = m // mg
        for i in range(kh):
            for j in range(kw):
                patch = xp[:, g * cg:(g + 1) * cg, i:i + stride * OH:stride, j:j + stride * OW:stride] - zp
                y[:, m] += np.einsum("nchw,c->nhw", patch, w[m, :, i, j].astype(np.int64))
    return y + b.reshape(1, -1, 1, 1)


def _module(x_shape):
    m = Module()
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", TensorType(DType.i8, x_shape))
    return m, g, x, Builder(m)


def _compile(m, **cfg):
    verify_module(m)
    return asic.compile(m, {"asic_config": cfg} if cfg else {})


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_conv_bit_exact(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    kind = data.draw(st.sampled_from(["dense", "dense", "depthwise", "grouped"]))
    N = data.draw(st.integers(1, 2))
    C = data.draw(st.integers(1, 40)) if kind == "dense" else data.draw(st.integers(1, 6)) * 2
    group = C if kind == "depthwise" else (2 if kind == "grouped" else 1)
    M = C if kind == "depthwise" else data.draw(st.integers(1, 20)) * group
    k = data.draw(st.sampled_from([1, 3, 5]))
    stride, pad = data.draw(st.integers(1, 2)), data.draw(st.integers(0, k // 2))
    H, W = data.draw(st.integers(k, 12)), data.draw(st.integers(k, 12))
    zp = data.draw(st.sampled_from([0, 0, 3, -7]))
    residual, relu = data.draw(st.booleans()), data.draw(st.booleans())
    x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8)
    w = rng.integers(-128, 128, (M, C // group, k, k)).astype(np.int8)
    b = rng.integers(-20000, 20000, (M,)).astype(np.int32)
    mult = rng.integers(1 << 28, 1 << 31, (M,)).astype(np.int32)
    shift = rng.integers(36, 44, (M,)).astype(np.int32)  # includes saturating channels
    m, g, xv, bld = _module(x.shape)
    y = bld.op("qconv", xv, bld.const(w), bld.const(b), strides=(stride, stride), pads=(pad,) * 4, group=group,
               x_zero_point=zp)
    q = bld.op("requantize", y, bld.const(mult), bld.const(shift), clip_min=0 if relu else None)
    want = np.clip(rne_shift(np_conv(x, w, b, stride, pad, zp, group) * mult.reshape(1, -1, 1, 1),
                             shift.reshape(1, -1, 1, 1)), 0 if relu else -128, 127)
    if residual and q.type.shape == xv.type.shape:
        q = bld.op("qadd", q, xv, a_multiplier=5, b_multiplier=3, shift=2, clip_max=100)
        want = np.clip(rne_shift(want * 5 + x.astype(np.int64) * 3, np.int64(2)), -128, 100)
    g.set_outputs([q], ["y"])
    small = data.draw(st.booleans())  # tiny scratchpads force ragged tiles and K splits
    exe = _compile(m, **({"input_spad_kib": 1, "weight_spad_kib": 1, "acc_kib": 4} if small else {}))
    assert np.array_equal(exe.run({"x": x})["y"], want.astype(np.int8))


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_maxpool_and_gap_bit_exact(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    N, C = data.draw(st.integers(1, 2)), data.draw(st.integers(1, 70))
    H, W = data.draw(st.integers(3, 11)), data.draw(st.integers(3, 11))
    k, s = data.draw(st.sampled_from([2, 3])), data.draw(st.integers(1, 2))
    p = data.draw(st.integers(0, k // 2))
    x = rng.integers(-128, 128, (N, C, H, W)).astype(np.int8)
    m, g, xv, bld = _module(x.shape)
    mp = bld.op("max_pool", xv, kernel_shape=(k, k), strides=(s, s), pads=(p,) * 4)[0]
    acc = bld.op("reduce_sum", bld.op("cast", xv, to=DType.i32), axes=(2, 3), keepdims=1)
    gap = bld.op("requantize", acc, bld.const(np.int32(1 << 20)), bld.const(np.int32(20 + 3)))
    g.set_outputs([mp, gap], ["mp", "gap"])
    out = _compile(m).run({"x": x})
    xp = np.full((N, C, H + 2 * p, W + 2 * p), -128, np.int64)
    xp[:, :, p:p + H, p:p + W] = x
    OH, OW = (H + 2 * p - k) // s + 1, (W + 2 * p - k) // s + 1
    want = np.max([xp[:, :, i:i + s * OH:s, j:j + s * OW:s] for i in range(k) for j in range(k)], axis=0)
    assert np.array_equal(out["mp"], want.astype(np.int8))
    sums = x.astype(np.int64).sum(axis=(2, 3), keepdims=True)
    assert np.array_equal(out["gap"], np.clip(rne_shift(sums, np.int64(3)), -128, 127).astype(np.int8))


def _gemm_module(P, K, N, rng):
    a = rng.integers(-128, 128, (P, K)).astype(np.int8)
    w = rng.integers(-128, 128, (K, N)).astype(np.int8)
    m, g, av, bld = _module(a.shape)
    y = bld.op("qmatmul", av, bld.const(w))
    q = bld.op("requantize", y, bld.const(np.int32(1 << 30)), bld.const(np.int32(40)))
    g.set_outputs([q], ["y"])
    return m, a, w


@settings(max_examples=30, deadline=None)
@given(P=st.integers(1, 300), K=st.integers(1, 300), N=st.integers(1, 100), seed=st.integers(0, 99))
def test_gemm_bit_exact_and_ideal_timing(P, K, N, seed):
    rng = np.random.default_rng(seed)
    m, a, w = _gemm_module(P, K, N, rng)
    exe = _compile(m, ideal_bandwidth=True)
    want = np.clip(rne_shift(a.astype(np.int64) @ w.astype(np.int64) * (1 << 30), np.int64(40)), -128, 127)
    assert np.array_equal(exe.run({"x": a})["y"], want.astype(np.int8))
    rep = exe.report
    R, C = rep["config"]["array_rows"], rep["config"]["array_cols"]
    compute = sum(la["compute_cycles"] for la in rep["layers"])
    gemms = [i for i in exe.program.instrs if i.op == "gemm"]
    # SCALE-Sim v2, weight-stationary: each fold of R x C weights costs 2R + C + T - 2 cycles
    folds = sum(math.ceil(i.args["k"] / R) * math.ceil(i.args["m"] / C) for i in gemms)
    formula = sum(math.ceil(i.args["k"] / R) * math.ceil(i.args["m"] / C) * (2 * R + C + i.args["t"] - 2)
                  for i in gemms)
    assert abs(compute - formula) <= folds
    # one row tile and K not cut finer than the array (a scratchpad-sized K chunk below R rows makes
    # more folds than ceil(K/R)): then the whole GEMM follows the formula
    if len({i.args["t"] for i in gemms}) == 1 and gemms[0].args["t"] == P and \
            folds == math.ceil(K / R) * math.ceil(N / C):
        assert abs(compute - math.ceil(K / R) * math.ceil(N / C) * (2 * R + C + P - 2)) <= folds
    assert rep["cycles"] >= P * K * N / (R * C)
    assert 0 < rep["utilization"] <= 1


def test_latency_never_rises_with_bandwidth():
    rng = np.random.default_rng(1)
    m, _, _ = _gemm_module(200, 300, 150, rng)
    lat = [_compile(m, dram_gbps=bw).report["latency_ms"] for bw in (1, 4, 17, 64, 256)]
    assert all(a >= b for a, b in zip(lat, lat[1:])), lat
    ideal = _compile(m, ideal_bandwidth=True).report["latency_ms"]
    assert ideal <= lat[-1]


def test_output_stationary_formula():
    rng = np.random.default_rng(2)
    m, a, w = _gemm_module(64, 96, 40, rng)
    exe = _compile(m, ideal_bandwidth=True, dataflow="os")
    R, C = 32, 32
    want = sum(math.ceil(i.args["t"] / R) * math.ceil(i.args["m"] / C) * (R + C + i.args["k"] - 2)
               for i in exe.program.instrs if i.op == "gemm")
    assert sum(la["compute_cycles"] for la in exe.report["layers"]) == want


def test_assembler_round_trip():
    rng = np.random.default_rng(3)
    m, _, _ = _gemm_module(70, 100, 50, rng)
    exe = _compile(m)
    text = exe.asm()
    again = disassemble(assemble(text))
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#")) + "\n"
    assert again == body
    assert [i.text() for i in assemble(text)] == [i.text() for i in exe.program.instrs]


def test_untileable_layer_is_a_clear_error():
    rng = np.random.default_rng(4)
    m, _, _ = _gemm_module(8, 64, 64, rng)
    with pytest.raises(TargetError, match="cannot be tiled"):
        _compile(m, weight_spad_kib=0.001 if False else 1, input_spad_kib=1, acc_kib=1, array_rows=1024,
                 array_cols=1024)


def test_config_override_and_presets(tmp_path):
    from nnc.backends.asic.config import load_config

    assert load_config("edge").tops_peak == pytest.approx(2.048)
    assert load_config("x1").macs == 4096
    f = tmp_path / "c.json"
    f.write_text(json.dumps({"array_rows": 16, "energy_pj": {"dram_byte": 1.0}}))
    cfg = load_config("edge", str(f))
    assert cfg.array_rows == 16 and cfg.energy_pj["dram_byte"] == 1.0 and cfg.energy_pj["mul8"] == 0.2
    with pytest.raises(TargetError, match="unknown field"):
        load_config("edge", {"arrray_rows": 3})


def _cnn_onnx(path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(5)
    inits = [numpy_helper.from_array(rng.standard_normal((8, 3, 3, 3)).astype(np.float32) * 0.3, "w1"),
             numpy_helper.from_array(rng.standard_normal(8).astype(np.float32) * 0.1, "b1"),
             numpy_helper.from_array(rng.standard_normal((8, 8, 3, 3)).astype(np.float32) * 0.2, "w2"),
             numpy_helper.from_array(rng.standard_normal((10, 8)).astype(np.float32) * 0.3, "fc")]
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("Conv", ["p1", "w2"], ["c2"], pads=[1, 1, 1, 1]),
             helper.make_node("Add", ["c2", "p1"], ["s"]), helper.make_node("Relu", ["s"], ["r2"]),
             helper.make_node("GlobalAveragePool", ["r2"], ["gap"]), helper.make_node("Flatten", ["gap"], ["f"]),
             helper.make_node("Gemm", ["f", "fc"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["y"])]
    graph = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.save(model, path)
    return model


def test_compile_end_to_end_tracks_float(tmp_path):
    import onnxruntime as ort

    import nnc

    path = str(tmp_path / "cnn.onnx")
    _cnn_onnx(path)
    rng = np.random.default_rng(6)
    calib = [{"x": rng.standard_normal((1, 3, 16, 16)).astype(np.float32)} for _ in range(4)]
    cm = nnc.compile(path, target="asic", calibration=calib)
    x = calib[0]["x"]
    got = cm.run({"x": x})["y"]
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    sqnr = 10 * np.log10((want ** 2).sum() / ((want - got) ** 2).sum())
    assert sqnr >= 20, sqnr
    rep = cm.report["asic"]
    for k in ("cycles", "latency_ms", "fps", "meets_40ms", "tops_peak", "tops_achieved", "utilization",
              "dram_bytes", "sram_bytes", "energy_mj", "layers"):
        assert k in rep
    assert {"array_rows", "array_cols", "clock_ghz"} <= set(rep["config"])
    assert {"mac", "sram", "dram", "static"} <= set(rep["energy_mj"])
    assert "softmax" in rep["host_ops"] and rep["transfers"]["bytes"] > 0
    # with the host ops on the reference interpreter, the result equals the integer graph on the
    # interpreter bit for bit (the chip is bit-exact); with them on x86 (the default) the final
    # softmax's exp is x86's vectorised one (<= 2 ulp, tests/backends/test_x86_math.py) and its sum
    # runs in another order: a few f32 ulps
    from nnc.backends.asic.sim.runner import run_program
    from nnc.ir import interpret

    exe = cm.executable
    want_q = interpret(exe.module, {"x": x})["y"]
    assert np.array_equal(run_program(exe.program, exe.module, {"x": x}, exe.timeline, host=None)["y"], want_q)
    # one host segment, the output's dequantize + softmax: the input quantize runs on the chip's vector unit
    assert [s.engine for s in exe.host] == ["x86"]
    assert [o["op"] for o in rep["host"]["ops"]][0] != "quantize"
    assert np.all(np.abs(got - want_q) <= 8 * np.spacing(np.abs(want_q)))


def test_cli_compile_and_report(tmp_path, capsys):
    from nnc.cli import main

    path = str(tmp_path / "cnn.onnx")
    _cnn_onnx(path)
    asm = tmp_path / "p.s"
    assert main(["compile", path, "--target", "asic", "--emit", "asm", "-o", str(asm), "-q"]) == 0
    assert len(assemble(asm.read_text())) > 10
    rj = tmp_path / "r.json"
    assert main(["compile", path, "--target", "asic", "--asic-preset", "x1", "--report", str(rj), "-q"]) == 0
    assert json.loads(rj.read_text())["asic"]["config"]["array_rows"] == 64
    trace, chart, ss = tmp_path / "t.json", tmp_path / "c.svg", tmp_path / "ss"
    assert main(["asic-report", path, "--trace", str(trace), "--chart", str(chart), "--scalesim-dir", str(ss)]) == 0
    out = capsys.readouterr()
    assert "latency" in out.out and "random inputs" in out.err
    ev = json.loads(trace.read_text())["traceEvents"]
    assert {e["tid"] for e in ev if e["ph"] == "X"} >= {1, 2, 4}
    assert chart.read_text().startswith("<svg")
    rows = (ss / "nnc_topology.csv").read_text().splitlines()
    assert len(rows) == 4 and "ArrayHeight:    32" in (ss / "nnc.cfg").read_text()

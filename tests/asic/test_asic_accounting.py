"""The per-layer time accounting of the ASIC report (docs/asic.md, "Per-layer time"): every cycle of a
layer's span is counted once, as compute, vector, dma, latency or stall, so the parts sum to the
span and stall never exceeds it; checked on random conv/GEMM layers and machine configs, on a
hand-made interval set, and (slow) on every layer of the bench models."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc.backends import asic
from nnc.backends.asic.report import TIME_PARTS, time_breakdown
from nnc.ir import Builder, DType, Graph, Module, TensorType, verify_module


def check_layers(rep: dict) -> None:
    for la in rep["layers"]:
        span = la["end_cycle"] - la["start_cycle"]
        parts = la["time"]
        assert set(parts) == set(TIME_PARTS), la["name"]
        assert all(v >= 0 for v in parts.values()), (la["name"], parts)
        assert sum(parts.values()) == span, (la["name"], parts, span)
        assert 0 <= la["stall_cycles"] == parts["stall"] <= span
        # an engine's busy time in the span is at least what the span attributes to it
        assert parts["vector"] <= la["vector_cycles"] and parts["dma"] <= la["dma_cycles"]


def test_breakdown_of_known_intervals():
    # gemm 10..30, vec 25..40 (exposed 30..40), load busy 0..12 (exposed 0..10) in flight to 20
    # (hidden by the gemm), store 50..55 + latency to 60; 40..50 nothing: stall
    starts = np.array([10, 25, 0, 50])
    busy = np.array([20, 15, 12, 5])
    ends = np.array([30, 40, 20, 60])
    got = time_breakdown(starts, ends, busy, ["gemm", "vec.requant", "load", "store"])
    assert got == {"compute": 20, "vector": 10, "dma": 10 + 5, "latency": 5, "stall": 10}


@settings(max_examples=25, deadline=None)
@given(st.data())
def test_parts_sum_to_span_on_random_layers_and_configs(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    m = Module()
    g = m.add_graph(Graph("main"))
    conv = data.draw(st.booleans())
    if conv:
        C, M, H = data.draw(st.integers(1, 48)), data.draw(st.integers(1, 48)), data.draw(st.integers(3, 20))
        k = data.draw(st.sampled_from([1, 3]))
        x = g.add_param("x", TensorType(DType.i8, (1, C, H, H)))
        b = Builder(m)
        w = rng.integers(-128, 128, (M, C, k, k)).astype(np.int8)
        y = b.op("qconv", x, b.const(w), b.const(np.zeros(M, np.int32)), strides=(1, 1), pads=(k // 2,) * 4,
                 group=1, x_zero_point=0)
    else:
        P, K, N = (data.draw(st.integers(1, 200)) for _ in range(3))
        x = g.add_param("x", TensorType(DType.i8, (P, K)))
        b = Builder(m)
        y = b.op("qmatmul", x, b.const(rng.integers(-128, 128, (K, N)).astype(np.int8)))
    q = b.op("requantize", y, b.const(np.int32(1 << 30)), b.const(np.int32(40)),
             clip_min=0 if data.draw(st.booleans()) else None)
    g.set_outputs([q], ["y"])
    verify_module(m)
    cfg = {"array_rows": data.draw(st.sampled_from([4, 8, 16, 32])),
           "array_cols": data.draw(st.sampled_from([4, 8, 16, 32])),
           "dataflow": data.draw(st.sampled_from(["ws", "os"])),
           "dram_gbps": data.draw(st.sampled_from([0.5, 4.0, 17.0, 200.0])),
           "dram_latency_ns": data.draw(st.sampled_from([0.0, 100.0, 2000.0])),
           "ideal_bandwidth": data.draw(st.booleans()),
           "vector_overhead_cycles": data.draw(st.integers(0, 50))}
    if data.draw(st.booleans()):
        cfg.update(input_spad_kib=2, weight_spad_kib=2, acc_kib=8)
    exe = asic.compile(m, {"asic_config": cfg})
    rep = exe.report
    check_layers(rep)
    la = rep["layers"][0]
    lat = 0 if cfg["ideal_bandwidth"] else round(cfg["dram_latency_ns"])  # 1 GHz clock
    assert la["dma_latency_cycles"] == la["dma_transfers"] * lat


@pytest.mark.slow
@pytest.mark.parametrize("name", ["resnet50", pytest.param("mobilenet_v3_small", marks=pytest.mark.torch)])
def test_bench_models_account_every_cycle(name):
    if name != "resnet50":
        pytest.importorskip("torch")
    sys.path.insert(0, str(Path(__file__).parents[2] / "bench"))
    import models

    import nnc

    cm = nnc.compile(str(models.realistic_model(name)), target="asic")
    check_layers(cm.report["asic"])

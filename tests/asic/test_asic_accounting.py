"""The per-layer time accounting of the ASIC report (docs/asic.md, "Per-layer time"): every cycle of a
layer's span is counted once, as compute, vector, dma, latency or stall, so the parts sum to the
span and stall never exceeds it, and the two DMA engines never move more than the shared bandwidth;
checked on random conv/GEMM layers and machine configs, on a hand-made interval set, and (slow) on
every layer of the bench models."""

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


def check_shared_bandwidth(exe) -> None:
    """The load and store engines share DRAM (and the resident activations' port): the cycles each
    transfer's bytes occupy the channel, bytes / (bytes a cycle), never overlap across both engines."""
    cfg, prog = exe.config, exe.program
    for seg, tm in zip(prog.segments, exe.timeline.segments):
        busy: dict[bool, list[tuple[int, int]]] = {False: [], True: []}
        for k, ins in enumerate(prog.instrs[seg.start:seg.end]):
            if ins.op not in ("load", "store") or cfg.ideal_bandwidth:
                continue
            a = ins.args
            item = 4 if a["mem"] == "acc" else 1
            rows = min(a["rows"], 1) if ins.op == "load" and a["src_stride"] == 0 else a["rows"]  # a broadcast: one row
            far = a["src" if ins.op == "load" else "dst"] >= asic.isa.ACT_BASE
            bpc = (cfg.act_buffer_gbps if far else cfg.dram_gbps * cfg.dram_efficiency) / cfg.clock_ghz
            n = rows * a["cols"] * item
            if n:
                busy[far].append((int(tm.start[k]), int(tm.start[k]) + int(np.ceil(n / bpc))))
        for iv in busy.values():
            iv.sort()
            assert all(e0 <= s1 for (_, e0), (s1, _) in zip(iv, iv[1:]))


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
    check_shared_bandwidth(exe)
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
    check_shared_bandwidth(cm.executable)


def test_channel_gives_each_transfer_the_earliest_free_gap():
    from nnc.backends.asic.sim.timing import Channel

    ch = Channel()
    assert ch.reserve(0, 10) == 0
    assert ch.reserve(5, 3) == 10       # busy until 10
    assert ch.reserve(20, 5) == 20      # a gap 13..20 stays
    assert ch.reserve(2, 8) == 25       # 8 cycles do not fit in 13..20
    assert ch.reserve(13, 7) == 13      # exactly fits the gap
    assert (ch.starts, ch.ends) == ([0], [33])
    assert ch.reserve(14, 0) == 14      # an empty transfer holds nothing

"""The config validator: a machine that cannot exist (zero-size array, bandwidth <= 0, ...) is a
TargetError naming the field at load; a machine too small for one tile of a layer is a TargetError
at compile naming the layer, the config fields to raise, the value they need and why; giving them
that value makes the layer compile."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.backends import asic
from nnc.backends.asic.config import load_config
from nnc.ir import Builder, DType, Graph, Module, TargetError, TensorType, verify_module


@pytest.mark.parametrize("field,value,words", [
    ("array_rows", 0, "must be positive"), ("array_cols", -4, "must be positive"),
    ("dram_gbps", 0.0, "must be positive"), ("dram_gbps", -17.0, "must be positive"),
    ("clock_ghz", float("nan"), "must be positive"), ("host_link_gbps", 0.0, "must be positive"),
    ("acc_kib", 0, "must be positive"), ("dram_latency_ns", -1.0, ">= 0"),
    ("vector_overhead_cycles", -2, ">= 0"), ("dram_efficiency", 1.5, "(0, 1]"),
])
def test_impossible_machine_names_the_field(field, value, words):
    with pytest.raises(TargetError, match=rf"asic config: {field} .*{words}".replace("(", r"\(").replace(
            "]", r"\]")):
        load_config("edge", {field: value})


def _compile(m, **cfg):
    verify_module(m)
    return asic.compile(m, {"asic_config": cfg})


def _gemm(P, K, N):
    rng = np.random.default_rng(0)
    m = Module()
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", TensorType(DType.i8, (P, K)))
    b = Builder(m)
    y = b.op("qmatmul", x, b.const(rng.integers(-128, 128, (K, N)).astype(np.int8)))
    q = b.op("requantize", y, b.const(np.int32(1 << 30)), b.const(np.int32(40)))
    g.set_outputs([q], ["y"])
    return m


def test_gemm_too_big_for_the_scratchpads_names_layer_fields_and_needs():
    m = _gemm(8, 64, 64)
    # a 1024x1024 array: the smallest tile is the whole 64x64 weight block (8192 B in two slots: 8
    # KiB) and two int32 1x64 rows plus two slots of [mult; shift; bias] 64-word rows in the accumulator
    # (2048 B: 2 KiB)
    small = dict(array_rows=1024, array_cols=1024, input_spad_kib=1, weight_spad_kib=1, acc_kib=1)
    with pytest.raises(TargetError) as e:
        _compile(m, **small)
    msg = str(e.value)
    assert msg.startswith("asic: layer ") and "GEMM 8x64x64" in msg and "cannot be tiled" in msg
    assert "weight_spad_kib >= 8 (has 1; needs 8192 B" in msg and "acc_kib >= 2 (has 1; needs 2048 B" in msg
    assert "input_spad_kib" not in msg and "buffer_kib" not in msg
    exe = _compile(m, **{**small, "weight_spad_kib": 8, "acc_kib": 2})  # exactly what it asked for
    assert exe.report["layers"][0]["macs"] == 8 * 64 * 64


def test_depthwise_layer_too_big_for_the_accumulator():
    C = 64
    m = Module()
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", TensorType(DType.i8, (1, C, 3, 200)))
    b = Builder(m)
    w = np.ones((C, 1, 3, 3), np.int8)
    y = b.op("qconv", x, b.const(w), b.const(np.zeros(C, np.int32)), strides=(1, 1), pads=(1,) * 4, group=C,
             x_zero_point=0)
    g.set_outputs([b.op("requantize", y, b.const(np.int32(1 << 30)), b.const(np.int32(33)))], ["y"])
    # even one channel per block needs 2 int32 output rows of 200 pixels + 4 requantization words
    with pytest.raises(TargetError, match=r"asic: layer .*depthwise 3x3, 64 channels.*acc_kib >= 2 \(has 1; "
                                          r"needs 1616 B"):
        _compile(m, vector_lanes=16, acc_kib=1)
    assert _compile(m, vector_lanes=16, acc_kib=2).report["layers"][0]["kind"]

"""The model's input quantize on the chip (``input_quantize: "chip"``, the presets' default): the
vector unit's ``vec.quant`` converts the FP32 input, read from DRAM at 4 bytes an element, to int8
bit-exactly as the IR's ``quantize`` (round half to even, saturate), over random shapes, scales, zero
points, ties and saturating values; its DRAM bytes, vector cycles and energy are booked as
docs/asic.md says; ``input_quantize: "host"`` keeps the quantize on the host, streamed in bands."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc.backends import asic
from nnc.backends.asic.codegen_quantize import scale_bits
from nnc.backends.asic.config import load_config
from nnc.backends.asic.isa import QUANT_LANE_OPS
from nnc.backends.asic.sim.timing import dma_bytes
from nnc.ir import Builder, DType, Graph, Module, TargetError, TensorType, interpret, verify_module

IDENTITY = np.arange(-128, 128).astype(np.int8)  # qlut table: entry i is input i - 128


def _quantize_model(shape: tuple[int, ...], scale: float, zp: int) -> Module:
    """y = qlut(quantize(x), identity): the quantize's result is read by a chip layer, as a network's
    first layer reads it, and y is exactly the quantized input."""
    m = Module()
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", TensorType(DType.f32, shape))
    b = Builder(m)
    q = b.op("quantize", x, b.const(np.float32(scale)), b.const(np.int8(zp)), dtype=DType.i8)
    g.set_outputs([b.op("qlut", q, b.const(IDENTITY))], ["y"])
    verify_module(m)
    return m


def _numpy_quantize(x: np.ndarray, scale: float, zp: int) -> np.ndarray:
    """Written here, not taken from the IR: f32 division, round half to even, + zp, saturate."""
    q = np.rint(x.astype(np.float32) / np.float32(scale)).astype(np.float64) + zp
    return np.clip(q, -128, 127).astype(np.int8)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_vec_quant_is_bit_exact(data):
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31)))
    rank = data.draw(st.integers(1, 4))
    shape = tuple(data.draw(st.integers(1, 9 if rank == 4 else 300 if rank == 1 else 40)) for _ in range(rank))
    scale = float(np.float32(10.0 ** data.draw(st.floats(-4, 1))))
    zp = data.draw(st.integers(-128, 127))
    n = math.prod(shape)
    # codes around the range, a third beyond the rails (saturate), a third exactly on .5 ties
    k = rng.integers(-400, 400, n).astype(np.float32)
    tie = rng.random(n) < 0.33
    x = (np.where(tie, k + np.float32(0.5), k + rng.random(n).astype(np.float32) - 0.5) * np.float32(scale))
    x = x.astype(np.float32).reshape(shape)
    m = _quantize_model(shape, scale, zp)
    small = data.draw(st.booleans())  # a small buffer forces many chunks and partial rows
    cfg = {"buffer_kib": 16, "act_buffer_kib": 8} if small else {}
    cm = asic.compile(m, {"asic_config": cfg})
    prog = cm.program
    assert [la.kind for la in prog.layers][0] == "quant"
    assert all(op["op"] != "quantize" for op in cm.report["host"]["ops"])
    got = cm.run({"x": x})["y"]
    want = _numpy_quantize(x, scale, zp)
    assert np.array_equal(got, want)
    assert np.array_equal(got, interpret(m, {"x": x})["y"])  # the IR's quantize rounds the same way
    assert (got == 127).any() or (got == -128).any() or n < 10  # saturation was exercised


def test_quant_costs_are_booked():
    """The FP32 input crosses DRAM once at 4 bytes an element, each vec.quant takes ceil(4 x
    elements / lanes) + overhead cycles and 4 vector operations an element of energy, and no host
    link time is charged for the input (it is in the chip's DRAM)."""
    shape = (1, 3, 64, 64)
    n = math.prod(shape)
    m = _quantize_model(shape, 0.05, 3)
    cm = asic.compile(m, {})
    cfg = load_config("edge")
    prog = cm.program
    r = cm.report
    layer = r["layers"][0]
    i0, i1 = prog.layer_info[0]["instrs"]
    instrs = prog.instrs[i0:i1]
    quants = [ins for ins in instrs if ins.op == "vec.quant"]
    loads = [ins for ins in instrs if ins.op == "load"]
    assert sum(q.args["rows"] * q.args["cols"] for q in quants) == n
    assert sum(dma_bytes(ld) for ld in loads) == 4 * n
    assert layer["dram_bytes"] >= 4 * n
    want_cycles = sum(math.ceil(QUANT_LANE_OPS * q.args["rows"] * q.args["cols"] / cfg.vector_lanes)
                      + cfg.vector_overhead_cycles for q in quants)
    assert layer["vector_cycles"] == want_cycles
    pj = cfg.energy_pj
    assert layer["energy_mj"] * 1e9 >= QUANT_LANE_OPS * n * pj["vector_op"] + 4 * n * pj["dram_byte"]
    assert math.isclose(r["energy_mj"]["vector"] * 1e9,
                        (QUANT_LANE_OPS * n + n) * cfg.energy_pj["vector_op"], rel_tol=1e-9)  # + the lut
    assert all(not t["what"].startswith("to chip") for t in r["transfers"]["list"])
    assert r["host"]["cycles"] == 0 and r["host"]["ops"] == []


def test_host_mode_keeps_the_streamed_host_quantize():
    """``input_quantize: "host"``: the quantize is a host op, its result streams to the chip in bands
    over the link, and no vec.quant is emitted; both modes compute the same y."""
    shape = (1, 3, 32, 32)
    m = _quantize_model(shape, 0.02, -5)
    x = (np.random.default_rng(1).standard_normal(shape) * 2).astype(np.float32)
    chip = asic.compile(m, {})
    host = asic.compile(m, {"asic_config": {"input_quantize": "host"}})
    assert [o["op"] for o in host.report["host"]["ops"]] == ["quantize"]
    assert all(ins.op != "vec.quant" for ins in host.program.instrs)
    assert any(ins.op == "vec.quant" for ins in chip.program.instrs)
    bands = [t for t in host.report["transfers"]["list"] if t["what"].startswith("to chip (band")]
    assert len(bands) == load_config("edge").host_stream_bands
    assert np.array_equal(chip.run({"x": x})["y"], host.run({"x": x})["y"])
    assert np.array_equal(host.run({"x": x})["y"], _numpy_quantize(x, 0.02, -5))


def test_presets_quantize_on_chip_and_the_option_is_validated():
    assert load_config("edge").input_quantize == "chip" and load_config("x1").input_quantize == "chip"
    assert load_config("edge", {"input_quantize": "host"}).input_quantize == "host"
    with pytest.raises(TargetError, match="input_quantize must be one of chip, host, got 'npu'"):
        load_config("edge", {"input_quantize": "npu"})


def test_scale_bits_round_trip():
    for s in (1e-4, 0.0173, 1.0, 7.5):
        assert np.array([scale_bits(s)], np.uint32).view(np.float32)[0] == np.float32(s)


def test_vec_quant_assembles_and_disassembles():
    from nnc.backends.asic.isa import assemble, disassemble

    cm = asic.compile(_quantize_model((1, 3, 16, 16), 0.0173, 7), {})
    instrs = cm.program.instrs
    text = disassemble(instrs)
    assert "vec.quant" in text and f"scale_bits={scale_bits(0.0173)}" in text
    again = assemble(text)
    assert [(i.op, i.args, i.pop, i.push) for i in again] == [(i.op, i.args, i.pop, i.push) for i in instrs]

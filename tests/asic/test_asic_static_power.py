"""Static (leakage) power and area of the ASIC (backends/asic/area_power.py, docs/asic.md "Static power
and area"): the static energy is the hand-computed (flat + array + SRAM leakage) power x the
latency, the total is dynamic + static, zero leakage gives the energy of the flat-static-power model,
the area is MACs x mm2 a cell + SRAM KiB x mm2 a KiB, and bad coefficients are typed errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.backends.asic.area_power import area_mm2, static_power
from nnc.backends.asic.config import load_config
from nnc.backends.asic.export import text_table
from nnc.ir import TargetError

# a small machine: 8x8 array, 16 KiB scratchpads, the edge preset's 128 KiB accumulator and 2048 KiB
# buffer: 16 + 16 + 128 + 2048 = 2208 KiB of SRAM
SMALL = {"array_rows": 8, "array_cols": 8, "input_spad_kib": 16, "weight_spad_kib": 16,
         "static_power_w": 0.05, "leakage_uw_per_mac": 10.0, "leakage_uw_per_sram_kib": 2.0,
         "area_mm2_per_mac": 0.002, "area_mm2_per_sram_kib": 0.004}


@pytest.fixture(scope="module")
def mlp(tmp_path_factory) -> str:
    rng = np.random.default_rng(3)
    w = lambda name, shape: numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)
    nodes = [helper.make_node("Gemm", ["x", "w1", "b1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])]
    g = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [4, 32])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [4, 10])],
                          [w("w1", (32, 48)), w("b1", (48,)), w("w2", (48, 10)), w("b2", (10,))])
    path = Path(tmp_path_factory.mktemp("static")) / "mlp.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)
    return str(path)


def report(model: str, **override) -> dict:
    return nnc.compile(model, target="asic", asic_config={**SMALL, **override}, functional=False).report["asic"]


def test_static_energy_is_leakage_times_latency(mlp):
    rep = report(mlp)
    seconds = rep["cycles"] / 1e9  # edge's clock: 1 GHz
    # by hand: 64 MACs x 10 uW = 640 uW; 2208 KiB x 2 uW = 4416 uW; plus the flat 0.05 W
    assert rep["static"]["power_w"]["array"] == pytest.approx(640e-6)
    assert rep["static"]["power_w"]["sram"] == pytest.approx(4416e-6)
    assert rep["static"]["power_w"]["total"] == pytest.approx(0.055056)
    e = rep["energy_mj"]
    assert e["static"] == pytest.approx(0.055056 * seconds * 1e3, rel=1e-12)
    assert rep["static"]["energy_mj"]["array"] == pytest.approx(640e-6 * seconds * 1e3, rel=1e-12)
    assert rep["static"]["energy_mj"]["sram"] == pytest.approx(4416e-6 * seconds * 1e3, rel=1e-12)
    assert rep["static"]["energy_mj"]["base"] == pytest.approx(0.05 * seconds * 1e3, rel=1e-12)


def test_total_is_dynamic_plus_static(mlp):
    e = report(mlp)["energy_mj"]
    assert e["dynamic"] == e["mac"] + e["vector"] + e["sram"] + e["dram"]
    assert e["total"] == e["dynamic"] + e["static"]
    assert e["static"] > 0 and e["dynamic"] > 0


def test_zero_leakage_gives_the_flat_static_power_energy_exactly(mlp):
    """Without the leakage terms the energy is the model before them: dynamic + static_power_w x latency,
    summed in the same order, to the last bit; timing and dynamic energy do not depend on leakage."""
    leaky = report(mlp)
    rep = report(mlp, leakage_uw_per_mac=0.0, leakage_uw_per_sram_kib=0.0)
    e = rep["energy_mj"]
    seconds = rep["cycles"] / (1.0 * 1e9)
    assert e["static"] == 0.05 * seconds * 1e3
    assert e["total"] == sum([e["mac"], e["vector"], e["sram"], e["dram"], 0.05 * seconds * 1e3])
    assert rep["cycles"] == leaky["cycles"]
    assert all(e[k] == leaky["energy_mj"][k] for k in ("mac", "vector", "sram", "dram", "dynamic"))
    assert leaky["energy_mj"]["total"] > e["total"]


def test_area_by_hand(mlp):
    a = report(mlp)["area_mm2"]
    # 64 MACs x 0.002 mm2 = 0.128 mm2; 2208 KiB x 0.004 mm2 = 8.832 mm2
    assert a["array"] == pytest.approx(0.128) and a["sram"] == pytest.approx(8.832)
    assert a["total"] == pytest.approx(8.96)


def test_preset_coefficients_by_hand():
    """edge: 32x32 MACs, 256 + 256 + 128 + 2048 = 2688 KiB; TPU-v1-derived areas and the assumed leakage."""
    cfg = load_config("edge")
    a = area_mm2(cfg)
    assert a["array"] == pytest.approx(1024 * 0.0012) and a["sram"] == pytest.approx(2688 * 0.0039)
    p = static_power(cfg)
    assert p["array"] == pytest.approx(1024 * 5e-6) and p["sram"] == pytest.approx(2688 * 1e-6)
    assert p["total"] == pytest.approx(0.1 + 1024 * 5e-6 + 2688 * 1e-6)


def test_text_table_totals_split_dynamic_and_static(mlp):
    rep = report(mlp)
    text = text_table(rep)
    e = rep["energy_mj"]
    assert f"energy {e['total']:.3f} mJ = dynamic {e['dynamic']:.3f}" in text
    assert f"+ static {e['static']:.3f}" in text
    assert "leakage of the MAC array" in text and f"area {rep['area_mm2']['total']:.2f} mm2" in text


@pytest.mark.parametrize("field", ["leakage_uw_per_mac", "leakage_uw_per_sram_kib", "area_mm2_per_mac",
                                   "area_mm2_per_sram_kib"])
def test_negative_coefficients_are_typed_errors(field):
    with pytest.raises(TargetError, match=f"{field} must be >= 0"):
        load_config("edge", {field: -1.0})

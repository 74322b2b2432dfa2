"""The machine description of the simulated ASIC: array size, clock, scratchpads, DRAM, energy table.

Every number the compiler and simulator use comes from here, read from a JSON preset shipped with
the package (``presets/edge.json``, ``presets/x1.json``) with an optional partial JSON (a file path
or a dict) merged over it, so a user changes the machine without rebuilding anything.
Energy defaults follow Horowitz (ISSCC 2014, 45 nm): 8-bit multiply 0.2 pJ, 32-bit add 0.1 pJ,
a 32 KB SRAM bank ~2.5 pJ/byte, a ~1 MB SRAM ~12.5 pJ/byte, DRAM 1.3 nJ per 64-bit access.
Static power and area per MAC cell and per KiB of SRAM are documented in ``area_power.py``.
The host CPU that runs the ops the chip cannot is a roofline (peak GFLOP/s, GB/s, per-op overhead)
of a named edge core, so host time is the same on every build machine (``host_model.py``).
"""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import Any, Mapping

from nnc.ir import TargetError

PRESETS_DIR = Path(__file__).parent / "presets"
DATAFLOWS = ("ws", "os")
INPUT_QUANTIZE = ("chip", "host")  # who quantizes the model's FP32 input (docs/asic.md)


@dataclasses.dataclass(frozen=True)
class AsicConfig:
    name: str
    array_rows: int
    array_cols: int
    dataflow: str
    clock_ghz: float
    input_spad_kib: int
    weight_spad_kib: int
    acc_kib: int
    buffer_kib: int
    act_buffer_kib: int           # of buffer_kib: the resident activations' region (the rest holds tiles)
    act_buffer_gbps: float        # DMA bandwidth between that region and the scratchpads
    vector_lanes: int
    vector_activations: bool      # the vector unit's activation tables and qmul (else those ops go to the host)
    vector_overhead_cycles: int
    array_depthwise: bool         # the array's depthwise mode (channels across columns); else on the vector unit
    prefetch_weights: bool        # batch-1 fc weights prefetched into the resident region (prefetch.py)
    input_quantize: str           # "chip": the vector unit quantizes the FP32 input (vec.quant); "host": the host does
    dram_gbps: float
    dram_efficiency: float
    dram_latency_ns: float
    ideal_bandwidth: bool
    host_link_gbps: float
    host_stream_bands: int        # a streaming host run hands its results over in this many bands (1: whole)
    host_cpu: str                 # the host that runs the ops the chip cannot (a roofline model, host_model.py)
    host_gflops: float
    host_gbps: float
    host_op_overhead_ns: float
    target_latency_ms: float
    static_power_w: float         # size-independent static power (vector unit, DMA, control, I/O)
    leakage_uw_per_mac: float     # leakage of one MAC cell of the array, uW (area_power.py)
    leakage_uw_per_sram_kib: float  # leakage of one KiB of on-chip SRAM (scratchpads, accumulator, buffer), uW
    area_mm2_per_mac: float       # silicon area of one MAC cell, mm^2
    area_mm2_per_sram_kib: float  # silicon area of one KiB of on-chip SRAM, mm^2
    energy_pj: Mapping[str, float]

    # -- derived quantities ----------------------------------------------------------------------
    @property
    def macs(self) -> int:
        return self.array_rows * self.array_cols

    @property
    def tops_peak(self) -> float:
        return 2 * self.macs * self.clock_ghz / 1e3

    @property
    def dram_bytes_per_cycle(self) -> float:
        """Sustained DRAM bytes per clock cycle (bandwidth x efficiency / clock)."""
        return self.dram_gbps * self.dram_efficiency / self.clock_ghz

    @property
    def act_bytes_per_cycle(self) -> float:
        return self.act_buffer_gbps / self.clock_ghz

    @property
    def dram_latency_cycles(self) -> int:
        return int(round(self.dram_latency_ns * self.clock_ghz))

    def sizes(self) -> dict[str, int]:
        """Bytes of each on-chip memory."""
        return {"ispad": self.input_spad_kib * 1024, "wspad": self.weight_spad_kib * 1024,
                "acc": self.acc_kib * 1024, "buf": (self.buffer_kib - self.act_buffer_kib) * 1024,
                "act": self.act_buffer_kib * 1024}

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["energy_pj"] = dict(self.energy_pj)
        d["tops_peak"] = self.tops_peak
        return d


def kib_for(nbytes: int) -> int:
    """The smallest whole KiB count holding ``nbytes`` (scratchpad fields are in KiB)."""
    return -(-int(nbytes) // 1024)


def _read_json(path: str | os.PathLike) -> dict[str, Any]:
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise TargetError(f"asic config {path}: no such file") from None
    except (OSError, json.JSONDecodeError) as e:
        raise TargetError(f"asic config {path}: cannot read: {e}") from None
    if not isinstance(data, dict):
        raise TargetError(f"asic config {path}: expected a JSON object")
    return data


def preset_names() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.json"))


def load_config(preset: str = "edge", override: str | os.PathLike | Mapping[str, Any] | None = None) -> AsicConfig:
    """The preset ``preset`` with ``override`` (a JSON file path or a dict; may be partial) merged over it."""
    path = PRESETS_DIR / f"{preset}.json"
    if not path.exists():
        raise TargetError(f"unknown asic preset {preset!r}; available: {', '.join(preset_names())}")
    data = _read_json(path)
    if override is not None:
        extra = dict(override) if isinstance(override, Mapping) else _read_json(override)
        fields = {f.name for f in dataclasses.fields(AsicConfig)}
        unknown = sorted(set(extra) - fields)
        if unknown:
            raise TargetError(f"asic config: unknown field(s) {', '.join(unknown)}; known: {', '.join(sorted(fields))}")
        if "energy_pj" in extra:
            extra["energy_pj"] = {**data["energy_pj"], **extra["energy_pj"]}
        data = {**data, **extra}
    return make_config(data)


def make_config(data: Mapping[str, Any]) -> AsicConfig:
    fields = {f.name: f for f in dataclasses.fields(AsicConfig)}
    missing = sorted(set(fields) - set(data))
    if missing:
        raise TargetError(f"asic config: missing field(s) {', '.join(missing)}")
    vals: dict[str, Any] = {}
    for name in fields:
        v = data[name]
        want = fields[name].type
        try:
            if want == "int":
                v = int(v)
            elif want == "float":
                v = float(v)
            elif want == "bool":
                v = bool(v)
            elif want == "str":
                v = str(v)
            else:
                v = {str(k): float(x) for k, x in dict(v).items()}
        except (TypeError, ValueError):
            raise TargetError(f"asic config: field {name} must be {want}, got {data[name]!r}") from None
        vals[name] = v
    cfg = AsicConfig(**vals)
    if cfg.dataflow not in DATAFLOWS:
        raise TargetError(f"asic config: dataflow must be one of {', '.join(DATAFLOWS)}, got {cfg.dataflow!r}")
    for k in ("array_rows", "array_cols", "input_spad_kib", "weight_spad_kib", "acc_kib", "buffer_kib",
              "vector_lanes", "host_stream_bands", "clock_ghz", "dram_gbps", "host_link_gbps", "host_gflops",
              "host_gbps", "target_latency_ms", "act_buffer_gbps"):
        if not getattr(cfg, k) > 0:  # also catches NaN
            raise TargetError(f"asic config: {k} must be positive, got {getattr(cfg, k)!r}")
    if cfg.input_quantize not in INPUT_QUANTIZE:
        raise TargetError(f"asic config: input_quantize must be one of {', '.join(INPUT_QUANTIZE)}, got "
                          f"{cfg.input_quantize!r}")
    if not 0 <= cfg.act_buffer_kib < cfg.buffer_kib:
        raise TargetError(f"asic config: act_buffer_kib must be in [0, buffer_kib = {cfg.buffer_kib}), got "
                          f"{cfg.act_buffer_kib!r} (the rest of the buffer holds the layers' output tiles)")
    for k in ("vector_overhead_cycles", "dram_latency_ns", "host_op_overhead_ns", "static_power_w",
              "leakage_uw_per_mac", "leakage_uw_per_sram_kib", "area_mm2_per_mac", "area_mm2_per_sram_kib"):
        if not getattr(cfg, k) >= 0:
            raise TargetError(f"asic config: {k} must be >= 0, got {getattr(cfg, k)!r}")
    if not 0 < cfg.dram_efficiency <= 1:
        raise TargetError(f"asic config: dram_efficiency must be in (0, 1], got {cfg.dram_efficiency!r}")
    for k in ("mul8", "add32", "vector_op", "spad_byte", "buffer_byte", "dram_byte"):
        if k not in cfg.energy_pj:
            raise TargetError(f"asic config: energy_pj needs {k!r}")
    return cfg

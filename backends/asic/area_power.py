"""Silicon area and static (leakage) power of the simulated ASIC, from its size.

Both grow with the two things a design sweep varies: the MAC array (``array_rows x array_cols``
cells) and the on-chip SRAM (input and weight scratchpads, accumulator, on-chip buffer; KiB as in
``AsicConfig.sizes``). The vector unit, DMA engines, control and I/O are not sized by a sweep; their
static power is the preset's flat ``static_power_w`` and their area is not estimated.

    area_mm2      = MACs x area_mm2_per_mac      + SRAM KiB x area_mm2_per_sram_kib
    static_power     = MACs x leakage_uw_per_mac    + SRAM KiB x leakage_uw_per_sram_kib   (x 1e-6)
    static energy = (static_power_w + static_power) x latency

Default coefficients (both presets; docs/asic.md, "Static power and area"), a 28 nm-class process:

- area: Google's TPU v1 (Jouppi et al., "In-Datacenter Performance Analysis of a Tensor Processing
  Unit", ISCA 2017; 28 nm, die < 331 mm^2): the 256x256 matrix unit is 24% of the die, 79 mm^2 for
  65,536 INT8 MACs -> 0.0012 mm^2 a MAC cell; the 24 MiB Unified Buffer is 29%, 96 mm^2 ->
  0.0039 mm^2 a KiB. Both are upper bounds (the die is "less than" 331 mm^2) and include wiring.
- leakage: an assumption, not a measured figure. A MAC cell of that area is about 2,000 NAND2
  gate equivalents (0.6 um^2 each at 28 nm); at ~2.5 nW each (high-performance-mobile-class
  transistors, typical corner, warm die) that is 5 uW. A KiB of high-density 6T SRAM is 8,192 bit
  cells; at ~120 pW each with its share of the periphery that is 1 uW.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .config import AsicConfig

__all__ = ["area_mm2", "sram_kib", "static_power"]


def sram_kib(cfg: AsicConfig) -> float:
    """KiB of on-chip SRAM: both scratchpads, the accumulator and the whole on-chip buffer."""
    return (cfg.input_spad_kib + cfg.weight_spad_kib + cfg.acc_kib + cfg.buffer_kib) * 1.0


def area_mm2(cfg: AsicConfig) -> dict[str, float]:
    """{array, sram, total} in mm^2."""
    array = cfg.macs * cfg.area_mm2_per_mac
    sram = sram_kib(cfg) * cfg.area_mm2_per_sram_kib
    return {"array": array, "sram": sram, "total": array + sram}


def static_power(cfg: AsicConfig) -> dict[str, float]:
    """Static power in W: {array, sram} leakage, ``base`` (the flat ``static_power_w``) and total."""
    array = cfg.macs * cfg.leakage_uw_per_mac * 1e-6
    sram = sram_kib(cfg) * cfg.leakage_uw_per_sram_kib * 1e-6
    return {"array": array, "sram": sram, "base": cfg.static_power_w, "total": cfg.static_power_w + array + sram}

"""The tables of bench/ASIC_SWEEP.md from an ``nnc asic-sweep --json`` file.

    python bench/asic_sweep_tables.py pool.json [--preset edge]

Prints (1) the full table, one line per configuration, latency / energy (static part) / utilisation
per model, bold on that model's latency-vs-energy front and marked † on its latency-vs-area front;
(2) how the latency-vs-energy fronts move with the leakage coefficients. Timing and dynamic energy
do not depend on the leakage (tests/asic/test_asic_static_power.py), so each row's energy at other
coefficients is dynamic_mj + (static_power_w + MACs x leakage per MAC + SRAM KiB x leakage per KiB)
x latency, recomputed here without simulating again (checked against the sweep's own energy at the
preset's coefficients).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from typing import Any

from nnc.backends.asic.config import load_config
from nnc.sweep_report import fronts

SCALES = (0.0, 1.0, 4.0, 16.0)


def reprice(rows: list[dict[str, Any]], base_w: float, mac_uw: float, kib_uw: float) -> list[dict[str, Any]]:
    """The rows with ``energy_mj`` recomputed at these static-power coefficients."""
    out = []
    for r in rows:
        if r.get("error"):
            out.append(r)
            continue
        watts = base_w + (r["array_rows"] * r["array_cols"] * mac_uw + r["sram_kib"] * kib_uw) * 1e-6
        out.append({**r, "energy_mj": r["dynamic_mj"] + watts * r["latency_ms"]})
    return out


def full_table(rows: list[dict[str, Any]], models: list[str]) -> list[str]:
    energy, area = fronts(rows), fronts(rows, "area_mm2")
    names = [os.path.basename(m).split(".")[0] for m in models]
    lines = ["| config | SRAM KiB | area mm² | " + " | ".join(f"{n} ms / mJ (static) / util" for n in names) + " |",
             "|---|---:|---:|" + "---:|" * len(models)]
    for cfg in dict.fromkeys(r["config"] for r in rows):
        mine = {r["model"]: r for r in rows if r["config"] == cfg}
        first = next(iter(mine.values()))
        cells = []
        for m in models:
            r = mine[m]
            if r.get("error"):
                cells.append("error")
                continue
            text = f"{r['latency_ms']:.3f} / {r['energy_mj']:.3f} ({r['static_mj']:.3f}) / {r['utilization']:.3f}"
            if cfg in {f["config"] for f in energy[m]}:
                text = f"**{text}**"
            if cfg in {f["config"] for f in area[m]}:
                text += " †"
            cells.append(text)
        lines.append(f"| {cfg} | {first['sram_kib']} | {first['area_mm2']:.2f} | " + " | ".join(cells) + " |")
    return lines


def sensitivity(rows: list[dict[str, Any]], models: list[str], preset: str) -> list[str]:
    cfg = load_config(preset)
    again = reprice(rows, cfg.static_power_w, cfg.leakage_uw_per_mac, cfg.leakage_uw_per_sram_kib)
    for a, b in zip(rows, again):
        if not a.get("error") and not math.isclose(a["energy_mj"], b["energy_mj"], rel_tol=1e-9):
            sys.exit(f"repricing does not reproduce {a['model']} on {a['config']}: "
                     f"{a['energy_mj']} vs {b['energy_mj']}")
    names = [os.path.basename(m).split(".")[0] for m in models] + ["overall"]
    lines = ["| leakage (x preset) | uW per MAC | uW per SRAM KiB | " + " | ".join(names) + " |",
             "|---:|---:|---:|" + "---|" * len(names)]
    for s in SCALES:
        fr = fronts(reprice(rows, cfg.static_power_w, s * cfg.leakage_uw_per_mac, s * cfg.leakage_uw_per_sram_kib))
        cells = [", ".join(r["config"] for r in f) for f in fr.values()]
        lines.append(f"| {s:g} | {s * cfg.leakage_uw_per_mac:g} | {s * cfg.leakage_uw_per_sram_kib:g} | "
                     + " | ".join(cells) + " |")
    return lines


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("json")
    ap.add_argument("--preset", default="edge")
    args = ap.parse_args()
    with open(args.json, encoding="utf-8") as f:
        doc = json.load(f)
    rows = doc["rows"]
    models = list(dict.fromkeys(r["model"] for r in rows))
    print("\n".join(full_table(rows, models)))
    print()
    print("\n".join(sensitivity(rows, models, args.preset)))


if __name__ == "__main__":
    main()

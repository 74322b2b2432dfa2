"""The outputs of an ASIC sweep (``nnc.sweep``): the Pareto fronts of latency vs energy and of latency
vs area (mm^2, ``backends/asic/area_power.py``), per model and overall, the table as CSV or JSON, a
plain-text summary and a chart (hand-written SVG: per model and for the overall score, a log-log
scatter panel of energy and one of area against latency, front points joined and labelled).

"Overall" scores a configuration by the geometric mean, over the models, of its latency and of its
energy (only configurations every model ran on): no model dominates the score by being big. Its
area is the configuration's own (the same for every model).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
from typing import Any, Sequence

from .sweep import ROW_FIELDS, unique

__all__ = ["FRONT_AXES", "fronts", "overall_rows", "pareto_front", "sweep_csv", "sweep_json", "sweep_svg",
           "sweep_summary"]

# the second axis of each front (the first is latency_ms), with its label
FRONT_AXES = {"energy_mj": "energy (mJ)", "area_mm2": "area (mm2)"}


def pareto_front(rows: Sequence[dict[str, Any]], x: str = "latency_ms", y: str = "energy_mj") -> list[dict[str, Any]]:
    """The rows no other row beats on both ``x`` and ``y`` (lower is better; ties keep both), sorted by ``x``."""
    ok = [r for r in rows if r.get("error") is None]
    front = [r for r in ok
             if not any(o[x] <= r[x] and o[y] <= r[y] and (o[x] < r[x] or o[y] < r[y]) for o in ok)]
    return sorted(front, key=lambda r: (r[x], r[y]))


def overall_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per configuration that ran on every model: geometric means of latency and energy; its area."""
    models = unique(r["model"] for r in rows)
    out = []
    for cfg in unique(r["config"] for r in rows):
        mine = [r for r in rows if r["config"] == cfg and r.get("error") is None]
        if len(mine) != len(models):
            continue
        gm = lambda k, mine=mine: math.exp(sum(math.log(max(r[k], 1e-300)) for r in mine) / len(mine))
        out.append({**{k: mine[0][k] for k in ("config", "array_rows", "array_cols", "spad_kib", "dram_gbps",
                                                 "dataflow", "sram_kib", "area_mm2")},
                    "model": "overall", "latency_ms": gm("latency_ms"), "energy_mj": gm("energy_mj"), "error": None})
    return out


def fronts(rows: Sequence[dict[str, Any]], y: str = "energy_mj") -> dict[str, list[dict[str, Any]]]:
    """The latency-vs-``y`` front of each model and (key ``overall``) of the overall scores."""
    out = {m: pareto_front([r for r in rows if r["model"] == m], y=y) for m in unique(r["model"] for r in rows)}
    out["overall"] = pareto_front(overall_rows(rows), y=y)
    return out


def sweep_csv(rows: Sequence[dict[str, Any]]) -> str:
    """The rows; ``on_front``: on its model's latency-vs-energy front, ``on_area_front``: latency vs area."""
    front = {(m, r["config"]) for m, f in fronts(rows).items() for r in f}
    area = {(m, r["config"]) for m, f in fronts(rows, "area_mm2").items() for r in f}
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*ROW_FIELDS, "on_front", "on_area_front"])
    for r in rows:
        cells = [("" if r.get(k) is None else r.get(k)) for k in ROW_FIELDS]
        key = (r["model"], r["config"])
        w.writerow(cells + [int(key in front), int(key in area)])
    return buf.getvalue()


def sweep_json(rows: Sequence[dict[str, Any]], meta: dict[str, Any] | None = None) -> str:
    doc = {**(meta or {}), "rows": [{k: r.get(k) for k in ROW_FIELDS} for r in rows],
           "front": {m: [r["config"] for r in f] for m, f in fronts(rows).items()},
           "front_latency_area": {m: [r["config"] for r in f] for m, f in fronts(rows, "area_mm2").items()}}
    return json.dumps(doc, indent=2) + "\n"


def sweep_summary(rows: Sequence[dict[str, Any]]) -> str:
    """The configurations on each front, one block per model, as text."""
    lines = []
    for y, what in (("energy_mj", "energy"), ("area_mm2", "area")):
        for model, front in fronts(rows, y).items():
            label = model if model == "overall" else os.path.basename(model)
            lines.append(f"Pareto front (latency vs {what}), {label}:" + ("  (geometric mean over models)"
                                                                        if model == "overall" else ""))
            for r in front:
                extra = "" if model == "overall" else (f"  static {r['static_mj']:.3f} mJ  {r['fps']:>7.1f} fps"
                                                       f"  util {r['utilization']:.3f}")
                lines.append(f"  {r['config']:<24} {r['latency_ms']:>9.4f} ms  {r['energy_mj']:>9.5f} mJ  "
                             f"{r['area_mm2']:>6.2f} mm2  {r['sram_kib']:>5} KiB SRAM{extra}")
            if not front:
                lines.append("  (no configuration ran)")
    errors = [r for r in rows if r.get("error")]
    if errors:
        lines.append(f"{len(errors)} simulation(s) failed, e.g. {os.path.basename(errors[0]['model'])} on "
                     f"{errors[0]['config']}: {errors[0]['error']}")
    return "\n".join(lines) + "\n"


# -- chart ---------------------------------------------------------------------------------------------

PANEL_W, PANEL_H, PAD_L, PAD_B, PAD_T, PAD_R = 460, 340, 70, 48, 34, 20


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _log_ticks(lo: float, hi: float) -> list[float]:
    a, b = math.floor(math.log10(lo)), math.ceil(math.log10(hi))
    ticks = [m * 10.0 ** e for e in range(a, b + 1) for m in (1, 2, 5) if lo <= m * 10.0 ** e <= hi]
    if len(ticks) >= 3:
        return ticks
    # a narrow range: four evenly spaced (in log) ticks, printed to three digits
    return [lo * (hi / lo) ** (i / 4) for i in range(1, 4)]


def _panel(title: str, pts: list[dict[str, Any]], front: list[dict[str, Any]], ox: int, oy: int,
           y: str = "energy_mj") -> list[str]:
    out = [f'<g transform="translate({ox},{oy})">',
           f'<text x="{PANEL_W / 2}" y="18" text-anchor="middle" font-size="14" '
           f'font-weight="bold">{_esc(title)}</text>']
    x0, y0, x1, y1 = PAD_L, PANEL_H - PAD_B, PANEL_W - PAD_R, PAD_T
    out.append(f'<rect x="{x0}" y="{y1}" width="{x1 - x0}" height="{y0 - y1}" fill="#fafafa" stroke="#888"/>')
    if not pts:
        out.append(f'<text x="{(x0 + x1) / 2}" y="{(y0 + y1) / 2}" text-anchor="middle">no results</text></g>')
        return out
    xs = [p["latency_ms"] for p in pts]
    ys = [p[y] for p in pts]
    lx0, lx1 = min(xs) / 1.15, max(xs) * 1.15
    ly0, ly1 = min(ys) / 1.15, max(ys) * 1.15
    sx = lambda v: x0 + (math.log(v) - math.log(lx0)) / (math.log(lx1) - math.log(lx0)) * (x1 - x0)
    sy = lambda v: y0 - (math.log(v) - math.log(ly0)) / (math.log(ly1) - math.log(ly0)) * (y0 - y1)
    for t in _log_ticks(lx0, lx1):
        out.append(f'<line x1="{sx(t):.1f}" y1="{y0}" x2="{sx(t):.1f}" y2="{y1}" stroke="#e4e4e4"/>'
                   f'<text x="{sx(t):.1f}" y="{y0 + 15}" text-anchor="middle" font-size="10">{t:.3g}</text>')
    for t in _log_ticks(ly0, ly1):
        out.append(f'<line x1="{x0}" y1="{sy(t):.1f}" x2="{x1}" y2="{sy(t):.1f}" stroke="#e4e4e4"/>'
                   f'<text x="{x0 - 4}" y="{sy(t) + 3:.1f}" text-anchor="end" font-size="10">{t:.3g}</text>')
    out.append(f'<text x="{(x0 + x1) / 2}" y="{PANEL_H - 10}" text-anchor="middle" '
               f'font-size="11">latency (ms, log)</text>')
    out.append(f'<text x="14" y="{(y0 + y1) / 2}" text-anchor="middle" font-size="11" '
               f'transform="rotate(-90 14 {(y0 + y1) / 2})">{FRONT_AXES[y][:-1]}, log)</text>')
    on = {p["config"] for p in front}
    for p in pts:
        colour = "#1f77b4" if p["dataflow"] == "ws" else "#2ca02c"
        ring = ' stroke="#d62728" stroke-width="1.5"' if p["config"] in on else ""
        out.append(f'<circle cx="{sx(p["latency_ms"]):.1f}" cy="{sy(p[y]):.1f}" r="3.5" fill="{colour}" '
                   f'fill-opacity="{1 if ring else 0.45}"{ring}><title>{_esc(p["config"])}</title></circle>')
    if front:
        path = " ".join(f"{sx(p['latency_ms']):.1f},{sy(p[y]):.1f}" for p in front)
        out.append(f'<polyline points="{path}" fill="none" stroke="#d62728" stroke-width="1.5"/>')
        placed: list[tuple[float, float, float]] = []  # (x, y, width) of the labels so far
        for p in front[:8]:  # more labels than this crowd the panel; the table names them all
            px, py = sx(p["latency_ms"]), sy(p[y])
            lx, ly, lw = min(px + 5, x1 - 5.2 * len(p["config"])), py - 5, 5.2 * len(p["config"])
            while any(abs(ly - y) < 10 and lx < x + w and x < lx + lw for x, y, w in placed) and ly > y1 + 10:
                ly -= 10  # move up past a label it would overprint
            placed.append((lx, ly, lw))
            if abs(ly - (py - 5)) > 1:  # a leader line back to a label that moved
                out.append(f'<line x1="{px:.1f}" y1="{py:.1f}" x2="{lx:.1f}" y2="{ly + 2:.1f}" stroke="#d62728" '
                           f'stroke-width="0.5"/>')
            out.append(f'<text x="{lx:.1f}" y="{ly:.1f}" font-size="9" fill="#d62728">{_esc(p["config"])}</text>')
    out.append("</g>")
    return out


def sweep_svg(rows: Sequence[dict[str, Any]], title: str = "nnc asic-sweep: latency vs energy and vs area") -> str:
    """One row per model and one for the overall score, each with a latency-vs-energy panel (left) and
    a latency-vs-area panel (right); front points ringed in red, ws blue, os green."""
    fr = {y: fronts(rows, y) for y in FRONT_AXES}
    groups = [(os.path.basename(m), m, [r for r in rows if r["model"] == m and r.get("error") is None])
              for m in unique(r["model"] for r in rows)]
    groups.append(("overall (geometric mean)", "overall", overall_rows(rows)))
    panels = [(f"{name}: {FRONT_AXES[y].split(' ')[0]}", pts, fr[y][key], y)
              for name, key, pts in groups for y in FRONT_AXES]
    ncol = 2
    nrow = -(-len(panels) // ncol)
    w, h = ncol * PANEL_W, nrow * PANEL_H + 50
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 {w} {h}" '
           f'font-family="sans-serif">', f'<rect width="{w}" height="{h}" fill="white"/>',
           f'<text x="{w / 2}" y="22" text-anchor="middle" font-size="16">{_esc(title)}</text>',
           f'<text x="{w / 2}" y="40" text-anchor="middle" font-size="11" fill="#555">blue: weight-stationary, '
           f'green: output-stationary; red line: Pareto front (labelled); hover a point for its config</text>']
    for i, (name, pts, front, y) in enumerate(panels):
        out += _panel(name, pts, front, (i % ncol) * PANEL_W, 50 + (i // ncol) * PANEL_H, y)
    out.append("</svg>")
    return "\n".join(out) + "\n"

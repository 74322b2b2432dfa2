"""Views of a simulated run for people and other tools: a Chrome-trace/Perfetto JSON timeline (one
track per engine queue, one for host transfers, one for host compute), a per-layer latency bar chart
as hand-written SVG, a text table (chip layers, host ops and transfers in timeline order), and the
equivalent SCALE-Sim v2 config and topology CSV so a run can be checked outside nnc (convolutions as
conv rows; matmuls as 1x1 convs; vector-unit layers are not array work and are left out).
"""

from __future__ import annotations

import json
import math
import os
from typing import Any

from .program import Program
from .sim.runner import Timeline

_TID = {"load": 1, "compute": 2, "vector": 3, "store": 4, "prefetch": 7, "host": 5, "host cpu": 6}


def chrome_trace(program: Program, tl: Timeline) -> dict[str, Any]:
    us = 1e-3 / program.cfg.clock_ghz  # microseconds per cycle
    events: list[dict[str, Any]] = [{"ph": "M", "name": "thread_name", "pid": 1, "tid": t, "args": {"name": q}}
                                    for q, t in _TID.items()]
    for seg, tm in zip(program.segments, tl.segments):
        for k, i in enumerate(range(seg.start, seg.end)):
            ins = program.instrs[i]
            if ins.op == "finish":
                continue
            dur = int(tm.end[k] - tm.start[k])
            layer = program.layer_info[ins.layer]["name"] if ins.layer >= 0 else ""
            events.append({"ph": "X", "pid": 1, "tid": _TID[ins.queue], "name": ins.op, "ts": float(tm.start[k]) * us,
                           "dur": max(dur, 1) * us, "args": {"layer": layer, "stall": int(tm.stall[k])}})
    for what, s, e, nbytes in tl.transfers:
        events.append({"ph": "X", "pid": 1, "tid": _TID["host"], "name": what[:60], "ts": s * us, "dur": (e - s) * us,
                       "args": {"bytes": nbytes}})
    for h in tl.host:
        events.append({"ph": "X", "pid": 1, "tid": _TID["host cpu"], "name": h.op.opname, "ts": h.start * us,
                       "dur": (h.end - h.start) * us,
                       "args": {"value": h.op.results[0].name, "flops": h.cost.flops, "bytes": h.cost.bytes}})
    return {"traceEvents": events, "displayTimeUnit": "ns"}


PART_COLOURS = {"compute": "#4477aa", "vector": "#228833", "dma": "#ee6677", "latency": "#ccbb44",
                "stall": "#bbbbbb", "host": "#aa3377", "link": "#66ccee"}
BOUND_COLOURS = {"compute": "#4477aa", "memory": "#ee6677", "vector": "#228833", "host": "#aa3377"}


def short_name(name: str, width: int = 28) -> str:
    """A value name made short enough for a table row: ONNX's ``_output_0`` suffix and ``.q``-style
    path noise dropped, a path component that only repeats the next one's prefix
    (``features/features.1``) dropped, then the last components that fit ``width``."""
    name = name.replace("_output_0", "")
    parts = [p for p in name.split("/") if p]
    parts = [p for i, p in enumerate(parts) if not (i + 1 < len(parts) and parts[i + 1].startswith(p + "."))]
    out = parts[-1] if parts else name
    for p in reversed(parts[:-1]):
        if len(p) + 1 + len(out) > width:
            break
        out = f"{p}/{out}"
    return out[-width:]


def _transfer_name(what: str) -> tuple[str, str]:
    """``to host: /a/b_output_0, ...`` -> (``transfer to host``, ``a/b``: the first value, short)."""
    head, _, vals = what.partition(": ")
    return f"transfer {head}", short_name(vals.split(", ")[0], 24)


def timeline_rows(report: dict[str, Any]) -> list[dict[str, Any]]:
    """Chip layers, host ops and transfers in timeline order, each with a short unique label (index,
    op kind, name, MACs), its span in cycles, the parts of that span and its bound."""
    rows = []
    for la in report["layers"]:
        # where a layer's ops run differently from their names' default: depthwise and batch-1 on the vector unit
        how = "dw " if la["kind"] == "dw" else "gemv " if (la.get("tiles") or {}).get("engine") == "vector" else ""
        rows.append({"start": la["start_cycle"], "cycles": la["end_cycle"] - la["start_cycle"], "kind": how + la["op"],
                     "name": short_name(la["name"], 24), "order": 1, "macs": la["macs"], "parts": la["time"],
                     "bound": la["bound"]})
    for h in (report.get("host") or {}).get("ops", []):
        rows.append({"start": h["start_cycle"], "cycles": h["cycles"], "kind": f"host {h['op']}", "order": 0,
                     "name": short_name(h["name"], 24),
                     "macs": 0, "parts": {"host": h["cycles"]}, "bound": "host"})
    for t in report["transfers"]["list"]:
        cyc = t["end_cycle"] - t["start_cycle"]
        kind, name = _transfer_name(t["what"])
        rows.append({"start": t["start_cycle"], "cycles": cyc, "kind": kind, "order": 0, "name": name,
                     "macs": 0, "parts": {"link": cyc}, "bound": "memory"})
    rows.sort(key=lambda r: (r["start"], r["order"]))  # the text table's order
    for i, r in enumerate(rows):
        macs = f" {r['macs'] / 1e6:.2f}M MAC" if r["macs"] else ""
        r["label"] = f"{i:>3} {r['kind'][:22]} {r['name']}{macs}"
    return rows


def layer_chart_svg(report: dict[str, Any], width: int = 1000) -> str:
    """One row per chip layer, host op and transfer in timeline order: a bar of its span stacked by the
    parts of ``layer["time"]`` (host and link rows are one part), a square coloured by its bound."""
    rows = timeline_rows(report)
    bar_h, left, top = 14, 380, 46
    height = top + bar_h * len(rows) + 10
    longest = max([r["cycles"] for r in rows] + [1])
    scale = (width - left - 90) / longest
    ghz = report["config"]["clock_ghz"]
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
           f'font-size="10">',
           f'<text x="4" y="14" font-size="12">per-layer time ({report["config"]["name"]}, total '
           f'{report["latency_ms"]:.3f} ms): bars stacked by part, square = bound</text>']
    x = 4
    for k, c in PART_COLOURS.items():
        out.append(f'<rect x="{x}" y="22" width="10" height="10" fill="{c}"/><text x="{x + 13}" y="31">{k}</text>')
        x += 20 + 7 * len(k)
    x += 20
    for k, c in BOUND_COLOURS.items():
        out.append(f'<rect x="{x}" y="24" width="7" height="7" fill="{c}"/><text x="{x + 10}" y="31">{k}-bound</text>')
        x += 20 + 7 * len(k + "-bound")
    for i, r in enumerate(rows):
        y = top + i * bar_h
        out.append(f'<rect x="{left - 12}" y="{y + 4}" width="7" height="7" '
                   f'fill="{BOUND_COLOURS.get(r["bound"], "#999")}"/>')
        out.append(f'<text x="4" y="{y + 10}">{_esc(r["label"])}</text>')
        x = float(left)
        for part, cyc in r["parts"].items():
            if cyc:
                out.append(f'<rect x="{x:.1f}" y="{y + 2}" width="{cyc * scale:.2f}" height="{bar_h - 3}" '
                           f'fill="{PART_COLOURS[part]}"><title>{part} {cyc} cycles</title></rect>')
                x += cyc * scale
        out.append(f'<text x="{x + 4:.1f}" y="{y + 10}">{r["cycles"] / ghz / 1e3:.1f} us</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def roofline_svg(report: dict[str, Any], width: int = 720, height: int = 480) -> str:
    """Log-log roofline of the chip layers: operational intensity (ops = 2 x MACs per DRAM byte) against
    achieved ops/s over the layer's span, under the preset's roofs (peak 2 x rows x cols x clock, and
    DRAM bandwidth x efficiency x intensity) and the vector unit's (2 x lanes x clock, dashed, for the
    depthwise and batch-1 layers it runs). Layers without MACs (pooling, adds) are left out."""
    c = report["config"]
    peak = 2 * c["array_rows"] * c["array_cols"] * c["clock_ghz"] * 1e9
    bw = c["dram_gbps"] * c["dram_efficiency"] * 1e9
    pts = [(2 * la["macs"] / max(la["dram_bytes"], 1),
            2 * la["macs"] / ((la["end_cycle"] - la["start_cycle"]) / (c["clock_ghz"] * 1e9)), la)
           for la in report["layers"] if la["macs"] and la["end_cycle"] > la["start_cycle"]]
    xs = [p[0] for p in pts] + [peak / bw]
    ys = [p[1] for p in pts] + [peak]
    x0, x1 = math.floor(math.log10(min(xs))) - 0.5, math.ceil(math.log10(max(xs))) + 0.5
    y0, y1 = math.floor(math.log10(min(ys))), math.ceil(math.log10(peak)) + 0.5
    ml, mr, mt, mb = 70, 20, 40, 50

    def px(v: float) -> float:
        return ml + (math.log10(v) - x0) / (x1 - x0) * (width - ml - mr)

    def py(v: float) -> float:
        return height - mb - (math.log10(v) - y0) / (y1 - y0) * (height - mt - mb)

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
           f'font-size="10">',
           f'<text x="{ml}" y="16" font-size="12">roofline ({c["name"]}): {len(pts)} layers with MACs, '
           f'peak {peak / 1e12:.2f} TOPS, DRAM {bw / 1e9:.1f} GB/s</text>',
           f'<rect x="{ml}" y="{mt}" width="{width - ml - mr}" height="{height - mt - mb}" fill="none" stroke="#888"/>']
    for e in range(math.ceil(x0), math.floor(x1) + 1):
        out.append(f'<text x="{px(10 ** e) - 10:.1f}" y="{height - mb + 14}">1e{e}</text>')
    for e in range(math.ceil(y0), math.floor(y1) + 1):
        out.append(f'<text x="4" y="{py(10 ** e) + 4:.1f}">1e{e}</text>')
    out.append(f'<text x="{ml + 150}" y="{height - 12}">operational intensity (ops per DRAM byte)</text>')
    out.append(f'<text x="4" y="{mt - 6}">achieved ops/s</text>')
    ridge = peak / bw
    lo = max(10 ** x0, 10 ** y0 / bw)  # where the bandwidth roof enters the plot
    out.append(f'<polyline fill="none" stroke="#000" stroke-width="1.5" points="{px(lo):.1f},{py(lo * bw):.1f} '
               f'{px(ridge):.1f},{py(peak):.1f} {px(10 ** x1):.1f},{py(peak):.1f}"/>')
    out.append(f'<text x="{px(ridge) + 4:.1f}" y="{py(peak) - 4:.1f}">ridge {ridge:.0f} ops/B</text>')
    vec = 2 * c["vector_lanes"] * c["clock_ghz"] * 1e9  # the depthwise and batch-1 fc layers' own roof
    if 10 ** y0 < vec < peak:
        x_in, x_end, y_v = px(max(lo, vec / bw)), px(10 ** x1), py(vec)
        out.append(f'<line x1="{x_in:.1f}" y1="{y_v:.1f}" x2="{x_end:.1f}" y2="{y_v:.1f}" stroke="#2a8a3a" '
                   f'stroke-dasharray="4 3"/>')
        out.append(f'<text x="{px(10 ** x1) - 190:.1f}" y="{py(vec) - 4:.1f}" fill="#2a8a3a">vector unit '
                   f'{vec / 1e9:.0f} Gops/s ({c["vector_lanes"]} lanes)</text>')
    for x, y, la in pts:
        out.append(f'<circle cx="{px(x):.1f}" cy="{py(y):.1f}" r="3" fill="{BOUND_COLOURS.get(la["bound"], "#999")}" '
                   f'fill-opacity="0.8"><title>{_esc(la["name"])} {la["op"]}: {x:.1f} ops/B, '
                   f'{y / 1e9:.1f} Gops/s</title></circle>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def _esc(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def text_table(report: dict[str, Any]) -> str:
    """Chip layers, host ops (``host`` rows: the host CPU model's time, in chip cycles) and host<->chip
    transfers (``link`` rows) in the order they run on the timeline."""
    r = report
    c = r["config"]
    lines = [f"asic {c['name']}: {c['array_rows']}x{c['array_cols']} {c['dataflow']} array at {c['clock_ghz']} GHz "
             f"({r['tops_peak']:.2f} peak TOPS), DRAM {c['dram_gbps']} GB/s x {c['dram_efficiency']}",
             f"{'#':>3} {'layer':<24} {'op':<24} {'MMACs':>8} {'cycles':>9} {'compute':>8} {'vector':>8} "
             f"{'dma':>8} {'latency':>8} {'stall':>8} {'xfers':>5} {'map.eff':>7} {'DRAM KB':>9} {'uJ':>8}  bound"]
    rows: list[tuple[int, int, str]] = []
    for la in r["layers"]:
        eff = "-" if la["mapping_efficiency"] is None else f"{la['mapping_efficiency']:.2f}"
        t = la["time"]
        rows.append((la["start_cycle"], 1, f"{short_name(la['name'], 24):<24} {la['op'][:24]:<24} "
                     f"{la['macs'] / 1e6:>8.2f} {la['end_cycle'] - la['start_cycle']:>9} {t['compute']:>8} "
                     f"{t['vector']:>8} {t['dma']:>8} "
                     f"{t['latency']:>8} {t['stall']:>8} {la['dma_transfers']:>5} {eff:>7} "
                     f"{la['dram_bytes'] / 1024:>9.1f} {la['energy_mj'] * 1e3:>8.1f}  {la['bound']}"))
    host = r.get("host") or {"ops": [], "cycles": 0}
    dash = f"{'-':>8} {'-':>8} {'-':>8} {'-':>8} {'-':>8} {'-':>5} {'-':>7}"
    for h in host["ops"]:
        rows.append((h["start_cycle"], 0, f"{short_name(h['name'], 24):<24} {h['op'][:24]:<24} {'-':>8} "
                     f"{h['cycles']:>9} {dash} {'-':>9} {'-':>8}  host ({h['engine']}, {h['bound']})"))
    for t in r["transfers"]["list"]:
        cyc = t["end_cycle"] - t["start_cycle"]
        kind, name = _transfer_name(t["what"])
        rows.append((t["start_cycle"], 0, f"{name:<24} {kind:<24} {'-':>8} {cyc:>9} {dash} {t['bytes'] / 1024:>9.1f} "
                     f"{'-':>8}  link"))
    lines += [f"{i:>3} {text}" for i, (_, _, text) in enumerate(sorted(rows, key=lambda e: (e[0], e[1])))]
    e = r["energy_mj"]
    lines.append(f"latency {r['latency_ms']:.3f} ms ({r['fps']:.1f} fps; 40 ms target "
                 f"{'met' if r['meets_40ms'] else 'MISSED'}), {r['tops_achieved']:.3f} TOPS achieved, "
                 f"utilization {r['utilization']:.1%}, DRAM {r['dram_bytes'] / 2**20:.1f} MiB, "
                 f"energy {e['total']:.3f} mJ (MAC {e['mac']:.3f}, SRAM {e['sram']:.3f}, DRAM {e['dram']:.3f}, "
                 f"static {e['static']:.3f})")
    if r["host_ops"]:
        lines.append(f"host ops: {', '.join(r['host_ops'])}; transfers {r['transfers']['bytes']} B in "
                     f"{r['transfers']['cycles']} cycles")
    if host["ops"]:
        lines.append(f"host compute {host['ms']:.3f} ms ({host['share']:.1%} of the latency) on the {host['model']} "
                     f"model of {host['cpu']} ({host['gflops']} GFLOP/s, {host['gbps']} GB/s, "
                     f"{host['op_overhead_ns']} ns per op); exposed (no chip segment running) "
                     f"{host['exposed_ms']:.3f} ms ({host['exposed_share']:.1%} of the latency)")
    return "\n".join(lines) + "\n"


def scalesim_files(program: Program) -> dict[str, str]:
    """{file name: text}: ``nnc.cfg`` (SCALE-Sim v2 config) and ``nnc_topology.csv``."""
    c = program.cfg
    cfg = "\n".join([
        "[general]", "run_name = nnc_" + c.name, "",
        "[architecture_presets]", f"ArrayHeight:    {c.array_rows}", f"ArrayWidth:     {c.array_cols}",
        f"IfmapSramSzkB:    {c.input_spad_kib}", f"FilterSramSzkB:   {c.weight_spad_kib}",
        f"OfmapSramSzkB:    {c.acc_kib}", "IfmapOffset:    0", "FilterOffset:   10000000", "OfmapOffset:    20000000",
        f"Dataflow : {c.dataflow}", f"Bandwidth : {max(1, int(c.dram_bytes_per_cycle))}", "MemoryBanks: 1", "",
        "[run_presets]", "InterfaceBandwidth: CALC", ""])
    rows = ["Layer name, IFMAP Height, IFMAP Width, Filter Height, Filter Width, Channels, Num Filter, Strides,"]
    for layer in program.layers:
        if layer.kind != "gemm":
            continue
        op = layer.spec["op"]
        name = layer.name.replace(",", "_")
        if op.opname == "qconv":
            n, ch, h, w = op.operands[0].type.shape
            m_, cg, kh, kw = op.operands[1].type.shape
            pads = op.attrs["pads"] or (0, 0, 0, 0)
            s = (op.attrs["strides"] or (1, 1))[0]
            rows.append(f"{name}, {h + pads[0] + pads[2]}, {w + pads[1] + pads[3]}, {kh}, {kw}, {cg}, {m_}, {s},")
        else:
            k, nn = op.operands[1].type.shape
            p = 1
            for d in op.operands[0].type.shape[:-1]:
                p *= int(d)
            rows.append(f"{name}, {p}, 1, 1, 1, {k}, {nn}, 1,")
    return {"nnc.cfg": cfg, "nnc_topology.csv": "\n".join(rows) + "\n"}


def write_scalesim(program: Program, folder: str) -> list[str]:
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, text in scalesim_files(program).items():
        p = os.path.join(folder, name)
        with open(p, "w", encoding="utf-8") as f:
            f.write(text)
        paths.append(p)
    return paths


def trace_json(program: Program, tl: Timeline) -> str:
    return json.dumps(chrome_trace(program, tl))

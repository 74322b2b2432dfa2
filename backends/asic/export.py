"""Views of a simulated run for people and other tools: a Chrome-trace/Perfetto JSON timeline (one
track per engine queue, one for host transfers, one for host compute), a per-layer latency bar chart
as hand-written SVG, a text table (chip layers, host ops and transfers in timeline order), and the
equivalent SCALE-Sim v2 config and topology CSV so a run can be checked outside nnc (convolutions as
conv rows; matmuls as 1x1 convs; vector-unit layers are not array work and are left out).
"""

from __future__ import annotations

import json
import os
from typing import Any

from .program import Program
from .sim.runner import Timeline

_TID = {"load": 1, "compute": 2, "vector": 3, "store": 4, "host": 5, "host cpu": 6}


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


def layer_chart_svg(report: dict[str, Any], width: int = 900) -> str:
    host = [{**h, "bound": "host"} for h in (report.get("host") or {}).get("ops", [])]
    layers = sorted(report["layers"] + host, key=lambda la: la["start_cycle"])  # timeline order
    bar_h, left, top = 14, 260, 30
    height = top + bar_h * len(layers) + 30
    longest = max([max(1, la["end_cycle"] - la["start_cycle"]) for la in layers] + [1])
    scale = (width - left - 120) / longest
    ghz = report["config"]["clock_ghz"]
    colours = {"compute": "#4477aa", "memory": "#ee6677", "vector": "#228833", "host": "#aa3377"}
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" font-family="monospace" '
           f'font-size="11">',
           f'<text x="4" y="16">per-layer latency ({report["config"]["name"]}, total {report["latency_ms"]:.3f} ms; '
           f'blue compute-bound, red memory-bound, green vector, purple host op)</text>']
    for i, la in enumerate(layers):
        y = top + i * bar_h  # a bar per chip layer and per host op
        cyc = max(1, la["end_cycle"] - la["start_cycle"])
        name = la["name"][-36:]
        out.append(f'<text x="4" y="{y + 11}">{_esc(name)}</text>')
        out.append(f'<rect x="{left}" y="{y + 2}" width="{cyc * scale:.1f}" height="{bar_h - 3}" '
                   f'fill="{colours.get(la["bound"], "#999")}"/>')
        out.append(f'<text x="{left + cyc * scale + 4:.1f}" y="{y + 11}">{cyc / ghz / 1e3:.1f} us</text>')
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
             f"{'layer':<40} {'op':<24} {'MMACs':>8} {'cycles':>9} {'compute':>9} {'dma':>9} {'stall':>9} "
             f"{'map.eff':>7} {'DRAM KB':>9} {'uJ':>8}  bound"]
    rows: list[tuple[int, int, str]] = []
    for la in r["layers"]:
        eff = "-" if la["mapping_efficiency"] is None else f"{la['mapping_efficiency']:.2f}"
        rows.append((la["start_cycle"], 1, f"{la['name'][-40:]:<40} {la['op'][:24]:<24} {la['macs'] / 1e6:>8.2f} "
                     f"{la['end_cycle'] - la['start_cycle']:>9} {la['compute_cycles'] + la['vector_cycles']:>9} "
                     f"{la['dma_cycles']:>9} {la['stall_cycles']:>9} {eff:>7} {la['dram_bytes'] / 1024:>9.1f} "
                     f"{la['energy_mj'] * 1e3:>8.1f}  {la['bound']}"))
    host = r.get("host") or {"ops": [], "cycles": 0}
    for h in host["ops"]:
        rows.append((h["start_cycle"], 0, f"{h['name'][-40:]:<40} {h['op'][:24]:<24} {'-':>8} {h['cycles']:>9} "
                     f"{h['cycles']:>9} {'-':>9} {'-':>9} {'-':>7} {'-':>9} {'-':>8}  host ({h['engine']}, "
                     f"{h['bound']})"))
    for t in r["transfers"]["list"]:
        cyc = t["end_cycle"] - t["start_cycle"]
        rows.append((t["start_cycle"], 0, f"{t['what'][:40]:<40} {'transfer':<24} {'-':>8} {cyc:>9} {'-':>9} "
                     f"{cyc:>9} {'-':>9} {'-':>7} {t['bytes'] / 1024:>9.1f} {'-':>8}  link"))
    lines += [text for _, _, text in sorted(rows, key=lambda e: (e[0], e[1]))]
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
                     f"{host['op_overhead_ns']} ns per op)")
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

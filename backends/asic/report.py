"""The ASIC report: latency, throughput, utilization, bytes moved and energy, in total and per layer.

Schema of ``CompiledModel.report["asic"]`` (docs/asic.md): ``config`` (the machine, with
``array_rows``, ``array_cols``, ``clock_ghz``), ``cycles``, ``latency_ms``, ``fps``, ``meets_40ms``
(against ``target_latency_ms``), ``tops_peak``, ``tops_achieved``, ``utilization``, ``macs``,
``dram_bytes``, ``sram_bytes``, ``energy_mj`` {mac, vector, sram, dram, static, total}, ``transfers``
(host<->chip), ``host_ops``, ``instructions``, ``layers``: per layer op, shape, macs, cycles
(start..end), compute/vector/dma/stall cycles, mapping_efficiency, dram/sram bytes, energy_mj and the
roofline bound (compute, memory or vector), and ``host``: the host CPU model and, per host op, its
engine (x86 or interpreter), flops, bytes, cycles (start..end) and time. ``cycles``/``latency_ms``
are the whole timeline: chip segments, transfers and host compute.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .area_power import area_mm2, static_power
from .host import HostSegment
from .isa import QUANT_LANE_OPS
from .program import Program
from .sim.runner import Timeline
from .sim.timing import dma_bytes, dwconv_steps, gemm_folds, on_chip

# the parts of a layer's span, in the order that claims a cycle when several overlap (docs/asic.md)
TIME_PARTS = ("compute", "vector", "dma", "latency", "stall")


def _union_cycles(spans: list[tuple[int, int]]) -> int:
    """Cycles covered by the union of half-open intervals."""
    total, reach = 0, None
    for s, e in sorted(x for x in spans if x[1] > x[0]):
        if reach is None or s > reach:
            total, reach = total + e - s, e
        elif e > reach:
            total, reach = total + e - reach, e
    return total


def time_breakdown(starts: np.ndarray, ends: np.ndarray, busy: np.ndarray, ops: list[str]) -> dict[str, int]:
    """Each cycle of a layer's span [min start, max end) counted once: ``compute`` when the array
    (or a config) is busy with one of its instructions, else ``vector`` when the vector unit is, else
    ``dma`` when a load/store engine moves its bytes, else ``latency`` when one of its transfers is in
    flight (the DRAM latency after the engine is free), else ``stall`` (none of its instructions is
    running: it waits for a token or for a queue another layer holds). The parts sum to the span."""
    if len(starts) == 0:
        return dict.fromkeys(TIME_PARTS, 0)
    groups: dict[str, list[tuple[int, int]]] = {k: [] for k in TIME_PARTS[:4]}
    for s, e, b, op in zip(starts.tolist(), ends.tolist(), busy.tolist(), ops):
        if op in ("load", "store", "prefetch"):
            groups["dma"].append((s, s + b))
            groups["latency"].append((s + b, e))
        elif op.startswith("vec."):
            groups["vector"].append((s, s + b))
        elif op != "finish":
            groups["compute"].append((s, s + b))
    out: dict[str, int] = {}
    seen: list[tuple[int, int]] = []
    covered = 0
    for k in TIME_PARTS[:4]:
        seen += groups[k]
        now = _union_cycles(seen)
        out[k], covered = now - covered, now
    out["stall"] = int(ends.max() - starts.min()) - covered
    return out


def _instr_costs(program: Program, ins) -> tuple[int, int, int, float, int]:
    """(dram bytes, spad bytes, buffer bytes, vector elements, array slots) of one instruction."""
    a = ins.args
    op = ins.op
    cfg = program.cfg
    if op in ("load", "store"):
        item = 4 if a["mem"] == "acc" else 1
        nb = dma_bytes(ins)
        on = (a["rows"] + (a["pad_before"] + a["pad_after"] if op == "load" else 0)) * a["cols"] * item
        if on_chip(ins):  # resident activations: a buffer access instead of DRAM
            return 0, (on if a["mem"] != "buf" else 0), (on if a["mem"] == "buf" else 0) + nb, 0, 0
        return nb, (on if a["mem"] != "buf" else 0), (on if a["mem"] == "buf" else 0), 0, 0
    if op == "gemm":
        t, k, m = a["t"], a["k"], a["m"]
        folds = gemm_folds(cfg, t, k, m)[0]
        stream = t if cfg.dataflow == "ws" else k
        return 0, t * k + k * m + t * m * 4 * (1 + a["accumulate"]), 0, 0, folds * cfg.macs * stream
    if op == "prefetch":  # DRAM read, written into the buffer
        return a["bytes"], 0, a["bytes"], 0, 0
    if op == "dwconv":
        # the band of input rows once (each column's taps share its inputs), the weights, the int32 outputs
        # read and written; the array's slots over the steps it streams
        band = (a["rows"] - 1) * a["sh"] + (a["kh"] - 1) * a["dh"] + 1
        steps = dwconv_steps(cfg, a["kh"] * a["kw"], a["rows"] * a["ow"])
        return 0, band * a["row_step"] + a["kh"] * a["kw"] * a["cols"] + 8 * a["rows"] * a["ow"] * a["cols"], 0, 0, \
            cfg.macs * steps
    if op.startswith("vec."):
        n = a["rows"] * a["cols"]
        size = {"ispad": 1, "wspad": 1, "buf": 1, "acc": 4, "lut": 1}
        if op == "vec.quant":  # reads 4 bytes (FP32) and writes 1 per element, QUANT_LANE_OPS operations each
            moved = n * (4 + 1)
            buf = moved if "buf" in (a["src_mem"], a["dst_mem"]) else 0
            return 0, moved - buf, buf, n * QUANT_LANE_OPS, 0
        moved = n * (size[a["src_mem"]] + 2 * size[a["dst_mem"]])
        buf = moved if "buf" in (a["src_mem"], a["dst_mem"]) else 0
        return 0, moved - buf, buf, n, 0
    return 0, 0, 0, 0, 0


def host_report(program: Program, tl: Timeline, host: list[HostSegment]) -> dict[str, Any]:
    cfg = program.cfg
    where = {id(op): (i, seg) for i, seg in enumerate(host) for op in seg.ops}
    ops = []
    for step in tl.host:
        i, seg = where.get(id(step.op), (None, None))
        r = step.op.results[0]
        ops.append({"name": r.name, "op": step.op.opname, "shape": [int(d) for d in r.type.shape],
                    "segment": i, "engine": seg.engine if seg is not None else "interpreter",
                    "flops": step.cost.flops, "bytes": step.cost.bytes, "start_cycle": step.start,
                    "end_cycle": step.end, "cycles": step.end - step.start,
                    "us": (step.end - step.start) / cfg.clock_ghz / 1e3, "bound": step.cost.bound})
    fallback = [{"ops": [op.opname for op in seg.ops], "reason": seg.error} for seg in host if seg.engine != "x86"]
    cycles = tl.host_cycles
    # the latency in which no chip segment runs: host compute and link transfers nothing hides
    chip = sum(tm.cycles - int(tm.start.min()) for tm in tl.segments if len(tm.start))
    exposed = max(tl.cycles - chip, 0)
    return {"model": "roofline", "cpu": cfg.host_cpu, "gflops": cfg.host_gflops, "gbps": cfg.host_gbps,
            "op_overhead_ns": cfg.host_op_overhead_ns, "cycles": cycles, "ms": cycles / cfg.clock_ghz / 1e6,
            "exposed_cycles": exposed, "exposed_ms": exposed / cfg.clock_ghz / 1e6,
            "exposed_share": exposed / max(tl.cycles, 1),
            "share": cycles / max(tl.cycles, 1), "segments": len(host), "fallback": fallback, "ops": ops}


def build_asic_report(program: Program, tl: Timeline, host_ops: list[str],
                      host: list[HostSegment] | None = None) -> dict[str, Any]:
    cfg = program.cfg
    e = cfg.energy_pj
    n = len(program.instrs)
    start = np.zeros(n, np.int64)
    end = np.zeros(n, np.int64)
    busy = np.zeros(n, np.int64)
    for seg, tm in zip(program.segments, tl.segments):
        start[seg.start:seg.end], end[seg.start:seg.end] = tm.start, tm.end
        busy[seg.start:seg.end] = tm.busy
    R, C = cfg.array_rows, cfg.array_cols
    ridge = 2 * R * C / cfg.dram_bytes_per_cycle
    layers = []
    tot = {"dram": 0, "spad": 0, "buf": 0, "vec": 0.0}
    # a prefetch belongs to the layer that reads what it copies (its ``layer``), not to the layer in
    # whose instructions it was issued; it is not part of either's span (its copy fills DRAM gaps)
    prefetches: dict[int, list[int]] = {}
    for i, ins in enumerate(program.instrs):
        if ins.op == "prefetch":
            prefetches.setdefault(ins.layer, []).append(i)
    for li, info in enumerate(program.layer_info):
        i0, i1 = info["instrs"]
        own = np.array([i for i in range(i0, i1) if program.instrs[i].op != "prefetch"], np.int64)
        pre = prefetches.get(li, [])
        pre_bytes = sum(program.instrs[i].args["bytes"] for i in pre)
        pre_cycles = int(sum(busy[i] for i in pre))
        comp = vec = dma = 0
        n_dma = n_vec = n_far = 0
        dram_b = spad_b = buf_b = 0
        vec_n = 0.0
        slots = 0
        for i in [*own.tolist(), *pre]:
            ins = program.instrs[i]
            d, s, b, v, sl = _instr_costs(program, ins)
            dram_b, spad_b, buf_b, vec_n, slots = dram_b + d, spad_b + s, buf_b + b, vec_n + v, slots + sl
            if ins.op in ("gemm", "dwconv"):
                comp += int(busy[i])
            elif ins.op.startswith("vec."):
                vec += int(busy[i])
                n_vec += 1
            elif ins.op in ("load", "store"):
                dma += int(busy[i])
                n_far += not on_chip(ins)
                n_dma += 1
        parts = time_breakdown(start[own], end[own], busy[own], [program.instrs[i].op for i in own])
        macs = info["macs"]
        energy = (macs * (e["mul8"] + e["add32"]) + vec_n * e["vector_op"] + spad_b * e["spad_byte"]
                  + buf_b * e["buffer_byte"] + dram_b * e["dram_byte"]) * 1e-9
        if slots:
            bound = "compute" if 2 * macs / max(dram_b, 1) >= ridge and comp >= dma else "memory"
        else:
            bound = "vector" if vec >= dma else "memory"
        tot["dram"] += dram_b
        tot["spad"] += spad_b
        tot["buf"] += buf_b
        tot["vec"] += vec_n
        layers.append({
            "name": info["name"], "kind": info["kind"], "op": info["op"], "shape": info["shape"], "macs": macs,
            "start_cycle": int(start[own].min()) if len(own) else 0,
            "end_cycle": int(end[own].max()) if len(own) else 0,
            "compute_cycles": comp, "vector_cycles": vec, "dma_cycles": dma, "stall_cycles": parts["stall"],
            "time": parts, "dma_transfers": n_dma,
            "dma_latency_cycles": 0 if cfg.ideal_bandwidth else n_far * cfg.dram_latency_cycles,
            "vector_overhead_cycles": n_vec * cfg.vector_overhead_cycles,
            # its weights copied into the resident region ahead of it (in DRAM gaps, outside its span)
            "prefetch_bytes": pre_bytes, "prefetch_cycles": pre_cycles,
            # array layers: MACs over the array's MAC slots of their folds; vector-unit layers with MACs
            # (depthwise): MACs over lanes x the vector unit's busy cycles (issue overhead included)
            "mapping_efficiency": (macs / slots) if slots else (macs / (vec * cfg.vector_lanes)) if macs and vec
            else None,
            "dram_bytes": dram_b, "sram_bytes": spad_b + buf_b, "energy_mj": energy, "bound": bound,
            "instructions": len(own) + len(pre), "tiles": info.get("tiles"),
        })
    cycles = max(tl.cycles, 1)
    seconds = cycles / (cfg.clock_ghz * 1e9)
    macs = sum(layer["macs"] for layer in layers)
    transfer_bytes = sum(t[3] for t in tl.transfers)
    en = {"mac": macs * (e["mul8"] + e["add32"]) * 1e-9, "vector": tot["vec"] * e["vector_op"] * 1e-9,
          "sram": (tot["spad"] * e["spad_byte"] + tot["buf"] * e["buffer_byte"]) * 1e-9,
          "dram": tot["dram"] * e["dram_byte"] * 1e-9}
    # static: the flat static_power_w plus the leakage of the MAC array and the SRAM, over the whole
    # latency (area_power.py); with zero leakage coefficients it is static_power_w x latency, as before
    power = static_power(cfg)
    static = {k: v * seconds * 1e3 for k, v in power.items()}
    en["dynamic"] = en["mac"] + en["vector"] + en["sram"] + en["dram"]
    en["static"] = static["total"]
    en["total"] = en["dynamic"] + en["static"]
    latency_ms = seconds * 1e3
    return {
        "config": cfg.to_dict(), "cycles": cycles, "latency_ms": latency_ms, "fps": 1e3 / latency_ms,
        "meets_40ms": latency_ms <= cfg.target_latency_ms, "target_latency_ms": cfg.target_latency_ms,
        "tops_peak": cfg.tops_peak, "tops_achieved": 2 * macs / seconds / 1e12,
        "utilization": macs / (cycles * R * C), "macs": macs,
        "dram_bytes": tot["dram"], "sram_bytes": tot["spad"] + tot["buf"], "energy_mj": en,
        "static": {"power_w": power, "energy_mj": static}, "area_mm2": area_mm2(cfg),
        "transfers": {"bytes": transfer_bytes, "cycles": sum(t[2] - t[1] for t in tl.transfers),
                      "list": [{"what": t[0], "start_cycle": t[1], "end_cycle": t[2], "bytes": t[3]}
                               for t in tl.transfers]},
        "host_ops": host_ops, "instructions": n, "dram_footprint_bytes": program.dram.size,
        "resident_activations": dict(program.resident),
        "layers": layers, "host": host_report(program, tl, host or []),
    }

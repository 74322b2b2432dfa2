"""Running a whole Program: host ops on the reference interpreter, chip segments on the functional
machine, and the static timeline of every segment with the host<->chip transfers between them.

A segment's instructions execute in the order the timing layer starts them (not program order), so
a missing dependency token shows up as a wrong result rather than being hidden by sequential order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Mapping

import numpy as np

from nnc.ir import Interpreter, Module
from nnc.ir.interpreter import check_feeds

from ..program import Program, from_dram, to_dram
from .functional import Machine
from .timing import Timing, simulate_timing


@dataclasses.dataclass
class Timeline:
    segments: list[Timing]          # per segment, absolute cycles
    transfers: list[tuple[str, int, int, int]]   # (what, start, end, bytes)
    cycles: int


def link_cycles(program: Program, nbytes: int) -> int:
    cfg = program.cfg
    return math.ceil(nbytes / (cfg.host_link_gbps / cfg.clock_ghz))


def timeline(program: Program) -> Timeline:
    t = 0
    segs: list[Timing] = []
    transfers: list[tuple[str, int, int, int]] = []
    for kind, item in program.schedule:
        if kind != "chip":
            continue
        vals = program.imports.get(item, [])
        nbytes = sum(program.placement[id(v)].nbytes for v in vals)
        if nbytes:
            d = link_cycles(program, nbytes)
            transfers.append((f"to chip: {', '.join(v.name for v in vals)}", t, t + d, nbytes))
            t += d
        seg = program.segments[item]
        tm = simulate_timing(program.cfg, program.instrs[seg.start:seg.end], t)
        segs.append(tm)
        t = tm.cycles
    out_bytes = sum(program.placement[id(v)].nbytes for v in program.exports)
    if out_bytes:
        d = link_cycles(program, out_bytes)
        transfers.append((f"to host: {', '.join(v.name for v in program.exports)}", t, t + d, out_bytes))
        t += d
    return Timeline(segs, transfers, t)


def run_program(program: Program, module: Module, feeds: Mapping[str, Any], tl: Timeline) -> dict[str, np.ndarray]:
    g = module.main
    args = check_feeds(g, feeds, module)
    env: dict[int, np.ndarray] = {id(p): a for p, a in zip(g.params, args)}
    dram = program.dram.image()
    machine = Machine(program.cfg, dram)
    interp = Interpreter(module)

    def value(v: Any) -> np.ndarray:
        r = program.resolve(v)
        if id(v) in env:
            return env[id(v)]
        if v.producer is not None and v.producer.opname == "const":  # constants are not scheduled
            return interp.run_op(v.producer, [])[0]
        if id(r) in env:
            a = env[id(r)]
        else:
            a = from_dram(dram, program.placement[id(r)])
            env[id(r)] = a
        if tuple(a.shape) != tuple(v.type.shape):
            a = a.reshape(tuple(int(d) for d in v.type.shape))
        env[id(v)] = a
        return a

    chip_seen = 0
    with np.errstate(all="ignore"):
        for kind, item in program.schedule:
            if kind == "host":
                arrays = [value(v) for v in item.operands]
                for r, a in zip(item.results, interp.run_op(item, arrays)):
                    env[id(r)] = a
                continue
            for v in program.imports.get(item, []):
                p = program.placement[id(v)]
                data = np.frombuffer(to_dram(value(v)), np.uint8)
                dram[p.addr:p.addr + data.size] = data
            seg = program.segments[item]
            instrs = program.instrs[seg.start:seg.end]
            order = np.argsort(tl.segments[chip_seen].start, kind="stable")
            for i in order:
                machine.execute(instrs[i])
            chip_seen += 1
    return {n: value(v) for n, v in zip(g.output_names, g.outputs)}

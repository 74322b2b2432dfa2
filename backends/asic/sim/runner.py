"""Running a whole Program: host segments on their x86 executables (``host.py``; the reference
interpreter for what x86 cannot take), chip segments on the functional machine, and the static
timeline: chip segments, host<->chip transfers and host compute (the roofline of ``host_model.py``),
one after the other as the schedule orders them (the chip ends a segment with ``finish`` before the
host ops that follow it, and the host hands its results over before the next segment starts), except
that a run of host ops that make their results row by row (quantize, dequantize, elementwise ops)
streams them to the chip in ``host_stream_bands`` bands: the segment starts when the first band has
arrived and each load of those values waits for the band it reads.

A segment's instructions execute in the order the timing layer starts them (not program order), so
a missing dependency token shows up as a wrong result rather than being hidden by sequential order.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable, Mapping

import numpy as np

from nnc.ir import Interpreter, Module
from nnc.ir.interpreter import check_feeds
from nnc.ir.registry import Trait, get_opdef

from ..host import HostSegment
from ..host_model import HostCost, host_cost
from ..isa import Instr
from ..program import Program, from_dram, to_dram
from .functional import Machine
from .timing import Timing, simulate_timing


@dataclasses.dataclass
class HostStep:
    op: Any                         # the host Op
    start: int                      # absolute cycles
    end: int
    cost: HostCost


@dataclasses.dataclass
class Timeline:
    segments: list[Timing]          # per segment, absolute cycles
    transfers: list[tuple[str, int, int, int]]   # (what, start, end, bytes)
    cycles: int
    host: list[HostStep] = dataclasses.field(default_factory=list)   # in schedule order

    @property
    def host_cycles(self) -> int:
        return sum(h.end - h.start for h in self.host)


def link_cycles(program: Program, nbytes: int) -> int:
    cfg = program.cfg
    return math.ceil(nbytes / (cfg.host_link_gbps / cfg.clock_ghz))


def _streams(op: Any) -> bool:
    """Whether a host op makes its result row by row (so the chip can take the first rows early)."""
    return op.opname in ("quantize", "dequantize") or Trait.ELEMENTWISE in get_opdef(op.opname).traits


def _band_arrivals(program: Program, vals: list, t0: int, host_cycles: int, what: str,
                   transfers: list[tuple[str, int, int, int]]) -> list[int]:
    """The host run that made ``vals`` (from ``t0``, ``host_cycles`` long) streams them to the chip in
    ``host_stream_bands`` equal bands: band b is ready when the run is (b + 1) / bands done and goes
    over the link after the band before it; the cycle each band has arrived."""
    bands = program.cfg.host_stream_bands
    nbytes = sum(program.placement[id(v)].nbytes for v in vals)
    link = link_cycles(program, nbytes)
    names = ", ".join(v.name for v in vals)
    arrivals, prev = [], t0
    for b in range(bands):
        ready = t0 + math.ceil(host_cycles * (b + 1) / bands)
        start = max(ready, prev)
        prev = start + math.ceil(link * (b + 1) / bands) - math.ceil(link * b / bands)
        arrivals.append(prev)
        part = nbytes * (b + 1) // bands - nbytes * b // bands
        transfers.append((f"{what} (band {b + 1}/{bands}): {names}", start, prev, part))
    return arrivals


def _not_before(program: Program, vals: list, arrivals: list[int]) -> Callable[[Instr], int]:
    """For a load: the arrival of the band holding the last byte it reads of a streamed value."""
    spans = [(program.placement[id(v)].addr, program.placement[id(v)].nbytes) for v in vals]
    bands = len(arrivals)

    def when(ins: Instr) -> int:
        a = ins.args
        lo = a["src"]
        hi = lo + max(a["rows"] - 1, 0) * a["src_stride"] + a["cols"] * (4 if a["mem"] == "acc" else 1)
        t = 0
        for addr, n in spans:
            if n and lo < addr + n and addr < hi:
                last = min(hi, addr + n) - 1 - addr
                t = max(t, arrivals[min(bands - 1, last * bands // n)])
        return t

    return when


def timeline(program: Program) -> Timeline:
    t = 0
    segs: list[Timing] = []
    transfers: list[tuple[str, int, int, int]] = []
    host: list[HostStep] = []
    pending = {id(v): v for v in program.exports}    # chip values the host reads, not yet sent
    run: list[HostStep] = []                          # host ops since the last chip segment
    run_sent = False                                  # whether a transfer to the host happened in the run

    def send(vals: list, what: str) -> None:
        nonlocal t
        nbytes = sum(program.placement[id(v)].nbytes for v in vals)
        if nbytes:
            d = link_cycles(program, nbytes)
            transfers.append((f"{what}: {', '.join(v.name for v in vals)}", t, t + d, nbytes))
            t += d

    for kind, item in program.schedule:
        if kind == "host":
            # the chip values this op reads come over the link before it starts
            need = [pending.pop(id(r)) for r in (program.resolve(v) for v in item.operands) if id(r) in pending]
            run_sent = run_sent or bool(need)
            send(need, "to host")
            c = host_cost(program.cfg, item)
            d = c.cycles(program.cfg)
            host.append(HostStep(item, t, t + d, c))
            run.append(host[-1])
            t += d
            continue
        imports = program.imports.get(item, [])
        seg = program.segments[item]
        made = {id(r) for h in run for r in h.op.results}
        if (program.cfg.host_stream_bands > 1 and run and imports and not run_sent
                and all(_streams(h.op) for h in run) and all(id(v) in made for v in imports)):
            # the host run makes the chip's inputs row by row: they stream in while the chip starts
            arrivals = _band_arrivals(program, imports, run[0].start, t - run[0].start, "to chip", transfers)
            tm = simulate_timing(program.cfg, program.instrs[seg.start:seg.end], arrivals[0],
                                 _not_before(program, imports, arrivals))
        else:
            send(imports, "to chip")
            tm = simulate_timing(program.cfg, program.instrs[seg.start:seg.end], t)
        segs.append(tm)
        t = tm.cycles
        run, run_sent = [], False
    send(list(pending.values()), "to host")
    return Timeline(segs, transfers, t, host)


def run_program(program: Program, module: Module, feeds: Mapping[str, Any], tl: Timeline,
                host: list[HostSegment] | None = None) -> dict[str, np.ndarray]:
    """Outputs of one run; host ops run on the ``host`` segments (x86), else op by op on the
    reference interpreter."""
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

    first = {id(s.ops[0]): s for s in host or []}
    covered = {id(op) for s in host or [] for op in s.ops}
    chip_seen = 0
    for v in program.dram_inputs:  # already in the chip's DRAM (input_quantize "chip")
        p = program.placement[id(v)]
        data = np.frombuffer(to_dram(value(v)), np.uint8)
        dram[p.addr:p.addr + data.size] = data
    with np.errstate(all="ignore"):
        for kind, item in program.schedule:
            if kind == "host" and id(item) in first:
                seg = first[id(item)]
                for r, a in zip(seg.outputs, seg.run([value(v) for v in seg.inputs], interp, value)):
                    env[id(r)] = a
                continue
            if kind == "host" and id(item) in covered:
                continue
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

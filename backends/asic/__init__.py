"""The simulated edge-inference ASIC: an INT8 systolic array with scratchpads, a vector unit and
DRAM, described by a config; code generation to its instruction set and a bit-exact, timed
simulator.

``compile(module, options)`` quantizes a float module to the integer IR (``nnc.passes.quantize``;
a module that already holds ``qconv``/``qmatmul`` is taken as is), partitions it into chip layers
and host ops, generates the program and times it. Options:

- ``asic_preset``: ``edge`` (default) or ``x1``; ``asic_config``: a JSON path or dict merged over it;
- ``calibration``: feed dicts or an ``.npz`` path (default: random inputs, smoke tests only);
  ``observer``: minmax | percentile | entropy;
- ``functional``: simulate the program bit-exactly on ``run`` (default True); False runs the
  quantized graph on the interpreter instead (timing-only use, and no x86 compile);
- ``cpu``, ``target_features``, ``opt``, ``cache``, ``cache_dir``: passed to the x86 compiles of the
  host partition.

The executable's ``report`` is ``CompiledModel.report["asic"]`` (see ``report.py``). Host ops (the
ops between chip segments) are compiled by the x86 backend, one module per run of consecutive host
ops (``host.py``), and timed on the preset's host CPU model (``host_model.py``).
"""

from __future__ import annotations

import time
from typing import Any, Mapping

import numpy as np

from nnc.ir import Interpreter, Module, TargetError, TensorType, verify_module

from .config import AsicConfig, load_config
from .host import HostSegment, compile_host_partition
from .isa import disassemble
from .program import Program, build_program
from .report import build_asic_report
from .sim.runner import Timeline, run_program, timeline

STATIC_SHAPES = True
# the float graph the quantizer expects (nnc.compile runs this instead of the -O preset)
DEFAULT_PASSES = "freeze,fold-constants,fold-dynamic,simplify,dce,cse,fold-batchnorm,simplify,dce"
INTEGER_OPS = frozenset({"qconv", "qmatmul", "requantize", "qadd", "qmul", "qlut"})


def is_quantized(module: Module) -> bool:
    return any(op.opname in INTEGER_OPS for op in module.main.ops)


class AsicExecutable:
    target = "asic"

    def __init__(self, module: Module, program: Program, tl: Timeline, report: dict[str, Any], functional: bool,
                 host: list[HostSegment] | None = None):
        self.module = module          # the integer graph
        self.program = program
        self.timeline = tl
        self.report = report
        self.target_report = report
        self.functional = functional
        self.host = host if host is not None else []   # the host partition, compiled by x86
        self._interp = None if functional else Interpreter(module)

    @property
    def config(self) -> AsicConfig:
        return self.program.cfg

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        if not self.functional:
            return self._interp.run(feeds)  # type: ignore[union-attr]
        return run_program(self.program, self.module, feeds, self.timeline, self.host)

    def asm(self) -> str:
        cfg = self.program.cfg
        head = [f"nnc asic program: preset {cfg.name}, {cfg.array_rows}x{cfg.array_cols} {cfg.dataflow} array at "
                f"{cfg.clock_ghz} GHz; {len(self.program.instrs)} instructions, "
                f"{len(self.program.segments)} segment(s)"]
        head += [f"layer {i}: {li['name']} {li['op']} {li['shape']}" for i, li in enumerate(self.program.layer_info)]
        return disassemble(self.program.instrs, head)


def _check_static_timing(module: Module) -> None:
    """The ASIC's timing, traffic and energy are computed at compile time, from every value's size: a
    value whose size is known only once the model runs (NonZero's indices, an If's branch result)
    cannot be priced, so the model is refused naming it."""
    for op in module.main.ops:
        for r in op.results:
            if isinstance(r.type, TensorType) and r.type.shape is not None and \
                    not all(isinstance(d, int) for d in r.type.shape):
                raise TargetError(f"asic: {op.where()} has a size known only at run time ({r.type}); the ASIC "
                                  f"program is timed at compile time and needs static shapes")


def compile(module: Module, options: Mapping[str, Any] | None = None) -> AsicExecutable:  # noqa: A001
    options = dict(options or {})
    t0 = time.perf_counter()
    cfg = load_config(options.get("asic_preset") or "edge", options.get("asic_config"))
    verify_module(module)
    _check_static_timing(module)
    if not is_quantized(module):
        from nnc.passes.quantize import quantize_module

        module = quantize_module(module, options.get("calibration"), observer=options.get("observer", "minmax"),
                                 int8_activations=cfg.vector_activations)
    program = build_program(module, cfg)
    tl = timeline(program)
    functional = bool(options.get("functional", True))
    host = compile_host_partition(module, program.schedule, options) if functional else []
    host_ops = [item.opname for kind, item in program.schedule if kind == "host" and item.opname != "const"]
    report = build_asic_report(program, tl, host_ops, host)
    report["compile_seconds"] = time.perf_counter() - t0
    return AsicExecutable(module, program, tl, report, functional, host)

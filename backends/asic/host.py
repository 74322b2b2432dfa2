"""The host partition on the x86 backend: every maximal run of consecutive host ops in the program's
schedule (the ops between two chip segments) becomes one module compiled by ``nnc.backends.x86``,
and ``run`` feeds it the values it reads and takes back the values later ops (chip layers, other
host segments, the model's outputs) read.

An op the x86 backend cannot lower does not sink its whole segment: the segment is split into one
module per op, and only the ops that still fail run on the reference interpreter
(``HostSegment.engine``).
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import numpy as np

from nnc.ir import Graph, Interpreter, Module, NncError, Op, Value
from nnc.ir.graph import region_constant_refs

# x86 options the asic compile forwards to the host compiles
X86_OPTIONS = ("cpu", "target_features", "opt", "cache", "cache_dir")


@dataclasses.dataclass
class HostSegment:
    ops: list[Op]
    inputs: list[Value]       # values read from outside the segment (constants excluded)
    outputs: list[Value]      # values read after it
    engine: str               # x86 | interpreter
    executable: Any = None    # the X86Executable (engine x86)
    error: str = ""           # why x86 could not take it (engine interpreter)

    def run(self, args: list[np.ndarray], interp: Interpreter, value: Any) -> list[np.ndarray]:
        """The outputs from the inputs' arrays (``value`` gives a constant's array)."""
        if self.engine == "x86":
            out = self.executable.run({_param_name(i): a for i, a in enumerate(args)})
            return [out[_output_name(i)] for i in range(len(self.outputs))]
        env = {id(v): a for v, a in zip(self.inputs, args)}
        for op in self.ops:
            arrays = [env[id(v)] if id(v) in env else value(v) for v in op.operands]
            for r, a in zip(op.results, interp.run_op(op, arrays)):
                env[id(r)] = a
        return [env[id(v)] for v in self.outputs]


def _param_name(i: int) -> str:
    return f"in{i}"


def _output_name(i: int) -> str:
    return f"out{i}"


def _is_const(v: Value) -> bool:
    return v.producer is not None and v.producer.opname == "const"


def runs_of_host_ops(schedule: list[tuple[str, Any]]) -> list[list[Op]]:
    """The maximal runs of consecutive ("host", op) items of a program schedule."""
    runs: list[list[Op]] = []
    cur: list[Op] = []
    for kind, item in schedule:
        if kind == "host":
            cur.append(item)
        elif cur:
            runs.append(cur)
            cur = []
    if cur:
        runs.append(cur)
    return runs


def segment_interface(module: Module, ops: list[Op]) -> tuple[list[Value], list[Value]]:
    """(inputs, outputs) of a run of ops: non-constant values it reads but does not define, and the
    values it defines that an op outside it or the graph's results read."""
    inside = {id(op) for op in ops}
    defined = {id(r) for op in ops for r in op.results}
    inputs: list[Value] = []
    seen: set[int] = set()
    for op in ops:
        for v in op.operands:
            if id(v) not in defined and id(v) not in seen and not _is_const(v):
                seen.add(id(v))
                inputs.append(v)
    graph_out = {id(v) for v in module.main.outputs}
    outputs = [r for op in ops for r in op.results
               if id(r) in graph_out or any(id(user) not in inside for user, _ in r.uses)]
    return inputs, outputs


def segment_module(module: Module, ops: list[Op], inputs: list[Value], outputs: list[Value]) -> Module:
    """A module whose main graph computes ``outputs`` from ``inputs`` with ``ops`` (and copies of the
    constants they read); parameters ``in0..``, results ``out0..``."""
    m = Module(f"{module.name}.host")
    g = m.add_graph(Graph("main"))
    mapping: dict[int, Value] = {}
    for i, v in enumerate(inputs):
        mapping[id(v)] = g.add_param(_param_name(i), v.type)

    def operand(v: Value) -> Value:
        if id(v) not in mapping:  # a constant (segment_interface keeps every other outside value)
            c = v.producer
            ref = c.attrs["ref"]
            if ref in module.constants:
                m.constants[ref] = module.constants[ref]
            m.constant_types[ref] = module.constant_types[ref]
            new = Op("const", [], c.attrs, [v.type], [v.name], loc=c.loc)
            g.ops.append(new)
            mapping[id(v)] = new.results[0]
        return mapping[id(v)]

    for op in ops:
        new = Op(op.opname, [operand(v) for v in op.operands], op.attrs, [r.type for r in op.results],
                 [r.name for r in op.results], [r.clone() for r in op.regions], op.loc)
        g.ops.append(new)
        for r, nr in zip(op.results, new.results):
            mapping[id(r)] = nr
    for ref in region_constant_refs(ops):  # a control-flow body reads its constants from the pool
        if ref in module.constants:
            m.constants[ref] = module.constants[ref]
        m.constant_types[ref] = module.constant_types[ref]
    g.set_outputs([mapping[id(v)] for v in outputs], [_output_name(i) for i in range(len(outputs))])
    return m


def _compile_segment(module: Module, ops: list[Op], options: Mapping[str, Any]) -> HostSegment:
    from nnc.backends import x86

    inputs, outputs = segment_interface(module, ops)
    try:
        exe = x86.compile(segment_module(module, ops, inputs, outputs), options)
    except NncError as e:
        return HostSegment(ops, inputs, outputs, "interpreter", error=f"{type(e).__name__}: {e}")
    return HostSegment(ops, inputs, outputs, "x86", exe)


def compile_host_partition(module: Module, schedule: list[tuple[str, Any]],
                           options: Mapping[str, Any] | None = None) -> list[HostSegment]:
    """One x86-compiled segment per run of host ops; a run x86 rejects is retried op by op."""
    opts = {k: v for k, v in (options or {}).items() if k in X86_OPTIONS}
    # one thread: these are small kernels, and the edge host they stand for is one core (host_model.py)
    opts.update(quiet=True, threads=1)
    segments: list[HostSegment] = []
    for ops in runs_of_host_ops(schedule):
        ops = [op for op in ops if op.opname != "const"]
        if not ops:
            continue
        seg = _compile_segment(module, ops, opts)
        if seg.engine == "x86" or len(ops) == 1:
            segments.append(seg)
            continue
        segments.extend(_compile_segment(module, [op], opts) for op in ops)
    return segments

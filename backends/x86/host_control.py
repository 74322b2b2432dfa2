"""Control flow and sequences on x86: the host steps between compiled segments.

A graph with host ops (``if``, ``loop``, ``scan``, ``sequence_map``; the sequence and optional
ops, whose values are Python lists or None) is cut at them: each maximal run of tensor ops between
two host ops becomes a *segment*, a module of its own compiled to native code (shape-generic when
its dims are symbolic, else per input shape); each host op runs in Python with its IR reference
semantics, whose regions are themselves compiled graphs. So an ``if`` evaluates its condition and
runs the compiled branch, a ``loop``/``scan`` calls its compiled body once per iteration (the body
is compiled once, not per iteration: carried values whose shape changes make it shape-generic),
and the sequence ops edit host lists of arrays. Constants a segment reads are compiled into it.

This is the minimal partitioning control flow needs; a segmented executor of the x86 backend that
makes other ops host-synchronising may subsume it.
"""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nnc.ir import Graph, Module, Op, TensorType, Value
from nnc.ir.graph import region_constant_refs
from nnc.ir.interpreter import check_feeds

from ..compiled import NotShapeGeneric
from ..specializer import Specializer

Compile = Callable[[Module], Any]


def is_host_op(op: Op) -> bool:
    """An op the host runs: it owns regions (other than a fused group) or reads or makes a
    non-tensor value."""
    if op.regions and op.opname != "fused":
        return True
    return any(not isinstance(v.type, TensorType) for v in list(op.operands) + list(op.results))


def needs_host(graph: Graph) -> bool:
    return any(is_host_op(op) for op in graph.ops) or \
        any(not isinstance(v.type, TensorType) for v in list(graph.params) + list(graph.outputs))


class Segment:
    """A run of tensor ops compiled as one module: reads ``inputs``, defines ``outputs``."""

    def __init__(self, parent: Module, ops: list[Op], live_after: set[int], compile_fn: Compile, name: str):
        g = Graph("main")
        sub = Module(name=name, metadata=dict(parent.metadata))
        sub.add_graph(g)
        mapping: dict[int, Value] = {}
        self.inputs: list[Value] = []
        for op in ops:
            for v in op.operands:
                if id(v) in mapping:
                    continue
                p = v.producer
                if p is not None and p.opname == "const":
                    _copy_const(parent, sub, g, p, mapping)
                else:
                    mapping[id(v)] = g.add_param(v.name, v.type)
                    self.inputs.append(v)
            if op.opname == "const":
                _copy_const(parent, sub, g, op, mapping)
                continue
            new = Op(op.opname, [mapping[id(v)] for v in op.operands], op.attrs, [r.type for r in op.results],
                     [r.name for r in op.results], [r.clone() for r in op.regions], op.loc)
            g.insert(new)
            for r, nr in zip(op.results, new.results):
                mapping[id(r)] = nr
        for ref in region_constant_refs(ops):  # a fused group may read constants of its own
            sub.constants[ref] = parent.constants[ref]
            sub.constant_types[ref] = parent.constant_types[ref]
        self.outputs = [r for op in ops if op.opname != "const" for r in op.results if id(r) in live_after]
        g.set_outputs([mapping[id(v)] for v in self.outputs], [f"out{i}" for i in range(len(self.outputs))])
        self.param_names = [p.name for p in g.params]
        self.module = sub
        try:
            self.exe: Any = compile_fn(sub)
        except NotShapeGeneric:
            self.exe = Specializer(sub, compile_fn)  # compiled per input signature

    def run(self, env: dict[int, Any]) -> None:
        outs = self.exe.run({n: env[id(v)] for n, v in zip(self.param_names, self.inputs)})
        for i, v in enumerate(self.outputs):
            env[id(v)] = outs[f"out{i}"]


def _copy_const(parent: Module, sub: Module, g: Graph, op: Op, mapping: dict[int, Value]) -> None:
    r = op.results[0]
    if id(r) in mapping:
        return
    key = op.attrs["ref"]
    if key not in sub.constants:
        sub.constants[key] = parent.constants[key]
        sub.constant_types[key] = parent.constant_types[key]
    new = Op("const", [], {"ref": key}, [r.type], [r.name], loc=op.loc)
    g.insert(new)
    mapping[id(r)] = new.results[0]


class CompiledRegion:
    """A region as a host op's reference semantics call it (``region(*args) -> results``, and its
    ``graph``), running compiled code."""

    def __init__(self, graph: Graph, program: HostProgram):
        self.graph = graph
        self.program = program

    def __call__(self, *args: Any) -> list[Any]:
        return self.program.run_args(list(args))


class HostProgram:
    """One graph as steps: compiled segments and host ops, in order."""

    def __init__(self, module: Module, graph: Graph, compile_fn: Compile):
        self.module = module
        self.graph = graph
        self.steps: list[Segment | tuple[Op, list[CompiledRegion]]] = []
        self.segments = 0
        uses_after = _later_uses(graph)
        run: list[Op] = []

        def flush(at: int) -> None:
            if any(op.opname != "const" for op in run):
                self.steps.append(Segment(module, list(run), uses_after[at], compile_fn,
                                          f"{module.name}.{graph.name}.seg{self.segments}"))
                self.segments += 1
            run.clear()

        for i, op in enumerate(graph.ops):
            if is_host_op(op):
                flush(i)
                regions = [CompiledRegion(r, HostProgram(module, r, compile_fn)) for r in op.regions]
                self.steps.append((op, regions))
            else:
                run.append(op)
        flush(len(graph.ops))

    def run_args(self, args: Sequence[Any]) -> list[Any]:
        env: dict[int, Any] = {id(p): a for p, a in zip(self.graph.params, args)}
        for step in self.steps:
            if isinstance(step, Segment):
                step.run(env)
                continue
            op, regions = step
            results = _run_host_op(self.module, op, [_value(self.module, env, v) for v in op.operands], regions)
            for r, a in zip(op.results, results):
                env[id(r)] = a
        return [_value(self.module, env, v) for v in self.graph.outputs]

    def all_segments(self) -> list[Segment]:
        """This graph's segments and those of its regions, at every depth."""
        out = []
        for step in self.steps:
            if isinstance(step, Segment):
                out.append(step)
            else:
                for region in step[1]:
                    out.extend(region.program.all_segments())
        return out

    def describe(self) -> dict[str, Any]:
        """For the compile report: how many segments were compiled, which of them compile per input
        signature (no shape-generic code: a slice bound computed in a loop body), the host ops."""
        segs = self.all_segments()
        per_shape = [s.module.name for s in segs if isinstance(s.exe, Specializer)]
        return {"segments": len(segs), "per_shape": per_shape,
                "host_ops": [s[0].opname for s in self.steps if not isinstance(s, Segment)]}


def _value(module: Module, env: dict[int, Any], v: Value) -> Any:
    if id(v) in env:
        return env[id(v)]
    p = v.producer
    if p is not None and p.opname == "const":
        return module.constants[p.attrs["ref"]]
    raise KeyError(v.name)


def _run_host_op(module: Module, op: Op, args: list[Any], regions: list[CompiledRegion]) -> list[Any]:
    d = op.opdef
    attrs = d.attrs_with_dynamic(op.attrs, args, static=False)
    dyn = d.dynamic_operand_indices()
    kwargs = dict(attrs)
    if regions:
        kwargs["regions"] = regions
    out = d.reference(*[a for i, a in enumerate(args) if i not in dyn], **kwargs)
    one_container = len(op.results) == 1 and not isinstance(op.results[0].type, TensorType)
    results = list(out) if isinstance(out, tuple) or (isinstance(out, list) and not one_container) else [out]
    return [np.asarray(a) if isinstance(r.type, TensorType) else a for r, a in zip(op.results, results)]


def _later_uses(graph: Graph) -> list[set[int]]:
    """For each op position i, the ids of values read at or after position i (or returned)."""
    live: set[int] = {id(v) for v in graph.outputs}
    out: list[set[int]] = [set() for _ in range(len(graph.ops) + 1)]
    out[len(graph.ops)] = set(live)
    for i in range(len(graph.ops) - 1, -1, -1):
        live |= {id(v) for v in graph.ops[i].operands}
        out[i] = set(live)
    return out


class HostExecutable:
    """The executable of a model with control flow or sequences: ``run(feeds)`` like the others."""

    target = "x86"

    def __init__(self, module: Module, compile_fn: Compile):
        self.module = module
        self.program = HostProgram(module, module.main, compile_fn)
        self.target_report = {"host_control": self.program.describe()}

    def run(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        g = self.module.main
        args = check_feeds(g, feeds, self.module)
        outs = self.program.run_args(args)
        return dict(zip(g.output_names, outs))

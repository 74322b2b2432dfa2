"""Segmented execution: a graph with *host-sync* ops runs as compiled segments with the host between.

Some ops cannot sit inside one native entry point because the host has to act in the middle of the
run: an op whose output size is known only once its kernel has run (NonZero, Unique, NMS, TopK with
a run-time k; ``data_dependent.py``), and control flow, whose nested graphs the host runs as
executables of their own. ``compile_segmented`` splits the prepared graph at those ops into maximal
*segments* of ordinary ops and *host steps*, one per host-sync op. A segment is a module of its own
(its inputs are the values it reads from earlier pieces; its outputs the values later pieces or the
graph outputs read) compiled through the normal x86 path: the compilation cache, the same options,
and shape-generic code where the segment has symbolic dims, which the values after a host step have
(a NonZero's count becomes a symbol such as ``nz_1``), so one compile serves every size and count.
A segment whose ops have no shape-generic kernel compiles per input signature instead
(``PerSignature``). Constants go to the segments that read them (a weight read by two segments is
in both blobs; the arrays in memory are shared). ``SegmentedExecutable`` runs the pieces in order
over a table of host arrays and is one executable to the driver (``run(feeds)``, ``target_report``
with ``report["x86"]["segments"]``, ``cache_status``). It cannot be saved as a library.

The host-sync registry
----------------------
``HOST_SYNC`` maps an op name to a ``HostSync``; register with the decorator, in a module listed in
``PROVIDERS`` (imported when the registry is first asked)::

    @register_host_sync("if", why="runs a branch chosen by a run-time condition")
    def build_if(op: Op, ctx: SegmentContext) -> HostStep:
        ...

- ``applies(op) -> bool`` (optional; default: always) says whether this instance needs the host
  (``topk`` only when ``k`` is a run-time operand). It is asked about the prepared graph.
- The builder runs once at compile time and returns a ``HostStep``: ``inputs`` (the values it reads,
  by default ``op.operands``; constants among them are given as their arrays), ``run(args) ->
  results`` (host arrays for ``inputs`` -> arrays for ``op.results``, in order) and ``report()``
  (a small dict for the compile report).
- ``ctx.compile(module)`` compiles a module (a nested graph, a one-op kernel) through the x86 path,
  segmented again if it holds host-sync ops itself, and returns an executable with
  ``run(feeds) -> {name: array}``; ``ctx.options`` are the compile's options; ``ctx.module`` the
  prepared module the op belongs to (its constant pool, its other graphs).
- ``HostStep``'s ``run`` must not keep references to its arguments; results are fresh arrays.
- A module a builder compiles must not hold the host-sync op itself (``ctx.compile`` would split it
  at that op again, without end); data-dependent ops compile their *bounded* forms instead.
- Helpers: ``sub_module(module, name, ops, inputs, outputs)`` cuts a module out of a graph (as the
  segments are made); ``symbolic_type(v, taken)`` names a value's unknown dims so code compiled
  for it is shape-generic (``symbols_of(values)``: the symbols already in use).
"""

from __future__ import annotations

import importlib
import re
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Protocol, Sequence

import numpy as np

from nnc.ir import Graph, Module, Op, TensorType, Value
from nnc.ir.builder import const_value
from nnc.ir.graph import region_constant_refs
from nnc.ir.interpreter import check_feeds
from nnc.ir.specialize import reinfer, specialize

from ..compiled import NotShapeGeneric


class HostStep(Protocol):
    inputs: list[Value]

    def run(self, args: list[np.ndarray]) -> list[np.ndarray]: ...

    def report(self) -> dict[str, Any]: ...


@dataclass(frozen=True)
class HostSync:
    """A kind of host-sync op: when it applies, why it needs the host, and how its step is built."""

    opname: str
    why: str
    build: Callable[[Op, "SegmentContext"], HostStep]
    applies: Callable[[Op], bool] = lambda op: True


HOST_SYNC: dict[str, HostSync] = {}


def register_host_sync(*opnames: str, why: str, applies: Callable[[Op], bool] | None = None):
    """Register the step builder of host-sync ops (see the module docstring)."""
    def register(build: Callable[[Op, SegmentContext], HostStep]) -> Callable:
        for name in opnames:
            if name in HOST_SYNC:
                raise ValueError(f"host-sync op {name!r} registered twice")
            HOST_SYNC[name] = HostSync(name, why, build, applies or (lambda op: True))
        return build
    return register


# the modules (under backends/x86) that register host-sync ops, imported on first use: a new kind of
# host-sync op adds its module here
PROVIDERS: tuple[str, ...] = ("data_dependent", "host_steps", "codec_steps", "random_steps")
_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        for name in PROVIDERS:
            importlib.import_module(f"{__package__}.{name}")


def host_sync(op: Op) -> HostSync | None:
    _ensure_loaded()
    hs = HOST_SYNC.get(op.opname)
    return hs if hs is not None and hs.applies(op) else None


def host_sync_ops() -> set[str]:
    """The op names registered as host-sync (they run on x86 as host steps)."""
    _ensure_loaded()
    return set(HOST_SYNC)


def has_host_sync(graph: Graph) -> bool:
    return any(host_sync(op) is not None for op in graph.ops)


@dataclass
class SegmentContext:
    """What a host-sync step builder may use (module docstring)."""

    module: Module
    options: Mapping[str, Any]
    compile_fn: Callable[[Module, Mapping[str, Any]], Any]

    def compile(self, module: Module) -> Any:
        return self.compile_fn(module, dict(self.options))


# -- building segment modules -------------------------------------------------------------------------
_NOT_SYMBOL = re.compile(r"[^A-Za-z0-9_]")


def symbolic_type(v: Value, taken: set[str] | None = None) -> TensorType:
    """``v``'s type with each unknown dim (``?``: a count known only at run time) named after ``v`` and
    its axis, so that the ops after it infer dims in those names and compile shape-generic. Names in
    ``taken`` (the other symbols of the module being built) are avoided; new ones are added to it."""
    if not isinstance(v.type, TensorType) or v.type.shape is None or all(d != "?" for d in v.type.shape):
        return v.type  # a sequence or optional (a body's carried list) keeps its type
    taken = set() if taken is None else taken
    base = _NOT_SYMBOL.sub("_", v.name)
    base = base if base[:1].isalpha() or base[:1] == "_" else "d_" + base
    dims: list[Any] = []
    for i, d in enumerate(v.type.shape):
        if d == "?":
            d, k = f"{base}_{i}", 1
            while d in taken:  # two values whose names differ only in characters a symbol cannot hold
                d, k = f"{base}_{i}_{k}", k + 1
            taken.add(d)
        dims.append(d)
    return TensorType(v.type.dtype, tuple(dims))


def symbols_of(values: Sequence[Value]) -> set[str]:
    """The named symbolic dims of ``values``' types (what ``symbolic_type`` must not reuse)."""
    return {str(d) for v in values if isinstance(v.type, TensorType)
            for d in (v.type.shape or ()) if isinstance(d, str) and d != "?"}


def sub_module(m: Module, name: str, ops: Sequence[Op], inputs: Sequence[Value], outputs: Sequence[Value]) -> Module:
    """A module of ``ops`` (in order) whose parameters are ``inputs`` (retyped by ``symbolic_type``) and
    whose results are ``outputs``; constants the ops read are copied in as ``const`` ops sharing the
    pool arrays. Result types are inferred again from the new parameter types."""
    g = Graph("main")
    taken = symbols_of(inputs)
    mapping: dict[int, Value] = {id(v): g.add_param(v.name, symbolic_type(v, taken)) for v in inputs}
    keys: set[str] = set()

    def add(op: Op) -> None:
        if op.opname == "const":  # a region's own constants are among its ops
            keys.add(op.attrs["ref"])
        new = Op(op.opname, [mapping[id(v)] for v in op.operands], op.attrs, [r.type for r in op.results],
                 [r.name for r in op.results], [r.clone() for r in op.regions], op.loc)
        g.insert(new)
        mapping.update((id(r), nr) for r, nr in zip(op.results, new.results))

    for op in ops:
        for v in op.operands:
            if id(v) not in mapping and v.producer is not None and v.producer.opname == "const":
                add(v.producer)
                keys.add(v.producer.attrs["ref"])
        add(op)
    keys |= region_constant_refs(ops)  # constants read inside control-flow bodies
    g.set_outputs([mapping[id(v)] for v in outputs], [v.name for v in outputs])
    sm = Module(f"{m.name}.{name}", {"main": g}, {k: m.constants[k] for k in keys if k in m.constants},
                {k: m.constant_types[k] for k in keys if k in m.constant_types}, dict(m.metadata))
    reinfer(sm)
    return sm


# -- the pieces of a run ------------------------------------------------------------------------------
@dataclass
class Segment:
    """Compiled ordinary ops: ``exe.run`` over the segment module's parameters."""

    index: int
    module: Module
    inputs: list[Value]
    outputs: list[Value]
    exe: Any = None
    param_names: list[str] = field(default_factory=list)

    def run(self, args: list[np.ndarray]) -> list[np.ndarray]:
        outs = self.exe.run(dict(zip(self.param_names, args)))
        return [outs[n] for n in self.module.main.output_names]


@dataclass
class Step:
    """A host-sync op's step, with the values it defines."""

    op: Op
    sync: HostSync
    step: HostStep

    @property
    def inputs(self) -> list[Value]:
        return list(self.step.inputs)

    @property
    def outputs(self) -> list[Value]:
        return list(self.op.results)

    def run(self, args: list[np.ndarray]) -> list[np.ndarray]:
        return self.step.run(args)


class PerSignature:
    """A segment without shape-generic code: compiled for each distinct input signature (shapes,
    and the values of small integer inputs, which may decide shapes), the most recent ``keep`` kept."""

    keep = 16

    def __init__(self, module: Module, compile_one: Callable[[Module], Any], reason: str):
        self.module = module
        self.compile_one = compile_one
        self.reason = reason
        self.compiles = 0
        self._exes: dict[tuple, tuple[Any, list[str]]] = {}
        self._lock = threading.Lock()  # two runs meeting a new signature compile it once

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        g = self.module.main
        args = {p.name: a for p, a in zip(g.params, check_feeds(g, feeds, self.module))}
        small = {n: a for n, a in args.items() if a.dtype.kind in "iub" and a.size <= 64}
        key = tuple(a.shape for a in args.values()) + tuple((n, a.tobytes()) for n, a in small.items())
        with self._lock:
            hit = self._exes.get(key)
            if hit is None:
                shapes = {n: a.shape for n, a in args.items()}
                try:
                    hit = self.compile_one(specialize(self.module, shapes)), list(args)
                except NotShapeGeneric:  # an input's value decides a shape: compile with it as a constant
                    rest = {n: s for n, s in shapes.items() if n not in small}
                    hit = self.compile_one(specialize(self.module, rest, small)), list(rest)
                self.compiles += 1
                if len(self._exes) >= self.keep:
                    self._exes.pop(next(iter(self._exes)))
                self._exes[key] = hit
        exe, names = hit
        return exe.run({n: args[n] for n in names})


# -- compiling and running ----------------------------------------------------------------------------
def compile_segmented(module: Module, options: Mapping[str, Any],
                      compile_fn: Callable[[Module, Mapping[str, Any]], Any]) -> SegmentedExecutable:
    """Compile a prepared module that has host-sync ops (``has_host_sync``) as segments and steps."""
    g = module.main
    ctx = SegmentContext(module, options, _Counting(compile_fn))
    pieces: list[Any] = []
    run: list[Op] = []
    for op in g.ops:
        hs = None if op.opname == "const" else host_sync(op)
        if hs is None:
            if op.opname != "const":
                run.append(op)
            continue
        if run:
            pieces.append(run)
            run = []
        pieces.append(Step(op, hs, hs.build(op, ctx)))
    if run:
        pieces.append(run)
    # what each piece reads; a segment's outputs are its values read after it (or graph outputs)
    reads: list[list[Value]] = []
    for p in pieces:
        if isinstance(p, Step):
            reads.append(p.inputs)
            continue
        inside = {id(r) for op in p for r in op.results}
        seen: dict[int, Value] = {}
        for op in p:
            for v in op.operands:
                if id(v) not in inside and not _is_const(v):
                    seen.setdefault(id(v), v)
        reads.append(list(seen.values()))
    later: set[int] = {id(v) for v in g.outputs}
    outputs: list[list[Value]] = [[] for _ in pieces]
    for i in range(len(pieces) - 1, -1, -1):
        if not isinstance(pieces[i], Step):
            outputs[i] = [r for op in pieces[i] for r in op.results if id(r) in later]
        later |= {id(v) for v in reads[i]}
    built: list[Segment | Step] = []
    for i, p in enumerate(pieces):
        if isinstance(p, Step):
            built.append(p)
            continue
        if not outputs[i]:
            continue
        index = sum(isinstance(q, Segment) for q in built)
        sm = sub_module(module, f"segment{index}", p, reads[i], outputs[i])
        try:
            exe = ctx.compile(sm)
        except NotShapeGeneric as e:
            exe = PerSignature(sm, ctx.compile, str(e))
        built.append(Segment(index, sm, reads[i], outputs[i], exe, [q.name for q in sm.main.params]))
    consts = {id(v): const_value(module, v) for p in built for v in p.inputs if _is_const(v)}
    consts.update({id(v): const_value(module, v) for v in g.outputs if _is_const(v)})
    return SegmentedExecutable(module, built, consts, ctx.compile_fn)


def _is_const(v: Value) -> bool:
    return v.producer is not None and v.producer.opname == "const"


class _Counting:
    """The compile function, counting its calls (``SegmentedExecutable.compiles``)."""

    def __init__(self, fn: Callable[[Module, Mapping[str, Any]], Any]):
        self.fn = fn
        self.calls = 0

    def __call__(self, module: Module, options: Mapping[str, Any]) -> Any:
        exe = self.fn(module, options)
        self.calls += 1  # a refused compile (NotShapeGeneric) made no code: not counted
        return exe


class SegmentedExecutable:
    """Compiled segments and host steps run in graph order over host arrays (module docstring)."""

    target = "x86"
    compiled = None  # no single object file: not savable as a library, nothing to emit

    def __init__(self, module: Module, pieces: list[Segment | Step], consts: dict[int, np.ndarray],
                 counter: _Counting):
        self.module = module
        self.graph = module.main
        self.pieces = pieces
        self._consts = consts
        self._counter = counter
        exes = [p.exe if isinstance(p, Segment) else getattr(p.step, "exe", None) for p in pieces]
        statuses = {getattr(e, "cache_status", "off") for e in exes if e is not None}
        self.cache_status = statuses.pop() if len(statuses) == 1 else ("miss" if "miss" in statuses else "off")
        self.target_report = self.report()

    @property
    def output_names(self) -> list[str]:
        return list(self.graph.output_names)

    @property
    def compiles(self) -> int:
        """x86 compiles so far: one per segment and per step kernel, more for per-signature segments."""
        return self._counter.calls

    def run(self, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
        return self._run(feeds, None)

    def _run(self, feeds: Mapping[str, Any], seen: list[dict[str, Any]] | None) -> dict[str, np.ndarray]:
        g = self.graph
        env = dict(self._consts)
        env.update(zip(map(id, g.params), check_feeds(g, feeds, self.module)))
        for piece in self.pieces:
            args = [env[id(v)] for v in piece.inputs]
            if seen is not None and isinstance(piece, Segment) and hasattr(piece.exe, "memory_at"):
                seen.append({"segment": piece.index, **piece.exe.memory_at(dict(zip(piece.param_names, args)))})
            env.update(zip(map(id, piece.outputs), piece.run(args)))
        return {n: env[id(v)] for n, v in zip(g.output_names, g.outputs)}

    def memory_at(self, feeds: Mapping[str, Any]) -> list[dict[str, Any]]:
        """Run the model on ``feeds`` and give each shape-generic segment's arena at the inputs it
        met (dims, bytes, the planner's lower bound): the sizes after a host step depend on data."""
        seen: list[dict[str, Any]] = []
        self._run(feeds, seen)
        return seen

    def shapes_seen(self) -> list[dict[str, Any]]:
        """Every shape-generic segment's planned signatures so far (``GenericExecutable.shapes_seen``)."""
        return [{"segment": p.index, "signatures": p.exe.shapes_seen()} for p in self.pieces
                if isinstance(p, Segment) and hasattr(p.exe, "shapes_seen")]

    def report(self) -> dict[str, Any]:
        rows: list[dict[str, Any]] = []
        calls = distinct = 0
        for p in self.pieces:
            exe = p.exe if isinstance(p, Segment) else getattr(p.step, "exe", None)
            kernels = (getattr(exe, "target_report", None) or {}).get("kernels") or {}
            calls += int(kernels.get("calls", 0))
            distinct += int(kernels.get("distinct", 0))
            if isinstance(p, Step):
                rows.append({"host_step": p.op.where(), "why": p.sync.why, **p.step.report()})
                continue
            row: dict[str, Any] = {"segment": p.index, "ops": len(p.module.main.ops),
                                   "generic": type(p.exe).__name__ == "GenericExecutable"}
            if isinstance(p.exe, PerSignature):
                row["per_signature"] = p.exe.reason
            rows.append(row)
        steps = [r for r in rows if "host_step" in r]
        return {"kernels": {"calls": calls, "distinct": distinct},
                "segments": {"compiled": len(rows) - len(steps), "host_steps": len(steps),
                             "reason": "; ".join(f"{r['host_step']}: {r['why']}" for r in steps),
                             "pieces": rows}}

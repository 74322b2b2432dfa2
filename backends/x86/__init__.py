"""The x86 backend: every op lowered to LLVM IR through llvmlite, compiled for the host CPU name and
feature list, and run through one native entry point over a planned arena.

``compile(module, options)`` prepares the graph (freeze, fold constants, remove dead code), plans
memory, generates and optimises LLVM IR, emits an object file (a big module: one per core, compiled
at the same time, ``split_compile.py``) and links it into this process, and returns an
``X86Executable`` (``GenericExecutable`` for symbolic dims, ``generic.py``). A graph with host-sync
ops (data-dependent output sizes: NonZero, Unique, NMS, TopK with a run-time k) compiles as segments
with host steps between them instead (``segments.py``, a ``SegmentedExecutable``). Options:

- ``cpu``, ``target_features``: the target (default: the host's CPU name and feature list);
- ``opt``: LLVM optimisation level (default 3);
- ``threads``: threads for ``parallel_for`` (default ``$NNC_NUM_THREADS``, else every core; the pool
  size is compiled in, see ``runtime.py``);
- ``cache``: use the compilation cache (default True; see ``cache.py``);
- ``quiet``: no progress on stderr (progress appears only for compiles longer than a second);
- ``profile``: time every kernel inside the entry point (``profile.py``, docs/profiling.md); the
  code differs, so it is a separate cache entry;
- ``keep_llvm``: keep the optimised LLVM IR and assembly (``nnc compile --emit llvm|asm``; bypasses the
  cache, which stores only object code).

The executable keeps what the compile produced (``exe.compiled``: object code, weights, metadata),
so ``CompiledModel.save`` links the very same machine code into a shared library (``aot.py``);
``backend.py`` declares the target to the driver.
"""

from __future__ import annotations

import contextlib
import gc
import sys
import time
from typing import Any, Iterator, Mapping, TextIO

from nnc.ir import DType, Module, Op, TargetError, verify_module
from nnc.ir.shape_eval import ShapeEvaluator
from nnc.ir.specialize import reinfer
from nnc.passes import PassManager

from ..compiled import NotShapeGeneric
from . import fuse_requantize  # noqa: F401  (registers the fuse-requantize pass of PREPARE)
from .cache import CompileCache, Entry, cache_key
from .codegen import ENTRY, CodeGen
from .executable import Interface, X86Executable, load_object
from .frame import FrameLayout
from .generic import GenericExecutable, is_symbolic, shape_generic_reason, symbolic_interface
from .host_steps import has_host_values
from .kernel_cache import KernelCache
from .runtime import attach, num_threads
from .schedule import ScheduleTable, tuning_summary
from .segments import compile_segmented, has_host_sync, host_sync
from .split_compile import machine_code, start_early
from .storage import assign_storage
from .target import TargetInfo, resolve
from .tuning_db import schedule_table

PREPARE = "freeze,fold-constants,fold-dynamic,dce,fuse-requantize"
REFOLD = "fold-constants,fold-dynamic,dce"


def prepare(module: Module, allow_symbolic: bool = False) -> Module:
    """The graph the code generator lowers: frozen, shape arithmetic folded, dead code removed.
    Static shapes are required unless ``allow_symbolic`` (shape-generic code, ``generic.py``);
    a data-dependent output shape (NonZero) is refused either way."""
    return _prepare(module, allow_symbolic)[0]


def _prepare(module: Module, allow_symbolic: bool) -> tuple[Module, ShapeEvaluator | None]:
    """``prepare``, and (``allow_symbolic``) the graph's shape evaluator, made once per compile."""
    m = _prepared_graph(module)
    g = m.main
    evaluator = ShapeEvaluator(m, g) if allow_symbolic else None
    needed = evaluator.needed if evaluator is not None else set()
    for op in g.ops:  # an op whose shape is unknown though its operands' are: data-dependent
        if any(id(v) in needed for v in op.operands):
            continue  # its shape follows from shape arithmetic the host evaluates per binding (a range's limit)
        if all(v.type.is_static for v in op.operands) and not all(r.type.is_static for r in op.results):
            types = ", ".join(str(r.type) for r in op.results)
            error = NotShapeGeneric if allow_symbolic else TargetError  # symbolic: the driver compiles per shape
            raise error(f"x86: {op.where()} has a data-dependent output shape ({types}); the x86 backend "
                        f"needs every shape to follow from the input shapes")
    for v in [] if allow_symbolic else list(g.params) + [r for op in g.ops for r in op.results]:
        if not v.type.is_static:
            raise TargetError(f"x86: %{v.name} has a dynamic type {v.type}; compile with static input shapes")
    return m, evaluator


def _prepared_graph(module: Module) -> Module:
    """A copy frozen, with shape arithmetic folded and dead code removed (no checks)."""
    m = module.clone()  # the graphs are copied; the (large, read-only) constant arrays are shared
    records = PassManager(PREPARE).run(m)
    g = m.main
    for _ in range(8):
        if all(r.type.is_static for op in g.ops for r in op.results) or not any(r.changed for r in records):
            break
        # fold-dynamic turns constant operands into attributes but keeps the result types it found
        # (a slice whose starts were computed from a shape input): infer them again, which may make
        # more shapes (and so more shape arithmetic) constant
        reinfer(m)
        records = PassManager(REFOLD).run(m)
    return m


class Progress:
    """Progress of one compile on stderr, shown only once the compile has taken a while (small
    models compile silently). On a terminal one line is rewritten in place after ``delay`` seconds;
    elsewhere (logs, CI, a script capturing stderr) a line is printed every ``log_delay`` seconds."""

    delay = 1.0
    log_delay = 10.0

    def __init__(self, quiet: bool = False, stream: TextIO | None = None, label: str = "nnc x86"):
        self.quiet = quiet
        self.stream = stream if stream is not None else sys.stderr
        self.label = label
        self.start = time.perf_counter()
        self.shown = False
        self._last = 0.0
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, text: str, force: bool = False) -> None:
        if self.quiet:
            return
        now = time.perf_counter()
        if now - self.start < (self.delay if self._tty else self.log_delay):
            return
        if not force and self.shown and now - self._last < (0.1 if self._tty else self.log_delay):
            return
        self._last = now
        self.shown = True
        if self._tty:
            self.stream.write(f"\r\033[K{self.label}: {text}")
        else:
            self.stream.write(f"{self.label}: {text}\n")
        self.stream.flush()

    def done(self, text: str) -> None:
        if self.shown and not self.quiet:
            self.stream.write(("\r\033[K" if self._tty else "") + f"{self.label}: {text} "
                              f"in {time.perf_counter() - self.start:.1f}s\n")
            self.stream.flush()


class _ReportingCodeGen(CodeGen):
    """CodeGen that reports each kernel it emits (kernels emitted / total)."""

    def __init__(self, *args: Any, progress: Progress):
        super().__init__(*args[:6], frame=args[6])
        self.progress = progress
        self.total = sum(1 for op in self.graph.ops if op.opname != "const")
        self.done = 0

    def _kernel(self, i: int, op: Op):
        fn = super()._kernel(i, op)
        self.done += 1
        self.progress.update(f"kernels {self.done}/{self.total}", force=self.done == self.total)
        return fn


def generate(module: Module, options: Mapping[str, Any] | None = None, progress: Progress | None = None,
             schedules: ScheduleTable | None = None):
    """The prepared module, its storage map, the target and the LLVM IR text. A module with
    symbolic dims gives shape-generic code (``generic.py``; ``storage.generic``), or a
    ``NotShapeGeneric`` error saying why it cannot. With ``schedules`` (a tuning table), the tunable
    kernels take their schedule from it and ``storage.tuning`` says what each kernel used."""
    options = dict(options or {})
    progress = progress or Progress(quiet=True)
    info = resolve(options.get("cpu"), options.get("target_features"))
    progress.update("preparing the graph")
    m, storage, layout = _prepared(module)
    with _no_cycle_collection():
        cg = _ReportingCodeGen(m, m.main, storage, info, num_threads(options), bool(options.get("profile")),
                               layout, progress=progress)
        if schedules is not None:
            cg.schedule_table, cg.schedule_log, cg.schedule_signatures = schedules, [], {}
        text = str(cg.emit())
        storage.tuning = None
        if schedules is not None:
            storage.tuning = tuning_summary(schedules, cg.schedule_log or [], cg.schedule_signatures)
        # kernels: call sites, and the distinct functions compiled for them (repeated layers share one)
        storage.kernel_counts = {"calls": len(cg.kernel_table), "distinct": len(cg.kernel_table) - cg.shared_kernels}
        del cg
    return m, storage, info, text


@contextlib.contextmanager
def _no_cycle_collection() -> Iterator[None]:
    """Python's cycle collector off while llvmlite builds and prints the module: the module is
    hundreds of thousands of linked objects that all live until it is printed, and every
    collection walked them again (over half the CPU time of generating ResNet-50's or BERT-base's
    IR, cProfile and process_time with and without). What is garbage is collected afterwards."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
            # collect the youngest generation now (everything made while the collector was off sits
            # in it), while the module's cycles are fresh garbage: left to the automatic collections,
            # their memory was reused less well (100 small compiles grew the RSS by 5.4 MB, now 1.4 MB;
            # tests/backends/test_compile_memory.py). Not a full collection: in a process holding
            # millions of objects that cost 170 ms per compile.
            gc.collect(0)


def _prepared(module: Module, check: bool = True) -> tuple[Module, Any, FrameLayout | None]:
    """The prepared module, its storage map and (shape-generic code) its frame layout. ``check``:
    refuse a graph the shape-generic kernels cannot run (a cache hit skips it: its key covers the
    graph and nnc's code, and the entry exists because the same graph passed when compiled)."""
    m, evaluator = _prepare(module, allow_symbolic=True)
    assert evaluator is not None
    if not is_symbolic(m.main):
        values = evaluator.value_inputs()
        if values:  # static shapes, but an input's value is an attribute (a Reshape target, a CumSum axis)
            raise NotShapeGeneric(f"x86: the values of input(s) {', '.join(values)} decide shapes or attributes; "
                                  f"compiled per value")
        return m, assign_storage(m, m.main), None
    storage = assign_storage(m, m.main, generic=True)
    layout = FrameLayout(m, m.main, storage.arena_values(), evaluator)
    storage.layout = layout
    why = shape_generic_reason(m.main, evaluator) if check else None
    if why is not None:
        raise NotShapeGeneric(f"x86: {why}")
    return m, storage, layout


def compile(module: Module, options: Mapping[str, Any] | None = None) -> Any:  # noqa: A001
    options = dict(options or {})
    options["threads"] = num_threads(options)  # resolved from $NNC_NUM_THREADS / cores: in the cache key
    verify_module(module)
    # the host acts between kernels (control flow, sequences, data-dependent sizes): segments
    if has_host_values(module.main) or any(host_sync(op) is not None for op in module.main.ops):
        m = _prepared_graph(module)
        if has_host_sync(m.main) or has_host_values(m.main):
            return compile_segmented(m, options, compile)
    info = resolve(options.get("cpu"), options.get("target_features"))
    schedules = schedule_table(options.pop("tuning_db", None), info.cpu, info.features)
    progress = Progress(quiet=bool(options.get("quiet", False)))
    keep_llvm = bool(options.pop("keep_llvm", False))  # the LLVM text is not cached: build it afresh
    cache = CompileCache(options.get("cache_dir")) if options.get("cache", True) and not keep_llvm else None
    status, key = "off", ""
    if cache is not None:
        # the schedules a tuning table gives are part of the key (its digest); without one the key is as before
        key = cache_key(module, info, {**options, "tuning": schedules.digest} if schedules is not None else options)
        entry, status = cache.get(key)
        if entry is not None:
            exe = _from_entry(entry, info, module)
            if exe is not None:
                exe.cache_status = status
                return exe
            cache.discard(key)
            status = "corrupt: bad metadata"
    kernels = KernelCache(cache) if cache is not None and status != "off" else None  # "off": an untrusted folder
    exe, entry = _build(module, info, options, progress, keep_llvm, kernels, schedules)
    if cache is not None:
        cache.put(key, entry)
    exe.cache_status = status
    return exe


def _build(module: Module, info: TargetInfo, options: Mapping[str, Any], progress: Progress,
           keep_llvm: bool = False, kernels: KernelCache | None = None,
           schedules: ScheduleTable | None = None) -> tuple[X86Executable, Entry]:
    """Code generation, LLVM and machine code: the work a cache hit skips."""
    if not keep_llvm:
        start_early(sum(1 for op in module.main.ops if op.opname != "const"))
    m, storage, _, text = generate(module, {**options, "cpu": info.cpu, "target_features": info.features}, progress,
                                   schedules)
    opt = int(options.get("opt", 3))
    progress.update(f"optimising and generating machine code (LLVM O{opt})", force=True)
    counts: dict[str, int] = {}
    obj, llvm_ir, assembly = machine_code(text, info, opt, keep_llvm, ENTRY, kernels, counts)
    storage.kernel_counts.update(counts)  # from_cache / compiled: the kernel cache's work (kernel_cache.py)
    code = load_object(obj)
    exe: Any
    if storage.generic:
        interface = symbolic_interface(m.main, storage.kernel_table)
        exe = GenericExecutable(interface, storage.layout, storage.weights, code.address(ENTRY), code, module=m,
                                storage=storage)
    else:
        interface = Interface.of(m.main, storage)
        exe = X86Executable(interface, storage.weights, code.address(ENTRY), code, module=m, graph=m.main,
                            storage=storage)
    attach(exe, code)  # joins the model's worker threads when it is collected
    progress.done(f"compiled {_count_kernels(m)} kernels")
    meta = {"interface": interface.to_json(), "entry": ENTRY, "target": info.key(), "model": m.name,
            "threads": int(options["threads"]), "opt": opt, "weights": weight_table(m, storage),
            "generic": storage.generic, "kernels": storage.kernel_counts,
            "frame_sites": storage.layout.sites if storage.generic else []}
    if storage.tuning is not None:
        meta["tuning"] = storage.tuning
    entry = Entry(obj, storage.weights.data, meta)  # a view of the blob: a big model's weights are not copied
    exe.compiled = Compiled(entry, info)
    exe.target_report = _target_report(entry.meta)
    exe.compiled.llvm_ir, exe.compiled.assembly = llvm_ir, assembly
    return exe, entry


def weight_table(m: Module, storage: Any) -> list[dict[str, Any]]:
    """Each weight in the blob: name, offset, bytes, dtype, shape (for the library's manifest)."""
    out = []
    for key, off in sorted(storage.weight_offsets.items(), key=lambda kv: kv[1]):
        arr = m.constants[key]
        out.append({"name": key, "offset": int(off), "nbytes": int(arr.nbytes),
                    "dtype": str(DType.from_numpy(arr.dtype)), "shape": list(arr.shape)})
    return out


class Compiled:
    """What a compile produced, beyond the running code: the object file, weights and metadata
    (exactly what the cache stores) and the target; ``save`` links a library from these, so the
    library runs the same machine code as the JIT. ``llvm_ir``/``assembly`` are kept on request."""

    def __init__(self, entry: Entry, info: TargetInfo):
        self.entry = entry
        self.info = info
        self.llvm_ir: str | None = None
        self.assembly: str | None = None


def executable_from_parts(object_code: bytes, weights: bytes, meta: dict[str, Any], info: TargetInfo) -> Any:
    """The executable of a static-shape compile from its object code, weights and metadata
    (``exe.compiled.entry``), e.g. compiled on another machine for ``info`` (``nnc tune`` on Ray)."""
    exe = _from_entry(Entry(object_code, weights, meta), info, None) if not meta.get("generic") else None
    if exe is None:
        raise TargetError(f"x86: compiled code for {meta.get('target')!r} cannot be loaded for {info.key()!r}")
    return exe


def _from_entry(entry: Entry, info: TargetInfo, module: Module | None) -> Any:
    """An executable from a verified cache entry; None when its metadata is not what we write.
    Shape-generic code needs its frame layout, which preparing the graph again gives (Python only,
    no code generation)."""
    try:
        interface = Interface.from_json(entry.meta["interface"])
        name = str(entry.meta["entry"])
        generic = bool(entry.meta.get("generic", False))
        if entry.meta["target"] != info.key() or not isinstance(entry.meta["weights"], list):
            return None
    except (KeyError, TypeError, ValueError):
        return None
    code = load_object(entry.object_code)
    exe: Any
    if generic:
        m, storage, layout = _prepared(module, check=False)
        if layout is None:
            return None
        sites = entry.meta.get("frame_sites")
        def valid(slots: Any) -> bool:
            return isinstance(slots, list) and all(isinstance(i, int) and 0 <= i < layout.error_slot for i in slots)
        if not isinstance(sites, list) or len(sites) != len(interface.kernels) or not all(map(valid, sites)):
            return None
        for slots in sites:  # each call site's block of dims, as the code generator laid them out
            layout.add_site(slots)
        exe = GenericExecutable(interface, layout, entry.weights, code.address(name), code, module=m)
    else:
        exe = X86Executable(interface, entry.weights, code.address(name), code)
    attach(exe, code)  # joins the model's worker threads when it is collected
    exe.compiled = Compiled(entry, info)
    exe.target_report = _target_report(entry.meta)
    return exe


def _target_report(meta: Mapping[str, Any]) -> dict[str, Any]:
    """report["x86"]: the kernel counts and, with a tuning table, the schedules (docs/tuning.md)."""
    rep: dict[str, Any] = {"kernels": dict(meta.get("kernels") or {})}
    if isinstance(meta.get("tuning"), dict):
        rep["tuning"] = meta["tuning"]
    return rep


def _count_kernels(m: Module) -> int:
    return sum(1 for op in m.main.ops if op.opname != "const")

"""Turns a graph into one LLVM module: a kernel function per op, and one entry point.

    int32_t nnc_entry(ptr inputs[], ptr outputs[], ptr arena, ptr weights)

The entry point walks the kernels in order, passing each the pointers of its results and operands
(computed from the storage map), so no Python runs between kernels. Kernels are internal functions
that LLVM may inline.

Run-time errors (an index out of range): every kernel also gets a pointer to an error record in the
arena (``StorageMap.error_record``). A kernel that checks its data (``KernelBuilder.fail_unless``)
branches to a cold block that writes its code (kernel index + 1) and the offending value there and
returns; after such a kernel the entry point returns the code if it is set. 0 means success. The
kernel names, in code order, are ``StorageMap.kernel_table`` (the executable's message table).

Profiling (``profile=True``, docs/profiling.md): the entry point reads ``clock_gettime(CLOCK_MONOTONIC)``
at its start and end and around every kernel call, and stores the nanosecond stamps in the exported
global ``nnc_profile`` (i64 pairs: the entry's, then each kernel's, in code order). With a thread
pool it also makes ``runtime.PROFILE_THREADS`` (each pool thread's chunk times per kernel), zeroes it
at the start of a run and tells the pool which kernel runs (``runtime.PROFILE_KERNEL``). Without it
the module is exactly what it was: no globals, no calls.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Callable, Sequence

from llvmlite import ir

from nnc.ir import Graph, Module, Op, TargetError, Value

from . import runtime
from .frame import FrameLayout
from .kernels import vecmath
from .kernels.registry import get_lowering
from .llvm_types import I8, I32, I64, PTR, VOID, const_int, for_range, ll_type
from .storage import StorageMap
from .target import TRIPLE, TargetInfo

if TYPE_CHECKING:
    import numpy as np

ENTRY = "nnc_entry"
# the error record: i32 code at 0, then the offending value and the bound it broke (i64 at 8 and 16)
ERROR_CODE, ERROR_VALUE, ERROR_BOUND = 0, 8, 16
PROFILE = "nnc_profile"
CLOCK_MONOTONIC = 1


class KernelBuilder:
    """What a lowering works with: the kernel function, its builder, typed argument pointers."""

    def __init__(self, cg: "CodeGen", fn: ir.Function, op: Op, pointers: list[ir.Value] | None = None,
                 builder: ir.IRBuilder | None = None, error: ir.Value | None = None, frame: ir.Value | None = None,
                 wtab: ir.Value | None = None):
        self.cg = cg
        self.fn = fn
        self.op = op
        self.b = builder or ir.IRBuilder(fn.append_basic_block("entry"))
        extra = cg.trailing_args  # the error record, the weights table, in shape-generic code the frame
        ptrs = list(fn.args)[:-extra] if pointers is None else pointers
        # the trailing arguments: the kernel's own after the pointers, or (a builder over the same
        # kernel, with pointers given) the enclosing kernel's
        if pointers is None:
            trail = list(fn.args)[-extra:]
            self._error, self._wtab = trail[0], trail[1]
            self._frame = trail[2] if cg.frame is not None else None
        else:
            self._error = error if error is not None else cg.current_error
            self._wtab = wtab if wtab is not None else cg.current_wtab
            self._frame = frame if frame is not None else cg.current_frame
        self._dims: dict[tuple[int, int], ir.Value] = {}
        n_out = len(op.results)
        self._outs = ptrs[:n_out]
        self._args = ptrs[n_out:]
        self._tasks = 0
        self.shared: list[ir.Value] = []  # a parallel_for body's pointers from its enclosing kernel

    @property
    def target(self) -> TargetInfo:
        return self.cg.target

    def out(self, i: int = 0) -> ir.Value:
        return self._outs[i]

    def arg(self, i: int) -> ir.Value:
        return self._args[i]

    def shape(self, v: Value) -> tuple[int | ir.Value, ...]:
        """``v``'s dims: ints where the type has them, else i64 values read from the run's frame
        (shape-generic code, ``frame.py``). Loads in the kernel's entry block are reused."""
        shape = v.type.shape
        if shape is None:
            raise TargetError(f"x86: %{v.name} has no known rank ({self.op.where()})")
        if all(isinstance(d, int) for d in shape):
            return tuple(shape)
        if self._frame is None:
            raise TargetError(f"x86: %{v.name} has symbolic dims {v.type} in static code ({self.op.where()})")
        src = getattr(self, "shape_alias", {}).get(id(v), v)
        dims: list[int | ir.Value] = []
        for axis, d in enumerate(shape):
            if isinstance(d, int):
                dims.append(d)
                continue
            key = (id(src), axis)
            x = self._dims.get(key)
            if x is None:
                slot = self.cg.site_slot(self.cg.frame.dim_slot[key])
                x = self.b.load(self.b.gep(self._frame, [const_int(slot)], source_etype=I64, inbounds=True), typ=I64)
                x.set_metadata("invariant.load", self.cg.ll.add_metadata([]))
                if self.b.block is self.b.function.entry_basic_block:  # dominates every later use
                    self._dims[key] = x
            dims.append(x)
        return tuple(dims)

    @property
    def generic(self) -> bool:
        """Shape-generic code: some dims are read at run time (``shape``)."""
        return self._frame is not None

    def elem_ptr(self, base: ir.Value, index: ir.Value, value: Value) -> ir.Value:
        return self.b.gep(base, [index], source_etype=ll_type(value.dtype), inbounds=True)

    def load(self, base: ir.Value, index: ir.Value, value: Value) -> ir.Value:
        return self.b.load(self.elem_ptr(base, index, value), typ=ll_type(value.dtype))

    def store(self, x: ir.Value, base: ir.Value, index: ir.Value, value: Value) -> None:
        self.b.store(x, self.elem_ptr(base, index, value))

    def parallel_for(self, count: int | ir.Value, body: Callable[["KernelBuilder", ir.Value], None],
                     name: str = "task", shared: Sequence[ir.Value] = ()) -> None:
        """Run ``body(kb, i)`` for ``i`` in ``[0, count)``, split over the worker threads.

        The body is emitted in a function of its own (outlined): inside it, use ``kb.out()`` /
        ``kb.arg()`` and ``kb.b`` of the ``kb`` it receives, never values of the enclosing kernel.
        ``shared``: pointers of the enclosing kernel (a buffer it filled) the tasks read as
        ``kb.shared[i]``. Tasks must be independent (they run in any order, concurrently).
        """
        self._tasks += 1
        frame = [self._frame] if self._frame is not None else []
        base = list(self._outs) + list(self._args)
        ptrs = base + list(shared) + [self._error, self._wtab] + frame
        task = ir.Function(self.cg.ll, ir.FunctionType(VOID, [PTR, I64]), name=f"{self.fn.name}.{name}{self._tasks}")
        task.linkage = "internal"
        tb = ir.IRBuilder(task.append_basic_block("entry"))
        ctx_arg, index = task.args
        loaded = [tb.load(tb.gep(ctx_arg, [const_int(i)], source_etype=PTR), typ=PTR) for i in range(len(ptrs))]
        n = len(ptrs) - len(frame) - 2
        inner = KernelBuilder(self.cg, task, self.op, loaded[:len(base)], tb, error=loaded[n], wtab=loaded[n + 1],
                              frame=loaded[n + 2] if frame else None)
        inner.shared = loaded[len(base):n]
        inner.shape_alias = getattr(self, "shape_alias", {})
        inner._outer = {id(p): q for p, q in zip(ptrs, loaded)}
        body(inner, index)
        if not inner.b.block.is_terminated:
            inner.b.ret_void()
        ctx = self.b.alloca(PTR, size=const_int(max(len(ptrs), 1)), name="ctx")
        for i, p in enumerate(ptrs):
            self.b.store(p, self.b.gep(ctx, [const_int(i)], source_etype=PTR))
        self.cg.emit_parallel_for(self.b, task, self.b.bitcast(ctx, PTR),
                                  const_int(count) if isinstance(count, int) else count)

    def packed_constant(self, name: str, array: "np.ndarray",
                        replaces: ir.Value | Sequence[ir.Value] | None = None) -> int:
        """Store ``array`` (e.g. weights pre-packed for a microkernel) in the weights blob under a new
        constant-pool key; return a handle for ``weights_ptr``. (The byte offset is not in the
        kernel's code but in the call site's weights table, so layers that differ only in their
        weights share one kernel function: ``CodeGen`` compiles each distinct kernel once.)

        ``replaces``: the operand pointer(s) (``k.arg(i)`` of this kernel, not of a parallel_for body)
        whose raw constant this copy stands for, when the kernel never reads that pointer: the entry
        point then passes null for it, and the raw constant takes no room in the blob unless another
        kernel reads it (``reads_raw`` takes the promise back)."""
        for ptr in [] if replaces is None else [replaces] if isinstance(replaces, ir.Value) else replaces:
            self.cg.unread_args.add(id(ptr))
        self.cg.site_weights.append(self.cg.storage.add_weights(self.cg.module, name, array))
        return len(self.cg.site_weights) - 1

    def reads_raw(self, ptr: ir.Value) -> None:
        """This kernel does read ``ptr`` after all (a fused epilogue reading a weight its anchor packed)."""
        self.cg.unread_args.discard(id(ptr))

    def weights_ptr(self, handle: int) -> ir.Value:
        """A pointer to the packed constant ``handle`` (from ``packed_constant``): the blob's base
        (a module global the entry point sets) plus the offset in the call site's weights table.
        Usable inside ``parallel_for`` bodies too (they get the table pointer)."""
        base = self.b.load(self.cg.weights_base(), typ=PTR)
        off = self.b.load(self.b.gep(self._wtab, [const_int(handle)], source_etype=I64, inbounds=True), typ=I64)
        off.set_metadata("invariant.load", self.cg.ll.add_metadata([]))
        return self.b.gep(base, [off], source_etype=I8, inbounds=True)

    def fail_unless(self, ok: ir.Value, value: ir.Value, bound: ir.Value) -> None:
        """Stop the run unless ``ok`` (i1): a cold block records this kernel's code, ``value`` and
        ``bound`` (i64) in the error record and returns from the current function (kernel or task);
        the entry point then returns the code. Costs one well-predicted branch where ``ok`` holds."""
        self.cg.may_fail = True
        b = self.b
        fail = self.b.function.append_basic_block("fail")
        cont = self.b.function.append_basic_block("ok")
        br = b.cbranch(ok, cont, fail)
        br.set_weights([1 << 20, 1])
        b.position_at_end(fail)
        rec = self._error
        b.store(const_int(self.cg.current_code, I32), rec)
        b.store(value, b.gep(rec, [const_int(ERROR_VALUE)], source_etype=I8))
        b.store(bound, b.gep(rec, [const_int(ERROR_BOUND)], source_etype=I8))
        if self.b.function.function_type.return_type == VOID:
            b.ret_void()
        else:
            b.unreachable()
        b.position_at_end(cont)

    def checked_index(self, x: ir.Value, dim: int | ir.Value) -> ir.Value:
        """``x`` (i64) as an index into a dim of ``dim``: [-dim, dim-1] is valid and a negative
        index counts from the end; anything else stops the run (``fail_unless``). One compare."""
        b = self.b
        d = const_int(dim) if isinstance(dim, int) else dim
        shifted = b.add(x, d)  # valid iff 0 <= x + dim < 2 * dim, one unsigned compare
        self.fail_unless(b.icmp_unsigned("<", shifted, b.add(d, d)), x, d)
        return b.select(b.icmp_signed("<", x, const_int(0)), shifted, x)

    @property
    def pointers(self) -> list[ir.Value]:
        """The kernel's argument pointers: results then operands."""
        return list(self._outs) + list(self._args)

    def local(self, outer: ir.Value) -> ir.Value:
        """Inside a parallel_for body: this task's copy of a pointer of the enclosing kernel."""
        try:
            return self._outer[id(outer)]
        except (AttributeError, KeyError):
            raise ValueError("local() takes a pointer argument of the kernel enclosing a parallel_for") from None

    def helper(self, name: str) -> ir.Function:
        """A shared helper function of the module (vector math, runtime calls), by name."""
        return self.cg.helpers[name]


class CodeGen:
    def __init__(self, module: Module, graph: Graph, storage: StorageMap, target: TargetInfo, threads: int = 1,
                 profile: bool = False, frame: FrameLayout | None = None):
        self.module = module
        self.frame = frame  # shape-generic code: dims and arena offsets come from the run's frame
        self.current_frame: ir.Value | None = None
        self.current_wtab: ir.Value | None = None
        self.trailing_args = 3 if frame is not None else 2  # error record, weights table (, frame)
        self.site_weights: list[int] = []  # the kernel being lowered: byte offsets of its packed constants
        self.site_dims: dict[int, int] = {}  # ... and the frame slots of its run-time dims -> its own index
        self.shared_kernels = 0  # call sites that reuse an identical kernel (compiled once)
        self.profile = profile  # time stamps around every kernel call, into the global nnc_profile
        self.graph = graph
        self.storage = storage
        self.target = target
        self.threads = threads  # parallel_for's thread count; 1 = serial loops, no pool (runtime.py)
        self.ll = ir.Module(name=module.name)
        self.ll.triple = TRIPLE
        vecmath.use_scalef(self.ll, target.has("avx512f"))
        self.helpers: dict[str, ir.Function] = {}
        self.kernel_names: list[tuple[str, Op]] = []
        # a tuning table (schedule.py): when set, tunable kernels look their schedule up there and log it
        self.schedule_table: Any = None
        self.schedule_log: list[dict[str, Any]] | None = None
        self.schedule_signatures: dict[str, dict[str, Any]] = {}
        self._weights_gv: ir.GlobalVariable | None = None
        self.unread_args: set[int] = set()  # ids of kernel arguments the kernel never reads (packed_constant)
        self.failing: set[str] = set()  # kernels that may stop the run (fail_unless)
        self.kernel_table: list[str] = []  # op descriptions; a run-time error code is index + 1
        # the kernel being lowered: its error code, error-record argument, and whether it checks data
        self.current_code = 0
        self.current_error: ir.Value | None = None
        self.may_fail = False
        if profile and threads > 1:  # before any kernel: the pool's runtime instruments itself if it sees them
            n = sum(op.opname != "const" for op in graph.ops) * min(threads, runtime.MAX_THREADS)
            for name, ty in ((runtime.PROFILE_THREADS, ir.ArrayType(I64, max(n, 1) * runtime.PROFILE_FIELDS)),
                             (runtime.PROFILE_KERNEL, I64)):
                gv = ir.GlobalVariable(self.ll, ty, name=name)
                gv.initializer = ir.Constant(ty, None)

    def site_slot(self, slot: int) -> int:
        """The index, in the current kernel's block of dims, of the frame's dim ``slot``."""
        return self.site_dims.setdefault(slot, len(self.site_dims))

    def weights_base(self) -> ir.GlobalVariable:
        """A module global holding the weights base pointer; the entry point stores it first thing
        (every call passes the same blob, so concurrent calls store the same value)."""
        if self._weights_gv is None:
            gv = ir.GlobalVariable(self.ll, PTR, name="nnc.weights")
            gv.linkage = "internal"
            gv.initializer = ir.Constant(PTR, None)
            self._weights_gv = gv
        return self._weights_gv

    def emit_parallel_for(self, b: ir.IRBuilder, task: ir.Function, ctx: ir.Value, count: ir.Value) -> None:
        """Call ``task(ctx, i)`` for every i: on the model's thread pool, or a plain loop if threads=1."""
        if self.threads > 1:
            runtime.parallel_call(self.ll, self.threads, b, task, ctx, count)
            return
        with for_range(b, count, "task") as i:
            b.call(task, [ctx, i])

    def emit(self) -> ir.Module:
        kernels = []
        seen: dict[str, ir.Function] = {}
        for i, op in enumerate(self.graph.ops):
            if op.opname == "const":
                continue
            before = set(self.ll.globals)
            fn = self._kernel(i, op)
            weights = list(self.site_weights)
            dims = self.frame.add_site(list(self.site_dims)) if self.frame is not None else 0
            # what this kernel made for itself (its tasks, microkernels, tables are named after it);
            # declarations and shared helpers it happened to create first stay
            new = [g for name, g in self.ll.globals.items() if name not in before and
                   (name == fn.name or name.startswith(fn.name + "."))]
            key = _kernel_text(fn.name, new)
            same = seen.get(key)
            if same is None:
                seen[key] = fn
            else:  # the same code as an earlier kernel (a repeated layer): call that one
                for g in new:
                    del self.ll.globals[g.name]
                self.failing.discard(fn.name)
                fn = same
                self.shared_kernels += 1
            kernels.append((op, fn, (weights, dims)))
        self._entry(kernels)
        _no_unwind_tables(self.ll)
        return self.ll

    def _kernel(self, i: int, op: Op) -> ir.Function:
        lower = get_lowering(op.opname)
        if lower is None:
            raise TargetError(f"x86: no lowering for op {op.opname!r} ({op.where()})")
        n = len(op.results) + len(op.operands)
        name = f"k{i}_{op.opname}"
        fn = ir.Function(self.ll, ir.FunctionType(VOID, [PTR] * (n + self.trailing_args)), name=name)
        fn.linkage = "internal"
        self.kernel_table.append(op.where())
        self.current_code, self.current_error, self.may_fail = len(self.kernel_table), fn.args[n], False
        self.current_wtab = fn.args[n + 1]
        self.current_frame = fn.args[n + 2] if self.frame is not None else None
        self.site_weights = []
        self.site_dims = {}
        k = KernelBuilder(self, fn, op)
        # nothing to compute: every result empty (a zero batch), or a concat whose inputs were
        # written into their slices of its result (passes/concat_views.py)
        if not _writes_nothing(op) and id(op) not in self.storage.view_concats:
            lower(k, op)
        if not k.b.block.is_terminated:
            k.b.ret_void()
        self.kernel_names.append((name, op))
        if self.may_fail:
            self.failing.add(name)
        return fn

    def _entry(self, kernels: list[tuple[Op, ir.Function, tuple[list[int], int]]]) -> None:
        generic = self.frame is not None
        fn = ir.Function(self.ll, ir.FunctionType(I32, [PTR] * (5 if generic else 4)), name=ENTRY)
        inputs, outputs, arena, weights = fn.args[:4]
        frame = fn.args[4] if generic else None
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        if self._weights_gv is not None:
            b.store(weights, self._weights_gv)
        self.storage.kernel_table = list(self.kernel_table)
        stamp = self._profile_stamps(b, len(kernels)) if self.profile else None
        if stamp:
            stamp(0)
        per_thread = self.ll.globals.get(runtime.PROFILE_THREADS)
        if per_thread is not None:
            zero = self.ll.declare_intrinsic("llvm.memset", [PTR, I64])
            b.call(zero, [per_thread, ir.Constant(I8, 0), const_int(per_thread.value_type.count * 8),
                          ir.Constant(ir.IntType(1), 0)])
        def frame_at(slot: int) -> ir.Value:
            return b.load(b.gep(frame, [const_int(slot)], source_etype=I64, inbounds=True), typ=I64)

        if self.failing:
            at = frame_at(self.frame.error_slot) if generic else const_int(self.storage.error_record())
            record = b.gep(arena, [at], source_etype=I8, inbounds=True)
            b.store(const_int(0, I32), record)
        else:  # no kernel checks anything: the record is never written, and takes no arena space
            record = ir.Constant(PTR, None)

        def pointer(v: Value) -> ir.Value:
            s = self.storage.slot(v)
            if s.kind == "arena":
                at = frame_at(self.frame.offset_slot[id(v)]) if generic else const_int(s.index)
                return b.gep(arena, [at], source_etype=I8, inbounds=True)
            if s.kind == "weights":
                return b.gep(weights, [const_int(s.index)], source_etype=I8, inbounds=True)
            table = inputs if s.kind == "input" else outputs
            return b.load(b.gep(table, [const_int(s.index)], source_etype=PTR), typ=PTR)

        def operand(kfn: ir.Function, i: int, v: Value) -> ir.Value:
            # a constant the kernel only reads pre-packed: null, so the raw copy needs no blob space
            if id(kfn.args[i]) in self.unread_args and self.storage.is_constant(v):
                return ir.Constant(PTR, None)
            return pointer(v)

        for k, (op, kfn, (site, dims_at)) in enumerate(kernels):
            n = len(op.results)
            args = [pointer(r) for r in op.results] + [operand(kfn, n + i, v) for i, v in enumerate(op.operands)]
            table: ir.Value = ir.Constant(PTR, None)
            if site:  # this call site's packed constants: their offsets in the blob
                ty = ir.ArrayType(I64, len(site))
                gv = ir.GlobalVariable(self.ll, ty, name=f"nnc.wtab{k}")
                gv.linkage, gv.global_constant = "internal", True
                gv.initializer = ir.Constant(ty, [const_int(w) for w in site])
                table = gv
            if per_thread is not None:
                b.store(const_int(k), self.ll.globals[runtime.PROFILE_KERNEL])
            if stamp:
                stamp(2 * k + 2)
            site_frame = [b.gep(frame, [const_int(dims_at)], source_etype=I64, inbounds=True)] if generic else []
            b.call(kfn, args + [record, table] + site_frame)
            if stamp:
                stamp(2 * k + 3)
            if kfn.name in self.failing:
                code = b.load(record, typ=I32)
                with b.if_then(b.icmp_unsigned("!=", code, const_int(0, I32)), likely=False):
                    b.ret(code)
        memcpy = self.ll.declare_intrinsic("llvm.memcpy", [PTR, PTR, I64])
        for j, v in self.storage.output_copies:
            dst = b.load(b.gep(outputs, [const_int(j)], source_etype=PTR), typ=PTR)
            nbytes = _nbytes(b, v, frame_at, self.frame) if generic else const_int(v.type.nbytes or 0)
            b.call(memcpy, [dst, pointer(v), nbytes, ir.Constant(ir.IntType(1), 0)])
        if stamp:
            stamp(1)
        b.ret(const_int(0, I32))

    def _profile_stamps(self, b: ir.IRBuilder, n_kernels: int) -> Callable[[int], None]:
        """The global of 2 * (kernels + 1) i64 stamps, and a function storing the time now at a slot."""
        table_t = ir.ArrayType(I64, 2 * (n_kernels + 1))
        table = ir.GlobalVariable(self.ll, table_t, name=PROFILE)
        table.initializer = ir.Constant(table_t, None)
        clock = self.ll.globals.get("clock_gettime") or \
            ir.Function(self.ll, ir.FunctionType(I32, [I32, PTR]), name="clock_gettime")  # the pool may have it
        ts = b.alloca(I64, size=const_int(2), name="ts")  # struct timespec: seconds, nanoseconds

        def stamp(slot: int) -> None:
            b.call(clock, [const_int(CLOCK_MONOTONIC, I32), b.bitcast(ts, PTR)])
            sec = b.load(b.gep(ts, [const_int(0)], source_etype=I64), typ=I64)
            nsec = b.load(b.gep(ts, [const_int(1)], source_etype=I64), typ=I64)
            now = b.add(b.mul(sec, const_int(1_000_000_000)), nsec)
            b.store(now, b.gep(table, [const_int(0), const_int(slot)], inbounds=True))  # typed: i64*
        return stamp


def _kernel_text(name: str, new_globals: list) -> str:
    """The code of a kernel and what it created (tasks, microkernels, tables), with its own name and
    metadata numbers blanked: equal texts are the same code."""
    text = "\n".join(str(g) for g in new_globals).replace(name, "KERNEL")
    return _METADATA.sub("!M", text)


_METADATA = re.compile(r"!\d+")


def _nbytes(b: ir.IRBuilder, v: Value, frame_at: Callable[[int], ir.Value], frame: FrameLayout) -> ir.Value:
    """``v``'s size in bytes, from its dims in the frame where they are not static."""
    n: ir.Value = const_int(v.dtype.itemsize)
    for axis, d in enumerate(v.type.shape or ()):
        n = b.mul(n, const_int(d) if isinstance(d, int) else frame_at(frame.dim_slot[(id(v), axis)]))
    return n


def _writes_nothing(op: Op) -> bool:
    """True when every result of ``op`` has zero elements, so its kernel has no work at all."""
    return bool(op.results) and all(r.type.numel == 0 for r in op.results)


def _no_unwind_tables(ll: ir.Module) -> None:
    """Mark every function ``nounwind``: generated code never throws, and without the attribute LLVM
    emits an ``.eh_frame`` for every function, unwind tables nothing reads that the JIT has to
    relocate and register for each model (under MCJIT, their 32-bit references to the code were
    the first to overflow in a fragmented address space: tests/backends/test_jit_far_sections.py).
    Kernels already marked keep their attribute; the code itself is the same."""
    for fn in ll.functions:
        if "nounwind" not in fn.attributes:
            fn.attributes.add("nounwind")

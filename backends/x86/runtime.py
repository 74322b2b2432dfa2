"""The thread-pool runtime of the x86 backend, emitted as LLVM IR into each model's module.

``nnc_parallel_for(task, ctx, count)`` runs ``task(ctx, i)`` for every ``i`` in ``[0, count)`` and
returns when all are done; ``nnc_parallel_range(fn, ctx, count)`` is the same with ``fn(ctx, lo, hi)``
called on chunks (the code generator emits one such range function per ``parallel_for`` so the task
body inlines into its loop). The calling thread takes part; ``threads - 1`` workers, created with
``pthread_create`` on the first parallel call, then persist. Work is handed out in chunks through an
atomic counter, and completion counts finished items, not threads: the caller returns as soon as
every item is done, never waiting for a worker that was not scheduled in time to take any (on a
loaded machine that wait is a whole time slice). Idle workers spin on a generation counter for
under a millisecond (so back-to-back kernels of one run start at once), then sleep in ``futex``
and are woken by the next call. Atomics are LLVM atomic instructions; libc gives pthread_create,
pthread_join, pthread_sigmask and syscall(futex).

Profiling (a module whose code generator made the global ``nnc_profile_threads``): every pool thread
(slot 0 the caller, 1.. the workers, whose slot rides in the upper half of their start argument) times
each chunk it runs with ``clock_gettime`` and keeps, per kernel (``nnc_profile_kernel``, set by the
entry point) and slot, its first chunk's start, its last chunk's end and its busy nanoseconds. A
module without that global gets exactly the pool it always had.

Where the pool lives: one pool *per compiled model*, in that model's own globals. The runtime is
part of the model's LLVM module (no C, no gcc), so the AOT shared library carries the identical
runtime with nothing to link; the workers execute code owned by the model's JIT engine, so tying the
pool's lifetime to the model's lets ``weakref.finalize`` (``attach``) join the workers before that
code is freed. A process-wide pool would need a separately JIT-ed runtime kept alive forever and a
second copy in every ``.so`` anyway. The cost: two models used *at the same time* oversubscribe
the cores; idle pools sleep and cost no CPU.

Safety: a parallel call that finds its pool busy (another thread running this model's code, or a
task that itself calls ``parallel_for``) runs serially on its own thread rather than waiting, so the
pool never deadlocks; the executable serialises its own runs (they share one arena). A fork child
notices the pid change and restarts a pool. ``threads == 1`` emits no runtime at all.
"""

from __future__ import annotations

import ctypes
import os
import weakref
from typing import Any, Mapping

from llvmlite import ir

from nnc.ir import TargetError

from .llvm_types import I1, I32, I64, PTR, VOID, const_int, for_range

PARALLEL_FOR = "nnc_parallel_for"
PARALLEL_RANGE = "nnc_parallel_range"
SHUTDOWN = "nnc_threads_shutdown"
MAX_THREADS = 1024
PROFILE_THREADS = "nnc_profile_threads"  # i64 [kernel][slot][first start, last end, busy ns]
PROFILE_KERNEL = "nnc_profile_kernel"  # i64: the kernel the entry point is running
PROFILE_FIELDS = 3
GRAIN = 1 << 15  # elements per parallel block of a cheap elementwise loop (~10 us of work)

# about 0.3-1 ms of `pause` before an idle worker (or the waiting caller) sleeps
SPIN = 1 << 14
_SYS_FUTEX, _FUTEX_WAIT, _FUTEX_WAKE = 202, 128, 129  # x86-64 Linux, *_PRIVATE variants
_INT_MAX = 0x7FFFFFFF

RANGE_FN = ir.FunctionType(VOID, [PTR, I64, I64])
TASK_FN = ir.FunctionType(VOID, [PTR, I64])
# llvmlite calls through a pointer only when the value has a typed function-pointer type; LLVM reads
# these as plain `ptr`
RANGE_PTR = ir.PointerType(RANGE_FN)
TASK_PTR = ir.PointerType(TASK_FN)


def num_threads(options: Mapping[str, Any] | None = None) -> int:
    """The ``threads`` option, else ``$NNC_NUM_THREADS``, else every core."""
    value = (options or {}).get("threads")
    where = "option 'threads'"
    if value is None and os.environ.get("NNC_NUM_THREADS", "").strip():
        value, where = os.environ["NNC_NUM_THREADS"].strip(), "NNC_NUM_THREADS"
    if value is None:
        return os.cpu_count() or 1
    try:
        n = int(value)
    except (TypeError, ValueError):
        raise TargetError(f"x86: {where} must be a positive integer, got {value!r}") from None
    if not 1 <= n <= MAX_THREADS:
        raise TargetError(f"x86: {where} must be in [1, {MAX_THREADS}], got {n}")
    return n


def split_rows(threads: int, outer: int, inner: int, grain: int = GRAIN) -> int:
    """Iterations of an ``outer`` loop (each touching ``inner`` elements) per parallel block.

    0 means "run it serially": one thread, or too little work to pay for waking the workers.
    """
    if threads <= 1 or outer < 2 or outer * inner < 2 * grain:
        return 0
    rows = max(1, -(-grain // max(inner, 1)))
    return rows if -(-outer // rows) >= 2 else 0


def parallel_call(ll: ir.Module, threads: int, b: ir.IRBuilder, task: ir.Function, ctx: ir.Value,
                  count: ir.Value) -> None:
    """Emit a call running ``task(ctx, i)`` for i in [0, count) on the pool of ``ll``."""
    pool = ensure_runtime(ll, threads)
    rng = ir.Function(ll, RANGE_FN, name=f"{task.name}.range")
    rng.linkage = "internal"
    rb = ir.IRBuilder(rng.append_basic_block("entry"))
    rctx, lo, hi = rng.args
    # task has this one caller: LLVM inlines it, so the chunk loop vectorises with the body
    with for_range(rb, hi, "i", start=lo) as i:
        rb.call(task, [rctx, i])
    rb.ret_void()
    b.call(pool, [rng, ctx, count])


def ensure_runtime(ll: ir.Module, threads: int) -> ir.Function:
    """Emit the pool into ``ll`` once; returns ``nnc_parallel_range``."""
    fn = ll.globals.get(PARALLEL_RANGE)
    if fn is None:
        fn = _Emitter(ll, min(threads, MAX_THREADS) - 1).emit()
    return fn


def add_shutdown_destructor(ll: ir.Module) -> None:
    """For shared libraries: join the workers when the library is unloaded (llvm.global_dtors)."""
    entry_t = ir.LiteralStructType([I32, PTR, PTR])
    dtors = ir.GlobalVariable(ll, ir.ArrayType(entry_t, 1), "llvm.global_dtors")
    dtors.linkage = "appending"
    dtors.initializer = ir.Constant(ir.ArrayType(entry_t, 1), [
        ir.Constant(entry_t, [const_int(65535, I32), ll.globals[SHUTDOWN], ir.Constant(PTR, None)])])


def attach(executable: object, jit: Any) -> None:
    """Join ``executable``'s workers when it is garbage collected (before its code is freed)."""
    try:
        addr = jit.address(SHUTDOWN)
    except KeyError:
        return  # threads=1: no pool
    weakref.finalize(executable, _shutdown, ctypes.CFUNCTYPE(None)(addr), jit)


def _shutdown(fn: Any, jit: Any) -> None:
    fn()  # `jit` is an argument only to keep the workers' code alive until they have exited


class _Emitter:
    """Builds the pool's globals and functions in one LLVM module."""

    def __init__(self, ll: ir.Module, workers: int):
        self.ll = ll
        self.workers = workers
        self.profile = ll.globals.get(PROFILE_THREADS)  # chunk times per thread, when profiling
        self.kernel = ll.globals.get(PROFILE_KERNEL)

    # -- small pieces --------------------------------------------------------------------------------
    def glob(self, name: str, ty: ir.Type, align: int = 4) -> ir.GlobalVariable:
        gv = ir.GlobalVariable(self.ll, ty, f"nnc_pool.{name}")
        gv.linkage = "internal"
        gv.initializer = ir.Constant(ty, None)
        gv.align = align
        return gv

    def declare(self, name: str, ret: ir.Type, args: list[ir.Type], var_arg: bool = False) -> ir.Function:
        fn = self.ll.globals.get(name)
        return fn if fn is not None else ir.Function(self.ll, ir.FunctionType(ret, args, var_arg=var_arg), name=name)

    def function(self, name: str, ret: ir.Type, args: list[ir.Type], internal: bool = True):
        fn = ir.Function(self.ll, ir.FunctionType(ret, args), name=name)
        if internal:
            fn.linkage = "internal"
        return fn, ir.IRBuilder(fn.append_basic_block("entry"))

    @staticmethod
    def load(b: ir.IRBuilder, gv: ir.Value, ty: ir.Type, order: str = "seq_cst") -> ir.Value:
        return b.load_atomic(gv, order, ty.width // 8, typ=ty)

    @staticmethod
    def store(b: ir.IRBuilder, value: ir.Value, gv: ir.Value, order: str = "seq_cst") -> None:
        b.store_atomic(value, gv, order, value.type.width // 8)

    def futex(self, b: ir.IRBuilder, addr: ir.Value, op: int, val: ir.Value) -> None:
        val = b.zext(val, I64) if val.type != I64 else val
        null = ir.Constant(PTR, None)
        b.call(self.syscall, [const_int(_SYS_FUTEX), addr, const_int(op), val, null, null, const_int(0)])

    def wait_while_equal(self, b: ir.IRBuilder, word: ir.Value, old: ir.Value, sleepers: ir.Value,
                         name: str) -> ir.Value:
        """Spin, then sleep, until the i32 ``word`` differs from ``old``; returns the new value.

        ``sleepers`` counts the threads asleep on ``word`` so the writer only pays for a
        wake syscall when someone sleeps; the seq_cst increment-then-reload here and the writer's
        store-then-load of ``sleepers`` guarantee one of the two sees the other (no lost wake-up).
        """
        fn = b.function
        spin_head = fn.append_basic_block(f"{name}.spin")
        spin_body = fn.append_basic_block(f"{name}.pause")
        sleep = fn.append_basic_block(f"{name}.sleep")
        do_wait = fn.append_basic_block(f"{name}.futex")
        woke = fn.append_basic_block(f"{name}.woke")
        done = fn.append_basic_block(f"{name}.done")
        pre = b.block
        b.branch(spin_head)
        b.position_at_end(spin_head)
        s = b.phi(I64, "spins")
        s.add_incoming(const_int(0), pre)
        v1 = self.load(b, word, I32, "acquire")
        changed = b.icmp_unsigned("!=", v1, old)
        b.cbranch(changed, done, spin_body)
        b.position_at_end(spin_body)
        b.call(self.pause, [])
        s_next = b.add(s, const_int(1))
        s.add_incoming(s_next, spin_body)
        b.cbranch(b.icmp_signed("<", s_next, const_int(SPIN)), spin_head, sleep)
        b.position_at_end(sleep)
        b.atomic_rmw("add", sleepers, const_int(1, I32), "seq_cst")
        v2 = self.load(b, word, I32)
        b.cbranch(b.icmp_unsigned("==", v2, old), do_wait, woke)
        b.position_at_end(do_wait)
        self.futex(b, word, _FUTEX_WAIT, old)  # returns at once if the word already changed
        b.branch(woke)
        b.position_at_end(woke)
        b.atomic_rmw("sub", sleepers, const_int(1, I32), "seq_cst")
        v3 = self.load(b, word, I32, "acquire")
        b.cbranch(b.icmp_unsigned("!=", v3, old), done, sleep)  # spurious wake-up / EINTR: sleep again
        b.position_at_end(done)
        res = b.phi(I32, f"{name}.value")
        res.add_incoming(v1, spin_head)
        res.add_incoming(v3, woke)
        return res

    # -- the pool --------------------------------------------------------------------------------------
    def emit(self) -> ir.Function:
        g = self.glob
        self.busy = g("busy", I32, 64)  # held by the thread whose parallel call owns the workers
        self.started = g("started", I32)
        self.pid = g("pid", I32)
        self.nlive = g("nlive", I32)
        self.quit = g("quit", I32)
        self.job_fn = g("job_fn", PTR)
        self.job_ctx = g("job_ctx", PTR)
        self.job_count = g("job_count", I64)
        self.job_chunk = g("job_chunk", I64)
        # each hot word on a cache line of its own: workers hammer `next`, poll `gen`
        self.gen = g("gen", I32, 64)  # even: job gen/2 is published; odd: the job is being rewritten
        self.sleepers = g("sleepers", I32)
        self.inside = g("inside", I32, 64)  # workers between reading a job and leaving it
        self.next = g("next", I64, 64)
        self.remaining = g("remaining", I64, 64)  # items not finished yet
        self.finished = g("finished", I32)  # futex word: 1 once remaining reached 0
        self.waiting = g("waiting", I32)  # callers asleep on `finished`
        self.threads = g("threads", ir.ArrayType(I64, max(self.workers, 1)), 64)
        self.syscall = self.declare("syscall", I64, [I64], var_arg=True)
        self.pthread_create = self.declare("pthread_create", I32, [PTR, PTR, PTR, PTR])
        self.pthread_join = self.declare("pthread_join", I32, [I64, PTR])
        self.pthread_sigmask = self.declare("pthread_sigmask", I32, [I32, PTR, PTR])
        self.getpid = self.declare("getpid", I32, [])
        self.sched_yield = self.declare("sched_yield", I32, [])
        self.pause = self.declare("llvm.x86.sse2.pause", VOID, [])
        self.run_chunks = self._run_chunks()
        self.worker = self._worker()
        self.start = self._start()
        prange = self._parallel_range()
        self._parallel_for(prange)
        self._shutdown()
        return prange

    def _run_chunks(self) -> ir.Function:
        """Grab chunks of the current job from the shared counter until it is exhausted.

        Whoever finishes the last item flags ``finished``: completion counts items, not threads, so
        the caller never waits for a worker that was not scheduled in time to take any work.
        """
        fn, b = self.function("nnc_pool.run_chunks", VOID, [I64] if self.profile is not None else [])
        if self.profile is not None:
            ts = b.alloca(I64, size=const_int(2), name="ts")
            base = b.mul(b.add(b.mul(b.load(self.kernel, typ=I64), const_int(self.workers + 1)), fn.args[0]),
                         const_int(PROFILE_FIELDS))
        job, ctx = b.load(self.job_fn, typ=RANGE_PTR), b.load(self.job_ctx, typ=PTR)
        count, chunk = b.load(self.job_count, typ=I64), b.load(self.job_chunk, typ=I64)
        loop, body, last, wake, out = (fn.append_basic_block(n) for n in ("grab", "run", "last", "wake", "out"))
        b.branch(loop)
        b.position_at_end(loop)
        lo = b.atomic_rmw("add", self.next, chunk, "monotonic")
        b.cbranch(b.icmp_signed("<", lo, count), body, out)
        b.position_at_end(body)
        hi = b.add(lo, chunk)
        hi = b.select(b.icmp_signed("<", hi, count), hi, count)
        if self.profile is not None:
            t0 = self.now(b, ts)
        b.call(job, [ctx, lo, hi])
        if self.profile is not None:
            self.record(b, base, t0, self.now(b, ts))
        n = b.sub(hi, lo)
        old = b.atomic_rmw("sub", self.remaining, n, "seq_cst")  # releases this chunk's writes
        b.cbranch(b.icmp_unsigned("==", old, n), last, loop)
        b.position_at_end(last)
        self.store(b, const_int(1, I32), self.finished)
        waiting = self.load(b, self.waiting, I32)
        b.cbranch(b.icmp_unsigned("!=", waiting, const_int(0, I32)), wake, out)
        b.position_at_end(wake)
        self.futex(b, self.finished, _FUTEX_WAKE, const_int(_INT_MAX, I32))
        b.branch(out)
        b.position_at_end(out)
        b.ret_void()
        return fn

    def now(self, b: ir.IRBuilder, ts: ir.Value) -> ir.Value:
        """CLOCK_MONOTONIC in nanoseconds (``ts``: room for a struct timespec)."""
        clock = self.declare("clock_gettime", I32, [I32, PTR])
        b.call(clock, [const_int(1, I32), ts])
        sec, nsec = (b.load(b.gep(ts, [const_int(k)], source_etype=I64), typ=I64) for k in (0, 1))
        return b.add(b.mul(sec, const_int(1_000_000_000)), nsec)

    def record(self, b: ir.IRBuilder, base: ir.Value, t0: ir.Value, t1: ir.Value) -> None:
        """This thread's fields of the current kernel: first start (once), last end, busy time."""
        first, last, busy = (b.gep(self.profile, [const_int(0), b.add(base, const_int(k))], inbounds=True)
                             for k in range(PROFILE_FIELDS))
        with b.if_then(b.icmp_unsigned("==", b.load(first, typ=I64), const_int(0))):
            b.store(t0, first)
        b.store(t1, last)
        b.store(b.add(b.load(busy, typ=I64), b.sub(t1, t0)), busy)

    def _worker(self) -> ir.Function:
        fn, b = self.function("nnc_pool.worker", PTR, [PTR])
        one32 = const_int(1, I32)
        # asynchronous signals (Ctrl-C) go to the Python threads, not to a worker
        mask = b.alloca(ir.ArrayType(ir.IntType(8), 128), name="sigset")
        memset = self.ll.declare_intrinsic("llvm.memset", [PTR, I64])
        b.call(memset, [mask, ir.Constant(ir.IntType(8), 0xFF), const_int(128), ir.Constant(I1, 0)])
        b.call(self.pthread_sigmask, [const_int(0, I32), mask, ir.Constant(PTR, None)])  # SIG_BLOCK
        first = b.trunc(b.ptrtoint(fn.args[0], I64), I32)  # the generation when this worker was made
        entry = b.block
        loop = fn.append_basic_block("loop")
        b.branch(loop)
        b.position_at_end(loop)
        seen = b.phi(I32, "seen")
        seen.add_incoming(first, entry)
        gen = self.wait_while_equal(b, self.gen, seen, self.sleepers, "job")
        stop, check, enter, work, leave = (fn.append_basic_block(n) for n in ("stop", "check", "enter", "work",
                                                                               "leave"))
        b.cbranch(b.icmp_unsigned("!=", self.load(b, self.quit, I32, "acquire"), const_int(0, I32)), stop, check)
        b.position_at_end(stop)
        b.ret(ir.Constant(PTR, None))
        b.position_at_end(check)
        b.cbranch(b.trunc(gen, I1), loop, enter)  # odd: the caller is rewriting the job; wait for it
        seen.add_incoming(gen, check)
        b.position_at_end(enter)
        # announce ourselves, then re-check: the caller bumps `gen` before it waits for `inside` to
        # drain, so either it sees us or we see its bump (both seq_cst)
        b.atomic_rmw("add", self.inside, one32, "seq_cst")
        b.cbranch(b.icmp_unsigned("==", self.load(b, self.gen, I32), gen), work, leave)
        b.position_at_end(work)
        # profiling: the worker's slot is the upper half of its start argument
        b.call(self.run_chunks, [] if self.profile is None else [b.lshr(b.ptrtoint(fn.args[0], I64), const_int(32))])
        b.branch(leave)
        b.position_at_end(leave)
        b.atomic_rmw("sub", self.inside, one32, "seq_cst")
        b.branch(loop)
        seen.add_incoming(gen, leave)
        return fn

    def _start(self) -> ir.Function:
        """Create the workers (called with ``busy`` held); as many as pthread_create allows."""
        fn, b = self.function("nnc_pool.start", VOID, [])
        gen = self.load(b, self.gen, I32, "monotonic")
        arg = b.inttoptr(b.zext(gen, I64), PTR)
        made = b.alloca(I32, name="made")
        b.store(const_int(0, I32), made)
        self.store(b, const_int(0, I32), self.quit, "monotonic")
        with for_range(b, self.workers, "t") as t:
            n = b.load(made, typ=I32)
            ok_so_far = b.icmp_unsigned("==", b.zext(n, I64), t)  # stop at the first failure
            with b.if_then(ok_so_far):
                slot = b.gep(self.threads, [const_int(0), t], source_etype=self.threads.value_type)
                if self.profile is not None:  # the slot in the upper half; the worker reads gen from the lower
                    arg = b.inttoptr(b.or_(b.zext(gen, I64), b.shl(b.add(t, const_int(1)), const_int(32))), PTR)
                rc = b.call(self.pthread_create, [slot, ir.Constant(PTR, None), self.worker, arg])
                with b.if_then(b.icmp_unsigned("==", rc, const_int(0, I32))):
                    b.store(b.add(n, const_int(1, I32)), made)
        b.store(b.load(made, typ=I32), self.nlive)
        b.store(b.call(self.getpid, []), self.pid)
        b.store(const_int(1, I32), self.started)
        b.ret_void()
        return fn

    def _parallel_range(self) -> ir.Function:
        fn, b = self.function(PARALLEL_RANGE, VOID, [RANGE_PTR, PTR, I64])
        job, ctx, count = fn.args
        zero32, one32 = const_int(0, I32), const_int(1, I32)

        def serial() -> None:
            b.call(job, [ctx, const_int(0), count])

        with b.if_then(b.icmp_signed("<=", count, const_int(1)), likely=False):
            with b.if_then(b.icmp_signed("==", count, const_int(1))):
                serial()
            b.ret_void()
        got = b.cmpxchg(self.busy, zero32, one32, "acquire", "monotonic")
        with b.if_then(b.not_(b.extract_value(got, 1)), likely=False):
            serial()  # the pool is in use (another thread, or a nested parallel_for): no waiting
            b.ret_void()
        # a fork child inherits `started` but not the threads: start afresh
        stale = b.icmp_unsigned("!=", b.load(self.pid, typ=I32), b.call(self.getpid, []))
        with b.if_then(b.or_(b.icmp_unsigned("==", b.load(self.started, typ=I32), zero32), stale), likely=False):
            b.call(self.start, [])
        n = b.load(self.nlive, typ=I32)
        with b.if_then(b.icmp_unsigned("==", n, zero32), likely=False):
            serial()
            self.store(b, zero32, self.busy, "release")
            b.ret_void()
        # close the previous job (gen odd), and wait for late workers still inside it to leave
        # (it is finished, so they only find the counter exhausted) before rewriting its fields
        b.atomic_rmw("add", self.gen, one32, "seq_cst")
        self.spin_until_zero(b, self.inside, "drain")
        b.store(job, self.job_fn)
        b.store(ctx, self.job_ctx)
        b.store(count, self.job_count)
        # ~8 chunks per thread: balance (and tolerance of a preempted worker) without hammering `next`
        per = b.sdiv(count, b.mul(b.zext(b.add(n, one32), I64), const_int(8)))
        b.store(b.select(b.icmp_signed("<", per, const_int(1)), const_int(1), per), self.job_chunk)
        self.store(b, const_int(0), self.next, "monotonic")
        self.store(b, count, self.remaining, "monotonic")
        self.store(b, zero32, self.finished, "monotonic")
        b.atomic_rmw("add", self.gen, one32, "seq_cst")  # even again: publishes the job
        with b.if_then(b.icmp_unsigned("!=", self.load(b, self.sleepers, I32), zero32)):
            self.futex(b, self.gen, _FUTEX_WAKE, const_int(_INT_MAX, I32))
        b.call(self.run_chunks, [] if self.profile is None else [const_int(0)])
        self.wait_while_equal(b, self.finished, zero32, self.waiting, "finish")
        self.store(b, zero32, self.busy, "release")
        b.ret_void()
        return fn

    def spin_until_zero(self, b: ir.IRBuilder, word: ir.Value, name: str) -> None:
        """Wait for ``word`` to reach 0, yielding the core to a preempted holder now and then."""
        fn = b.function
        head, body, done = (fn.append_basic_block(f"{name}.{n}") for n in ("head", "body", "done"))
        pre = b.block
        b.branch(head)
        b.position_at_end(head)
        s = b.phi(I64, "spins")
        s.add_incoming(const_int(0), pre)
        b.cbranch(b.icmp_unsigned("==", self.load(b, word, I32), const_int(0, I32)), done, body)
        b.position_at_end(body)
        b.call(self.pause, [])
        with b.if_then(b.icmp_unsigned("==", b.and_(s, const_int(255)), const_int(255))):
            b.call(self.sched_yield, [])
        s.add_incoming(b.add(s, const_int(1)), b.block)
        b.branch(head)
        b.position_at_end(done)

    def _parallel_for(self, prange: ir.Function) -> ir.Function:
        """``nnc_parallel_for(task, ctx, count)``: the per-index form, through a chunk trampoline."""
        each, eb = self.function("nnc_pool.each", VOID, [PTR, I64, I64])
        pair, lo, hi = each.args
        task = eb.load(pair, typ=TASK_PTR)
        tctx = eb.load(eb.gep(pair, [const_int(1)], source_etype=PTR), typ=PTR)
        with for_range(eb, hi, "i", start=lo) as i:
            eb.call(task, [tctx, i])
        eb.ret_void()
        fn, b = self.function(PARALLEL_FOR, VOID, [TASK_PTR, PTR, I64])
        task, ctx, count = fn.args
        slots = b.alloca(PTR, size=const_int(2), name="pair")
        b.store(task, slots)
        b.store(ctx, b.gep(slots, [const_int(1)], source_etype=PTR))
        b.call(prange, [each, slots, count])
        b.ret_void()
        return fn

    def _shutdown(self) -> ir.Function:
        """Join the workers (the pool restarts on the next parallel call). Exported for the host."""
        fn, b = self.function(SHUTDOWN, VOID, [], internal=False)
        zero32 = const_int(0, I32)
        mine = b.icmp_unsigned("==", b.load(self.pid, typ=I32), b.call(self.getpid, []))
        live = b.icmp_unsigned("!=", b.load(self.started, typ=I32), zero32)
        with b.if_then(b.and_(mine, live)):  # a fork child has no threads to join
            head, body, locked = (fn.append_basic_block(n) for n in ("lock", "yield", "locked"))
            b.branch(head)
            b.position_at_end(head)
            got = b.cmpxchg(self.busy, zero32, const_int(1, I32), "acquire", "monotonic")
            b.cbranch(b.extract_value(got, 1), locked, body)
            b.position_at_end(body)
            b.call(self.sched_yield, [])
            b.branch(head)
            b.position_at_end(locked)
            n = b.load(self.nlive, typ=I32)
            self.store(b, const_int(1, I32), self.quit, "monotonic")
            b.atomic_rmw("add", self.gen, const_int(2, I32), "seq_cst")  # stays even
            self.futex(b, self.gen, _FUTEX_WAKE, const_int(_INT_MAX, I32))
            with for_range(b, b.zext(n, I64), "j") as j:
                slot = b.gep(self.threads, [const_int(0), j], source_etype=self.threads.value_type)
                b.call(self.pthread_join, [b.load(slot, typ=I64), ir.Constant(PTR, None)])
            self.store(b, zero32, self.busy, "release")
        b.store(zero32, self.started)
        b.store(zero32, self.nlive)
        b.ret_void()
        return fn

"""Per-kernel time of the compiled x86 code, measured inside the generated entry point.

``profile_model(cm, feeds, runs)`` (what ``CompiledModel.profile`` calls for x86) compiles a twin of
the model with ``profile=True`` once (cached on the ``CompiledModel``; the model itself keeps running
the code without counters), runs it ``runs`` times after one warm-up run and reads the clock stamps
the entry point stored (``codegen.py``). Each kernel's time is its median over the runs; the
``Profile`` gives it as a table sorted by time (``to_table``) and as a Chrome-trace/Perfetto JSON
(``to_chrome_trace``) of the median run: the kernels on the main thread's track, and with a thread
pool one track per pool thread with its share of each kernel (first chunk to last, and busy time).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from nnc.ir import Graph, Op, TargetError
from nnc.passes.cost import contraction_flops


@dataclass
class KernelTime:
    """One kernel: its position in code order, the op it runs (a fused group's members in ``ops``),
    result name and shapes, FLOPs (``nnc.passes.cost.contraction_flops``: 2 x multiply-adds of its
    conv/matmul/gemm, 0 for a kernel without one) and median time in seconds."""

    index: int
    kind: str
    result: str
    ops: list[str]
    shapes: list[str]
    flops: int
    seconds: float
    share: float = 0.0  # of the entry point's time

    @property
    def gflops(self) -> float:
        return self.flops / self.seconds / 1e9 if self.seconds > 0 else 0.0


@dataclass
class Profile:
    """Kernel times of one model: ``kernels`` in code order, ``total`` the entry point's median time,
    ``wall`` the median time of a run seen from Python (feeds checked, outputs allocated), and
    ``spans`` the start/end (ns from the entry's start) of each kernel in the median run."""

    model: str
    threads: int
    runs: int
    total: float
    wall: float
    kernels: list[KernelTime]
    spans: list[tuple[int, int]] = field(default_factory=list)
    # pool threads in the median run: (kernel index, slot, first chunk start, last chunk end, busy), ns
    # from the entry's start; slot 0 is the calling (main) thread, 1.. the workers
    thread_spans: list[tuple[int, int, int, int, int]] = field(default_factory=list)
    # per run, the kernels' summed time over that run's entry-point time; its median is ``coverage``.
    # Taken run by run because ``kernel_sum`` (a sum of per-kernel medians) and ``total`` (a median of
    # totals) come from different runs: one preempted kernel in each of two runs moves ``total`` and
    # not ``kernel_sum``, while within one run a preemption inside a kernel counts on both sides
    run_coverage: list[float] = field(default_factory=list)

    @property
    def coverage(self) -> float:
        """Median over the runs of (sum of that run's kernel times) / (that run's entry-point time):
        the share of the entry point spent inside kernels; 1 - coverage is the glue between them."""
        return float(np.median(self.run_coverage)) if self.run_coverage else \
            (self.kernel_sum / self.total if self.total else 0.0)

    @property
    def kernel_sum(self) -> float:
        return sum(k.seconds for k in self.kernels)

    def by_time(self) -> list[KernelTime]:
        return sorted(self.kernels, key=lambda k: (-k.seconds, k.index))

    def to_table(self, limit: int | None = None) -> str:
        """The kernels sorted by time, slowest first (``limit``: only the first rows), with a footer
        comparing their sum to the entry point's and Python's run time."""
        head = f"{'#':>4} {'time us':>9} {'share':>6} {'GFLOP/s':>8}  {'kernel':<13} {'ops':<30} {'output':<20} result"
        lines = [head, "-" * len(head)]
        rows = self.by_time()
        for k in rows[:limit] if limit else rows:
            rate = f"{k.gflops:>8.1f}" if k.flops else f"{'-':>8}"
            lines.append(f"{k.index:>4} {k.seconds * 1e6:>9.1f} {k.share * 100:>5.1f}% {rate}  {_cut(k.kind, 13):<13} "
                         f"{_cut('+'.join(k.ops), 30):<30} {_cut(', '.join(k.shapes), 20):<20} %{k.result}")
        if limit and len(rows) > limit:
            rest = rows[limit:]
            us, share = sum(k.seconds for k in rest) * 1e6, sum(k.share for k in rest) * 100
            lines.append(f"{'':>4} {us:>9.1f} {share:>5.1f}% {'':>8}  ... {len(rest)} more kernels")
        lines.append("-" * len(head))
        flops = sum(k.flops for k in self.kernels)
        lines.append(f"{len(self.kernels)} kernels: {self.kernel_sum * 1e3:.3f} ms of {self.total * 1e3:.3f} ms in the "
                     f"entry point ({self.kernel_sum / self.total * 100 if self.total else 0:.1f}%); "
                     f"run from Python {self.wall * 1e3:.3f} ms; {flops / self.total / 1e9 if self.total else 0:.1f} "
                     f"GFLOP/s overall; median of {self.runs} runs, {self.threads} thread(s)")
        return "\n".join(lines)

    def to_chrome_trace(self) -> dict[str, Any]:
        """The median run as Chrome trace events (chrome://tracing, ui.perfetto.dev): one complete
        event per kernel on the main thread's track, under one event for the whole entry point."""
        pid, tid = 1, 0
        events: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": pid, "tid": tid, "args": {"name": f"nnc x86: {self.model}"}},
            {"ph": "M", "name": "thread_name", "pid": pid, "tid": tid,
             "args": {"name": f"main (kernels; {self.threads} thread(s) inside)"}},
            {"ph": "X", "name": "nnc_entry", "cat": "entry", "pid": pid, "tid": tid, "ts": 0.0,
             "dur": self.total * 1e6},
        ]
        for k, (start, end) in zip(self.kernels, self.spans):
            events.append({"ph": "X", "name": f"{k.kind} %{k.result}", "cat": "kernel", "pid": pid, "tid": tid,
                           "ts": start / 1e3, "dur": (end - start) / 1e3,
                           "args": {"index": k.index, "result": k.result, "ops": k.ops, "shapes": k.shapes,
                                    "flops": k.flops, "median_ms": k.seconds * 1e3, "share": k.share}})
        slots = sorted({s for _, s, *_ in self.thread_spans})
        for s in slots:
            if s:
                events.append({"ph": "M", "name": "thread_name", "pid": pid, "tid": s,
                               "args": {"name": f"pool worker {s}"}})
        for i, s, start, end, busy in self.thread_spans:
            k = self.kernels[i]
            # slot 0 is the main thread: its chunks nest inside the kernel's span on the same track
            events.append({"ph": "X", "name": f"chunks of {k.kind} %{k.result}", "cat": "chunks", "pid": pid,
                           "tid": s, "ts": start / 1e3, "dur": (end - start) / 1e3,
                           "args": {"kernel": i, "busy_us": busy / 1e3}})
        return {"traceEvents": events, "displayTimeUnit": "ms",
                "otherData": {"model": self.model, "runs": self.runs, "threads": self.threads,
                              "total_ms": self.total * 1e3, "wall_ms": self.wall * 1e3}}

    def save_trace(self, path: str | os.PathLike) -> None:
        with open(path, "w") as f:
            json.dump(self.to_chrome_trace(), f, indent=1)


def kernel_times_from_trace(path: str | os.PathLike) -> dict[str, float]:
    """Result name -> median kernel time (seconds) from a trace ``save_trace`` wrote (for pictures)."""
    try:
        with open(path) as f:
            trace = json.load(f)
        return {str(e["args"]["result"]): float(e["args"]["median_ms"]) / 1e3
                for e in trace["traceEvents"] if e.get("cat") == "kernel"}
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise TargetError(f"{path}: not a profile trace written by nnc run --profile ({e})") from None


def _cut(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _kernel_ops(graph: Graph) -> list[Op]:
    return [op for op in graph.ops if op.opname != "const"]


def _describe(index: int, op: Op, seconds: float) -> KernelTime:
    members = list(op.regions[0].ops) if op.opname == "fused" else [op]
    kind = f"fused {op.attrs.get('kind', '')}".strip() if op.opname == "fused" else op.opname
    return KernelTime(index, kind, op.results[0].name if op.results else "", [m.opname for m in members],
                      [str(r.type) for r in op.results], contraction_flops(members), seconds)


def check_profilable(model: Any) -> None:
    """TargetError unless ``model`` has one entry point compiled from its source here."""
    from . import X86Executable
    from .segments import SegmentedExecutable

    if not isinstance(model.executable, X86Executable) or model.module is None:
        what = "it was loaded from a library" if model.module is None else \
            "it runs as compiled segments with host steps between them, not one entry point" \
            if isinstance(model.executable, SegmentedExecutable) else \
            "its input shapes are symbolic (fix them: dims={...}, CLI --dim N=1)"
        raise TargetError(f"x86: cannot profile this model: {what}; profile a model compiled from its source")


def _twin(model: Any) -> Any:
    """The model's executable compiled with profile=True, built once per CompiledModel."""
    from . import compile as compile_x86
    from . import prepare

    twin = getattr(model, "_profile_twin", None)
    if twin is not None:
        return twin
    check_profilable(model)
    if model.options.profile:
        exe = model.executable
    else:
        exe = compile_x86(model.module, {**model.options.backend_options(), "profile": True, "quiet": True})
    graph = exe.graph if exe.graph is not None else prepare(model.module).main  # a cache hit keeps no IR
    ops = _kernel_ops(graph)
    if [op.where() for op in ops] != list(exe.interface.kernels):
        raise TargetError("x86: the profiling twin's kernels do not match the prepared graph (a compiler bug)")
    model._profile_twin = (exe, ops)
    return model._profile_twin


def profile_model(model: Any, feeds: Mapping[str, Any], runs: int = 10) -> Profile:
    exe, ops = _twin(model)
    exe.run_profiled(feeds)  # warm-up: first touch of the arena, worker threads started
    stamps, walls, pools = [], [], []
    for _ in range(runs):
        t0 = time.perf_counter()
        _, s, pool = exe.run_profiled(feeds)
        walls.append(time.perf_counter() - t0)
        stamps.append(s)
        pools.append(pool)
    st = np.stack(stamps)  # (runs, kernels + 1, 2)
    durations = (st[:, :, 1] - st[:, :, 0]).astype(np.float64) / 1e9
    total = float(np.median(durations[:, 0]))
    run_coverage = [float(durations[r, 1:].sum() / durations[r, 0]) if durations[r, 0] > 0 else 0.0
                    for r in range(runs)]
    median_run = int(np.argsort(durations[:, 0])[(runs - 1) // 2])
    kernels = [_describe(i, op, float(np.median(durations[:, i + 1]))) for i, op in enumerate(ops)]
    for k in kernels:
        k.share = k.seconds / total if total > 0 else 0.0
    base = st[median_run, 0, 0]
    spans = [(int(a - base), int(b - base)) for a, b in st[median_run, 1:]]
    pool = pools[median_run]
    thread_spans = [] if pool is None else \
        [(i, s, int(pool[i, s, 0] - base), int(pool[i, s, 1] - base), int(pool[i, s, 2]))
         for i in range(pool.shape[0]) for s in range(pool.shape[1]) if pool[i, s, 0]]
    threads = int(model.options.threads or exe.compiled.entry.meta.get("threads", 1)) \
        if getattr(exe, "compiled", None) is not None else int(model.options.threads or 1)
    return Profile(model.module.name or "model", threads, runs, total, float(np.median(walls)), kernels, spans,
                   thread_spans, run_coverage)

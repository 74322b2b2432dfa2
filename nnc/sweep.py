"""ASIC design sweeps: simulate every (model, machine configuration) pair and collect one table row each.

A sweep is a grid of configurations (array rows x cols, scratchpad KiB, DRAM GB/s, dataflow, all
merged over a preset) times a list of models. One task is one simulation. Tasks run on an executor:
a local process pool (``PoolExecutor``, the default) or Ray tasks (``RayExecutor``), and results
stream back in completion order. Either executor survives a worker that dies mid-task: the pool is
rebuilt and the unfinished tasks resubmitted; Ray retries the task on another worker
(``max_retries``). The table is sorted by task index at the end, so every executor gives the same
table. The front, CSV/JSON and chart are in ``nnc.sweep_report`` (docs/asic.md, docs/distributed.md).

Calibration is the slow part of a compile, so a worker quantizes each model once (on the preset,
with random calibration inputs of a fixed seed, or the ``calibration`` given) and reuses the integer
graph for every configuration it simulates: the result depends only on (model, configuration).
"""

from __future__ import annotations

import concurrent.futures as cf
import contextlib
import dataclasses
import itertools
import multiprocessing
import os
import sys
import time
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterable, Iterator, Sequence

from nnc.ir import NncError, TargetError

__all__ = ["CRASH_ONCE_ENV", "HANG_ONCE_ENV", "PoolExecutor", "Progress", "RayExecutor", "SweepConfig", "SweepTask",
           "config_grid", "make_tasks", "run_sweep", "run_task"]

# test-only hooks standing in for a machine lost mid-sweep. Each is set to a file path that does not exist
# yet; the first task to see it creates the file with its worker's pid and then, for CRASH, exits its
# process (os._exit); for HANG, sleeps (60 s at most) so that the test can kill the worker from outside.
CRASH_ONCE_ENV = "NNC_SWEEP_CRASH_ONCE"
HANG_ONCE_ENV = "NNC_SWEEP_HANG_ONCE"
HOOK_ENVS = (CRASH_ONCE_ENV, HANG_ONCE_ENV)

ROW_FIELDS = ("model", "config", "array_rows", "array_cols", "spad_kib", "dram_gbps", "dataflow", "sram_kib",
              "cycles", "latency_ms", "fps", "energy_mj", "utilization", "tops_achieved", "dram_bytes", "error")


@dataclasses.dataclass(frozen=True)
class SweepConfig:
    """One machine in the grid: the fields swept, merged over ``preset``. ``spad_kib`` sizes both the
    input and the weight scratchpad."""

    array_rows: int
    array_cols: int
    spad_kib: int
    dram_gbps: float
    dataflow: str
    preset: str = "edge"

    @property
    def name(self) -> str:
        return f"{self.array_rows}x{self.array_cols}-{self.dataflow}-s{self.spad_kib}k-d{self.dram_gbps:g}g"

    def overrides(self) -> dict[str, Any]:
        return {"name": self.name, "array_rows": self.array_rows, "array_cols": self.array_cols,
                "input_spad_kib": self.spad_kib, "weight_spad_kib": self.spad_kib,
                "dram_gbps": self.dram_gbps, "dataflow": self.dataflow}


@dataclasses.dataclass(frozen=True)
class SweepTask:
    index: int
    model: str
    config: SweepConfig
    calibration: str | None = None
    dims: tuple[tuple[str, int], ...] = ()   # symbolic input dims fixed for the compile


def config_grid(rows: Sequence[int], cols: Sequence[int] | None, spad_kib: Sequence[int],
                dram_gbps: Sequence[float], dataflows: Sequence[str], preset: str = "edge") -> list[SweepConfig]:
    """Every combination, validated against the preset now (a bad value fails before any task runs).
    ``cols=None`` pairs each row count with the same column count (square arrays)."""
    from nnc.backends.asic.config import load_config

    shapes = [(r, r) for r in rows] if cols is None else list(itertools.product(rows, cols))
    grid = [SweepConfig(r, c, s, float(d), df, preset)
            for (r, c), s, d, df in itertools.product(shapes, spad_kib, dram_gbps, dataflows)]
    if not grid:
        raise TargetError("asic sweep: the configuration grid is empty")
    for cfg in grid:
        load_config(preset, cfg.overrides())
    return grid


def make_tasks(models: Sequence[str], grid: Sequence[SweepConfig], calibration: str | None = None,
               dims: dict[str, int] | None = None) -> list[SweepTask]:
    """Model-major order, so a worker that picks consecutive tasks reuses its quantized graph."""
    fixed = tuple(sorted((dims or {}).items()))
    return [SweepTask(i, m, c, calibration, fixed) for i, (m, c) in enumerate(itertools.product(models, grid))]


# -- the task ------------------------------------------------------------------------------------------

_INTEGER_GRAPHS: dict[tuple[Any, ...], Any] = {}   # per worker process: (model, calibration, dims, preset)


def _integer_graph(task: SweepTask) -> Any:
    key = (task.model, task.calibration, task.dims, task.config.preset)
    if key not in _INTEGER_GRAPHS:
        import nnc

        module = nnc.load_module(task.model, None, None)
        # --dim applies to every model of the sweep; each takes the symbols it has
        symbols = {d for p in module.main.params for d in (p.type.shape or ()) if isinstance(d, str)}
        dims = {n: v for n, v in task.dims if n in symbols}
        cm = nnc.compile(module, target="asic", asic_preset=task.config.preset, calibration=task.calibration,
                         dims=dims or None, functional=False)
        if not hasattr(cm.executable, "module"):  # a Specializer: the model still has symbolic dims
            dims = ", ".join(f"{n}: {t}" for n, t in cm.input_types.items())
            raise TargetError(f"symbolic input dims ({dims}); fix them with --dim NAME=SIZE")
        _INTEGER_GRAPHS[key] = cm.executable.module
    return _INTEGER_GRAPHS[key]


def _claim(env: str) -> bool:
    marker = os.environ.get(env)
    if not marker:
        return False
    try:
        fd = os.open(marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
    except FileExistsError:
        return False
    os.write(fd, f"{os.getpid()}\n".encode())
    os.close(fd)
    return True


def _test_hooks() -> None:
    if _claim(CRASH_ONCE_ENV):
        os._exit(17)
    if _claim(HANG_ONCE_ENV):
        time.sleep(60)


def run_task(task: SweepTask) -> dict[str, Any]:
    """Simulate one (model, configuration); a compile error becomes the row's ``error``, not an exception,
    so one model the chip cannot take does not stop the sweep."""
    from nnc.backends.asic import compile as compile_asic
    from nnc.backends.asic.config import load_config

    _test_hooks()
    cfg = task.config
    row: dict[str, Any] = {"index": task.index, "model": task.model, "config": cfg.name,
                           "array_rows": cfg.array_rows, "array_cols": cfg.array_cols, "spad_kib": cfg.spad_kib,
                           "dram_gbps": cfg.dram_gbps, "dataflow": cfg.dataflow}
    machine = load_config(cfg.preset, cfg.overrides())
    row["sram_kib"] = sum(machine.sizes().values()) // 1024
    try:
        module = _integer_graph(task)
        exe = compile_asic(module, {"asic_preset": cfg.preset, "asic_config": cfg.overrides(), "functional": False})
    except NncError as e:
        row["error"] = str(e).splitlines()[0] if str(e) else type(e).__name__
        return row
    rep = exe.report
    row.update(cycles=int(rep["cycles"]), latency_ms=float(rep["latency_ms"]), fps=float(rep["fps"]),
               energy_mj=float(rep["energy_mj"]["total"]), utilization=float(rep["utilization"]),
               tops_achieved=float(rep["tops_achieved"]), dram_bytes=int(rep["dram_bytes"]), error=None)
    return row


# -- executors -----------------------------------------------------------------------------------------

BLAS_THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """Processes started inside see one BLAS/OpenMP thread (unless the user chose a number), as Ray
    gives its workers: N workers each running a BLAS pool as wide as the machine oversubscribe it
    (calibration is numpy matmuls; on 2 busy cores 24-54 s instead of 16-17 s, bench/ASIC_SWEEP.md)."""
    saved = {k: os.environ.get(k) for k in BLAS_THREAD_VARS}
    for k in BLAS_THREAD_VARS:
        os.environ.setdefault(k, "1")
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)


class PoolExecutor:
    """A local process pool (spawn context: no inherited locks or llvmlite state). A worker that dies
    breaks the whole pool, so the pool is rebuilt and every unfinished task resubmitted, up to
    ``max_restarts`` times."""

    def __init__(self, workers: int | None = None, max_restarts: int = 3):
        self.workers = max(1, workers or os.cpu_count() or 1)
        self.max_restarts = max_restarts
        self.restarts = 0

    def describe(self) -> str:
        return f"process pool, {self.workers} worker(s)"

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Sequence[Any],
                      resources: dict[str, float] | None = None) -> Iterator[Any]:
        """``resources`` (Ray custom resources a task needs) is for RayExecutor: every worker of the
        pool runs on this machine."""
        todo = dict(enumerate(tasks))
        ctx = multiprocessing.get_context("spawn")
        while todo:
            with cf.ProcessPoolExecutor(max_workers=min(self.workers, len(todo)), mp_context=ctx) as pool:
                with _one_blas_thread():  # the workers start (and copy the environment) at the first submit
                    futures = {pool.submit(fn, t): k for k, t in todo.items()}
                broken = False
                for fut in cf.as_completed(futures):
                    try:
                        result = fut.result()
                    except BrokenProcessPool:
                        broken = True
                        continue
                    del todo[futures[fut]]
                    yield result
            if broken and todo:
                self.restarts += 1
                if self.restarts > self.max_restarts:
                    raise NncError(f"asic sweep: the process pool broke {self.restarts} times; "
                                   f"{len(todo)} task(s) unfinished")


class RayExecutor:
    """Ray tasks on a cluster (``address``: ``auto`` joins the one ``ray start`` set up on this machine,
    ``ray://host:10001`` a remote one) or, with ``address="local"``, on a private instance started here.
    A task whose worker dies is retried on another worker up to ``max_retries`` times."""

    def __init__(self, address: str = "auto", max_retries: int = 3, num_cpus: int | None = None,
                 resources: dict[str, float] | None = None):
        try:
            import ray
        except ImportError:
            raise NncError("--ray needs Ray: pip install 'nnc[distributed]'") from None
        self.ray = ray
        self.address = address
        self.max_retries = max_retries
        self._started = False
        if not ray.is_initialized():
            kw: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False}
            if address == "local":
                kw["num_cpus"] = num_cpus
                if resources:  # custom resources of this private node (nnc tune: the CPU's label)
                    kw["resources"] = resources
            else:
                kw["address"] = address
            try:
                ray.init(**kw)
            except Exception as e:  # ray raises ConnectionError, RuntimeError... when there is no cluster
                hint = " (start a cluster with 'ray start --head', or use --ray local)" if address == "auto" else ""
                raise NncError(f"--ray {address}: cannot connect to Ray{hint}: {str(e).splitlines()[0]}") from None
            self._started = True

    def describe(self) -> str:
        cpus = int(self.ray.cluster_resources().get("CPU", 0))
        return f"ray ({self.address}), {cpus} CPU(s) in the cluster"

    def _remote(self, fn: Callable[[Any], Any], resources: dict[str, float] | None = None) -> Any:
        opts: dict[str, Any] = {"max_retries": self.max_retries, "num_cpus": 1}
        if resources:
            opts["resources"] = resources
        hooks = {k: os.environ[k] for k in HOOK_ENVS if os.environ.get(k)}
        if hooks:  # workers do not inherit the driver's environment: pass the test hooks on
            opts["runtime_env"] = {"env_vars": hooks}
        return self.ray.remote(**opts)(fn)

    def _completed(self, pending: list[Any]) -> Iterator[Any]:
        while pending:
            done, pending = self.ray.wait(pending, num_returns=1)
            yield self.ray.get(done[0])

    def map_unordered(self, fn: Callable[[Any], Any], tasks: Sequence[Any],
                      resources: dict[str, float] | None = None) -> Iterator[Any]:
        """``resources``: custom resources each task needs, so it runs only on nodes that have them."""
        remote = self._remote(fn, resources)
        return self._completed([remote.remote(t) for t in tasks])

    def map_chained(self, first: Callable[[Any], Any], second: Callable[[Any], Any], tasks: Sequence[Any],
                    resources: dict[str, float] | None = None) -> Iterator[Any]:
        """``second(first(task))`` for every task as two Ray tasks: ``first`` anywhere, ``second`` only
        where ``resources`` are (nnc tune: compile on any node, measure on nodes of the target CPU).
        Ray passes the first result to the second task and retries either if its worker dies."""
        one, two = self._remote(first), self._remote(second, resources)
        return self._completed([two.remote(one.remote(t)) for t in tasks])

    def shutdown(self) -> None:
        if self._started:
            self.ray.shutdown()
            self._started = False


# -- progress ------------------------------------------------------------------------------------------

class Progress:
    """Configurations done/total, best latency so far, ETA: one line redrawn in place on a terminal;
    elsewhere (a log file, a CI job) one line per tenth of the work, so the log stays readable."""

    def __init__(self, total: int, stream: Any = None, enabled: bool = True,
                 score: Callable[[dict[str, Any]], float | None] | None = None,
                 describe: Callable[[dict[str, Any]], str] | None = None):
        """``score`` (lower is better; None: not a candidate) and ``describe`` say what "best" is:
        by default a sweep row's latency."""
        self.total, self.done = total, 0
        self.score = score or (lambda row: row["latency_ms"] if row.get("error") is None else None)
        self.describe = describe or (lambda row: f"{row['latency_ms']:.3f} ms {row['config']} "
                                                 f"({os.path.basename(row['model'])})")
        self.stream = stream or sys.stderr
        self.enabled = enabled
        isatty = getattr(self.stream, "isatty", None)
        self.redraw = bool(isatty and isatty())
        self._tenths = -1
        self.best: dict[str, Any] | None = None
        self._best_score = 0.0
        self._width = 0
        self.t0 = time.perf_counter()

    def update(self, row: dict[str, Any]) -> None:
        self.done += 1
        score = self.score(row)
        if score is not None and (self.best is None or score < self._best_score):
            self.best, self._best_score = row, score
        if not self.enabled:
            return
        text = self.line()
        if self.redraw:
            self.stream.write("\r" + text.ljust(self._width) + ("\n" if self.done == self.total else ""))
            self._width = len(text)
        elif 10 * self.done // max(self.total, 1) > self._tenths:
            self._tenths = 10 * self.done // max(self.total, 1)
            self.stream.write(text.rstrip() + "\n")
        self.stream.flush()

    def close(self) -> None:
        """End a redrawn line that stopped short of the total (a time budget, a resumed run)."""
        if self.enabled and self.redraw and 0 < self.done < self.total:
            self.stream.write("\n")
            self.stream.flush()

    def line(self) -> str:
        elapsed = time.perf_counter() - self.t0
        width = 24
        fill = width * self.done // max(self.total, 1)
        eta = elapsed / self.done * (self.total - self.done) if self.done else float("nan")
        best = f"best {self.describe(self.best)}" if self.best else "best -"
        return (f"[{'#' * fill}{'.' * (width - fill)}] {self.done}/{self.total}  {best}  "
                f"ETA {eta:.0f}s  " if self.done < self.total else
                f"[{'#' * width}] {self.done}/{self.total}  {best}  in {elapsed:.1f}s")


def run_sweep(tasks: Sequence[SweepTask], executor: Any,
              on_row: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run every task on ``executor``; ``on_row`` sees each row as it arrives. Returns the rows in task
    order (so the table does not depend on which worker finished first)."""
    rows: dict[int, dict[str, Any]] = {}
    for row in executor.map_unordered(run_task, list(tasks)):
        rows[row["index"]] = row
        if on_row is not None:
            on_row(row)
    missing = sorted(set(t.index for t in tasks) - set(rows))
    if missing:
        raise NncError(f"asic sweep: {len(missing)} task(s) returned no result")
    return [rows[t.index] for t in tasks]


def unique(values: Iterable[Any]) -> list[Any]:
    seen: list[Any] = []
    for v in values:
        if v not in seen:
            seen.append(v)
    return seen

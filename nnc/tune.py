"""``nnc tune``: measure candidate schedules of a model's kernels and keep the best in a tuning
database (docs/tuning.md).

The model is compiled once with an empty tuning table, which makes the x86 backend list its
tunable kernels by signature (op, attributes, operand dtypes/shapes/constness, threads) with the
schedule its cost model chose. Each kernel signature becomes a standalone one-op module. One
*task* is one (kernel, schedule): compile the module with that schedule, run it warm, time it
(median of repeated samples) and hash its output. Inputs and weights are small integers, so every
partial sum is exact in f32 and any schedule must give the default schedule's output bit for bit:
a candidate whose output hash differs is recorded with ``ok: false`` and never chosen.

Tasks run on the executors of the ASIC sweep (``nnc.sweep``: a local process pool, or Ray tasks
that need the custom resource naming this CPU, so measurements land only on machines of the same
CPU model and features). The search goes in rounds: first the default schedule of every kernel,
then per round and kernel one candidate picked at random (exploration) and one the learned cost
model (``nnc.tune_cost_model``) ranks best, until each kernel has ``trials`` candidates measured
or the time budget is spent. Every measurement is appended to the database as it arrives, and
candidates already in the database are not measured again (resume).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import random
import statistics
import time
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nnc.backends.x86.schedule import Schedule, ScheduleTable, TableEntry
from nnc.backends.x86.schedule_space import candidates
from nnc.backends.x86.tuning_db import TuningDB
from nnc.ir import Builder, DType, Graph, Module, NncError, TensorType

from . import tune_cost_model as cost_model


def cpu_resource(cpu: str, features: str) -> str:
    """The Ray custom resource naming a CPU model and feature list (nodes that may measure for it)."""
    return "nnc_cpu_" + hashlib.sha256(f"{cpu}|{features}".encode()).hexdigest()[:12]


@dataclasses.dataclass(frozen=True)
class TuneTask:
    index: int
    key: str
    signature_json: str  # the kernel signature (JSON text: the task stays hashable and picklable)
    schedule_json: str
    default: bool
    cpu: str
    features: str
    repeat: int = 7
    predicted_us: float | None = None


@dataclasses.dataclass
class Kernel:
    key: str
    signature: dict[str, Any]
    default: Schedule
    calls: int
    candidates: list[Schedule] = dataclasses.field(default_factory=list)

    def default_record(self, done: Mapping[str, dict[str, Any]]) -> dict[str, Any] | None:
        """The measurement of this default schedule among ``done`` (``TuningDB.measured``). A default
        an older nnc chose (a conv that took the other GEMM before the channel-vector path) is not it:
        the current default is measured again, as the baseline."""
        r = done.get(json.dumps(self.default.to_json(), sort_keys=True))
        return r if r is not None and r["default"] else None


def model_kernels(model: Any, threads: int | None = None, dims: Mapping[str, int] | None = None,
                  cpu: str | None = None, features: str | None = None) -> list[Kernel]:
    """The distinct tunable kernels of ``model`` compiled for x86 (most calls first)."""
    import nnc

    opts: dict[str, Any] = {"quiet": True, "tuning_db": TuningDB(), "threads": threads,
                            "dims": dict(dims or {}) or None, "cpu": cpu, "target_features": features}
    cm = nnc.compile(model, target="x86", **{k: v for k, v in opts.items() if v is not None})
    rep = (cm.report.get("x86") or {}).get("tuning")
    if rep is None:
        raise NncError("nnc tune: the model did not compile to one x86 module (segments with host steps, or "
                       "symbolic dims: fix them with --dim); nothing to tune")
    out = [Kernel(r["key"], rep["signatures"][r["key"]], Schedule.from_json(r["schedule"]), r["calls"])
           for r in rep["kernels"] if r["key"] in rep["signatures"]]
    return sorted(out, key=lambda k: -k.calls)


# -- one task -------------------------------------------------------------------------------------

def _integers(rng: np.random.Generator, shape: Sequence[int], dtype: str, reach: int) -> np.ndarray:
    return rng.integers(-reach, reach + 1, size=tuple(shape)).astype(DType(dtype).numpy)


def standalone(sig: Mapping[str, Any], seed: int = 0) -> tuple[Module, dict[str, np.ndarray]]:
    """A module of the kernel's op alone: constant operands are constants, the others inputs; all
    small integers (|x| <= 2, or 1 for very long sums), so that every schedule's sums are exact."""
    from nnc.backends.x86.schedule_space import gemm_dims

    k_len = gemm_dims(sig)[3] if sig.get("kind") == "gemm" else 64
    reach = 2 if 4 * k_len < 2 ** 24 else 1
    rng = np.random.default_rng(seed)
    m = Module(name=f"kernel_{sig['op']}")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    operands, feeds = [], {}
    for i, (dtype, shape, const) in enumerate(sig["inputs"]):
        arr = _integers(rng, shape, dtype, reach)
        if const:
            operands.append(b.const(arr, name=f"c{i}"))
        else:
            operands.append(g.add_param(f"x{i}", TensorType(DType(dtype), tuple(shape))))
            feeds[f"x{i}"] = arr
    y = b.op(sig["op"], *operands, name="y", **sig["attrs"])
    g.set_outputs([y])
    return m, feeds


def _time(run: Callable[[], Any], repeat: int) -> float:
    """Median microseconds per run over ``repeat`` samples of about 2 ms each (after warming up)."""
    for _ in range(2):
        run()
    t0 = time.perf_counter()
    run()
    one = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, min(1000, int(0.002 / one)))
    samples = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            run()
        samples.append((time.perf_counter() - t0) / inner)
    return statistics.median(samples) * 1e6


def compile_candidate(task: TuneTask) -> dict[str, Any]:
    """Compile the kernel alone with the task's schedule for the task's CPU (on any machine: nothing
    runs) and check the backend used it. Returns the record so far and the compiled code."""
    import nnc
    from nnc.sweep import _test_hooks

    _test_hooks()
    sig = json.loads(task.signature_json)
    sched = Schedule.from_json(json.loads(task.schedule_json))
    rec: dict[str, Any] = {"cpu": task.cpu, "features": task.features, "key": task.key, "signature": sig,
                           "schedule": sched.to_json(), "default": task.default, "us": None, "ok": False,
                           "predicted_us": task.predicted_us, "error": None, "checksum": None,
                           "index": task.index}
    module, _ = standalone(sig)
    table = ScheduleTable({task.key: TableEntry(sched)}, "<candidate>", task.schedule_json)
    try:
        cm = nnc.compile(module, target="x86", threads=int(sig["threads"]), cache=False, quiet=True,
                         tuning_db=table, cpu=task.cpu, target_features=task.features)
    except NncError as e:
        rec["error"] = str(e).splitlines()[0]
        return {"record": rec, "code": None, "repeat": task.repeat}
    used = {r["key"]: r for r in cm.report["x86"]["tuning"]["kernels"]}
    if used.get(task.key, {}).get("source") != "db":
        rec["error"] = "the standalone kernel did not reproduce the model's signature"
        return {"record": rec, "code": None, "repeat": task.repeat}
    entry = cm.executable.compiled.entry
    return {"record": rec, "code": (bytes(entry.object_code), bytes(entry.weights), entry.meta), "repeat": task.repeat}


def measure_candidate(compiled: dict[str, Any]) -> dict[str, Any]:
    """Load a compiled candidate and time it (warm, median) and hash its output, on a machine of the
    CPU it was compiled for (anything else is an error in the record, never a measurement)."""
    from nnc.backends.x86 import executable_from_parts
    from nnc.backends.x86.target import host, resolve

    rec = dict(compiled["record"])
    if compiled["code"] is None:
        return rec
    here = host()
    if (here.cpu, here.features) != (rec["cpu"], rec["features"]):
        rec["error"] = f"not measured: this machine is a {here.cpu} with other features than the target"
        return rec
    obj, weights, meta = compiled["code"]
    exe = executable_from_parts(obj, weights, meta, resolve(rec["cpu"], rec["features"]))
    _, feeds = standalone(rec["signature"])
    first = next(iter(exe.run(feeds).values()))
    rec["checksum"] = hashlib.sha256(np.ascontiguousarray(first).tobytes()).hexdigest()[:16]
    rec["us"] = _time(lambda: exe.run(feeds), compiled["repeat"])
    return rec


def run_tune_task(task: TuneTask) -> dict[str, Any]:
    """One candidate on one machine: compile, then measure."""
    return measure_candidate(compile_candidate(task))


# -- the search -----------------------------------------------------------------------------------

def planned_tasks(kernels: Sequence[Kernel], db: TuningDB, cpu: str, features: str, target_bits: int,
                  trials: int, seed: int = 0) -> int:
    """Fill each kernel's candidates; return how many measurements ``tune`` will make without a time
    budget (the defaults not yet in ``db``, and the candidates up to ``trials`` per kernel)."""
    total = 0
    for k in kernels:
        k.candidates = candidates(k.signature, k.default, target_bits, seed=seed)
        done = db.measured(cpu, features, k.key)
        total += k.default_record(done) is None
        measured = sum(not r["default"] for r in done.values())
        todo = sum(json.dumps(s.to_json(), sort_keys=True) not in done for s in k.candidates)
        total += max(0, min(trials - measured, todo))
    return total


class GainScore:
    """The progress line's "best so far": a measurement's time over its kernel's default time (lower is
    better), the defaults taken from the database and from the measurements as they arrive."""

    def __init__(self, db: TuningDB, cpu: str, features: str):
        self.default = {k: d["us"] for k, (_, d) in db.best(cpu, features).items() if d is not None}

    def __call__(self, rec: Mapping[str, Any]) -> float | None:
        if rec["default"]:
            if rec["us"]:
                self.default[rec["key"]] = rec["us"]
            return None
        base = self.default.get(rec["key"])
        return rec["us"] / base if rec["ok"] and rec["us"] and base else None

    def describe(self, rec: Mapping[str, Any]) -> str:
        return f"x{self.default[rec['key']] / rec['us']:.2f} on a {rec['signature']['op']}"


@dataclasses.dataclass
class TuneResult:
    kernels: list[dict[str, Any]]
    measured: int
    rank: dict[str, Any]
    stopped_by_budget: bool


def tune(kernels: Sequence[Kernel], db: TuningDB, executor: Any, cpu: str, features: str, target_bits: int,
         trials: int = 16, time_budget: float | None = None, repeat: int = 7, seed: int = 0,
         on_record: Callable[[dict[str, Any]], None] | None = None, resource: str | None = None) -> TuneResult:
    """Measure the default and up to ``trials`` candidates of every kernel (see the module docstring)."""
    if resource and hasattr(executor, "ray") and resource not in executor.ray.cluster_resources():
        raise NncError(f"ray: no node of the cluster has the resource {resource} of this CPU ({cpu}); start "
                       f"the measuring nodes with: ray start ... --resources '{{\"{resource}\": N}}' "
                       f"(nnc tune --cpu-resource prints it)")
    t0 = time.perf_counter()
    rng = random.Random(seed)
    planned_tasks(kernels, db, cpu, features, target_bits, trials, seed)
    index = [0]
    resources = {resource: 1.0} if resource else None

    def task(k: Kernel, s: Schedule, default: bool, predicted: float | None = None) -> TuneTask:
        index[0] += 1
        return TuneTask(index[0], k.key, json.dumps(k.signature, sort_keys=True),
                        json.dumps(s.to_json(), sort_keys=True), default, cpu, features, repeat, predicted)

    def run(tasks: list[TuneTask]) -> None:
        defaults = {k.key: db.measured(cpu, features, k.key) for k in kernels}
        if hasattr(executor, "map_chained"):  # Ray: compile anywhere, measure on a node of this CPU
            stream = executor.map_chained(compile_candidate, measure_candidate, tasks, resources)
        else:
            stream = executor.map_unordered(run_tune_task, tasks)
        for rec in stream:
            rec.pop("index", None)
            if rec["default"]:
                rec["ok"] = rec["checksum"] is not None
            else:
                base = [r for r in defaults.get(rec["key"], {}).values() if r["default"] and r.get("checksum")]
                rec["ok"] = bool(base) and rec["checksum"] == base[0]["checksum"]
                if base and rec["checksum"] is not None and not rec["ok"]:
                    rec["error"] = "output differs from the default schedule's"
            db.add(rec)
            if on_record is not None:
                on_record(rec)

    def over() -> bool:
        return time_budget is not None and time.perf_counter() - t0 > time_budget

    # round 0: every kernel's default schedule (the baseline and the reference output)
    run([task(k, k.default, True) for k in kernels
         if k.default_record(db.measured(cpu, features, k.key)) is None])
    while not over():
        model = cost_model.fit(db.for_target(cpu, features))
        batch = []
        for k in kernels:
            done = db.measured(cpu, features, k.key)
            count = sum(not r["default"] for r in done.values())
            todo = [s for s in k.candidates if json.dumps(s.to_json(), sort_keys=True) not in done]
            if count >= trials or not todo:
                continue
            mine = k.default_record(done)
            base = [mine["us"]] if mine is not None and mine["ok"] else []
            if not base:  # the default schedule failed (its record says why): nothing to compare with
                continue
            picks = []
            if model.trained:
                pred = model.predict([cost_model.features(k.signature, s) for s in todo])
                best = int(np.argmin(pred))
                picks.append((todo[best], math.exp(pred[best]) * base[0]))
            if count + len(picks) < trials:
                rest = [s for s in todo if all(s != p for p, _ in picks)]
                if rest:
                    s = rng.choice(rest)
                    p = math.exp(model.predict([cost_model.features(k.signature, s)])[0]) * base[0] \
                        if model.trained else None
                    picks.append((s, p))
            batch += [task(k, s, False, p) for s, p in picks]
        if not batch:
            break
        run(batch)
    recs = db.for_target(cpu, features)
    best = db.best(cpu, features)
    rows = []
    for k in kernels:
        b, d = best.get(k.key, (None, None))
        rows.append({"key": k.key, "op": k.signature["op"], "kind": k.default.kind, "calls": k.calls,
                     "shapes": " ".join("x".join(map(str, s)) for _, s, _ in k.signature["inputs"][:2]),
                     "default_us": d["us"] if d else None, "best_us": b["us"] if b else None,
                     "best": Schedule.from_json(b["schedule"]).text() if b else None,
                     "trials": sum(r["key"] == k.key and not r["default"] for r in recs),
                     "failed": sum(r["key"] == k.key and not r["ok"] for r in recs)})
    return TuneResult(rows, index[0], cost_model.held_out_rank(recs), over())


def summary(result: TuneResult, verdicts: Sequence[Any] | None = None) -> str:
    """The per-kernel table: times alone (default, best), the gain alone, and with ``verdicts`` (the
    check in the model, ``nnc.tune_verify``) the in-model gain of the schedule kept and which it is."""
    checked = {v.key: v for v in verdicts or ()}
    model_col = f" {'in model':>9}" if verdicts is not None else ""
    lines = [f"{'op':<7} {'calls':>5} {'default us':>11} {'best us':>10} {'gain':>6}{model_col} {'trials':>6}  "
             f"{'kept schedule' if verdicts is not None else 'best schedule'}"]
    total_d = total_b = 0.0
    for r in result.kernels:
        gain = r["default_us"] / r["best_us"] if r["default_us"] and r["best_us"] else None
        if gain:
            total_d += r["calls"] * r["default_us"]
            total_b += r["calls"] * r["best_us"]
        best, model = r["best"] or "-", ""
        if verdicts is not None:
            v = checked.get(r["key"])
            model = f" {('-' if v is None else 'default' if v.default else f'x{v.gain:.2f}'):>9}"
            if v is not None:
                best = f"{v.schedule.text()}" + (" (default)" if v.default else "")
        lines.append(f"{r['op']:<7} {r['calls']:>5} {_num(r['default_us']):>11} {_num(r['best_us']):>10} "
                     f"{(f'x{gain:.2f}' if gain else '-'):>6}{model} {r['trials']:>6}  {best}"
                     + (f"  ({r['failed']} failed)" if r["failed"] else ""))
    if total_b:
        lines.append(f"kernel time alone (sum over calls): {total_d:.0f} us default, {total_b:.0f} us best alone "
                     f"(x{total_d / total_b:.2f})")
    lines.append(cost_model.rank_text(result.rank))
    if result.stopped_by_budget:
        lines.append("stopped by the time budget")
    return "\n".join(lines) + "\n"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.1f}"

"""``nnc tune``'s check in the model: keep for each kernel only a schedule that wins *in the model*.

A kernel measured alone runs on the same warm data over and over; in the model its input comes
from the previous kernel, its weights from memory, and other data shares the caches. A schedule that
wins alone can lose there (bench/TUNE.md: the stem and first-stage convs of ResNet-18 lost 12-30%).
So after the standalone search, each kernel's best few candidates (by their time alone, faster
than its default there) are timed in the model with the per-kernel profiler (``cm.profile``: clock
reads around every kernel of the entry point):

- round 0 compiles the model with every kernel's default schedule, round i with every kernel's
  i-th candidate at once (a kernel with fewer candidates keeps its default), so the check costs
  ``top + 1`` whole-model compiles, not kernels x top;
- each pass times the rounds in the order D, 1, D, 2, ..., D, top, D; a candidate's time is
  compared with the mean of the two default rounds around it (drift of the machine cancels), and a
  kernel's time is the sum over its call sites;
- a kernel's ratio for a candidate is the median over the passes; the kernel keeps the candidate
  with the lowest ratio if that is below ``1 - max(margin, noise)``, else its default schedule.

``noise`` is the kernel's own: the median over the passes of |D/D' - 1| for two consecutive
default rounds, i.e. how far the same code's in-model time moves between rounds. A gain smaller
than that is indistinguishable from the default. ``margin`` (2%) is the floor on a quiet machine:
below it a win is too small to survive the next build's different addresses, and a schedule that
loses in the model costs more than such a win is worth. On the loaded 2-core development machine
the median noise was 1-3% (MobileNetV2's small kernels the most), up to 24% for single kernels.
Each kernel's verdict goes into the database (``in_model``: the chosen and default in-model times,
the gain, the noise, and every candidate's standalone time and in-model ratio).

The timing source is a parameter (``measure(table) -> {key: seconds}``), so tests inject times.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import statistics
from typing import Any, Callable, Mapping, Sequence

import numpy as np

from nnc.backends.x86.schedule import Schedule, ScheduleTable, TableEntry
from nnc.backends.x86.tuning_db import TuningDB

from . import tune_cost_model as cost_model

MARGIN = 0.02
ENTRY = "(entry point)"  # a measurement's key for the whole model's time (kernel keys are hex digests)
Measure = Callable[[ScheduleTable], Mapping[str, float]]


@dataclasses.dataclass
class Verdict:
    key: str
    schedule: Schedule
    default: bool
    model_us: float  # the chosen schedule's in-model time, summed over the call sites: model_default_us / gain
    model_default_us: float
    gain: float  # 1 / the chosen candidate's median ratio (1.0 when the default was kept)
    candidates: list[dict[str, Any]]  # {"schedule", "alone_us", "ratio"} per candidate checked
    noise: float | None = None  # median |D/D' - 1| of consecutive default rounds (in-model noise)


def candidates_to_check(kernels: Sequence[Any], db: TuningDB, cpu: str, features: str,
                        top: int) -> dict[str, list[dict[str, Any]]]:
    """key -> up to ``top`` correct standalone measurements faster than the kernel's default, fastest first."""
    out = {}
    for key, (_, d) in db.best(cpu, features).items():
        if d is None:
            continue
        recs = sorted((r for r in db.measured(cpu, features, key).values()
                       if r["ok"] and not r["default"] and r["us"] is not None and r["us"] < d["us"]),
                      key=lambda r: r["us"])
        if recs:
            out[key] = recs[:top]
    wanted = {k.key for k in kernels}
    return {k: v for k, v in out.items() if k in wanted}


def verify(kernels: Sequence[Any], db: TuningDB, cpu: str, features: str, measure: Measure, top: int = 3,
           passes: int = 7, margin: float = MARGIN,
           on_round: Callable[[int, int], None] | None = None) -> list[Verdict]:
    """Check each kernel's best ``top`` candidates in the model (module docstring) and append one
    verdict per checked kernel to ``db``. ``on_round(done, total)`` reports progress."""
    check = candidates_to_check(kernels, db, cpu, features, top)
    rounds = max((len(v) for v in check.values()), default=0)
    if not rounds:
        return []
    tables = [_table({}, "<in-model check: defaults>")]
    for i in range(rounds):
        entries = {key: TableEntry(Schedule.from_json(recs[i]["schedule"])) for key, recs in check.items()
                   if len(recs) > i}
        tables.append(_table(entries, f"<in-model check: round {i + 1}>"))
    ratios: dict[tuple[str, int], list[float]] = {}
    times: dict[tuple[str, int], list[float]] = {}
    noise: dict[str, list[float]] = {}
    total, done = passes * (2 * rounds + 1), 0
    for _ in range(passes):
        before = measure(tables[0])
        done += 1
        _add(times, before, 0)
        for i in range(1, rounds + 1):
            cand = measure(tables[i])
            after = measure(tables[0])
            done += 2
            _add(times, cand, i)
            _add(times, after, 0)
            for key in check:
                if len(check[key]) >= i and key in cand:
                    base = (before[key] + after[key]) / 2
                    ratios.setdefault((key, i), []).append(cand[key] / base)
                if key in before and key in after:  # two default rounds: the noise the margin must exceed
                    noise.setdefault(key, []).append(abs(after[key] / before[key] - 1))
            before = after
            if on_round is not None:
                on_round(done, total)
    verdicts = []
    by_key = {k.key: k for k in kernels}
    for key, recs in check.items():
        if (key, 0) not in times:  # the model did not report this kernel's time: no verdict
            continue
        med = [statistics.median(ratios[(key, i)]) if (key, i) in ratios else float("inf")
               for i in range(1, len(recs) + 1)]
        best = int(np.argmin(med))
        default_us = statistics.median(times[(key, 0)]) * 1e6
        spread = statistics.median(noise[key]) if noise.get(key) else None
        keep = med[best] < 1 - max(margin, spread or 0.0)
        cands = [{"schedule": r["schedule"], "alone_us": r["us"], "ratio": m} for r, m in zip(recs, med)]
        sched = Schedule.from_json(recs[best]["schedule"]) if keep else by_key[key].default
        # the chosen time from the paired ratio (a median of the candidate's own rounds would mix in drift)
        model_us = default_us * med[best] if keep else default_us
        verdicts.append(Verdict(key, sched, not keep, model_us, default_us, 1 / med[best] if keep else 1.0, cands,
                                spread))
    for v in verdicts:
        k = by_key[v.key]
        db.add({"cpu": cpu, "features": features, "key": v.key, "signature": k.signature,
                "schedule": v.schedule.to_json(), "default": v.default, "us": None, "ok": True, "error": None,
                "in_model": {"us": v.model_us, "default_us": v.model_default_us, "gain": v.gain,
                             "calls": k.calls, "passes": passes, "margin": margin, "noise": v.noise,
                             "candidates": v.candidates}})
    return verdicts


def _table(entries: dict[str, TableEntry], source: str) -> ScheduleTable:
    # the digest is in the compile cache key: it must name the schedules
    text = json.dumps({k: e.schedule.to_json() for k, e in sorted(entries.items())}, sort_keys=True)
    return ScheduleTable(entries, source, "check:" + hashlib.sha256(text.encode()).hexdigest())


def _add(acc: dict[tuple[str, int], list[float]], times: Mapping[str, float], i: int) -> None:
    for key, t in times.items():
        acc.setdefault((key, i), []).append(t)


@dataclasses.dataclass
class ModelCheck:
    """The whole model with every kept schedule at once against the defaults (``check_model``)."""

    default_ms: float  # the entry point's time with the default schedules (median of the default rounds)
    gain: float  # 1 / the median over the passes of (tuned round) / (mean of the default rounds around it)
    passes: int


def check_model(verdicts: Sequence[Verdict], measure: Measure, passes: int = 7) -> ModelCheck | None:
    """Time the model's entry point with all the kept schedules together (the check's rounds give
    each kernel next to candidates, not next to its neighbours' final choice), alternating with the
    defaults: D, T, D, T, ..., D. None when no kernel keeps a tuned schedule or ``measure`` gives no
    entry-point time."""
    won = {v.key: TableEntry(v.schedule) for v in verdicts if not v.default}
    if not won:
        return None
    default, tuned = _table({}, "<in-model check: defaults>"), _table(won, "<in-model check: kept schedules>")
    before = measure(default)
    if ENTRY not in before:
        return None
    ratios, defaults = [], [before[ENTRY]]
    for _ in range(passes):
        t = measure(tuned)[ENTRY]
        after = measure(default)[ENTRY]
        ratios.append(t / ((before[ENTRY] + after) / 2))
        defaults.append(after)
        before = {ENTRY: after}
    return ModelCheck(statistics.median(defaults) * 1e3, 1 / statistics.median(ratios), passes)


def standalone_vs_model_rank(verdicts: Sequence[Verdict], db: TuningDB, cpu: str, features: str) -> dict[str, Any]:
    """How well the time alone ranks the checked schedules in the model: per kernel with at least 3
    points (its default: alone time, ratio 1; and its candidates), the Spearman correlation of the
    alone times and the in-model ratios, averaged over those kernels."""
    best = db.best(cpu, features)
    scores = []
    for v in verdicts:
        d = best.get(v.key, (None, None))[1]
        finite = [c for c in v.candidates if np.isfinite(c["ratio"])]
        if d is None or len(finite) < 2:
            continue
        r = cost_model.spearman([d["us"]] + [c["alone_us"] for c in finite], [1.0] + [c["ratio"] for c in finite])
        if np.isfinite(r):
            scores.append(r)
    return {"spearman": float(np.mean(scores)) if scores else None, "kernels": len(scores)}


def profile_measure(model: Any, threads: int | None, dims: Mapping[str, int] | None, runs: int = 20,
                    seed: int = 0) -> Measure:
    """The timing source of the check: compile ``model`` with the table (profiling build; each table
    compiled once and kept), run it ``runs`` times on fixed random inputs, and give each kernel
    signature its median time summed over its call sites."""
    import nnc

    built: dict[str, tuple[Any, dict[str, list[int]]]] = {}
    feeds: dict[str, np.ndarray] = {}

    def measure(table: ScheduleTable) -> dict[str, float]:
        ident = table.digest
        if ident not in built:
            opts: dict[str, Any] = {"threads": threads, "dims": dict(dims or {}) or None}
            cm = nnc.compile(model, target="x86", quiet=True, profile=True, tuning_db=table,
                             **{k: v for k, v in opts.items() if v is not None})
            sites = {r["key"]: r["sites"] for r in cm.report["x86"]["tuning"]["kernels"]}
            built[ident] = (cm, sites)
            if not feeds:
                rng = np.random.default_rng(seed)
                for name, t in cm.executable.interface.inputs:
                    dt = t.dtype.numpy
                    feeds[name] = rng.standard_normal(t.shape).astype(dt) if np.issubdtype(dt, np.floating) \
                        else np.zeros(t.shape, dt)
        cm, sites = built[ident]
        prof = cm.profile(feeds, runs)
        times = {key: sum(prof.kernels[s].seconds for s in ss) for key, ss in sites.items()}
        times[ENTRY] = prof.total
        return times

    return measure


def verify_text(verdicts: Sequence[Verdict], rank: Mapping[str, Any], model: ModelCheck | None = None) -> str:
    """The tune summary's lines on the check in the model."""
    if not verdicts:
        return "in-model check: no kernel had a candidate faster than its default alone\n"
    won = [v for v in verdicts if not v.default]
    lines = [f"in-model check: {len(won)} of {len(verdicts)} kernel(s) keep a tuned schedule, "
             f"{len(verdicts) - len(won)} keep the default (a candidate must gain {MARGIN:.0%} in the model, "
             f"and more than the kernel's noise)"]
    d = sum(v.model_default_us for v in verdicts)
    t = sum(v.model_us for v in verdicts)
    lines.append(f"  checked kernels in the model (sum over calls): {d:.0f} us default, {t:.0f} us chosen "
                 f"(x{d / t:.2f})")
    noise = [v.noise for v in verdicts if v.noise is not None]
    if noise:
        lines.append(f"  noise (two default rounds, |ratio - 1|, median per kernel): median "
                     f"{statistics.median(noise):.1%}, max {max(noise):.1%}")
    if model is not None:
        lines.append(f"  the model with every kept schedule: x{model.gain:.2f} against the defaults "
                     f"({model.default_ms:.3f} ms; median of {model.passes} paired rounds, same process)")
    if rank["spearman"] is not None:
        lines.append(f"  alone vs in-model ranking of the checked schedules: Spearman {rank['spearman']:.2f} "
                     f"over {rank['kernels']} kernel(s)")
    return "\n".join(lines) + "\n"

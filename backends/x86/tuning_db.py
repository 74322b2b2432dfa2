"""The tuning database: measured schedules of kernels, as JSON lines (docs/tuning.md).

Every line is one measurement (``nnc tune`` appends them as they arrive, so a run that stops can be
resumed: a (target, kernel, schedule) already in the file is not measured again):

    {"cpu": "skylake-avx512", "features": "+avx512f,...", "key": "<signature hash>",
     "signature": {...}, "schedule": {...}, "default": false, "us": 812.4, "ok": true,
     "predicted_us": 790.0, "error": null}

``default`` marks the backend's own schedule for that kernel (the baseline of the gain), ``ok``
that its output equalled the default schedule's, ``us`` the median run time of the kernel alone.

A line with an ``in_model`` field is a *verdict* of the check in the model (``nnc/tune_verify.py``):
the schedule that won there (possibly the default), with ``us`` null and ``in_model`` giving the
in-model times and gain. A kernel's schedule for a target is its last verdict's when it has one,
else its fastest ``ok`` measurement; ``table`` turns those into the ``ScheduleTable`` the code
generator reads. Merging databases from several machines is the union
of their lines (each line names its CPU, so one file can serve a fleet).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any, Iterable

from nnc.ir import InputError

from .schedule import Schedule, ScheduleError, ScheduleTable, TableEntry

ENV = "NNC_TUNING_DB"


class TuningDBError(InputError):
    """A tuning database that cannot be read (not JSON lines, a field missing or of the wrong type)."""


_FIELDS: dict[str, tuple[type, ...]] = {
    "cpu": (str,), "features": (str,), "key": (str,), "signature": (dict,), "schedule": (dict,),
    "default": (bool,), "us": (int, float, type(None)), "ok": (bool,),
}


def _check(rec: Any, where: str) -> dict[str, Any]:
    if not isinstance(rec, dict):
        raise TuningDBError(f"{where}: a line must be a JSON object")
    for name, types in _FIELDS.items():
        if name not in rec:
            raise TuningDBError(f"{where}: missing field {name!r}")
        if not isinstance(rec[name], types) or (isinstance(rec[name], bool) and bool not in types):
            raise TuningDBError(f"{where}: field {name!r} has the wrong type ({type(rec[name]).__name__})")
    if rec.get("predicted_us") is not None and not isinstance(rec["predicted_us"], (int, float)):
        raise TuningDBError(f"{where}: field 'predicted_us' must be a number or null")
    if "in_model" in rec:
        v = rec["in_model"]
        if not isinstance(v, dict) or not all(isinstance(v.get(n), (int, float)) and not isinstance(v.get(n), bool)
                                              and v[n] > 0 for n in ("us", "default_us", "gain")):
            raise TuningDBError(f"{where}: field 'in_model' must hold positive numbers us, default_us and gain")
    try:
        Schedule.from_json(rec["schedule"])
    except ScheduleError as e:
        raise TuningDBError(f"{where}: {e}") from None
    return rec


class TuningDB:
    """The records of one or more tuning database files, in file order."""

    def __init__(self, records: Iterable[dict[str, Any]] = (), path: str | None = None):
        self.records = list(records)
        self.path = path

    @classmethod
    def load(cls, path: str | os.PathLike, missing_ok: bool = False) -> "TuningDB":
        path = os.fspath(path)
        if not os.path.exists(path):
            if missing_ok:
                return cls(path=path)
            raise TuningDBError(f"tuning db {path}: no such file")
        if os.path.isdir(path):
            raise TuningDBError(f"tuning db {path}: is a folder, not a file")
        records = []
        with open(path, "rb") as f:
            for n, raw in enumerate(f, 1):
                if not raw.strip():
                    continue
                try:
                    rec = json.loads(raw)
                except (json.JSONDecodeError, UnicodeDecodeError) as e:
                    raise TuningDBError(f"tuning db {path}:{n}: not JSON ({e.msg if hasattr(e, 'msg') else e})") \
                        from None
                records.append(_check(rec, f"tuning db {path}:{n}"))
        return cls(records, path)

    def add(self, rec: dict[str, Any]) -> None:
        """Keep ``rec`` and, for a database read from a file, append it there at once."""
        _check(rec, "tuning record")
        self.records.append(rec)
        if self.path is not None:
            with open(self.path, "a") as f:
                f.write(json.dumps(rec, sort_keys=True) + "\n")

    def for_target(self, cpu: str, features: str) -> list[dict[str, Any]]:
        """The target's measurements of kernels alone (not the verdicts of the check in the model)."""
        return [r for r in self.records if r["cpu"] == cpu and r["features"] == features and "in_model" not in r]

    def verdicts(self, cpu: str, features: str) -> dict[str, dict[str, Any]]:
        """key -> the last verdict of the check in the model for the target (a later check wins)."""
        return {r["key"]: r for r in self.records
                if r["cpu"] == cpu and r["features"] == features and "in_model" in r}

    def measured(self, cpu: str, features: str, key: str) -> dict[str, dict[str, Any]]:
        """A kernel's measurements on a target, by the schedule's JSON text."""
        return {json.dumps(r["schedule"], sort_keys=True): r for r in self.for_target(cpu, features) if r["key"] == key}

    def best(self, cpu: str, features: str) -> dict[str, tuple[dict[str, Any], dict[str, Any] | None]]:
        """key -> (fastest correct measurement, the default schedule's measurement or None)."""
        best: dict[str, dict[str, Any]] = {}
        default: dict[str, dict[str, Any]] = {}
        for r in self.for_target(cpu, features):
            if not r["ok"] or r["us"] is None:
                continue
            if r["default"] and (r["key"] not in default or r["us"] < default[r["key"]]["us"]):
                default[r["key"]] = r
            if r["key"] not in best or r["us"] < best[r["key"]]["us"]:
                best[r["key"]] = r
        return {k: (r, default.get(k)) for k, r in best.items()}

    def table(self, cpu: str, features: str) -> ScheduleTable:
        entries = {}
        verdicts = self.verdicts(cpu, features)
        for key, (b, d) in self.best(cpu, features).items():
            v = verdicts.get(key)
            if v is not None:  # checked in the model: its winner, which was measured alone too
                b = self.measured(cpu, features, key).get(json.dumps(v["schedule"], sort_keys=True), b)
            measured = d["us"] / b["us"] if d is not None and b["us"] > 0 else None
            # the cost model's expectation when it proposed the best schedule: default time / predicted time
            predicted = d["us"] / b["predicted_us"] if d is not None and b.get("predicted_us") else None
            if v is None:
                entries[key] = TableEntry(Schedule.from_json(b["schedule"]), measured, predicted)
            else:  # a kept default has no gain alone to show
                kept = v["default"]
                entries[key] = TableEntry(Schedule.from_json(v["schedule"]), None if kept else measured,
                                          None if kept else predicted, v["in_model"]["gain"], kept_default=kept)
        # the digest (in the compile cache key) covers the gains too: the cached report shows them
        text = json.dumps({k: [e.schedule.to_json(), e.measured_gain, e.predicted_gain]
                           + ([e.model_gain, e.kept_default] if e.model_gain is not None else [])
                           for k, e in sorted(entries.items())}, sort_keys=True)
        return ScheduleTable(entries, self.path or "<memory>", hashlib.sha256(text.encode()).hexdigest())

    @classmethod
    def merge(cls, dbs: Iterable["TuningDB"]) -> "TuningDB":
        """The union of the databases' records (a line present in several once)."""
        seen: set[str] = set()
        out = []
        for db in dbs:
            for r in db.records:
                text = json.dumps(r, sort_keys=True)
                if text not in seen:
                    seen.add(text)
                    out.append(r)
        return cls(out)

    def write(self, path: str) -> None:
        tmp = f"{path}.tmp{os.getpid()}"
        with open(tmp, "w") as f:
            for r in self.records:
                f.write(json.dumps(r, sort_keys=True) + "\n")
        os.replace(tmp, path)


def schedule_table(db: Any, cpu: str, features: str) -> ScheduleTable | None:
    """The table for a target from ``tuning_db`` (a path, a ``TuningDB``, a ``ScheduleTable``) or, when
    that is None, from ``$NNC_TUNING_DB``; None when neither is given."""
    if db is None:
        db = os.environ.get(ENV) or None
        if db is None:
            return None
    if isinstance(db, ScheduleTable):
        return db
    if isinstance(db, (str, os.PathLike)):
        db = TuningDB.load(db)
    if not isinstance(db, TuningDB):
        raise TuningDBError(f"tuning_db must be a path or a TuningDB, got {type(db).__name__}")
    return db.table(cpu, features)

"""Schedules: the knobs of the tunable kernels made explicit, and how a kernel picks one.

A ``Schedule`` holds what the GEMM-based kernels (conv 3x3 / 1x1 through implicit im2col, matmul,
gemm) and the depthwise conv choose: the register tile (``mr`` rows x ``nv`` vectors), the cache
blocking (``kc``, ``mc``, ``nc``), the vector width, the order of the two tile loops of the macro
kernel, the split of the product into tasks over the threads (``tm`` x ``tn``; 0 = the task-grid
cost model of gemm_grid.py) and, for the depthwise conv, whether a channel is copied into a
zero-padded buffer first (``flat``). A schedule of kind ``chanvec`` is the plan of the conv path
whose vectors run over output channels (kernels/conv_channel_vectors.py): a register tile of
``mr`` output pixels x ``nv`` vectors of 16 channels, ``kc``, ``mc`` pixels per block, and ``tn``
x ``tp`` tasks per image along the channels and the pixels. A schedule of kind ``winograd`` is the
plan of the F(2x2, 3x3) conv (kernels/conv_winograd.py): ``mr`` 2x2 tiles x ``nv`` channel vectors,
``kc``, ``tb`` tile rows per block, ``tn`` x ``tp`` tasks along the channels and the tile rows. A conv
kernel of the GEMM family takes any of the three kinds, and the kind picks the path. The default
schedule is the backend's own cost-model choice (``gemm.blocking``, ``gemm_grid.task_grid``,
``conv_channel_vectors.plan``, ``conv_winograd.plan``), so code generated without a tuning table is
the code generated before schedules existed.

A kernel is identified by its *signature*: the op, its attributes, its operands' dtypes, shapes and
whether each is a compile-time constant, its results, and the thread count (``kernel_signature``;
the target CPU and features are the tuning table's). ``ScheduleTable`` maps signature keys to
schedules for one target; the code generator holds one (or none) and logs every choice, which the
compile report shows (docs/tuning.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

from nnc.ir import DType, InputError, Op

GEMM_FIELDS = ("mr", "nv", "kc", "mc", "nc", "vector_bits", "order", "tm", "tn")
CHANVEC_FIELDS = ("mr", "nv", "kc", "mc", "tn", "tp")
WINOGRAD_FIELDS = ("mr", "nv", "kc", "tb", "tn", "tp")
# what each kind's JSON holds
FIELDS = {"gemm": GEMM_FIELDS, "dwconv": ("flat",), "chanvec": CHANVEC_FIELDS, "winograd": WINOGRAD_FIELDS}
CHANVEC_LANES = 16  # the channel-vector path is AVX-512 f32 only
ZMM_REGISTERS = 31  # of 32: accumulators, the B vectors and one broadcast
ORDERS = ("nm", "mn")  # the macro kernel's tile loops: columns outer (the default) or rows outer


class ScheduleError(InputError):
    """A schedule that cannot be applied (a bad tuning database entry)."""


@dataclasses.dataclass(frozen=True)
class Schedule:
    kind: str  # "gemm", "dwconv", "chanvec" or "winograd"
    mr: int = 0  # gemm: rows of the register tile; chanvec: output pixels of it (they divide the row)
    nv: int = 0  # vectors of the register tile (chanvec: of 16 output channels)
    kc: int = 0
    mc: int = 0  # gemm: rows of a packed A block; chanvec: pixels of a block (a multiple of mr)
    nc: int = 0
    vector_bits: int = 0
    order: str = "nm"
    tm: int = 0  # 0: the task-grid cost model decides
    tn: int = 0  # gemm: tasks along N (0: the cost model); chanvec: tasks along the output channels
    flat: int = -1  # dwconv: -1 the default rule, 0 direct loops, 1 a zero-padded copy of the plane
    tp: int = 0  # chanvec: tasks along the output pixels (tn x tp tasks per image); winograd: along the tile rows
    tb: int = 0  # winograd: tile rows (of 2 output rows) per block

    def to_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **{f: getattr(self, f) for f in FIELDS[self.kind]}}

    @classmethod
    def from_json(cls, d: Any) -> "Schedule":
        if not isinstance(d, dict) or d.get("kind") not in FIELDS:
            raise ScheduleError(f"not a schedule: {d!r}")
        names = {f.name: f.type for f in dataclasses.fields(cls)}
        for k, v in d.items():
            if k not in names:
                raise ScheduleError(f"schedule: unknown field {k!r}")
            if k not in ("kind", "order") and (not isinstance(v, int) or isinstance(v, bool)):
                raise ScheduleError(f"schedule: {k} must be an integer, got {v!r}")
        if d["kind"] in ("chanvec", "winograd"):
            mine = FIELDS[d["kind"]]
            extra = sorted(set(d) - {"kind", *mine})
            if extra:
                raise ScheduleError(f"schedule: a {d['kind']} schedule has no field {extra[0]!r}")
            missing = [f for f in mine if f not in d]
            if missing:
                raise ScheduleError(f"schedule: a {d['kind']} schedule needs {', '.join(missing)} {d}")
        else:
            for f in ("tp", "tb"):
                if f in d:
                    raise ScheduleError(f"schedule: a {d['kind']} schedule has no field {f!r}")
        s = cls(**d)
        if s.kind == "gemm":
            if min(s.mr, s.nv, s.kc, s.mc, s.nc) < 1 or s.mc % s.mr or min(s.tm, s.tn) < 0:
                raise ScheduleError(f"schedule: bad blocking {d}")
            if s.vector_bits not in (128, 256, 512) or s.order not in ORDERS:
                raise ScheduleError(f"schedule: bad vector width or loop order {d}")
            if s.nc % (s.nv * s.vector_bits // 32):
                raise ScheduleError(f"schedule: nc must be a multiple of the tile's columns {d}")
        elif s.kind == "chanvec":
            _check_chanvec(s, d)
        elif s.kind == "winograd":
            _check_winograd(s, d)
        elif s.flat not in (-1, 0, 1):
            raise ScheduleError(f"schedule: flat must be -1, 0 or 1 {d}")
        return s

    def text(self) -> str:
        if self.kind == "dwconv":
            return {-1: "dw default", 0: "dw direct", 1: "dw padded copy"}[self.flat]
        if self.kind == "chanvec":
            return f"chanvec tile {self.mr}px x {self.nv}v kc{self.kc} mc{self.mc} tasks {self.tn}ch x {self.tp}px"
        if self.kind == "winograd":
            return (f"winograd tile {self.mr}t x {self.nv}v kc{self.kc} tb{self.tb} "
                    f"tasks {self.tn}ch x {self.tp}rows")
        grid = f"{self.tm}x{self.tn}" if self.tm else "auto"
        return (f"tile {self.mr}x{self.nv}v{self.vector_bits} kc{self.kc} mc{self.mc} nc{self.nc} "
                f"{self.order} grid {grid}")


def _check_chanvec(s: Schedule, d: Mapping[str, Any]) -> None:
    """What a channel-vector plan needs whatever the conv: a tile of 1-16 pixels (a masked load of one
    vector each) x 1-4 vectors whose accumulators, B vectors and broadcast fit the zmm registers,
    blocks of whole tiles, at least one task each way."""
    if not (1 <= s.mr <= CHANVEC_LANES and 1 <= s.nv <= 4):
        raise ScheduleError(f"schedule: a chanvec tile has 1-{CHANVEC_LANES} pixels and 1-4 vectors {dict(d)}")
    if s.mr * s.nv + s.nv + 1 > ZMM_REGISTERS:
        raise ScheduleError(f"schedule: a chanvec tile of {s.mr} x {s.nv} vectors needs more than "
                            f"{ZMM_REGISTERS} registers {dict(d)}")
    if s.kc < 1 or s.mc < s.mr or s.mc % s.mr:
        raise ScheduleError(f"schedule: chanvec kc must be positive and mc a multiple of mr {dict(d)}")
    if s.tn < 1 or s.tp < 1:
        raise ScheduleError(f"schedule: chanvec tn and tp (tasks per image) must be positive {dict(d)}")


def _check_winograd(s: Schedule, d: Mapping[str, Any]) -> None:
    """What a Winograd plan needs whatever the conv: a register tile of ``mr`` 2x2 tiles x 1-4 vectors
    of channels within the zmm registers, positive ``kc`` and ``tb``, at least one task each way."""
    if not (1 <= s.mr <= 28 and 1 <= s.nv <= 4) or s.mr * s.nv + s.nv + 1 > ZMM_REGISTERS:
        raise ScheduleError(f"schedule: a winograd tile of {s.mr} tiles x {s.nv} vectors does not fit the "
                            f"{ZMM_REGISTERS} registers (1-4 vectors) {dict(d)}")
    if min(s.kc, s.tb, s.tn, s.tp) < 1:
        raise ScheduleError(f"schedule: winograd kc, tb, tn and tp must be positive {dict(d)}")


def gemm_default(blk: Any) -> Schedule:
    """The schedule of a ``gemm.Blocking`` (the task grid left to the cost model)."""
    return Schedule("gemm", blk.MR, blk.nv, blk.KC, blk.MC, blk.NC, blk.lanes * (64 if blk.esize == 8 else 32))


def signature_key(sig: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(sig, sort_keys=True).encode()).hexdigest()[:24]


def _attr(v: Any) -> Any:
    if isinstance(v, DType):
        return str(v)
    if isinstance(v, (list, tuple)):
        return [_attr(x) for x in v]
    return v if isinstance(v, (int, float, str, bool)) or v is None else repr(v)


def kernel_signature(k: Any, op: Op, kind: str) -> dict[str, Any] | None:
    """The signature of ``op`` lowered by ``k``; None when a shape is not static (shape-generic
    code keeps the default schedule)."""
    from .kernels.linalg import const_array

    values = list(op.operands) + list(op.results)
    if any(v.type.shape is None or not all(isinstance(d, int) for d in v.type.shape) for v in values):
        return None
    return {
        "op": op.opname, "kind": kind,
        "attrs": {name: _attr(v) for name, v in sorted(op.attrs.items())},
        "inputs": [[str(v.dtype), list(v.type.shape), const_array(k, v) is not None] for v in op.operands],
        "outputs": [[str(v.dtype), list(v.type.shape)] for v in op.results],
        "threads": int(getattr(k.cg, "threads", 1)),
    }


@dataclasses.dataclass
class TableEntry:
    schedule: Schedule
    measured_gain: float | None = None  # default time / tuned time, when tuned (the kernel alone)
    predicted_gain: float | None = None  # what the learned cost model expected
    # ``nnc tune``'s check in the model (nnc/tune_verify.py): the default's in-model time over this
    # schedule's, summed over the kernel's call sites; None when the schedule was not checked there
    model_gain: float | None = None
    kept_default: bool = False  # checked in the model: no candidate beat the default there


class ScheduleTable:
    """Schedules by signature key, for one target; ``source`` names where they came from (a DB path)."""

    def __init__(self, entries: Mapping[str, TableEntry] | None = None, source: str = "", digest: str = ""):
        self.entries = dict(entries or {})
        self.source = source
        # the digest is in the compile cache key, so it must name the schedules: a table built without
        # one (through the API) gets the digest of its entries, never a cached build of another table
        self.digest = digest or "entries:" + _entries_digest(self.entries)


def _entries_digest(entries: Mapping[str, TableEntry]) -> str:
    text = json.dumps({key: [e.schedule.to_json(), e.kept_default] for key, e in sorted(entries.items())},
                      sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def choose(k: Any, op: Op, kind: str, default: Schedule, accepts: tuple[str, ...] | None = None
           ) -> tuple[Schedule, str | None, str]:
    """(schedule, signature key, source) for ``op``: the table's entry for its signature, else the default.

    ``kind`` names the kernel family in the signature; ``accepts`` the schedule kinds the kernel can
    run (default: ``kind`` alone; a conv of the GEMM family also runs ``chanvec`` schedules)."""
    table: ScheduleTable | None = k.cg.schedule_table
    if table is None:
        return default, None, "default"
    sig = kernel_signature(k, op, kind)
    if sig is None:
        return default, None, "default"
    key = signature_key(sig)
    k.cg.schedule_signatures[key] = sig
    entry = table.entries.get(key)
    if entry is None or entry.kept_default:
        return default, key, "default"
    accepts = accepts or (kind,)
    if entry.schedule.kind not in accepts:
        raise ScheduleError(f"tuning db {table.source}: kernel {key} ({op.opname}) has a {entry.schedule.kind} "
                            f"schedule, the kernel needs {' or '.join(accepts)}")
    return entry.schedule, key, "db"


def record(k: Any, op: Op, key: str | None, schedule: Schedule, source: str) -> None:
    """Log the schedule a kernel used (with the task grid it got) for the compile report."""
    log = k.cg.schedule_log
    if log is None or key is None:
        return
    table = k.cg.schedule_table
    entry = table.entries.get(key)
    tuned = entry if source == "db" else None
    # site: the kernel's position among the entry point's kernels (the index of its time in a profile)
    log.append({"kernel": k.fn.name, "site": len(k.cg.kernel_table) - 1, "op": op.opname, "key": key,
                "source": source, "schedule": schedule.to_json(),
                "measured_gain": tuned.measured_gain if tuned else None,
                "predicted_gain": tuned.predicted_gain if tuned else None,
                "model_gain": entry.model_gain if entry else None,
                "kept_default": bool(entry and entry.kept_default)})


def tuning_summary(table: ScheduleTable, log: list[dict[str, Any]], signatures: Mapping[str, Any]) -> dict[str, Any]:
    """report["x86"]["tuning"]: the table's source and, per distinct tunable kernel, the schedule it
    used, whether it came from the table, the calls that share it and the gains the table records."""
    kernels: dict[str, dict[str, Any]] = {}
    for e in log:
        if e["key"] in kernels:
            kernels[e["key"]]["calls"] += 1
            kernels[e["key"]]["sites"].append(e["site"])
        else:
            kernels[e["key"]] = {**{n: v for n, v in e.items() if n != "site"}, "calls": 1, "sites": [e["site"]]}
    rows = list(kernels.values())
    return {"db": table.source, "digest": table.digest, "from_db": sum(r["source"] == "db" for r in rows),
            "default": sum(r["source"] == "default" for r in rows), "kernels": rows,
            "signatures": {k: signatures[k] for k in kernels if k in signatures}}


def tuning_text(rep: Mapping[str, Any]) -> str:
    """The compile summary's lines for report["x86"]["tuning"]."""
    lines = [f"  tuning:  {rep['from_db']} of {rep['from_db'] + rep['default']} tunable kernels from {rep['db']}"]
    names = (("model", "in model"), ("measured", "alone"), ("predicted", "cost model"))
    for r in rep["kernels"]:
        if r["source"] == "db":
            gains = ", ".join(f"{label} x{r[f'{name}_gain']:.2f}" for name, label in names if r.get(f"{name}_gain"))
            text = Schedule.from_json(r["schedule"]).text()
            gains = f"; gain {gains}" if gains else ""
            lines.append(f"    {r['kernel']} ({r['op']}, {r['calls']} call(s)): {text}{gains}")
    kept = [r for r in rep["kernels"] if r.get("kept_default")]
    if kept:
        lines.append(f"    {len(kept)} kernel(s) kept the default schedule: no candidate beat it in the model "
                     f"({', '.join(r['kernel'] for r in kept)})")
    return "\n".join(lines) + "\n"

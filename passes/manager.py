"""The pass manager: runs a pipeline over a module and makes every step visible.

    pm = PassManager("freeze,fold-constants,dce", verify_each=True, print_ir_after={"all"})
    records = pm.run(module)

Instrumentation: ``print_ir_before`` / ``print_ir_after`` (pass names or "all"),
``print_after_change`` (only passes that changed something), ``verify_each``, ``time_passes``
(a table at the end), ``dump_dir`` (one numbered ``.nnc`` file per pass, ``00-input.nnc`` first),
``disable`` (pass names skipped). ``run`` returns one ``PassRecord`` per pass for the compile report.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any, Iterable, TextIO

from nnc.ir import Module, NncError, verify_module

from .pipeline import format_pipeline, parse_pipeline
from .registry import Pass, PassError, make_pass


@dataclass
class PassRecord:
    name: str
    seconds: float
    changed: bool
    ops_before: int
    ops_after: int
    stats: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        d = {"name": self.name, "seconds": round(self.seconds, 6), "changed": self.changed,
             "ops_before": self.ops_before, "ops_after": self.ops_after}
        if self.stats:
            d["stats"] = self.stats
        return d


def count_ops(module: Module) -> int:
    """Ops of the module's graphs, constants excluded; a fused group counts once (one kernel)."""
    return sum(1 for g in module.graphs.values() for op in g.ops if op.opname != "const")


class PassManager:
    def __init__(self, pipeline: str | Iterable[Pass] = "", *, verify_each: bool = False,
                 print_ir_before: Iterable[str] = (), print_ir_after: Iterable[str] = (),
                 print_after_change: bool = False, time_passes: bool = False, dump_dir: str | None = None,
                 disable: Iterable[str] = (), out: TextIO | None = None):
        self.passes: list[Pass] = []
        disabled = set(disable)
        if isinstance(pipeline, str):
            for name, opts in parse_pipeline(pipeline):
                p = make_pass(name, opts)
                if name not in disabled:
                    self.passes.append(p)
        else:
            self.passes = [p for p in pipeline if p.name not in disabled]
        for name in disabled:
            make_pass(name)  # an unknown name in --disable-pass is an error, not a silent no-op
        self.verify_each = verify_each
        self.print_before = set(print_ir_before)
        self.print_after = set(print_ir_after)
        self.print_after_change = print_after_change
        self.time_passes = time_passes
        self.dump_dir = dump_dir
        self.out = out
        self.records: list[PassRecord] = []

    @property
    def pipeline(self) -> str:
        return format_pipeline([(p.name, {}) for p in self.passes])

    def _stream(self) -> TextIO:
        return self.out if self.out is not None else sys.stderr

    def _wants(self, which: set[str], name: str) -> bool:
        return "all" in which or name in which

    def _print(self, when: str, name: str, module: Module) -> None:
        s = self._stream()
        s.write(f"// ----- IR {when} {name} -----\n{module}")
        s.flush()

    def run(self, module: Module) -> list[PassRecord]:
        if self.dump_dir:
            os.makedirs(self.dump_dir, exist_ok=True)
            self._dump(0, "input", module)
        for i, p in enumerate(self.passes, start=1):
            if self._wants(self.print_before, p.name):
                self._print("before", p.name, module)
            before = count_ops(module)
            p.stats = {}
            t0 = time.perf_counter()
            try:
                changed = bool(p.run(module))
            except NncError:
                raise
            except Exception as e:
                raise PassError(f"pass {p.name!r} failed: {type(e).__name__}: {e}") from e
            dt = time.perf_counter() - t0
            rec = PassRecord(p.name, dt, changed, before, count_ops(module), dict(p.stats))
            self.records.append(rec)
            if self.verify_each:
                try:
                    verify_module(module)
                except NncError as e:
                    raise PassError(f"IR invalid after pass {p.name!r}: {e}") from None
            if self._wants(self.print_after, p.name) and (changed or not self.print_after_change):
                self._print("after", p.name, module)
            elif self.print_after_change and changed and not self.print_after:
                self._print("after", p.name, module)
            if self.dump_dir:
                self._dump(i, p.name, module)
        if self.time_passes:
            self._time_table()
        return self.records

    def _dump(self, index: int, name: str, module: Module) -> None:
        path = os.path.join(self.dump_dir, f"{index:02d}-{name}.nnc")  # type: ignore[arg-type]
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(str(module))
        os.replace(tmp, path)

    def _time_table(self) -> None:
        s = self._stream()
        total = sum(r.seconds for r in self.records) or 1e-12
        s.write("// ----- pass timing -----\n")
        s.write(f"// {'seconds':>10} {'%':>6} {'ops':>13}  pass\n")
        for r in self.records:
            share = 100 * r.seconds / total
            s.write(f"// {r.seconds:10.4f} {share:6.1f} {r.ops_before:>6}->{r.ops_after:<6}  {r.name}\n")
        s.write(f"// {total:10.4f}  total\n")
        s.flush()


__all__ = ["PassManager", "PassRecord", "PassError", "count_ops"]

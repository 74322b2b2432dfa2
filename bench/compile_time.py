"""Compile time of the bench models: nnc (x86, cold and warm) vs onnxruntime session creation vs
torch.compile (inductor, CPU), every measurement in a fresh process, all in one run.

    python bench/compile_time.py                                   # default models, 3 rounds
    python bench/compile_time.py --models resnet50_torch,bert_base --rounds 5 --markdown bench/COMPILE.md

What is timed (imports excluded, the model file already on disk, so the OS caches it after the
first round):

- nnc cold: ``nnc.compile(path, target="x86", cache=False, quiet=True)``: ONNX import, the -O2
  pipeline, code generation, LLVM (split over the cores for big modules), linking;
- nnc cold 1 job: the same with ``NNC_COMPILE_JOBS=1``: LLVM on one core, the module not split
  (docs/compile.md), to show what compiling the parts on all cores gains;
- nnc warm: the same call with the compilation cache holding the model (filled once, untimed): the
  import, the pipeline and the cache key are paid, code generation and LLVM are not;
- onnxruntime: ``InferenceSession(path)`` (CPU provider, default optimisation level); it has no
  compile cache, so it is one number;
- torch.compile cold/warm: the first call of ``torch.compile(model)`` minus an eager call, under
  ``torch.no_grad``, with an empty inductor cache folder (cold) or the folder a cold run filled
  (warm). Only for the models defined in PyTorch (``bench/models.py``); a run that fails or
  exceeds ``--timeout`` is reported as such, not retried.

``--llvm-parts`` adds a measurement that a loaded machine cannot spoil: for each model, the CPU
time LLVM spends on the whole module and on each part of the module split in 2 and 4 (one after
the other, in one process). The largest part bounds the wall time of a split compile on an idle
machine with that many cores; the sum says how much work splitting adds.

Measurements are interleaved round by round (every engine once per round, the two cold nnc
columns in alternating order), so a machine whose load changes during the run affects all columns
alike; the tables give medians over rounds, and the
load average is recorded at the start and the end. ``--markdown`` writes the results page.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import models  # noqa: E402

DEFAULT_MODELS = ["resnet18", "bert_small", "resnet50_torch", "bert_base"]
COLUMNS = ["nnc cold", "nnc cold 1 job", "nnc warm", "onnxruntime", "torch.compile cold", "torch.compile warm"]


def model_path(name: str) -> str:
    if name in models.LARGE:
        return str(models.torch_model(name))
    return str(models.all_models()[name]())


# -- one measurement, in a child process --------------------------------------------------------
def _nnc(path: str, cache_dir: str | None) -> float:
    import nnc

    options: dict[str, Any] = {"cache": False} if cache_dir is None else {"cache_dir": cache_dir}
    t = time.perf_counter()
    cm = nnc.compile(path, target="x86", quiet=True, **options)
    seconds = time.perf_counter() - t
    if cache_dir is not None and getattr(cm.executable, "cache_status", "") != "hit":
        raise RuntimeError(f"expected a cache hit, got {cm.executable.cache_status!r}")
    return seconds


def _onnxruntime(path: str) -> float:
    import onnxruntime as ort

    t = time.perf_counter()
    ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    return time.perf_counter() - t


def _torch_compile(name: str) -> float:
    import torch

    model, args = models.torch_module(name)
    with torch.no_grad():
        t = time.perf_counter()
        model(*args)
        eager = time.perf_counter() - t
        compiled = torch.compile(model, backend="inductor")
        t = time.perf_counter()
        compiled(*args)
        return time.perf_counter() - t - eager


def child(engine: str, name: str, cache_dir: str) -> None:
    path = model_path(name)
    if engine.startswith("nnc cold"):
        seconds = _nnc(path, None)
    elif engine == "nnc fill":
        seconds = _fill(path, cache_dir)
    elif engine == "nnc warm":
        seconds = _nnc(path, cache_dir)
    elif engine == "onnxruntime":
        seconds = _onnxruntime(path)
    elif engine.startswith("torch.compile"):
        seconds = _torch_compile(name)
    elif engine == "llvm parts":
        print(json.dumps(llvm_parts(name)))
        return
    else:
        raise SystemExit(f"unknown engine {engine!r}")
    print(json.dumps({"seconds": seconds}))


def llvm_parts(name: str, splits: tuple[int, ...] = (2, 4)) -> dict[str, Any]:
    """CPU seconds of LLVM (optimise + emit) on the model's whole module and on each of its parts."""
    os.environ["NNC_LLVM_WORKER"] = "never"  # LLVM in this process, where process_time sees it
    import nnc
    from nnc.backends.x86 import generate
    from nnc.backends.x86.codegen import ENTRY
    from nnc.backends.x86.llvm_worker import object_code
    from nnc.backends.x86.split_compile import split
    from nnc.backends.x86.target import resolve

    cm = nnc.compile(model_path(name), target="x86", cache=False, quiet=True)
    info = resolve()
    text = generate(cm.module, {"threads": cm.executable.compiled.entry.meta["threads"]})[3]

    def cpu(t: str) -> float:
        start = time.process_time()
        object_code(t, info)
        return time.process_time() - start

    out: dict[str, Any] = {"ir_bytes": len(text), "whole": cpu(text)}
    for n in splits:
        out[str(n)] = [cpu(part) for part in split(text, n, ENTRY) or [text]]
    return out


def parts_table(rows: dict[str, dict[str, Any]]) -> str:
    lines = ["| model | IR text | whole module | 2 parts: each (largest / whole) | 4 parts: each (largest / whole) |",
             "|---|---|---|---|---|"]
    for name, r in rows.items():
        if "error" in r:
            lines.append(f"| {name} | failed: {r['error']} | | | |")
            continue
        cells = []
        for n in ("2", "4"):
            each = " + ".join(f"{t:.1f}" for t in r[n])
            cells.append(f"{each} s ({max(r[n]) / r['whole']:.2f})")
        lines.append(f"| {name} | {r['ir_bytes'] / 2**20:.1f} MB | {r['whole']:.1f} s | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fill(path: str, cache_dir: str) -> float:
    import nnc

    t = time.perf_counter()
    nnc.compile(path, target="x86", quiet=True, cache_dir=cache_dir)
    return time.perf_counter() - t


# -- the parent: rounds of child processes -------------------------------------------------------
def run_child(engine: str, name: str, cache_dir: str, timeout: float, env: dict[str, str] | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", engine, name, cache_dir]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})})
    except subprocess.TimeoutExpired:
        return {"error": f"timeout after {timeout:.0f} s"}
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        return {"error": tail[:200]}
    return json.loads(lines[-1])


def load_average() -> str:
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "?"


def measure(names: list[str], rounds: int, timeout: float, torch_compile: bool) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="nnc-compile-time-"))
    results: dict[str, dict[str, list]] = {n: {c: [] for c in COLUMNS} for n in names}
    try:
        for n in names:
            model_path(n)  # export once, before any timing
            fill = run_child("nnc fill", n, str(work / f"{n}-nnc"), timeout)
            if "error" in fill:
                results[n]["nnc warm"].append(fill)
        for r in range(rounds):
            for n in names:
                # the two cold nnc columns swap places every round: a measurement right after
                # another engine's (its exit, its writes) must not favour one of them
                order = COLUMNS if r % 2 == 0 else [COLUMNS[1], COLUMNS[0], *COLUMNS[2:]]
                for col in order:
                    if col.startswith("torch.compile") and (not torch_compile or n not in models.TORCH + models.LARGE):
                        continue
                    if col == "nnc warm" and results[n][col] and "error" in results[n][col][0]:
                        continue
                    env = {"NNC_COMPILE_JOBS": "1"} if col == "nnc cold 1 job" else None
                    if col.startswith("torch.compile"):
                        folder = work / f"{n}-inductor-{r}"  # cold: a fresh folder; warm: the one cold filled
                        env = {"TORCHINDUCTOR_CACHE_DIR": str(folder)}
                    res = run_child(col, n, str(work / f"{n}-nnc"), timeout, env)
                    results[n][col].append(res)
                    shown = f"{res['seconds']:.2f} s" if "seconds" in res else res["error"]
                    print(f"round {r + 1}/{rounds} {n:16s} {col:20s} {shown}", file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return results


def median(rows: list[dict]) -> tuple[float | None, str]:
    values = [r["seconds"] for r in rows if "seconds" in r]
    errors = [r["error"] for r in rows if "error" in r]
    if values:
        return statistics.median(values), f"{len(values)}" + (f" ({len(errors)} failed)" if errors else "")
    return None, errors[0] if errors else "not run"


def table(results: dict[str, Any]) -> str:
    head = "| model | " + " | ".join(COLUMNS) + " | nnc cold / onnxruntime |"
    lines = [head, "|" + "---|" * (len(COLUMNS) + 2)]
    notes = []
    for n, cols in results.items():
        cells, meds = [], {}
        for c in COLUMNS:
            m, info = median(cols[c])
            meds[c] = m
            if m is not None:
                cells.append(f"{m:.2f} s")
            elif info == "not run":
                cells.append("-")
            else:
                cells.append("failed")
                notes.append(f"{n}, {c}: {info}")
        ratio = meds["nnc cold"] / meds["onnxruntime"] if meds["nnc cold"] and meds["onnxruntime"] else None
        lines.append(f"| {n} | " + " | ".join(cells) + f" | {f'{ratio:.0f}x' if ratio else '-'} |")
    return "\n".join(lines) + ("\n\n" + "\n".join(f"- {x}" for x in notes) if notes else "") + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--child", nargs=3, metavar=("ENGINE", "MODEL", "CACHE_DIR"), help=argparse.SUPPRESS)
    p.add_argument("--models", default=",".join(DEFAULT_MODELS), help="comma-separated bench model names")
    p.add_argument("--rounds", type=int, default=3, help="measurements per engine and model (medians shown)")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds before one measurement is given up")
    p.add_argument("--no-torch-compile", action="store_true", help="skip torch.compile")
    p.add_argument("--llvm-parts", action="store_true", help="also LLVM's CPU time per part of a split module")
    p.add_argument("--markdown", help="write the results page (e.g. bench/COMPILE.md)")
    p.add_argument("--note", default="", help="a line about the machine's state, put in the page")
    args = p.parse_args(argv)
    if args.child:
        child(*args.child)
        return 0
    names = [n for n in args.models.split(",") if n]
    load_before, start = load_average(), time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results = measure(names, args.rounds, args.timeout, not args.no_torch_compile)
    text = table(results)
    if args.llvm_parts:
        rows = {n: run_child("llvm parts", n, "-", args.timeout) for n in names}
        text += "\nLLVM's CPU time (optimise + emit, one process, seconds) on the whole module and on each part " \
                "of it split in 2 and 4; in brackets the largest part over the whole module, the wall time " \
                "of a split compile's LLVM phase relative to one process, on idle cores:\n\n" + parts_table(rows)
    print(text)
    if args.markdown:
        cpu = platform.processor() or platform.machine()
        header = (f"Taken {start} on {os.cpu_count()} cores ({cpu}), {args.rounds} rounds, medians; load average "
                  f"{load_before} at the start, {load_average()} at the end. {args.note}".strip())
        Path(args.markdown).write_text(PAGE.format(header=header, table=text, command=" ".join(sys.argv)))
    return 0


PAGE = """# Compile time: nnc vs onnxruntime vs torch.compile

Written by `bench/compile_time.py` (what each column times is in its docstring; every number is a
median over fresh processes). Cold: nothing cached; warm: nnc's compilation cache holds the model,
inductor's cache folder holds its compiled graph. onnxruntime has no compile cache: its column is
session creation.

{header}

{table}
Command: `{command}`
"""


if __name__ == "__main__":
    sys.exit(main())

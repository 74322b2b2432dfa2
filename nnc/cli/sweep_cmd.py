"""``nnc asic-sweep MODELS...``: simulate every configuration of a grid on every model (``nnc.sweep``),
on a local process pool (``--workers N``) or a Ray cluster (``--ray [ADDRESS]``), and write the
table (CSV/JSON), the Pareto chart (SVG) and the configurations on each latency-vs-energy and
latency-vs-area front."""

from __future__ import annotations

import argparse
import sys
from typing import Any, Callable

from .common import Formatter, dim_spec, write_files


def _list(kind: Callable[[str], Any]) -> Callable[[str], list[Any]]:
    def parse(text: str) -> list[Any]:
        try:
            out = [kind(s) for s in text.split(",") if s.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {text!r}") from None
        if not out:
            raise argparse.ArgumentTypeError("empty list")
        return out
    return parse


def cmd_asic_sweep(args: argparse.Namespace) -> int:
    from nnc.backends.asic.config import load_config
    from nnc.sweep import PoolExecutor, Progress, RayExecutor, config_grid, make_tasks, run_sweep
    from nnc.sweep_report import sweep_csv, sweep_json, sweep_summary, sweep_svg

    preset = args.asic_preset or "edge"
    base = load_config(preset)
    grid = config_grid(args.rows or [base.array_rows], args.cols, args.spad_kib or [base.input_spad_kib],
                       args.dram_gbps or [base.dram_gbps], args.dataflow or [base.dataflow], preset)
    tasks = make_tasks(args.models, grid, args.calibration, dict(args.dim or []))
    executor: Any = RayExecutor(args.ray) if args.ray else PoolExecutor(args.workers)
    try:
        if not args.quiet:
            print(f"nnc: {len(grid)} configuration(s) x {len(args.models)} model(s) = {len(tasks)} simulations on "
                  f"{executor.describe()}", file=sys.stderr)
            if not args.calibration:
                print("nnc: no --calibration given: int8 ranges are calibrated on random inputs", file=sys.stderr)
        progress = Progress(len(tasks), enabled=not args.quiet)
        rows = run_sweep(tasks, executor, on_row=progress.update)
    finally:
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    meta = {"preset": preset, "models": list(args.models), "configs": [c.name for c in grid],
            "executor": "ray" if args.ray else "pool"}
    files: dict[str, bytes] = {}
    if args.csv:
        files[args.csv] = sweep_csv(rows).encode()
    if args.json:
        files[args.json] = sweep_json(rows, meta).encode()
    if args.chart:
        files[args.chart] = sweep_svg(rows).encode()
    write_files(files)
    sys.stdout.write(sweep_summary(rows))
    for path in files:
        print(f"wrote {path}")
    return 0


def add_sweep_command(sub: Any) -> None:
    r = sub.add_parser(
        "asic-sweep", formatter_class=Formatter, help="simulate a grid of ASIC configurations x models",
        description="Quantize each MODEL to int8 and simulate it on every configuration of the grid (the "
                    "cross product of the lists, merged over --asic-preset). Prints the configurations on the "
                    "latency-vs-energy and latency-vs-area (mm2, MAC array + SRAM) Pareto fronts of each model "
                    "and overall (geometric mean over the models), "
                    "and writes the full table and a chart on request. A list left out keeps the preset's value.",
        epilog="examples:\n"
               "  nnc asic-sweep a.onnx b.onnx --rows 16,32,64 --spad-kib 64,256 --dataflow ws,os "
               "--csv t.csv --chart p.svg\n"
               "  nnc asic-sweep a.onnx --rows 8,16 --cols 8,16,32 --workers 4 --json t.json\n"
               "  nnc asic-sweep a.onnx --rows 16,32 --ray auto        # on the cluster of 'ray start'\n"
               "(docs/distributed.md)")
    r.add_argument("models", nargs="+", metavar="MODEL", help="ONNX models (.onnx) or nnc text IR (.nnc)")
    r.add_argument("--dim", action="append", type=dim_spec, metavar="SYMBOL=SIZE",
                   help="fix a symbolic input dim (every model)")
    g = r.add_argument_group("the grid")
    g.add_argument("--rows", type=_list(int), metavar="N,N..", help="systolic array rows")
    g.add_argument("--cols", type=_list(int), metavar="N,N..",
                   help="array columns (default: the same as --rows, i.e. square arrays)")
    g.add_argument("--spad-kib", type=_list(int), metavar="K,K..", help="input and weight scratchpad KiB (each)")
    g.add_argument("--dram-gbps", type=_list(float), metavar="G,G..", help="DRAM bandwidth, GB/s")
    g.add_argument("--dataflow", type=_list(str), metavar="ws,os", help="ws (weight-) or os (output-stationary)")
    g.add_argument("--asic-preset", metavar="NAME", default=None, help="the preset the grid is merged over (edge)")
    g.add_argument("--calibration", metavar="FILE.npz", help="calibration data (used for every model)")
    d = r.add_argument_group("where the simulations run")
    d.add_argument("--workers", type=int, default=None, metavar="N",
                   help="local process pool of N workers (default: one per CPU)")
    d.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="run as Ray tasks: 'auto' (default) joins the cluster of 'ray start', 'local' starts a "
                        "private instance, or ray://HOST:PORT")
    o = r.add_argument_group("outputs")
    o.add_argument("--csv", metavar="OUT.csv", help="write the table as CSV")
    o.add_argument("--json", metavar="OUT.json", help="write the table and fronts as JSON")
    o.add_argument("--chart", metavar="OUT.svg", help="write the Pareto chart (SVG): energy and area vs latency")
    r.add_argument("-q", "--quiet", action="store_true", help="no progress bar or notices")
    r.set_defaults(fn=cmd_asic_sweep)

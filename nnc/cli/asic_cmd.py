"""``nnc asic-report MODEL``: compile for the simulated ASIC (``nnc.compile(target="asic")``) and print
the per-layer table, with a Chrome-trace timeline, an SVG bar chart and SCALE-Sim files on request.
Without ``--calibration`` the model is calibrated on random inputs, and the command says so."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import nnc

from .common import Formatter, add_asic_flags, add_pipeline_flags, compile_options, dim_spec, write_files


def cmd_asic_report(args: argparse.Namespace) -> int:
    from nnc.backends.asic.export import layer_chart_svg, roofline_svg, trace_json, write_scalesim

    cm = nnc.compile(args.model, options=compile_options(args))
    table = cm.backend.summary(cm)  # the per-layer table; symbolic dims are an error saying so
    if not args.calibration and not args.quiet:
        print("nnc: no --calibration given: int8 ranges were calibrated on random inputs", file=sys.stderr)
    exe = cm.executable
    rep = cm.report[cm.target]
    sys.stdout.write(table)
    files: dict[str, bytes] = {}
    if args.trace:
        files[args.trace] = trace_json(exe.program, exe.timeline).encode()
    if args.chart:
        files[args.chart] = layer_chart_svg(rep).encode()
    if args.roofline:
        files[args.roofline] = roofline_svg(rep).encode()
    if args.report:
        files[args.report] = (json.dumps(cm.report, indent=2, default=str) + "\n").encode()
    write_files(files)
    for path in files:
        print(f"wrote {path}")
    if args.scalesim_dir:
        for path in write_scalesim(exe.program, args.scalesim_dir):
            print(f"wrote {path}")
    return 0


def add_asic_command(sub: Any) -> None:
    r = sub.add_parser("asic-report", formatter_class=Formatter, help="simulate a model on the ASIC and report",
                       description="Quantize MODEL to int8, compile it for the simulated ASIC and print the "
                                   "per-layer table (cycles, DMA, stalls, mapping efficiency, bytes, energy, "
                                   "roofline bound) and the totals (latency, fps vs 40 ms, TOPS, mJ).",
                       epilog="example:\n  nnc asic-report model.onnx --asic-preset x1 --trace t.json --chart c.svg")
    r.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx) or nnc text IR (.nnc)")
    r.add_argument("--trace", metavar="OUT.json", help="write a Chrome-trace/Perfetto timeline (one track per engine)")
    r.add_argument("--chart", metavar="OUT.svg", help="write a per-layer latency bar chart (SVG)")
    r.add_argument("--roofline", metavar="OUT.svg", help="write a roofline plot of the array layers (SVG)")
    r.add_argument("--scalesim-dir", metavar="DIR", help="write the equivalent SCALE-Sim v2 config and topology CSV")
    r.add_argument("--report", metavar="FILE.json", help="write the full compile report as JSON")
    r.add_argument("--dim", action="append", type=dim_spec, metavar="SYMBOL=SIZE", help="fix a symbolic input dim")
    r.add_argument("-q", "--quiet", action="store_true", help="no calibration notice")
    add_asic_flags(r)
    add_pipeline_flags(r)
    r.set_defaults(fn=cmd_asic_report, target="asic")

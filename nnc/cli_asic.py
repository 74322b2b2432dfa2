"""The ASIC parts of the command line: ``nnc compile --target asic`` (report, ``--emit asm``) and
``nnc asic-report MODEL`` (per-layer table, Chrome-trace timeline, SVG bar chart, SCALE-Sim files).

Without ``--calibration`` the model is calibrated on random inputs, and the CLI says so on stderr.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

import nnc


def add_asic_flags(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("asic target")
    a.add_argument("--asic-preset", metavar="NAME", default=None, help="machine preset: edge (default) or x1")
    a.add_argument("--asic-config", metavar="FILE.json", help="partial JSON config merged over the preset")
    if "--calibration" not in p._option_string_actions:  # compile shares the quantization flags
        a.add_argument("--calibration", metavar="DATA.npz", help="calibration inputs for int8 quantization "
                                                                  "(default: random inputs)")


def _asic_options(args: argparse.Namespace) -> dict[str, Any]:
    from .cli_pipeline import pipeline_options

    opts: dict[str, Any] = {"asic_preset": getattr(args, "asic_preset", None) or "edge"}
    if getattr(args, "asic_config", None):
        opts["asic_config"] = args.asic_config
    if getattr(args, "calibration", None):
        opts["calibration"] = args.calibration
    opts.update({k: v for k, v in pipeline_options(args).items() if k not in ("opt_level", "quantize")})
    return opts


def _compile(args: argparse.Namespace) -> Any:
    cm = nnc.compile(args.model, target="asic", **_asic_options(args))
    if "asic" not in cm.report:  # symbolic dims: the program is built per input signature at run time
        dims = ", ".join(f"{n}: {t}" for n, t in cm.input_types.items())
        raise nnc.ir.NncError(f"asic: {args.model} has symbolic input dims ({dims}); the ASIC program and its "
                              f"report need static shapes (export the model with fixed input sizes)")
    if not getattr(args, "calibration", None) and not getattr(args, "quiet", False):
        # said after a successful compile, so an error stays the only line
        print("nnc: no --calibration given: int8 ranges were calibrated on random inputs", file=sys.stderr)
    return cm


def cmd_compile_asic(args: argparse.Namespace) -> int:
    from nnc.backends.asic.export import text_table

    from .cli import write_files
    from .cli_pipeline import write_report

    if args.emit not in (None, "asm"):
        raise nnc.ir.NncError(f"--emit {args.emit} is not available for --target asic (use --emit asm)")
    cm = _compile(args)
    write_report(args, cm.report)
    exe = cm.executable
    if args.emit == "asm":
        if args.output:
            write_files({args.output: exe.asm().encode()})
        else:
            sys.stdout.write(exe.asm())
        return 0
    if not args.quiet:
        sys.stdout.write(text_table(cm.report["asic"]))
    return 0


def cmd_asic_report(args: argparse.Namespace) -> int:
    from nnc.backends.asic.export import layer_chart_svg, text_table, trace_json, write_scalesim

    from .cli import write_files

    cm = _compile(args)
    exe = cm.executable
    rep = cm.report["asic"]
    sys.stdout.write(text_table(rep))
    files: dict[str, bytes] = {}
    if args.trace:
        files[args.trace] = trace_json(exe.program, exe.timeline).encode()
    if args.chart:
        files[args.chart] = layer_chart_svg(rep).encode()
    if args.report:
        files[args.report] = (json.dumps(cm.report, indent=2, default=str) + "\n").encode()
    write_files(files)
    for path in files:
        print(f"wrote {path}")
    if args.scalesim_dir:
        for path in write_scalesim(exe.program, args.scalesim_dir):
            print(f"wrote {path}")
    return 0


def add_asic_command(sub: Any, formatter: type) -> None:
    r = sub.add_parser("asic-report", formatter_class=formatter, help="simulate a model on the ASIC and report",
                       description="Quantize MODEL to int8, compile it for the simulated ASIC and print the "
                                   "per-layer table (cycles, DMA, stalls, mapping efficiency, bytes, energy, "
                                   "roofline bound) and the totals (latency, fps vs 40 ms, TOPS, mJ).",
                       epilog="example:\n  nnc asic-report model.onnx --asic-preset x1 --trace t.json --chart c.svg")
    r.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx) or nnc text IR (.nnc)")
    r.add_argument("--trace", metavar="OUT.json", help="write a Chrome-trace/Perfetto timeline (one track per engine)")
    r.add_argument("--chart", metavar="OUT.svg", help="write a per-layer latency bar chart (SVG)")
    r.add_argument("--scalesim-dir", metavar="DIR", help="write the equivalent SCALE-Sim v2 config and topology CSV")
    r.add_argument("--report", metavar="FILE.json", help="write the full compile report as JSON")
    r.add_argument("-q", "--quiet", action="store_true", help="no calibration notice")
    add_asic_flags(r)
    r.set_defaults(fn=cmd_asic_report)

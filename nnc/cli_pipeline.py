"""The CLI flags of the optimisation pipeline and the compile report (shared by compile and run)."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_pipeline_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("optimisation pipeline (see docs/passes.md)")
    g.add_argument("-O", dest="opt_level", type=int, choices=(0, 1, 2, 3), metavar="LEVEL",
                   help="optimisation level 0..3 (default 3): -O0 freeze only ... -O3 adds fusion")
    g.add_argument("--passes", metavar="PIPELINE",
                   help='an explicit pipeline instead of -O, e.g. "freeze,fold-constants,fuse{max-ops=8},dce"')
    g.add_argument("--disable-pass", action="append", metavar="PASS", help="skip this pass (repeatable)")
    g.add_argument("--load-pass-plugin", action="append", metavar="FILE.py",
                   help="import a Python file that registers passes (see docs/writing-a-pass.md)")
    g.add_argument("--print-ir-before", action="append", metavar="PASS", help="print the IR before PASS ('all')")
    g.add_argument("--print-ir-after", action="append", metavar="PASS", help="print the IR after PASS ('all')")
    g.add_argument("--print-ir-after-all", action="store_true", help="print the IR after every pass")
    g.add_argument("--print-ir-after-change", action="store_true",
                   help="with --print-ir-after: only when the pass changed the IR (alone: after every change)")
    g.add_argument("--verify-each", action="store_true", help="run the IR verifier after every pass")
    g.add_argument("--time-passes", action="store_true", help="print a table of the time each pass took")
    g.add_argument("--dump-dir", metavar="DIR", help="write the IR after each pass to DIR/NN-pass.nnc")
    g.add_argument("--explain-fusion", action="store_true", help="record why fusion candidates were rejected")
    g.add_argument("--report", metavar="FILE.json", help="write the compile report (passes, kernels, memory)")
    q = p.add_argument_group("post-training quantization (see docs/quantization.md)")
    q.add_argument("--quantize", choices=("int8", "qdq"), help="int8: quantize the model (weights per channel, "
                   "activations per tensor) after freezing and folding; qdq: run an imported QDQ model in integers")
    q.add_argument("--calibration", metavar="DATA.npz", help="calibration inputs: arrays keyed by input name, "
                                                            "samples stacked on a leading axis")
    q.add_argument("--observer", choices=("minmax", "percentile", "entropy"), default=None,
                   help="how activation ranges are chosen from the calibration data (default minmax)")


def pipeline_options(args: argparse.Namespace) -> dict[str, Any]:
    after = list(getattr(args, "print_ir_after", None) or [])
    if getattr(args, "print_ir_after_all", False):
        after.append("all")
    opts: dict[str, Any] = {
        "opt_level": getattr(args, "opt_level", None), "passes": getattr(args, "passes", None),
        "disable_passes": getattr(args, "disable_pass", None), "pass_plugins": getattr(args, "load_pass_plugin", None),
        "print_ir_before": getattr(args, "print_ir_before", None), "print_ir_after": after or None,
        "print_ir_after_change": getattr(args, "print_ir_after_change", False) or None,
        "verify_each": getattr(args, "verify_each", False) or None,
        "time_passes": getattr(args, "time_passes", False) or None, "dump_dir": getattr(args, "dump_dir", None),
        "explain_fusion": getattr(args, "explain_fusion", False) or None,
        "quantize": getattr(args, "quantize", None), "calibration": getattr(args, "calibration", None),
        "observer": getattr(args, "observer", None),
    }
    if opts["quantize"] == "int8" and not opts["calibration"]:
        print("nnc: no --calibration data given: calibrating on 8 random standard-normal inputs "
              "(scales will not fit real data)", file=sys.stderr)
    return {k: v for k, v in opts.items() if v is not None}


def write_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    path = getattr(args, "report", None)
    if not path:
        return
    from .cli import write_files

    write_files({path: (json.dumps(report, indent=2, default=str) + "\n").encode()})

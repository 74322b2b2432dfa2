"""What the CLI commands share: the compile flags, ``CompileOptions`` from them, output files,
messages. Every command module depends on this one, never on another command.

Flags are declared in groups (pipeline, quantization, shapes, x86, asic, training) that a command
adds when they make sense for it; ``compile_options`` turns whatever the command parsed into one
``CompileOptions``, which ``nnc.compile`` validates against the target and mode, so a flag that
cannot apply is an error naming it rather than silently ignored.
"""

from __future__ import annotations

import argparse
import io
import json
import sys
from typing import Any

import numpy as np

from nnc.backends.artifact import write_files
from nnc.backends.options import MODES, CompileOptions
from nnc.backends.registry import describe, get_backend
from nnc.ir import Module, NncError, TensorType
from nnc.passes.training.losses import LOSSES, REDUCTIONS
from nnc.passes.training.optimizers import OPTIMIZERS

PROG = "nnc"

__all__ = ["MODES", "PROG", "Formatter", "add_compile_flags", "compile_options", "dim_spec", "say", "write_files",
           "write_report", "npy_bytes"]


class Formatter(argparse.RawDescriptionHelpFormatter):
    """Wraps descriptions to the terminal like argparse does, but keeps the examples' lines as written."""

    def _fill_text(self, text: str, width: int, indent: str) -> str:
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


def say(args: argparse.Namespace, text: str = "") -> None:
    if not getattr(args, "quiet", False):
        print(text)


def npy_bytes(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def dim_spec(text: str) -> tuple[str, int]:
    name, sep, value = text.partition("=")
    if not sep or not name or not value.isdigit():
        raise argparse.ArgumentTypeError(f"expected SYMBOL=SIZE (e.g. N=1), got {text!r}")
    return name, int(value)


def positive_int(text: str) -> int:
    """An argparse type: an integer >= 1."""
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}")
    return n


def target_help(default: str) -> str:
    return f"compilation target (default: {default}). Available: " + \
        "; ".join(f"{n}: {d}" for n, d in describe().items())


def op_count(m: Module) -> int:
    return sum(1 for g in m.graphs.values() for op in g.ops if op.opname != "const")


def signature(types: dict[str, TensorType]) -> str:
    return ", ".join(f"{n}: {t}" for n, t in types.items()) or "(none)"


def size_text(nbytes: float) -> str:
    if nbytes < 1024:
        return f"{nbytes:.0f} B"
    for unit in ("KB", "MB"):
        nbytes /= 1024
        if nbytes < 1024:
            return f"{nbytes:.1f} {unit}"
    return f"{nbytes / 1024:.1f} GB"


def how_compiled(cm: Any) -> str:
    """Where an x86 model's machine code came from, for the compile summary."""
    exe = cm.executable
    shapes = cm.report.get("shapes") or {}
    if getattr(exe, "shape_inputs", None) is not None:  # nnc.specializer.Specializer
        why = shapes.get("reason") or (f"shape inputs {', '.join(exe.shape_inputs)}" if exe.shape_inputs
                                       else "symbolic dims")
        return f"compiled at the first run for each input signature ({why})"
    status = getattr(exe, "cache_status", None)
    how = {None: "", "off": "", "hit": "loaded from the compilation cache", "miss": "generated (now cached)"}.get(
        status, f"generated (cache entry rebuilt: {status})")
    if shapes.get("generic"):
        dims = ", ".join(shapes.get("symbols") or []) or "its ? dims"
        how = (how + "; " if how else "") + f"shape-generic: {dims} read at run time (one compile for every size)"
    seg = (cm.report.get("x86") or {}).get("segments")
    if seg:
        how = (how + "; " if how else "") + (f"{seg['compiled']} compiled segments and {seg['host_steps']} host "
                                             f"steps ({seg['reason']})")
    return how


# -- the compile flags ------------------------------------------------------------------------------------
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
    q = p.add_argument_group("post-training quantization (see docs/quantization.md)")
    q.add_argument("--quantize", choices=("int8", "qdq", "int8-weights", "int4-weights"),
                   help="int8: quantize the model (weights per channel, activations per tensor) after freezing and "
                        "folding; qdq: run an imported QDQ model in integers; int8-weights / int4-weights: "
                        "weight-only (matmul weights as 8-bit per channel or 4-bit groups, float activations; "
                        "for memory-bound decoding)")
    q.add_argument("--quantize-group", type=int, metavar="G", help="int4-weights: weights per scale along the "
                                                                   "reduction dim: 32 (default), 64 or 128")
    q.add_argument("--quantize-asymmetric", action="store_true", default=None,
                   help="int8/int4-weights: a zero point per block (default: symmetric, no zero points)")
    q.add_argument("--quantize-head", choices=("int8", "int4", "float"), default=None,
                   help="int8/int4-weights: the output layer (a matmul whose result is a model output, as a "
                        "language model's head): int8 per channel (default), int4 like the rest (int4-weights "
                        "only) or float")
    q.add_argument("--calibration", metavar="DATA.npz", help="calibration inputs: arrays keyed by input name, "
                                                            "samples stacked on a leading axis")
    q.add_argument("--observer", choices=("minmax", "percentile", "entropy"), default=None,
                   help="how activation ranges are chosen from the calibration data (default minmax)")


def add_x86_flags(p: argparse.ArgumentParser) -> None:
    x = p.add_argument_group("x86 target")
    x.add_argument("--cpu", metavar="NAME", help="CPU to compile for (default: the host's; e.g. x86-64, haswell)")
    x.add_argument("--target-features", metavar="STR", help="LLVM feature list, e.g. +avx2,+fma,-avx512f "
                                                            "(default: the host's, or those of --cpu)")
    x.add_argument("--threads", type=int, metavar="N",
                   help="threads per model (default: $NNC_NUM_THREADS or all cores)")
    x.add_argument("--no-cache", action="store_true", help="bypass the compilation cache (~/.cache/nnc; NNC_CACHE_DIR)")
    x.add_argument("--tuning-db", metavar="FILE.jsonl", help="kernel schedules measured by 'nnc tune' (default: "
                                                            "$NNC_TUNING_DB; docs/tuning.md)")
    x.add_argument("--max-dim", action="append", type=dim_spec, metavar="SYMBOL=SIZE",
                   help="the maximum of a symbolic input dim, e.g. --max-dim batch=8: the code stays shape-generic, "
                        "runs check the bound, and a library (-o FILE.so) takes the dim at run time, its arena "
                        "planned at the maxima (docs/dynamic-shapes.md)")


def add_asic_flags(p: argparse.ArgumentParser) -> None:
    a = p.add_argument_group("asic target")
    a.add_argument("--asic-preset", metavar="NAME", default=None, help="machine preset: edge (default) or x1")
    a.add_argument("--asic-config", metavar="FILE.json", help="partial JSON config merged over the preset")


def add_train_flags(p: argparse.ArgumentParser, defaults: bool = False) -> None:
    t = p.add_argument_group("training (--mode train)" if not defaults else "training")
    t.add_argument("--loss", choices=LOSSES, default="cross_entropy" if defaults else None,
                   help="loss on the model's first output (default cross_entropy)")
    t.add_argument("--loss-output", metavar="NAME", help="attach the loss to this output instead")
    t.add_argument("--reduction", choices=REDUCTIONS, default=None, help="loss reduction (default mean)")
    t.add_argument("--label-smoothing", type=float, default=None, help="cross_entropy label smoothing")
    t.add_argument("--label-name", default=None, help="name of the labels input (default labels)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd" if defaults else None, help="default sgd")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-2 for sgd, 1e-3 else)")
    t.add_argument("--momentum", type=float, default=None, help="sgd momentum")
    t.add_argument("--nesterov", action="store_true", default=None, help="sgd Nesterov momentum")
    t.add_argument("--weight-decay", type=float, default=None, help="L2 (sgd, adam) or decoupled (adamw)")
    t.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"), default=None, help="adam/adamw betas")
    t.add_argument("--batch-size", type=int, default=None, help="the (static) batch size, for models whose "
                                                                "batch dimension is symbolic")
    t.add_argument("--freeze", action="append", metavar="NAME", help="a parameter not to train; repeatable")
    t.add_argument("--memory-budget", metavar="BYTES|FRACTION", default=None,
                   help="rematerialise activations to fit the step's arena in BYTES (64MB, 1.5GiB) or a "
                        "FRACTION of it (0.5); the report gives memory and extra FLOPs (docs/autodiff.md)")


def add_compile_flags(p: argparse.ArgumentParser, target_default: str, mode: bool = True, report: bool = True,
                      dims_help: str = "fix a symbolic input dim at compile time, e.g. --dim N=1") -> None:
    """The flags of a compile: target, mode, pipeline, quantization, dims, x86, asic, training, -q."""
    p.add_argument("--target", "-t", default=target_default, help=target_help(target_default))
    if mode:
        p.add_argument("--mode", choices=MODES, default="infer", help="infer (default) or train")
    p.add_argument("--dim", action="append", type=dim_spec, metavar="SYMBOL=SIZE", help=dims_help)
    if report:
        p.add_argument("--report", metavar="FILE.json", help="write the compile report (passes, kernels, memory)")
    p.add_argument("-q", "--quiet", action="store_true", help="print nothing but results; no compile progress")
    add_pipeline_flags(p)
    add_x86_flags(p)
    add_asic_flags(p)
    if mode:
        add_train_flags(p)


# flag attribute -> CompileOptions field, for the flags whose names differ
_RENAMED = {"disable_pass": "disable_passes", "load_pass_plugin": "pass_plugins", "freeze": "frozen"}
TRAIN_FLAGS = ("loss", "loss_output", "reduction", "label_smoothing", "label_name", "optimizer", "lr", "momentum",
          "nesterov", "weight_decay", "betas", "batch_size", "freeze", "memory_budget")
_PLAIN = ("opt_level", "passes", "disable_pass", "load_pass_plugin", "print_ir_before", "print_ir_after",
          "dump_dir", "quantize", "quantize_group", "quantize_asymmetric", "quantize_head", "calibration", "observer",
          "cpu", "target_features", "threads", "tuning_db", "asic_preset", "asic_config") + TRAIN_FLAGS
_SWITCHES = ("print_ir_after_change", "verify_each", "time_passes", "explain_fusion")


def compile_options(args: argparse.Namespace, **extra: Any) -> CompileOptions:
    """One ``CompileOptions`` from the parsed flags (those the command has), validated for the target."""
    opts: dict[str, Any] = {}
    for flag in _PLAIN:
        v = getattr(args, flag, None)
        if v is not None:
            opts[_RENAMED.get(flag, flag)] = v
    for flag in _SWITCHES:
        if getattr(args, flag, False):
            opts[flag] = True
    if getattr(args, "print_ir_after_all", False):
        opts["print_ir_after"] = list(opts.get("print_ir_after") or []) + ["all"]
    if getattr(args, "no_cache", False):
        opts["cache"] = False
    if getattr(args, "quiet", False):
        opts["quiet"] = True
    if getattr(args, "dim", None):
        opts["dims"] = dict(args.dim)
    if getattr(args, "max_dim", None):
        opts["max_dims"] = dict(args.max_dim)
    opts.update(extra)
    options = CompileOptions.make(args.target, getattr(args, "mode", "infer"), **opts)
    get_backend(options.target).check(options)
    if options.quantize == "int8" and options.calibration is None:
        print(f"{PROG}: no --calibration data given: calibrating on 8 random standard-normal inputs "
              "(scales will not fit real data)", file=sys.stderr)
    return options


def check_output_paths(args: argparse.Namespace, artifact: list[str]) -> None:
    """The report must not land on a file the artifact writes (model.json is the library's manifest)."""
    import os

    report = getattr(args, "report", None)
    if report and os.path.abspath(report) in {os.path.abspath(p) for p in artifact}:
        raise NncError(f"--report {report} would overwrite a file the compiled model writes "
                       f"({', '.join(artifact)}); name the report differently")


def write_report(args: argparse.Namespace, report: dict[str, Any]) -> None:
    path = getattr(args, "report", None)
    if path:
        write_files({path: (json.dumps(report, indent=2, default=str) + "\n").encode()})

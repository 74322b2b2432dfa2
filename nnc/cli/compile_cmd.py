"""``nnc compile``: ``nnc.compile`` and, with ``-o``, ``CompiledModel.save`` (``--emit``: a stage of
that same compile). Training steps (``--mode train``) save through ``TrainingSession.save_step``."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import nnc
from nnc.backends.registry import get_backend
from nnc.ir import NncError
from nnc.ir.specialize import input_symbols
from nnc.loading import check_weights

from .common import (
    Formatter,
    add_compile_flags,
    check_output_paths,
    compile_options,
    how_compiled,
    op_count,
    say,
    signature,
    size_text,
    write_files,
    write_report,
)


def cmd_compile(args: argparse.Namespace) -> int:
    backend = get_backend(args.target)
    if args.emit and args.emit not in backend.emit_forms:
        forms = ", ".join(backend.emit_forms) or "none"
        raise NncError(f"--emit {args.emit} is not available for --target {backend.name} (its forms: {forms})")
    if args.emit == "obj" and not args.output:
        raise NncError("--emit obj writes a binary file; give -o FILE")
    if args.output and not args.emit:
        backend.check_artifact_path(args.output)
        check_output_paths(args, backend.artifact_files(args.output))
    # training imports the model with its weights as parameters: it takes the path itself
    module = nnc.load_module(args.model) if args.mode == "infer" else args.model
    if args.mode == "infer":
        check_weights(module, args.model)
    extra: dict[str, Any] = {}
    bound = {}
    if backend.static_shapes and (args.output or args.emit) and args.mode == "infer":
        # an artifact has static shapes: symbolic input dims not given with --dim become 1 (batch 1)
        given = dict(args.dim or [])
        bounded = dict(getattr(args, "max_dim", None) or [])
        unknown = sorted(set(bounded) - set(input_symbols(module)))
        if unknown:
            raise NncError(f"--max-dim names {', '.join(unknown)}, which no input dim of {args.model} is (its "
                           f"symbolic dims: {', '.join(input_symbols(module)) or 'none'})")
        bound = {s: 1 for s in input_symbols(module) if s not in given and s not in bounded}
        if bound:
            extra["dims"] = {**given, **bound}
    if args.emit in ("llvm", "asm") and "keep_llvm" in backend.options:
        extra["keep_llvm"] = True
    options = compile_options(args, **extra)
    if bound:
        say(args, "symbolic dims fixed: " + ", ".join(f"{k}={v}" for k, v in bound.items()))
        if backend.name == "x86" and args.output and not args.emit:
            say(args, "  (for a library that takes them at run time, give their maxima: "
                      + " ".join(f"--max-dim {k}=SIZE" for k in bound) + ")")
    t0 = time.perf_counter()
    cm = nnc.compile(module, options=options)
    seconds = time.perf_counter() - t0
    write_report(args, cm.report)
    if args.mode == "train":
        return _train_summary(args, cm, seconds)
    if args.emit:
        data = cm.emit(args.emit)
        if args.output:
            write_files({args.output: data})
            say(args, f"wrote {args.output} ({args.emit}, {size_text(len(data))})")
        else:
            sys.stdout.write(data.decode())
        return 0
    m = cm.module
    say(args, f"compiled {args.model} for target {args.target} (mode {args.mode}) in {seconds * 1e3:.0f} ms: "
              f"{op_count(m)} ops, {size_text(m.weights_bytes())} of weights")
    say(args, f"  inputs:  {signature(cm.input_types)}")
    say(args, f"  outputs: {signature(cm.output_types)}")
    if how_compiled(cm):
        say(args, f"  code:    {how_compiled(cm)}")
    if not args.quiet:
        sys.stdout.write(backend.summary(cm))
    if not args.output:
        if backend.artifact_suffixes:
            say(args, f"nothing written; pass -o FILE{backend.artifact_suffixes[0]} to save the compiled model")
        return 0
    files = cm.save(args.output)
    say(args, f"wrote {', '.join(files)}")
    if cm.options.max_dims and not bound:
        say(args, "  dims at run time: " + ", ".join(f"{k} in [1, {v}]" for k, v in cm.options.max_dims.items()))
    return 0


def _train_summary(args: argparse.Namespace, sess: Any, seconds: float) -> int:
    sig = sess.signature
    say(args, f"compiled the training step of {args.model} for {args.target} in {seconds:.1f} s: "
              f"{len(sig.params)} parameters, optimizer {sess.optimizer.name}")
    shapes = sess.report.get("shapes")
    if shapes:
        say(args, f"  shape-generic: one compile for every {', '.join(shapes['symbols'])}" if shapes["generic"]
            else f"  compiled per input shape at run time: {shapes['reason']}")
    if not args.output:
        say(args, "nothing written; pass -o FILE.so (--target x86) to save the step as a library")
        return 0
    files = sess.save_step(args.output)
    say(args, f"wrote {', '.join(files)} (the last: initial parameters and optimizer state)")
    say(args, f"  inputs:  {', '.join([*sig.data_inputs, sig.label, sig.lr, sig.step])}, then "
              f"{len(sig.params) + len(sig.buffers) + len(sig.state)} parameter/state tensors")
    say(args, "  outputs: loss, then <name>.new for each parameter/state tensor")
    return 0


def add_compile_command(sub: Any) -> None:
    c = sub.add_parser("compile", formatter_class=Formatter, help="compile a model for a target",
                       description="Import MODEL, optimise it and compile it for a target (nnc.compile). With -o, "
                                   "save the compiled model: x86 writes a shared library with its C header and "
                                   "manifest (FILE.so, FILE.h, FILE.json), reference the text IR (FILE.nnc, "
                                   "FILE.npz, FILE.json); nnc.load(FILE) and 'nnc run FILE' run it again. Every "
                                   "flag applies to the saved model; one that cannot apply is an error.",
                       epilog="examples:\n  nnc compile examples/mlp.onnx --target x86 -O3 -o mlp.so --report r.json\n"
                              "  nnc compile m.onnx -t x86 --quantize int8 --calibration calib.npz -o m_int8.so\n"
                              "  nnc compile examples/mlp.onnx --target reference -o mlp.nnc")
    c.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx), nnc text IR (.nnc) or a .pt2 program")
    c.add_argument("-o", "--output", metavar="OUT",
                   help="where to save the compiled model (*.so for x86, *.nnc for reference)")
    c.add_argument("--emit", choices=("llvm", "asm", "obj"),
                   help="write this stage of the compile instead (x86: LLVM IR after optimisation, assembly, object "
                        "file; asic: asm, its program); llvm and asm go to stdout without -o")
    add_compile_flags(c, "reference")
    c.set_defaults(fn=cmd_compile)

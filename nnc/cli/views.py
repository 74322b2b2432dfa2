"""CLI commands that show a model: ``nnc dump`` (text IR or a graph picture, optionally after a
given pass) and ``nnc memory`` (the memory plan as a table and an SVG picture)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any

import nnc
from nnc.backends.onnx_export import export_onnx
from nnc.ir import NncError, print_module
from nnc.ir.specialize import bind_dims, input_symbols
from nnc.passes.liveness import DynamicShapeError
from nnc.passes.pipeline import format_pipeline, parse_pipeline
from nnc.passes.plan_memory import plan_graph
from nnc.pipeline import optimize, pipeline_string

from ..graph_views import graph_svg, to_dot
from ..memory_picture import PLOT_HINT, memory_picture, memory_png, memory_svg, memory_table
from .common import Formatter, dim_spec, write_files


def _load(args: argparse.Namespace, upto: str | None = None, default_level: int | None = None):
    """Import the model, bind --dim sizes, and run the pipeline (up to and including ``upto``)."""
    module = nnc.load_module(args.model)
    if getattr(args, "dim", None):
        module = _bind_dims(module, args)
    opts: dict[str, Any] = {}
    level = getattr(args, "opt_level", None)
    if level is None:
        level = default_level
    if getattr(args, "passes", None):
        opts["passes"] = args.passes
    if level is None and not opts and not upto:
        return module
    if level is not None:
        opts["opt_level"] = level
    if upto:
        items = parse_pipeline(pipeline_string("infer", opts))
        names = [n for n, _ in items]
        if upto not in names:
            raise NncError(f"pass {upto!r} is not in the pipeline {format_pipeline(items)}")
        opts["passes"] = format_pipeline(items[: names.index(upto) + 1])
    return optimize(module, "infer", opts)[0]


def _bind_dims(module: Any, args: argparse.Namespace) -> Any:
    """Fix the --dim sizes with the compile's binding (``ir.specialize.bind_dims``, which refuses a
    symbol the model does not have, as nnc compile does); every symbolic input dim must get one."""
    dims = dict(getattr(args, "dim", None) or [])
    module = bind_dims(module, dims) if dims else module
    missing = input_symbols(module)
    if missing:
        raise NncError(f"give a size for symbolic dim(s) {', '.join(missing)} with --dim NAME=SIZE")
    return module


def _write(path: str | None, data: bytes) -> None:
    if path:
        write_files({path: data})
    else:
        sys.stdout.write(data.decode())


def cmd_dump(args: argparse.Namespace) -> int:
    times = None
    if args.profile:
        if args.format != "svg":
            raise NncError("--profile annotates the graph picture: use it with --format svg")
        from nnc.backends.x86.profile import kernel_times_from_trace

        times = kernel_times_from_trace(args.profile)
    # a profile times the kernels of the -O3 graph (fused groups): draw that graph unless told otherwise
    module = _load(args, args.after, default_level=3 if times is not None else None)
    if args.format == "onnx":
        if not args.output:
            raise NncError("--format onnx writes a binary file: give it with -o FILE.onnx")
        write_files({args.output: export_onnx(module).SerializeToString()})
        return 0
    if args.format == "text":
        text = print_module(module)
        _write(args.output, (text if text.endswith("\n") else text + "\n").encode())
        return 0
    if args.format == "dot":
        _write(args.output, to_dot(module, show_constants=args.show_constants).encode())
        return 0
    _write(args.output, graph_svg(module, show_constants=args.show_constants, kernel_times=times).encode())
    return 0


def _train_step(args: argparse.Namespace):
    """The -O training step of MODEL (forward, loss, backward, update in one graph), as `nnc compile --mode train`
    builds it."""
    from nnc.frontends.onnx.importer import import_model
    from nnc.passes.training.step import build_train_step

    if not str(args.model).endswith(".onnx"):
        raise NncError(f"--mode train needs an ONNX model (its initializers become the trained parameters), "
                       f"not {args.model}")
    module = import_model(str(args.model), weights="param")
    step, _ = build_train_step(_bind_dims(module, args))
    opts: dict[str, Any] = {"opt_level": 3 if args.opt_level is None else args.opt_level}
    if args.memory_budget:
        opts["memory_budget"] = args.memory_budget
    return optimize(step, "train", opts)[0]


def cmd_memory(args: argparse.Namespace) -> int:
    if args.memory_budget and args.mode != "train":
        raise NncError("--memory-budget applies to --mode train")
    module = _train_step(args) if args.mode == "train" else _load(args, default_level=3)
    try:
        plan = plan_graph(module.main)
    except DynamicShapeError as e:
        raise NncError(f"{e}; give sizes with --dim NAME=SIZE") from None
    lv = plan.liveness
    ops = module.main.ops
    print(f"{'buffer':>6} {'bytes':>12} {'offset':>12} {'live ops':>11}  values")
    for b in sorted(lv.buffers, key=lambda b: (plan.offsets[b.id], b.start)):
        names = ", ".join("%" + v.name for v in b.values)
        print(f"{b.id:>6} {b.size:>12,} {plan.offsets[b.id]:>12,} {b.start:>5}..{b.end:<5}  {names}")
    pic = memory_picture(plan, module.main, os.path.basename(str(args.model)))
    if not pic.op_index:
        raise NncError("no op runs in this graph (only constants and inputs): there is no memory plan to draw")
    peak_op = ops[pic.op_index[pic.peak]]
    print(f"peak {pic.live_bytes[pic.peak]:,} B live at op {pic.op_index[pic.peak]} ({peak_op.opname} "
          f"%{peak_op.results[0].name})" + (f"; backward starts at op {pic.op_index[pic.backward_start]}, "
                                           f"{len(pic.recomputed)} ops recomputed by remat"
                                           if pic.backward_start is not None else ""))
    print(f"arena {plan.arena_bytes:,} B ({plan.strategy}); lower bound {plan.lower_bound_bytes:,} B; "
          f"no reuse {plan.no_reuse_bytes:,} B; {lv.in_place} in place; weights {module.weights_bytes():,} B")
    out = args.picture or os.path.splitext(os.path.basename(str(args.model)))[0] + "-memory.svg"
    if out.lower().endswith(".png"):
        try:
            memory_png(pic, out)
        except ImportError:
            print(f"nnc: a PNG picture needs matplotlib ({PLOT_HINT}); the live bytes per op instead "
                  "(or use --picture FILE.svg):", file=sys.stderr)
            sys.stdout.write(memory_table(pic))
            return 0
    else:
        write_files({out: memory_svg(pic).encode()})
    print(f"wrote {out}")
    return 0


def add_view_commands(sub: Any) -> None:
    formatter = Formatter
    d = sub.add_parser("dump", formatter_class=formatter, help="print a model's IR, or draw its graph",
                       description="Import MODEL and print its nnc text IR (weights by reference, @name), or "
                                   "its dataflow graph as Graphviz DOT or SVG (fused groups drawn as clusters). "
                                   "With --after PASS, the IR after that pass of the -O pipeline.",
                       epilog="examples:\n  nnc dump examples/mlp.onnx -o mlp.txt\n"
                              "  nnc dump examples/cnn.onnx --format dot --after fuse -o cnn.dot\n"
                              "  nnc dump examples/cnn.onnx --format svg --profile trace.json -o cnn.svg\n"
                              "  nnc dump examples/cnn.onnx --format onnx --after fuse --dim N=1 -o fused.onnx")
    d.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx) or nnc text IR (.nnc)")
    d.add_argument("-o", "--output", metavar="FILE", help="write to FILE instead of stdout")
    d.add_argument("--format", choices=("text", "dot", "svg", "onnx"), default="text",
                   help="text IR (default), Graphviz DOT, SVG (laid out by nnc, no Graphviz needed), or ONNX "
                        "(fused groups as local functions, "
                        "nnc-only ops in the ai.nnc domain; needs -o)")
    d.add_argument("--after", metavar="PASS", help="run the pipeline up to and including PASS first")
    d.add_argument("-O", dest="opt_level", type=int, choices=(0, 1, 2, 3), metavar="LEVEL",
                   help="optimisation level of the pipeline for --after (default 3)")
    d.add_argument("--passes", metavar="PIPELINE", help="run this pipeline first")
    d.add_argument("--dim", action="append", type=dim_spec, metavar="SYMBOL=SIZE", help="bind a symbolic dim")
    d.add_argument("--show-constants", action="store_true", help="draw constants (weights) as nodes too")
    d.add_argument("--profile", metavar="TRACE.json",
                   help="with --format svg: write each kernel's time (a trace from nnc run --profile TRACE.json) "
                        "on its node, shaded by time; draws the -O3 graph unless -O/--passes/--after say otherwise")
    d.set_defaults(fn=cmd_dump)

    m = sub.add_parser("memory", formatter_class=formatter, help="show the memory plan of a model",
                       description="Plan the arena of MODEL after the -O pipeline: print each buffer (size, "
                                   "offset, the ops it is live over, the values sharing it), the arena beside "
                                   "the lower bound and no-reuse sizes, and write a picture (SVG) of buffers "
                                   "as boxes over time x offset.",
                       epilog="example:\n  nnc memory examples/cnn.onnx --dim N=1 --picture cnn-memory.svg")
    m.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx) or nnc text IR (.nnc)")
    m.add_argument("--dim", action="append", type=dim_spec, metavar="SYMBOL=SIZE", help="bind a symbolic dim")
    m.add_argument("-O", dest="opt_level", type=int, choices=(0, 1, 2, 3), metavar="LEVEL",
                   help="optimisation level before planning (default 3)")
    m.add_argument("--passes", metavar="PIPELINE", help="run this pipeline before planning")
    m.add_argument("--mode", choices=("infer", "train"), default="infer",
                   help="plan the inference graph (default) or the training step (forward, loss, backward, update)")
    m.add_argument("--memory-budget", metavar="BYTES|FRACTION",
                   help="with --mode train: rematerialise under this budget (the picture marks recomputed ops)")
    m.add_argument("--picture", metavar="FILE",
                   help="where to write the picture: FILE.svg (default MODEL-memory.svg) or FILE.png "
                        "(needs matplotlib: pip install 'nnc[plot]')")
    m.set_defaults(fn=cmd_memory)

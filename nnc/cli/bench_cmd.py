"""``nnc bench``: time a model compiled with the compile flags against onnxruntime, each engine in its
own process, rounds alternating; ``--compare CONFIG`` adds a second nnc configuration (``fp32``,
``int8``, ``-O0``, ``infer``, ``train`` or any compile flags) and prints both rows, their latency ratio
and the arena of each. The harness is ``nnc.bench``."""

from __future__ import annotations

import argparse
import shlex
from typing import Any

from nnc.ir import NncError

from .common import TRAIN_FLAGS, Formatter, add_compile_flags, compile_options

# compile flags that show compile internals: meaningless in a timing run, so an error there
_NOT_FOR_BENCH = ("print_ir_before", "print_ir_after", "print_ir_after_all", "print_ir_after_change", "time_passes",
                  "dump_dir", "explain_fusion")
_ALIASES = {"fp32": [], "int8": ["--quantize", "int8"], "int8-weights": ["--quantize", "int8-weights"],
            "int4-weights": ["--quantize", "int4-weights"], "infer": ["--mode", "infer"], "train": ["--mode", "train"]}


def _config(args: argparse.Namespace) -> dict[str, Any]:
    opts = compile_options(args, quiet=True)
    return {"target": opts.target, "mode": opts.mode, **{k: v for k, v in opts.given().items() if k != "quiet"}}


def _compare_config(args: argparse.Namespace, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The --compare configuration: the command line's flags with CONFIG's on top (later flags win);
    ``fp32`` drops quantization, ``int8``/``int8-weights``/``int4-weights``/``infer``/``train`` are short
    for their flags."""
    tokens: list[str] = []
    drop_quant = False
    for tok in shlex.split(args.compare):
        if tok == "fp32":
            drop_quant = True
        tokens += _ALIASES.get(tok, [tok])
    argv = [a for a in args.argv if not a.startswith("--compare")]
    try:
        cmp_args = parser.parse_args(argv + tokens)
    except SystemExit:
        raise NncError(f"--compare {args.compare!r}: not a configuration (use fp32, int8, int8-weights, int4-weights, "
                       f"infer, train, -O0..-O3 or compile flags such as '--quantize int8')") from None
    if drop_quant or cmp_args.mode == "train":  # training steps are not quantized
        cmp_args.quantize = cmp_args.calibration = cmp_args.observer = None
        cmp_args.quantize_group = cmp_args.quantize_asymmetric = cmp_args.quantize_head = None
    if cmp_args.mode == "infer":  # the training flags describe the other configuration's step
        for flag in TRAIN_FLAGS:
            setattr(cmp_args, flag, None)
    cmp_args.threads = args.threads
    return _config(cmp_args)


def _label(config: dict[str, Any], other: dict[str, Any] | None) -> str:
    """A row's name from what sets it apart from the other configuration: mode, quantization and
    -O level first (their own options, like the training flags, follow from them), else any option."""
    if other is None:
        return "nnc"

    def show(key: str, value: Any) -> str:
        return {"opt_level": f"-O{3 if value is None else value}", "quantize": value or "fp32",
                "mode": str(value)}.get(key, f"{key}={value}")
    keys = [k for k in ("mode", "quantize", "opt_level") if config.get(k) != other.get(k)] or \
        [k for k in sorted(set(config) | set(other)) if config.get(k) != other.get(k)]
    return "nnc " + " ".join(show(k, config.get(k)) for k in keys) if keys else "nnc (same)"


def cmd_bench(args: argparse.Namespace) -> int:
    from nnc import bench

    for flag in _NOT_FOR_BENCH:
        if getattr(args, flag, None):
            raise NncError(f"--{flag.replace('_', '-')} shows compile internals and does not apply to nnc bench "
                           f"(use nnc compile)")
    args.threads = args.threads or 1
    base = _config(args)
    configs = {}
    compare = None
    if args.compare:
        other = _compare_config(args, args.parser)
        a, b = _label(base, other), _label(other, base)
        if a == b:
            raise NncError(f"--compare {args.compare!r} is the same configuration as the command line's")
        configs, compare = {a: base, b: other}, (a, b)
    else:
        configs = {"nnc": base}
    engines = list(configs) + (["ort"] if not args.no_ort and bench.ort_available() else []) + \
        (["reference"] if args.reference else [])
    res = bench.benchmark(args.model, engines, threads=args.threads, target=args.target, rounds=args.rounds,
                          budget_s=args.budget, dims=dict(args.dim or []), configs=configs)
    print(bench.format_report(args.model, res, args.threads, bench.flops_or_none(args.model), compare))
    if "ort" not in engines and not args.no_ort:
        print("  (onnxruntime is not installed: no comparison)")
    return 0 if all(res[e]["status"] == "ok" for e in configs) else 1


def add_bench_command(sub: Any) -> None:
    bn = sub.add_parser("bench", formatter_class=Formatter, help="measure latency against onnxruntime",
                        description="Compile MODEL with the compile flags and time it: median and p90 latency, "
                                    "throughput, compile time and arena, for nnc and (when installed) onnxruntime "
                                    "with ORT_ENABLE_ALL, each in its own subprocess, rounds alternating. "
                                    "--compare adds a second nnc configuration and prints the ratio of the two.",
                        epilog="examples:\n  nnc bench examples/cnn.onnx --target x86 --threads 2\n"
                               "  nnc bench m.onnx -O3 --compare -O0\n"
                               "  nnc bench m.onnx --quantize int8 --calibration c.npz --compare fp32\n"
                               "  nnc bench m.onnx --mode train --batch-size 8 --compare infer")
    bn.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx)")
    bn.add_argument("--compare", metavar="CONFIG",
                    help="a second nnc configuration: fp32, int8, infer, train, -O0..-O3, or compile flags in "
                         "quotes ('--quantize int8 --observer entropy'), applied over the command line's")
    bn.add_argument("--rounds", type=int, default=3, help="rounds of alternating engines (default 3)")
    bn.add_argument("--budget", type=float, default=2.0, help="seconds of timed runs per engine per round")
    bn.add_argument("--reference", action="store_true", help="also time the reference interpreter")
    bn.add_argument("--no-ort", action="store_true", help="do not run onnxruntime")
    add_compile_flags(bn, "x86", report=False,
                      dims_help="size of a symbolic input dim, fixed in the compile (default 1 for the inputs)")
    bn.set_defaults(fn=cmd_bench, parser=bn)

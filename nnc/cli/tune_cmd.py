"""``nnc tune MODEL``: measure candidate schedules of the model's conv/matmul/gemm kernels on this CPU
and keep the best in a tuning database (``nnc.tune``, docs/tuning.md); ``--merge`` joins databases,
``--report`` says how well the learned cost model ranks a database's measurements."""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import Any

from nnc.ir import NncError

from .common import Formatter, dim_spec, positive_int


def cmd_tune(args: argparse.Namespace) -> int:
    from nnc.backends.x86.target import resolve
    from nnc.backends.x86.tuning_db import TuningDB

    info = resolve(args.cpu, args.target_features)
    if args.cpu_resource:
        print(json.dumps({_resource(info): os.cpu_count() or 1}))
        return 0
    if args.merge:
        if args.model or not args.output:
            raise NncError("nnc tune --merge A B ... -o OUT: give the databases and -o, no MODEL")
        merged = TuningDB.merge(TuningDB.load(p) for p in args.merge)
        merged.write(args.output)
        print(f"wrote {args.output} ({len(merged.records)} measurements from {len(args.merge)} database(s))")
        return 0
    if args.output:
        raise NncError("-o is for --merge; the tuning database is --db FILE")
    if args.report:
        return _report(args, info)
    if not args.model:
        raise NncError("nnc tune: give a MODEL (or --merge / --report / --cpu-resource)")
    return _tune(args, info)


def _resource(info: Any) -> str:
    from nnc.tune import cpu_resource

    return cpu_resource(info.cpu, info.features)


def _report(args: argparse.Namespace, info: Any) -> int:
    from nnc.backends.x86.tuning_db import TuningDB
    from nnc.tune_cost_model import held_out_rank, rank_text

    db = TuningDB.load(args.db)
    recs = db.for_target(info.cpu, info.features)
    rank = held_out_rank(recs)
    best = db.best(info.cpu, info.features)
    gains = [d["us"] / b["us"] for b, d in best.values() if d is not None]
    print(f"{args.db}: {len(recs)} measurement(s) of {len(best)} kernel(s) for {info.cpu}")
    if gains:
        print(f"  best/default gain per kernel: min x{min(gains):.2f}, max x{max(gains):.2f}")
    print("  " + rank_text(rank))
    verdicts = db.verdicts(info.cpu, info.features)
    if verdicts:
        won = [v["in_model"]["gain"] for v in verdicts.values() if not v["default"]]
        print(f"  checked in the model: {len(verdicts)} kernel(s), {len(won)} keep a tuned schedule"
              + (f" (in-model gain x{min(won):.2f} to x{max(won):.2f})" if won else ""))
    return 0


def _tune(args: argparse.Namespace, info: Any) -> int:
    from nnc.backends.x86.runtime import num_threads
    from nnc.backends.x86.target import host
    from nnc.backends.x86.tuning_db import TuningDB
    from nnc.sweep import PoolExecutor, Progress, RayExecutor
    from nnc.tune import GainScore, model_kernels, planned_tasks, summary, tune

    if args.ray and args.workers:
        raise NncError("give --workers (a local pool) or --ray (a cluster), not both")
    if not args.ray and (info.cpu, info.features) != (host().cpu, host().features):
        raise NncError(f"the process pool measures on this machine, a {host().cpu}: tuning for --cpu {info.cpu} "
                       f"(or other --target-features) needs --ray with nodes of that CPU")
    threads = num_threads({"threads": args.threads})
    db = TuningDB.load(args.db, missing_ok=True)
    say = (lambda text: None) if args.quiet else (lambda text: print(text, file=sys.stderr))
    say(f"nnc: analysing {args.model}")
    kernels = model_kernels(args.model, threads, dict(args.dim or []), args.cpu, args.target_features)
    if not kernels:
        print("no tunable kernels in the model (f32/f64 conv, matmul, gemm with static shapes; fix symbolic "
              "dims with --dim)")
        return 0
    total = planned_tasks(kernels, db, info.cpu, info.features, info.vector_bits, args.trials, args.seed)
    resource = _resource(info)
    if args.ray:
        executor: Any = RayExecutor(args.ray, resources={resource: float(os.cpu_count() or 1)}
                                    if args.ray == "local" else None)
    else:
        executor = PoolExecutor(args.workers or 1)
    say(f"nnc: {len(kernels)} kernel(s), {total} measurement(s) to make (up to {args.trials} candidates per "
        f"kernel, and its default) on {executor.describe()}, database {args.db}")
    score = GainScore(db, info.cpu, info.features)
    progress = Progress(total, enabled=not args.quiet, score=score, describe=score.describe)
    try:
        result = tune(kernels, db, executor, info.cpu, info.features, info.vector_bits, trials=args.trials,
                      time_budget=args.time_budget, repeat=args.repeat, seed=args.seed, on_record=progress.update,
                      resource=resource if args.ray else None)
    finally:
        progress.close()
        if hasattr(executor, "shutdown"):
            executor.shutdown()
    verdicts, whole = None, None
    if args.verify_top and (info.cpu, info.features) == (host().cpu, host().features):
        verdicts, whole = _verify(args, kernels, db, info, threads, say)
    elif args.verify_top:
        say("nnc: no in-model check: the model runs on this machine, which is not the target CPU")
    sys.stdout.write(summary(result, verdicts))
    if verdicts is not None:
        from nnc.tune_verify import standalone_vs_model_rank, verify_text

        rank = standalone_vs_model_rank(verdicts, db, info.cpu, info.features)
        sys.stdout.write(verify_text(verdicts, rank, whole))
    print(f"wrote {args.db}; use it: nnc compile {args.model} -t x86 --tuning-db {args.db}")
    return 0


def _verify(args: argparse.Namespace, kernels: Any, db: Any, info: Any, threads: int, say: Any) -> Any:
    from nnc.tune_verify import check_model, profile_measure, verify

    say(f"nnc: checking the best {args.verify_top} candidate(s) per kernel in the model "
        f"({args.verify_passes} pass(es), {args.verify_runs} runs per round)")
    measure = profile_measure(args.model, threads, dict(args.dim or []), runs=args.verify_runs, seed=args.seed)

    def on_round(done: int, total: int) -> None:
        say(f"nnc: in-model check {done}/{total} rounds")
    verdicts = verify(kernels, db, info.cpu, info.features, measure, top=args.verify_top,
                      passes=args.verify_passes, on_round=None if args.quiet else on_round)
    say("nnc: timing the model with every kept schedule against the defaults")
    return verdicts, check_model(verdicts, measure, args.verify_passes)


def _count(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"expected a count >= 0, got {text!r}")
    return n


def _seconds(text: str) -> float:
    try:
        s = float(text)
    except ValueError:
        s = float("nan")
    if not s > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return s


def add_tune_command(sub: Any) -> None:
    t = sub.add_parser("tune", formatter_class=Formatter,
                       help="measure kernel schedules and keep the best in a tuning database",
                       description="For every distinct conv/matmul/gemm kernel of MODEL (compiled for x86 on this "
                    "CPU), compile "
                    "candidate schedules (register tile, cache blocking, vector width, loop order, thread split, "
                    "depthwise padding copy, which of the two conv GEMMs) one kernel at a time, check each output "
                    "equals the default schedule's, time them (warm, median) and append every measurement to "
                    "--db. A learned cost model picks which candidates to measure. Then the best few per kernel "
                    "are timed inside the whole model (per-kernel profiler) and a kernel keeps a tuned schedule "
                    "only if it wins there. Resumable: measurements already in --db are not repeated. Then: "
                    "nnc compile MODEL -t x86 --tuning-db FILE.",
        epilog="examples:\n"
               "  nnc tune resnet18.onnx --trials 24 --time-budget 600 --db tune.jsonl\n"
               "  nnc tune m.onnx --db tune.jsonl --ray auto      # measuring nodes need this CPU's resource\n"
               "  nnc tune --cpu-resource                         # the Ray resource naming this CPU\n"
               "  nnc tune --merge a.jsonl b.jsonl -o fleet.jsonl\n"
               "  nnc tune --report --db tune.jsonl               # the cost model's held-out rank correlation\n"
               "(docs/tuning.md, docs/distributed.md)")
    t.add_argument("model", nargs="?", metavar="MODEL", help="ONNX model (.onnx) or nnc text IR (.nnc)")
    t.add_argument("--db", default="tuning.jsonl", metavar="FILE.jsonl",
                   help="the tuning database: read, resumed and appended to (default tuning.jsonl)")
    t.add_argument("--trials", type=positive_int, default=16, metavar="N",
                   help="candidates measured per kernel (default 16)")
    t.add_argument("--time-budget", type=_seconds, default=None, metavar="S",
                   help="stop starting new rounds of measurements after S seconds")
    t.add_argument("--repeat", type=positive_int, default=7, metavar="R",
                   help="timed samples per candidate, the median kept (default 7)")
    t.add_argument("--seed", type=int, default=0, help="seed of the candidate sampling and exploration")
    v = t.add_argument_group("the check in the model (after the search; docs/tuning.md)")
    v.add_argument("--verify-top", type=_count, default=3, metavar="K",
                   help="time each kernel's K best candidates (by their time alone) inside the whole model and keep "
                        "a candidate only if it beats the default there by 2%% and by more than the kernel's in-model "
                        "noise (default 3; 0: no check, the fastest alone is kept); costs K+1 compiles of the model")
    v.add_argument("--verify-passes", type=positive_int, default=7, metavar="P",
                   help="passes over the rounds (default, candidate 1, default, candidate 2, ..., default); "
                        "the median over the passes is kept (default 7)")
    v.add_argument("--verify-runs", type=positive_int, default=20, metavar="R",
                   help="profiled runs of the model per round, the median per kernel (default 20)")
    t.add_argument("--dim", action="append", type=dim_spec, metavar="SYMBOL=SIZE", help="fix a symbolic input dim")
    x = t.add_argument_group("target")
    x.add_argument("--threads", type=positive_int, metavar="N", help="threads per kernel (default: as nnc compile)")
    x.add_argument("--cpu", metavar="NAME", help="CPU (default: the host's; measurements need a CPU like it)")
    x.add_argument("--target-features", metavar="STR", help="LLVM feature list (default: the host's)")
    d = t.add_argument_group("where the measurements run")
    d.add_argument("--workers", type=positive_int, default=None, metavar="N",
                   help="local process pool of N workers (default 1: concurrent measurements disturb each other)")
    d.add_argument("--ray", nargs="?", const="auto", default=None, metavar="ADDRESS",
                   help="Ray tasks on nodes labelled with this CPU's resource: 'auto', 'local' or ray://HOST:PORT")
    o = t.add_argument_group("other actions")
    o.add_argument("--merge", nargs="+", metavar="DB", help="merge tuning databases (with -o OUT)")
    o.add_argument("-o", "--output", metavar="OUT.jsonl", help="the merged database")
    o.add_argument("--report", action="store_true", help="summarise --db and the cost model's rank correlation")
    o.add_argument("--cpu-resource", action="store_true", help="print the Ray resource naming this CPU (JSON)")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    t.set_defaults(fn=cmd_tune)

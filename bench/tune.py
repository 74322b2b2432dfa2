"""Untuned vs tuned x86 latency of ResNet-18 and MobileNetV2 (bench/models.py): for each model,
``nnc tune`` runs with a fixed time budget (as a user runs it, through the CLI; the search, then its
check in the model), then the untuned
and the tuned compile (``--tuning-db``) are timed by ``nnc.bench.benchmark``, each in its own
process, rounds alternating untuned/tuned. The table goes to a markdown file with ``uptime`` before
and after (run it on a quiet machine: the tuning measurements and the timings both need one).

    python bench/tune.py [--models resnet18,mobilenet_v2] [--budget 600] [--trials 64] [--threads 1]
                         [--rounds 5] [--verify-top 3] [--out bench/TUNE.md] [--quick]

``--quick`` checks that the script works (30 s budget, 2 trials, 1 round, output to a temporary
file unless --out is given); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(__file__))

import models  # noqa: E402


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def _tune(model: str, db: str, budget: float, trials: int, threads: int, verify_top: int = 3) -> tuple[float, str]:
    cmd = [sys.executable, "-m", "nnc", "tune", model, "--db", db, "--time-budget", str(budget),
           "--trials", str(trials), "--threads", str(threads), "--verify-top", str(verify_top), "-q"]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"nnc tune failed on {model}: {proc.stderr.strip()}")
    return time.perf_counter() - t0, proc.stdout


def _tuned_kernels(db: str, model: str, threads: int) -> tuple[int, int, list[str]]:
    """(kernels from the db, tunable kernels, "op: predicted/measured gain" lines) of the tuned compile."""
    import nnc

    cm = nnc.compile(model, target="x86", threads=threads, tuning_db=db, quiet=True, cache=False)
    rep = cm.report["x86"]["tuning"]
    gains = []
    for r in rep["kernels"]:
        # a gain of exactly 1 alone and no check: the kernel's default measurement was its best (not listed)
        own_default = r.get("measured_gain") == 1.0 and not r.get("model_gain")
        if r["source"] == "db" and r.get("measured_gain") and not own_default:
            pred = f"x{r['predicted_gain']:.2f}" if r.get("predicted_gain") else "-"
            model = f"x{r['model_gain']:.2f}" if r.get("model_gain") else "-"
            gains.append(f"{r['op']} in model {model}, alone x{r['measured_gain']:.2f} (cost model {pred})")
        elif r.get("kept_default"):
            gains.append(f"{r['op']} kept the default (no candidate won in the model)")
    return rep["from_db"], rep["from_db"] + rep["default"], gains


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--budget", type=float, default=600.0, help="seconds of nnc tune per model (--time-budget)")
    ap.add_argument("--trials", type=int, default=64, help="candidates per kernel at most (--trials)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--verify-top", type=int, default=3,
                    help="candidates per kernel checked inside the model (nnc tune --verify-top)")
    ap.add_argument("--rounds", type=int, default=5, help="alternating untuned/tuned timing rounds")
    ap.add_argument("--time", type=float, default=2.0, help="seconds of timed runs per round and engine")
    ap.add_argument("--db-dir", default=None, help="keep the tuning databases here (default: a temporary folder)")
    ap.add_argument("--out", default=None, help="markdown output (default bench/TUNE.md; --quick: a temp file)")
    ap.add_argument("--quick", action="store_true", help="a short run that checks the script works")
    args = ap.parse_args()
    if args.quick:
        args.budget, args.trials, args.rounds, args.time = 30.0, 2, 1, 0.5
    out = args.out or (os.path.join(tempfile.gettempdir(), "nnc-TUNE-quick.md") if args.quick
                       else os.path.join(os.path.dirname(__file__), "TUNE.md"))
    from nnc.bench import benchmark

    before = _uptime()
    rows, details = [], []
    with tempfile.TemporaryDirectory(prefix="nnc-tune-bench-") as tmp:
        db_dir = args.db_dir or tmp
        os.makedirs(db_dir, exist_ok=True)
        for name in args.models.split(","):
            path = str(models.torch_model(name))
            db = os.path.join(db_dir, f"{name}-t{args.threads}.jsonl")
            if os.path.exists(db):
                os.remove(db)  # a fresh tuning run with this budget, not a resumed one
            print(f"[{name}] nnc tune, budget {args.budget:.0f} s ...", file=sys.stderr, flush=True)
            seconds, text = _tune(path, db, args.budget, args.trials, args.threads, args.verify_top)
            from_db, tunable, gains = _tuned_kernels(db, path, args.threads)
            print(f"[{name}] timing untuned vs tuned, {args.rounds} alternating rounds ...", file=sys.stderr,
                  flush=True)
            res = benchmark(path, engines=("untuned", "tuned"), threads=args.threads, rounds=args.rounds,
                            budget_s=args.time, configs={"untuned": {"target": "x86"},
                                                         "tuned": {"target": "x86", "tuning_db": db}})
            u, t = res["untuned"], res["tuned"]
            if u["status"] != "ok" or t["status"] != "ok":
                rows.append(f"| {name} | {args.threads} | fails: {u['status']} / {t['status']} |||||||||")
                continue
            agree = res.get("agreement", {})
            rank = next((ln for ln in text.splitlines() if ln.startswith("cost model:")), "")
            check = next((ln.split("(")[-1].rstrip(")") for ln in text.splitlines()
                          if ln.strip().startswith("checked kernels in the model")), "-")
            whole = next((ln.split(":")[1].split()[0] for ln in text.splitlines()
                          if ln.strip().startswith("the model with every kept schedule")), "-")
            rows.append(f"| {name} | {args.threads} | {seconds:.0f} | {from_db}/{tunable} | {u['median_ms']:.3f} | "
                        f"{t['median_ms']:.3f} | {u['median_ms'] / t['median_ms']:.3f}x | {whole} | {check} | "
                        f"{json.dumps(agree.get('tuned', agree))[:60]} | {rank.replace('cost model: ', '')} |")
            details.append(f"### {name}\n\nper kernel (tune summary; \"in model\": the check in the model):\n\n"
                           f"```\n{text.strip()}\n```\n\n"
                           f"kernels from the database (measured and predicted gain): {'; '.join(gains) or 'none'}\n")
    after = _uptime()
    md = [f"# nnc tune: untuned vs tuned latency ({datetime.date.today()})", "",
          f"`python bench/tune.py --models {args.models} --budget {args.budget:g} --trials {args.trials} "
          f"--threads {args.threads} --rounds {args.rounds} --verify-top {args.verify_top}`"
          + (" (--quick: a check, not a measurement)" if args.quick else ""), "",
          f"uptime before: `{before}`", f"uptime after: `{after}`", "",
          "| model | threads | tune s | kernels from db | untuned ms | tuned ms | speed-up | predicted by "
          "nnc tune (model) | (checked kernels) | agreement | cost model (held-out) |",
          "|---|---|---|---|---|---|---|---|---|---|---|", *rows, "", *details]
    with open(out, "w") as f:
        f.write("\n".join(md) + "\n")
    print("\n".join(rows))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Text generation: nnc vs onnxruntime vs torch eager, prefill and decode tokens/s (bench/GENERATE.md).

    python bench/generate.py                      # the full run: 2 models, 1 and 2 threads, 5 rounds
    python bench/generate.py --quick              # tiny models, 8 + 8 tokens, 1 thread, one round

Models (``bench/generate_models.json``): ``transformers`` configs with random weights (seed 0),
exported once to a decoder-with-past ONNX file (``bench/decoder_onnx.py``; cached under
``$NNC_BENCH_CACHE/generate``). Engines, each in its own process, greedy, same prompt:

- ``nnc``: ``nnc.Decoder.from_onnx`` on that ONNX file (the concat of past and new rewritten onto a
  preallocated in-place cache), FP32; ``nnc-int8`` / ``nnc-int4``: the same with
  ``quantize="int8-weights"`` / ``"int4-weights"`` (skipped, with the reason, if refused), the lm
  head int8 per channel unless ``--quantize-head`` says otherwise;
- ``ort``: onnxruntime on the same ONNX file in a Python greedy loop (pasts fed back as presents);
- ``torch``: ``model.generate`` in eager PyTorch, timed with a streamer.

Each process builds its engine, runs one warm-up generation (same prompt, 2 tokens: compiles,
shape plans and allocations happen there), then the timed one. Prefill tokens/s = prompt tokens /
time to the first new token; decode tokens/s = (new tokens - 1) / time from the first to the last.
The engines run in the same order every round (A B C A B C ...), so background load spreads over
all of them; the table gives medians over rounds and the ratios of the decode rates, and for the
quantized engines the lm head's precision and the share of the first 64 greedy tokens equal to nnc
FP32's (random weights: nearly tied logits, see bench/generate_trained.py for a trained model).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
ENGINES = ["nnc", "nnc-int8", "nnc-int4", "ort", "torch"]
QUANTIZE = {"nnc": None, "nnc-int8": "int8-weights", "nnc-int4": "int4-weights"}
EXPORT_VERSION = 1  # bump to re-export the cached ONNX files after changing the export


def model_specs() -> dict[str, dict[str, Any]]:
    with open(HERE / "generate_models.json") as f:
        return json.load(f)


def build_model(name: str) -> Any:
    """The ``transformers`` causal LM ``name`` with random weights (seed 0), eval mode."""
    import torch
    import transformers as tf

    spec = model_specs()[name]
    torch.manual_seed(0)
    if spec["arch"] == "gpt2":
        return tf.GPT2LMHeadModel(tf.GPT2Config(**spec["config"])).eval()
    return tf.LlamaForCausalLM(tf.LlamaConfig(**spec["config"])).eval()


def onnx_path(name: str) -> str:
    """The decoder-with-past ONNX export of ``name``, written once per config."""
    sys.path.insert(0, str(HERE.parent))
    from bench.decoder_onnx import export_decoder_with_past

    spec = json.dumps(model_specs()[name], sort_keys=True)
    key = hashlib.sha256(f"{spec}{EXPORT_VERSION}".encode()).hexdigest()[:12]
    root = Path(os.environ.get("NNC_BENCH_CACHE") or Path.home() / ".cache" / "nnc" / "bench") / "generate" / key
    path = root / f"{name}.onnx"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        print(f"exporting {name} to {path} ...", file=sys.stderr, flush=True)
        export_decoder_with_past(build_model(name), str(path))
    return str(path)


# -- one engine in this process ------------------------------------------------------------------

def run_nnc(args: argparse.Namespace, ids: np.ndarray) -> dict[str, Any]:
    import nnc
    from nnc.generation import Decoder, generate

    t0 = time.perf_counter()
    try:
        # an int4 head applies to nnc-int4 only (int8-weights refuses it); nnc-int8 keeps its default then
        head = None if QUANTIZE[args.worker] is None or (args.quantize_head == "int4" and args.worker == "nnc-int8") \
            else args.quantize_head
        dec = Decoder.from_onnx(args.onnx, max_length=ids.shape[1] + args.new, threads=args.threads,
                                quantize=QUANTIZE[args.worker], quantize_head=head, quiet=True)
    except nnc.NncError as e:
        if QUANTIZE[args.worker] is None:
            raise
        return {"skipped": f"quantize={QUANTIZE[args.worker]!r} refused: {e}"}
    setup = time.perf_counter() - t0
    generate(dec, ids, max_new_tokens=2)
    out = generate(dec, ids, max_new_tokens=args.new)
    r = out.report
    return {"prefill_tps": r["prefill"]["tokens_per_s"], "decode_tps": r["decode"]["tokens_per_s"],
            "tokens": out.new_tokens[0].tolist(), "setup_s": setup, "compiles": r["compiles"],
            "cache_bytes": r["cache"]["bytes"],
            "bytes_copied_per_decode_step": r["cache"]["bytes_copied_per_decode_step"],
            "head": r["weights"]["head"] if "weights" in r else "float"}


def run_ort(args: argparse.Namespace, ids: np.ndarray) -> dict[str, Any]:
    import onnxruntime as ort

    sys.path.insert(0, str(HERE.parent))
    from bench.decoder_onnx import greedy_onnxruntime

    t0 = time.perf_counter()
    so = ort.SessionOptions()
    so.intra_op_num_threads = args.threads
    so.inter_op_num_threads = 1
    session = ort.InferenceSession(args.onnx, so, providers=["CPUExecutionProvider"])
    setup = time.perf_counter() - t0
    greedy_onnxruntime(session, ids, 2)
    tokens, times = greedy_onnxruntime(session, ids, args.new)
    return {"prefill_tps": ids.size / times["prefill_s"], "decode_tps": (args.new - 1) / times["decode_s"],
            "tokens": tokens[0].tolist(), "setup_s": setup}


def run_torch(args: argparse.Namespace, ids: np.ndarray) -> dict[str, Any]:
    import torch

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    model = build_model(args.model)
    setup = time.perf_counter() - t0

    class Clock:
        """A ``generate`` streamer: ``put`` gets the prompt, then each new token as it is chosen."""

        def __init__(self) -> None:
            self.stamps: list[float] = []

        def put(self, value: Any) -> None:
            self.stamps.append(time.perf_counter())

        def end(self) -> None:
            pass

    def timed(new: int) -> tuple[list[int], Clock]:
        t = torch.from_numpy(ids)
        clock = Clock()
        with torch.no_grad():
            out = model.generate(t, attention_mask=torch.ones_like(t), max_new_tokens=new, min_new_tokens=new,
                                 do_sample=False, eos_token_id=None, pad_token_id=0, streamer=clock)
        return out[0, ids.shape[1]:].tolist(), clock

    timed(2)
    tokens, clock = timed(args.new)
    start, first, last = clock.stamps[0], clock.stamps[1], clock.stamps[-1]
    return {"prefill_tps": ids.size / (first - start), "decode_tps": (args.new - 1) / (last - first),
            "tokens": tokens, "setup_s": setup}


def worker(args: argparse.Namespace) -> None:
    vocab = model_specs()[args.model]["config"]["vocab_size"]
    ids = np.random.default_rng(0).integers(0, vocab, (1, args.prompt))
    run = {"ort": run_ort, "torch": run_torch}.get(args.worker, run_nnc)
    print("RESULT " + json.dumps(run(args, ids)), flush=True)


# -- the driver ----------------------------------------------------------------------------------

def run_worker(engine: str, model: str, onnx: str, threads: int, args: argparse.Namespace) -> dict[str, Any]:
    argv = [sys.executable, str(Path(__file__).resolve()), "--worker", engine, "--model", model, "--onnx", onnx,
            "--threads", str(threads), "--prompt", str(args.prompt), "--new", str(args.new)]
    if args.quantize_head:
        argv += ["--quantize-head", args.quantize_head]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads),
           "OPENBLAS_NUM_THREADS": str(threads)}
    out = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=args.timeout)
    line = next((ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")), None)
    if out.returncode != 0 or line is None:
        tail = (out.stderr.strip().splitlines() or ["(no output)"])[-1]
        return {"failed": f"exit {out.returncode}: {tail}"}
    return json.loads(line[len("RESULT "):])


def median(rows: list[dict[str, Any]], key: str) -> float | None:
    values = [r[key] for r in rows if r.get(key)]
    return statistics.median(values) if values else None


def agreement(tokens: list[int] | None, ref: list[int] | None, n: int | None = None) -> str:
    """The share of ``tokens`` equal to ``ref`` position by position (the first ``n``), as a percentage."""
    if tokens is None or ref is None:
        return ""
    a, b = np.array(tokens[:n]), np.array(ref[:n])
    return f"{np.mean(a == b):.0%}"


def table(results: dict[tuple[str, int, str], list[dict[str, Any]]], notes: dict[str, str]) -> str:
    lines = ["| model | threads | engine | lm head | prefill tokens/s | decode tokens/s | decode vs ort "
             "| decode vs nnc FP32 | greedy tokens = ort | first 64 greedy = nnc FP32 |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for (model, threads, engine), rows in results.items():
        if not rows:
            continue
        pre, dec = median(rows, "prefill_tps"), median(rows, "decode_tps")
        ort_dec = median(results.get((model, threads, "ort"), []), "decode_tps")
        nnc_dec = median(results.get((model, threads, "nnc"), []), "decode_tps")
        ort_rows = results.get((model, threads, "ort"), [])
        nnc_rows = results.get((model, threads, "nnc"), [])
        ref = ort_rows[0].get("tokens") if ort_rows else None
        tokens = rows[0].get("tokens")
        agree = agreement(tokens, ref)
        agree_fp32 = agreement(tokens, nnc_rows[0].get("tokens"), 64) if nnc_rows and QUANTIZE.get(engine) else ""

        def ratio(a: float | None, b: float | None) -> str:
            return f"{a / b:.2f}x" if a and b else ""
        lines.append(f"| {model} | {threads} | {engine} | {rows[0].get('head', '')} | {pre or 0:.1f} | "
                     f"{dec or 0:.2f} | {ratio(dec, ort_dec)} | {ratio(dec, nnc_dec)} | {agree} | {agree_fp32} |")
    for engine, why in notes.items():
        lines.append(f"\n{engine}: {why}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:5]))
    ap.add_argument("--quick", action="store_true", help="tiny models, 8 + 8 tokens, 1 thread, one round")
    ap.add_argument("--models", default=None, help="comma-separated names from generate_models.json "
                                                    "(default gpt2-124m,llama-0.5b; --quick: the tiny ones)")
    ap.add_argument("--engines", default=",".join(ENGINES), help=f"comma-separated, of {','.join(ENGINES)}")
    ap.add_argument("--threads", default=None, help="comma-separated thread counts (default 1,2; --quick: 1)")
    ap.add_argument("--rounds", type=int, default=None, help="rounds per configuration (default 5; --quick: 1)")
    ap.add_argument("--prompt", type=int, default=None, help="prompt tokens (default 128; --quick: 8)")
    ap.add_argument("--new", type=int, default=None, help="new tokens (default 128; --quick: 8)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per engine process (default 3600)")
    ap.add_argument("--json", default=None, metavar="FILE", help="also write every run's figures here")
    ap.add_argument("--quantize-head", choices=("int8", "int4", "float"), default=None,
                    help="the lm head of nnc-int8 / nnc-int4 (default int8 per channel; int4: nnc-int4 only)")
    ap.add_argument("--worker", choices=ENGINES, help=argparse.SUPPRESS)
    ap.add_argument("--model", help=argparse.SUPPRESS)
    ap.add_argument("--onnx", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        args.threads = int(args.threads)
        worker(args)
        return
    q = args.quick
    models = (args.models or ("gpt2-tiny,llama-tiny" if q else "gpt2-124m,llama-0.5b")).split(",")
    engines = args.engines.split(",")
    threads = [int(t) for t in (args.threads or ("1" if q else "1,2")).split(",")]
    rounds = args.rounds or (1 if q else 5)
    args.prompt, args.new = args.prompt or (8 if q else 128), args.new or (8 if q else 128)
    specs = model_specs()
    bad = [m for m in models if m not in specs] + [e for e in engines if e not in ENGINES]
    if bad or args.new < 2 or rounds < 1:
        ap.error(f"unknown model/engine {', '.join(bad)}" if bad else "--new must be >= 2 and --rounds >= 1")
    print(f"# {', '.join(models)}; engines {', '.join(engines)}; threads {threads}; {rounds} round(s); "
          f"prompt {args.prompt}, {args.new} new tokens", flush=True)
    results: dict[tuple[str, int, str], list[dict[str, Any]]] = {}
    notes: dict[str, str] = {}
    for model in models:
        onnx = onnx_path(model)
        for t in threads:
            live = list(engines)
            for r in range(rounds):
                for engine in list(live):
                    res = run_worker(engine, model, onnx, t, args)
                    if "skipped" in res or "failed" in res:
                        notes[engine] = res.get("skipped") or res["failed"]
                        live.remove(engine)
                        print(f"  {model} t={t} {engine}: {notes[engine]}", flush=True)
                        continue
                    results.setdefault((model, t, engine), []).append(res)
                    print(f"  {model} t={t} round {r + 1} {engine}: prefill {res['prefill_tps']:.1f} tok/s, "
                          f"decode {res['decode_tps']:.2f} tok/s (setup {res['setup_s']:.1f} s)", flush=True)
    print()
    print(table(results, notes))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({f"{m}|{t}|{e}": rows for (m, t, e), rows in results.items()} | {"notes": notes}, f, indent=1)


if __name__ == "__main__":
    main()

"""INT8 against FP32 on x86 for the CNNs: latency of nnc's float build and of its post-training
INT8 build (``quantize="int8"``: VNNI qconv/qmatmul, integer requantization), each engine in its own
process, rounds alternating (FP32 INT8 FP32 INT8 ...), medians and ratios; plus the SQNR of the
INT8 logits against the FP32 ones on held-out inputs.

    python bench/int8.py [--models resnet18,mobilenet_v2,resnet50] [--threads 1] [--rounds 3]
                         [--calibration 8] [--observer minmax] [--out bench/INT8.md]

The models carry the realistic random weights of ``models.realistic_model`` (BatchNorm statistics
from a batch, ResNet-50 cut before its Softmax) so that their logits carry signal. Calibration:
standard-normal inputs (there is no real data set), ``--calibration`` of them, seed 1; timed and
SQNR inputs use seed 0 (``--eval`` of them). ``SQNR out`` compares the x86 INT8 build's logits
with the x86 FP32 build's; ``fp32 noise floor`` is the SQNR of the FP32 logits when only the input
is perturbed by Gaussian noise 40 dB below it (about what int8 input quantization alone does): how
much these weights amplify any perturbation, i.e. roughly the best any 8-bit scheme can reach.
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

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

import models  # noqa: E402


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    noise = float(((got - ref) ** 2).sum())
    return float("inf") if noise == 0 else 10 * np.log10(float((ref ** 2).sum()) / noise)


def _inputs(path: str, seed: int, count: int) -> list[dict[str, np.ndarray]]:
    import nnc

    m = nnc.from_onnx(path)
    rng = np.random.default_rng(seed)
    return [{p.name: rng.standard_normal(tuple(1 if isinstance(d, str) else d for d in p.type.shape))
             .astype(np.float32) for p in m.main.params if p.binding is None} for _ in range(count)]


def _noisy(x: np.ndarray, db: float, rng: np.random.Generator) -> np.ndarray:
    """``x`` plus Gaussian noise ``db`` decibels below its mean power."""
    sigma = np.sqrt(float((x.astype(np.float64) ** 2).mean()) / 10 ** (db / 10))
    return (x + rng.standard_normal(x.shape) * sigma).astype(np.float32)


def worker(spec: dict) -> dict:
    import nnc

    feeds = dict(np.load(spec["inputs"]))
    opts = {"threads": spec["threads"], "quiet": True}
    if spec["engine"] == "int8":
        opts.update(quantize="int8", calibration=spec["calibration"], observer=spec["observer"])
    t0 = time.perf_counter()
    cm = nnc.compile(spec["model"], target="x86", **opts)
    compile_s = time.perf_counter() - t0
    cm.run(feeds)  # warm-up
    if spec.get("outputs"):
        evals = np.load(spec["eval"])
        inputs = [{k: evals[k][i] for k in evals.files} for i in range(len(evals[evals.files[0]]))]
        if spec["engine"] == "fp32":  # the noise floor: the same inputs again, with noise added
            rng = np.random.default_rng(7)
            inputs += [{k: _noisy(v, 40.0, rng) for k, v in f.items()} for f in inputs]
        runs = [cm.run(f) for f in inputs]
        np.savez(spec["outputs"], **{k: np.stack([r[k] for r in runs]) for k in runs[0]})
    times, t_end = [], time.perf_counter() + spec["budget_s"]
    while len(times) < 5 or (time.perf_counter() < t_end and len(times) < 200):
        t = time.perf_counter()
        cm.run(feeds)
        times.append((time.perf_counter() - t) * 1e3)
    return {"ok": True, "compile_s": compile_s, "times_ms": times}


def run_worker(spec: dict, threads: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), NNC_NUM_THREADS=str(threads))
    proc = subprocess.run([sys.executable, __file__, "--worker", json.dumps(spec)], capture_output=True, text=True,
                          env=env, timeout=1800)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        return {"ok": False, "error": (proc.stderr.strip().splitlines() or ["crashed"])[-1][:300]}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="resnet18,mobilenet_v2,resnet50")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=3.0, help="seconds of timed runs per engine per round")
    ap.add_argument("--calibration", type=int, default=8, help="calibration samples (standard normal)")
    ap.add_argument("--eval", type=int, default=2, help="held-out inputs for the SQNR (seed 0)")
    ap.add_argument("--observer", default="minmax")
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    if a.worker:
        try:
            res = worker(json.loads(a.worker))
        except Exception as e:  # noqa: BLE001 - one line for the parent's table
            res = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
        print(json.dumps(res))
        return
    table = models.all_models()
    rows = ["| model | FP32 median ms | INT8 median ms | INT8 speedup | SQNR out dB | fp32 noise floor dB | "
            "INT8 compile s |", "|---|---|---|---|---|---|---|"]
    for name in a.models.split(","):
        path = str(models.realistic_model(name) if name in models.REALISTIC else table[name]())
        with tempfile.TemporaryDirectory(prefix="nnc-int8-") as tmp:
            cal = os.path.join(tmp, "calibration.npz")
            samples = _inputs(path, 1, a.calibration)
            np.savez(cal, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
            test = _inputs(path, 0, a.eval)
            feeds, evals = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "eval.npz")
            np.savez(feeds, **test[0])
            np.savez(evals, **{k: np.stack([s[k] for s in test]) for k in test[0]})
            res = {e: {"times": [], "compile": [], "error": None} for e in ("fp32", "int8")}
            for r in range(a.rounds):
                for e in ("fp32", "int8"):
                    if res[e]["error"]:
                        continue
                    spec = {"model": path, "engine": e, "threads": a.threads, "inputs": feeds,
                            "calibration": cal, "observer": a.observer, "budget_s": a.budget, "eval": evals,
                            "outputs": os.path.join(tmp, f"out-{e}.npz") if r == 0 else None}
                    got = run_worker(spec, a.threads)
                    if not got.get("ok"):
                        res[e]["error"] = got.get("error")
                        continue
                    res[e]["times"] += got["times_ms"]
                    res[e]["compile"].append(got["compile_s"])
            if res["fp32"]["error"] or res["int8"]["error"]:
                rows.append(f"| {name} | {res['fp32']['error'] or ''} | {res['int8']['error'] or ''} | | | | |")
                print(rows[-1], flush=True)
                continue
            f32, i8 = (float(np.median(res[e]["times"])) for e in ("fp32", "int8"))
            o32, o8 = np.load(os.path.join(tmp, "out-fp32.npz")), np.load(os.path.join(tmp, "out-int8.npz"))
            n = a.eval
            s_out = min(sqnr_db(o32[k][:n], o8[k]) for k in o32.files)
            s_floor = min(sqnr_db(o32[k][:n], o32[k][n:]) for k in o32.files)
            rows.append(f"| {name} | {f32:.2f} | {i8:.2f} | {f32 / i8:.2f}x | {s_out:.1f} | {s_floor:.1f} | "
                        f"{res['int8']['compile'][0]:.1f} |")
            print(rows[-1], flush=True)
    text = (f"## INT8 vs FP32 on x86, {datetime.date.today()}, {a.threads} thread(s), observer {a.observer}, "
            f"{a.calibration} calibration samples\n\n" + "\n".join(rows) + "\n")
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n" + text)
    print(text)


if __name__ == "__main__":
    main()

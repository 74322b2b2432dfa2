"""INT8 against FP32 on x86 for the CNNs: latency of nnc's float build, of its post-training INT8
build (``quantize="int8"``: VNNI qconv/qmatmul, the depthwise vpdpwssd kernel, requantize fused into
the producing kernel) and of onnxruntime running the QDQ model its own ``quantize_static`` writes
from the same calibration inputs (per-channel int8 weights, u8 activations, ORT_ENABLE_ALL, the same
intra-op threads), each engine in its own process, rounds alternating (FP32 INT8 ORT-INT8 FP32 ...),
medians and ratios; plus the SQNR of each INT8 engine's logits against nnc's FP32 ones on held-out
inputs.

    python bench/int8.py [--models mobilenet_v2,mobilenet_v3_small,mobilenet_v3_large,efficientnet_b0,resnet50]
                         [--threads 1] [--rounds 3] [--calibration 8] [--observer minmax] [--no-ort]
                         [--out bench/INT8.md]

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


class _OrtModel:
    """onnxruntime's session behind nnc's ``run(feeds) -> {output name: array}``."""

    def __init__(self, path: str, threads: int):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.names = [o.name for o in self.sess.get_outputs()]

    def run(self, feeds: dict) -> dict:
        return dict(zip(self.names, self.sess.run(None, feeds)))


def ort_qdq_model(path: str, calibration: str, out: str) -> str:
    """onnxruntime's static QDQ quantization of ``path`` (the calibration samples of the nnc INT8
    build; per-channel int8 weights, u8 activations, minmax calibration), written to ``out``."""
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    cal = np.load(calibration)
    samples = [{k: cal[k][i] for k in cal.files} for i in range(len(cal[cal.files[0]]))]

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self.it = iter(samples)

        def get_next(self):
            return next(self.it, None)

    quantize_static(path, out, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    return out


def worker(spec: dict) -> dict:
    import nnc

    feeds = dict(np.load(spec["inputs"]))
    opts = {"threads": spec["threads"], "quiet": True}
    if spec["engine"] == "int8":
        opts.update(quantize="int8", calibration=spec["calibration"], observer=spec["observer"])
    t0 = time.perf_counter()
    if spec["engine"] == "ort_int8":
        cm = _OrtModel(spec["qdq_model"], spec["threads"])
    else:
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


def _bench_model(a: argparse.Namespace, name: str, path: str, tmp: str, engines: tuple[str, ...]) -> str:
    """One table row: the engines timed in alternating rounds on ``name``."""
    cal = os.path.join(tmp, "calibration.npz")
    samples = _inputs(path, 1, a.calibration)
    np.savez(cal, **{k: np.stack([s[k] for s in samples]) for k in samples[0]})
    test = _inputs(path, 0, a.eval)
    feeds, evals = os.path.join(tmp, "inputs.npz"), os.path.join(tmp, "eval.npz")
    np.savez(feeds, **test[0])
    np.savez(evals, **{k: np.stack([s[k] for s in test]) for k in test[0]})
    res = {e: {"times": [], "compile": [], "error": None} for e in engines}
    qdq = None
    if "ort_int8" in engines:
        try:
            qdq = ort_qdq_model(path, cal, os.path.join(tmp, "qdq.onnx"))
        except Exception as e:  # noqa: BLE001 - reported in the row
            res["ort_int8"]["error"] = f"{type(e).__name__}: {e}"[:200]
    for r in range(a.rounds):
        for e in engines:
            if res[e]["error"]:
                continue
            spec = {"model": path, "engine": e, "threads": a.threads, "inputs": feeds, "qdq_model": qdq,
                    "calibration": cal, "observer": a.observer, "budget_s": a.budget, "eval": evals,
                    "outputs": os.path.join(tmp, f"out-{e}.npz") if r == 0 else None}
            got = run_worker(spec, a.threads)
            if not got.get("ok"):
                res[e]["error"] = got.get("error")
                continue
            res[e]["times"] += got["times_ms"]
            res[e]["compile"].append(got["compile_s"])
    if res["fp32"]["error"] or res["int8"]["error"]:
        return f"| {name} | {res['fp32']['error'] or ''} | {res['int8']['error'] or ''} |" + " |" * 7
    med = {e: float(np.median(res[e]["times"])) if res[e]["times"] else float("nan") for e in engines}
    o32 = np.load(os.path.join(tmp, "out-fp32.npz"))
    n = a.eval

    def sqnr(e: str) -> str:
        if e not in engines or res[e]["error"]:
            return (res.get(e) or {}).get("error") or ""
        o = np.load(os.path.join(tmp, f"out-{e}.npz"))
        return f"{min(sqnr_db(o32[k][:n], o[k]) for k in o32.files if k in o.files):.1f}"

    f32, i8 = med["fp32"], med["int8"]
    ort8 = med.get("ort_int8", float("nan"))
    s_floor = min(sqnr_db(o32[k][:n], o32[k][n:]) for k in o32.files)
    return (f"| {name} | {f32:.2f} | {i8:.2f} | {i8 / f32:.2f} | {ort8:.2f} | {i8 / ort8:.2f} | {sqnr('int8')} | "
            f"{sqnr('ort_int8')} | {s_floor:.1f} | {res['int8']['compile'][0]:.1f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", default="mobilenet_v2,mobilenet_v3_small,mobilenet_v3_large,efficientnet_b0,resnet50")
    ap.add_argument("--no-ort", action="store_true", help="leave out onnxruntime's QDQ model")
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
    table = models.all_models(torchvision=True)
    load_before = os.getloadavg()
    engines = ("fp32", "int8") if a.no_ort else ("fp32", "int8", "ort_int8")
    rows = ["| model | FP32 ms | INT8 ms | INT8/FP32 | ORT INT8 ms | INT8/ORT INT8 | SQNR INT8 dB | "
            "SQNR ORT INT8 dB | fp32 noise floor dB | INT8 compile s |", "|---" * 10 + "|"]
    for name in a.models.split(","):
        path = str(models.realistic_model(name) if name in models.REALISTIC else table[name]())
        with tempfile.TemporaryDirectory(prefix="nnc-int8-") as tmp:
            rows.append(_bench_model(a, name, path, tmp, engines))
            print(rows[-1], flush=True)
    load = "load average (1, 5, 15 min) before {:.2f} {:.2f} {:.2f}, after {:.2f} {:.2f} {:.2f}".format(
        *load_before, *os.getloadavg())
    text = (f"## INT8 vs FP32 on x86, {datetime.date.today()}, {a.threads} thread(s), observer {a.observer}, "
            f"{a.calibration} calibration samples\n\n{load}; ratios below 1 mean the INT8 build is faster.\n\n"
            + "\n".join(rows) + "\n")
    if a.out:
        with open(a.out, "a") as f:
            f.write("\n" + text)
    print(text)


if __name__ == "__main__":
    main()

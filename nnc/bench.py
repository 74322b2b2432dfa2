"""Latency benchmarks: nnc against onnxruntime (and the reference interpreter), fairly.

``nnc bench MODEL`` and the suite in ``bench/`` use this module. Each engine runs in a subprocess of
its own (``python -m nnc.bench --worker SPEC``), so one engine's threads, allocator state and
imports cannot slow another, and the thread count is fixed through the environment before numpy,
onnxruntime or nnc start. Rounds alternate the engines (A B A B ...) so a slow spell of the shared
machine hits both; latency is the median and p90 of all timed runs of an engine. Compile time is
that of the first round: each benchmark gives nnc an empty compilation cache, so round 0 compiles
cold and later rounds hit the cache. Every engine gets the same inputs (written once by the
parent); the workers save their outputs so the parent can check that nnc and onnxruntime agree
before comparing speed.

A worker that fails (an op nnc cannot compile yet, a crash, a timeout) makes that engine's result
``fails: <reason>``; the others still run.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Any, Mapping, Sequence

import numpy as np

from nnc.backends.registry import get_backend

ENGINES = ("nnc", "ort", "reference")  # the default engine labels; nnc configurations may add more
THREAD_ENV = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NNC_NUM_THREADS")


# -- the parent ---------------------------------------------------------------------------------
def onnx_inputs(path: str, dims: Mapping[str, int] | None = None, seed: int = 0) -> dict[str, np.ndarray]:
    """Random inputs for an ONNX model's graph inputs (initializers excluded); symbolic dims -> 1."""
    import onnx
    from onnx import helper

    model = onnx.load(path, load_external_data=False)
    inits = {t.name for t in model.graph.initializer}
    rng = np.random.default_rng(seed)
    feeds = {}
    for vi in model.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (dims or {}).get(d.dim_param, 1) for d in tt.shape.dim]
        dt = np.dtype(helper.tensor_dtype_to_np_dtype(tt.elem_type))
        if dt.kind == "f":
            feeds[vi.name] = rng.standard_normal(shape).astype(dt)
        elif dt.kind == "b":
            feeds[vi.name] = rng.random(shape) < 0.5
        else:  # small non-negative integers are valid ids, indices and counts
            feeds[vi.name] = rng.integers(0, 10, size=shape).astype(dt)
    return feeds


def count_flops(path: str) -> float | None:
    """2 x multiply-adds of conv, conv_transpose, matmul and gemm (``passes.cost``), from the imported
    graph's types (symbolic input dims taken as 1); None when a shape is still not static."""
    import nnc
    from nnc.passes.cost import contraction_flops

    m = nnc.from_onnx(path)
    if not all(p.type.is_static for p in m.main.params):  # symbolic dims -> 1, as onnx_inputs does
        from nnc.ir.specialize import specialize

        m = specialize(m, {p.name: tuple(d if isinstance(d, int) else 1 for d in p.type.shape)
                           for p in m.main.params if p.type.shape is not None})
    for g in m.graphs.values():
        for op in g.ops:
            if op.opname in ("conv", "conv_transpose", "matmul", "gemm") and not all(
                    v.type.is_static for v in (op.results[0], op.operands[0], op.operands[1])):
                return None
    total = sum(contraction_flops(g.ops) for g in m.graphs.values())
    return float(total)


def ort_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("onnxruntime") is not None


def flops_or_none(path: str) -> float | None:
    try:
        return count_flops(path)
    except Exception:  # noqa: BLE001 - the FLOP count is a nicety; a model nnc cannot import has none
        return None


def _percentile(xs: Sequence[float], q: float) -> float:
    return float(np.percentile(np.asarray(xs), q)) if xs else float("nan")


def _run_worker(spec: dict[str, Any], threads: int, timeout: float, cache_dir: str) -> dict[str, Any]:
    env = dict(os.environ)
    env["NNC_CACHE_DIR"] = cache_dir
    for k in THREAD_ENV:
        env[k] = str(threads)
    try:
        proc = subprocess.run([sys.executable, "-m", "nnc.bench", "--worker", json.dumps(spec)], env=env,
                              capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"timeout after {timeout:.0f} s"}
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        tail = (proc.stderr.strip().splitlines() or [f"exit status {proc.returncode}"])[-1]
        return {"ok": False, "error": f"worker crashed (status {proc.returncode}): {tail[:200]}"}
    return json.loads(lines[-1])


def benchmark(model: str, engines: Sequence[str] = ("nnc", "ort"), threads: int = 1, target: str = "x86",
              rounds: int = 3, budget_s: float = 2.0, min_runs: int = 5, max_runs: int = 200,
              timeout: float = 600.0, dims: Mapping[str, int] | None = None,
              configs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, Any]:
    """Benchmark ``model`` on each engine; returns ``{engine: result}`` plus ``"agreement"``.

    An engine is ``"ort"`` (onnxruntime), ``"reference"``, ``"nnc"`` (``target``, default options)
    or a label of ``configs``: ``{label: {"target": ..., "mode": ..., **CompileOptions fields}}``, each
    compiled with ``nnc.compile(model, **config)`` in its worker (``nnc bench --compare`` uses two).
    A result has ``status`` ("ok" or "fails: <reason>"), and when ok ``compile_s``, ``median_ms``,
    ``p90_ms``, ``throughput`` (runs per second: inferences, or training steps in train mode),
    ``runs`` and ``memory`` (the compile report's arena and lower bound, bytes).
    """
    configs = dict(configs or {})
    results: dict[str, Any] = {e: {"status": "ok", "times": [], "compile": []} for e in engines}
    with tempfile.TemporaryDirectory(prefix="nnc-bench-") as tmp:
        feeds_path = os.path.join(tmp, "inputs.npz")
        try:
            np.savez(feeds_path, **onnx_inputs(model, dims))
        except Exception as e:  # noqa: BLE001 - any unreadable model is one line of report
            return {e2: {"status": f"fails: cannot read the model's inputs: {e}"} for e2 in engines}
        for r in range(rounds):
            for e in engines:
                res = results[e]
                if res["status"] != "ok":
                    continue
                out_path = os.path.join(tmp, f"out-{e}.npz") if r == 0 else None
                config = dict(configs.get(e) or {"target": "reference" if e == "reference" else target})
                if "threads" in get_backend(config.get("target", "reference")).options:
                    config.setdefault("threads", threads)  # the engine's thread count, unless the config sets one
                spec = {"model": os.path.abspath(model), "engine": e, "config": config, "threads": threads,
                        "inputs": feeds_path, "outputs": out_path, "budget_s": budget_s,
                        "min_runs": min_runs, "max_runs": max_runs}
                got = _run_worker(spec, threads, timeout, os.path.join(tmp, "cache"))
                if not got.get("ok"):
                    res["status"] = "fails: " + str(got.get("error", "unknown")).replace("\n", " ")[:300]
                    continue
                res["times"] += got["times_ms"]
                res["compile"].append(got["compile_s"])  # [0] is cold, later rounds hit the cache
                res["memory"] = got.get("memory")
                res["mode"] = got.get("mode", "infer")
        summary: dict[str, Any] = {}
        for e, res in results.items():
            if res["status"] != "ok":
                summary[e] = {"status": res["status"]}
                continue
            med = float(np.median(res["times"]))
            summary[e] = {"status": "ok", "median_ms": med, "p90_ms": _percentile(res["times"], 90),
                          "throughput": 1e3 / med, "compile_s": float(res["compile"][0]),
                          "cached_compile_s": float(np.median(res["compile"][1:])) if len(res["compile"]) > 1
                          else None,
                          "runs": len(res["times"]), "memory": res.get("memory"), "mode": res.get("mode"),
                          "config": dict(configs.get(e) or {})}
        ok = [e for e in engines if summary[e]["status"] == "ok" and summary[e].get("mode") != "train"]
        quantized = {e for e in ok if (configs.get(e) or {}).get("quantize")}
        summary["agreement"] = _agreement(tmp, ok, quantized)
    return summary


def _agreement(tmp: str, ok: list[str], quantized: set[str] | None = None) -> dict[str, Any]:
    """Largest difference of each engine's outputs from a baseline: onnxruntime when it ran, else the
    reference interpreter, else the first float nnc engine; quantized engines get an SQNR instead."""
    quantized = quantized or set()
    files = {e: os.path.join(tmp, f"out-{e}.npz") for e in ok if os.path.exists(os.path.join(tmp, f"out-{e}.npz"))}
    if len(files) < 2:
        return {}
    base_e = next((e for e in ("ort", "reference") if e in files),
                  next((e for e in files if e not in quantized), next(iter(files))))
    out = {}
    with np.load(files[base_e]) as zb:
        base = {k: zb[k] for k in zb.files}
    for e, f in files.items():
        if e == base_e:
            continue
        with np.load(f) as z:
            diffs = []
            for k, want in base.items():
                got = z[k] if k in z.files else None
                if got is None or got.shape != want.shape:
                    diffs.append(float("inf"))
                elif want.dtype.kind == "f":
                    d = np.abs(got.astype(np.float64) - want.astype(np.float64))
                    scale = np.maximum(np.abs(want.astype(np.float64)), 1.0)
                    diffs.append(float(np.nanmax(d / scale)) if d.size else 0.0)
                else:
                    diffs.append(float(np.any(got != want)))
        out[e] = {"vs": base_e, "max_scaled_diff": max(diffs) if diffs else 0.0}
        if e in quantized:
            with np.load(f) as z:
                sig = sum(float(np.sum(want.astype(np.float64) ** 2)) for want in base.values())
                noise = sum(float(np.sum((z[k].astype(np.float64) - want.astype(np.float64)) ** 2))
                            for k, want in base.items() if k in z.files and z[k].shape == want.shape)
            out[e]["sqnr_db"] = float(10 * np.log10(sig / noise)) if noise > 0 else float("inf")
    return out


def _mb(nbytes: Any) -> str:
    return f"{nbytes / 2**20:9.3g}" if isinstance(nbytes, (int, float)) else f"{'-':>9}"


def format_report(model: str, res: Mapping[str, Any], threads: int, flops: float | None = None,
                  compare: tuple[str, str] | None = None) -> str:
    """The table: one row per engine (latency, throughput, GFLOP/s, compile time, arena MB), the
    nnc/onnxruntime ratio, the ratio of a ``compare`` pair of engines, and output agreement."""
    lines = [f"{os.path.basename(model)}, {threads} thread(s)" + (f", {flops / 1e9:.3g} GFLOP" if flops else "")]
    engines = [e for e in res if e != "agreement"]
    w = max([10] + [len(e) for e in engines])
    lines.append(f"  {'engine':<{w}} {'median ms':>10} {'p90 ms':>10} {'runs/s':>9} {'GFLOP/s':>8} {'compile s':>10} "
                 f"{'runs':>5} {'arena MB':>9}")
    for e in engines:
        r = res[e]
        if r["status"] != "ok":
            lines.append(f"  {e:<{w}} {r['status']}")
            continue
        gf = f"{flops / r['median_ms'] / 1e6:8.1f}" if flops and r.get("mode") != "train" else f"{'-':>8}"
        arena = (r.get("memory") or {}).get("arena_bytes")
        lines.append(f"  {e:<{w}} {r['median_ms']:10.3f} {r['p90_ms']:10.3f} {r['throughput']:9.1f} {gf} "
                     f"{r['compile_s']:10.2f} {r['runs']:5d} {_mb(arena)}")
    base = next((e for e in engines if e.startswith("nnc")), None)
    if base and res[base]["status"] == "ok" and res.get("ort", {}).get("status") == "ok" and \
            res[base].get("mode") != "train":
        ratio = res[base]["median_ms"] / res["ort"]["median_ms"]
        lines.append(f"  {base} / onnxruntime median latency: {ratio:.2f}x ({'slower' if ratio > 1 else 'faster'})")
    if compare and all(res.get(e, {}).get("status") == "ok" for e in compare):
        a, b = (res[e] for e in compare)
        ratio = a["median_ms"] / b["median_ms"]
        lines.append(f"  {compare[0]} / {compare[1]} median latency: {ratio:.2f}x "
                     f"({'slower' if ratio > 1 else 'faster'})")
        ma, mb = ((r.get("memory") or {}).get("arena_bytes") for r in (a, b))
        if ma and mb:
            lines.append(f"  {compare[0]} / {compare[1]} arena: {ma / mb:.2f}x ({ma:,} vs {mb:,} bytes)")
    for e, ag in res.get("agreement", {}).items():
        if "sqnr_db" in ag:
            lines.append(f"  outputs {e} vs {ag['vs']}: SQNR {ag['sqnr_db']:.1f} dB (quantized)")
            continue
        verdict = "agree" if ag["max_scaled_diff"] <= 1e-3 else "DIFFER"
        lines.append(f"  outputs {e} vs {ag['vs']}: {verdict} (max |diff|/max(|ref|,1) = {ag['max_scaled_diff']:.2e})")
    return "\n".join(lines)


# -- the worker ---------------------------------------------------------------------------------
def _timed_runs(run, budget_s: float, min_runs: int, max_runs: int) -> list[float]:
    for _ in range(2):  # warm-up: first-touch of the arena, caches, thread-pool start
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_runs and (len(times) < min_runs or time.perf_counter() - start < budget_s):
        t0 = time.perf_counter()
        run()
        times.append((time.perf_counter() - t0) * 1e3)
    return times


def _worker(spec: dict[str, Any]) -> dict[str, Any]:
    with np.load(spec["inputs"]) as z:
        feeds = {k: z[k] for k in z.files}
    threads = int(spec["threads"])
    engine = spec["engine"]
    t0 = time.perf_counter()
    if engine == "ort":
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        sess = ort.InferenceSession(spec["model"], so, providers=["CPUExecutionProvider"])
        names = [o.name for o in sess.get_outputs()]

        def run():
            return dict(zip(names, sess.run(None, feeds)))
    else:
        import nnc

        # the parent gives every benchmark an empty cache (NNC_CACHE_DIR): round 0 compiles cold
        # (the compile time reported), later rounds hit the cache instead of compiling again
        cm = nnc.compile(spec["model"], **spec["config"])
        memory = (cm.report.get("memory") or {})
        result_memory = {k: memory.get(k) for k in ("arena_bytes", "lower_bound_bytes", "weights_bytes")}
        if spec["config"].get("mode") == "train":
            batch = _train_batch(cm, feeds)

            def run():
                return {"loss": np.asarray(cm.step(batch))}
        else:
            def run():
                return cm.run(feeds)
    compile_s = time.perf_counter() - t0
    outs = run()
    if spec.get("outputs"):
        np.savez(spec["outputs"], **{k: np.asarray(v) for k, v in outs.items()})
    times = _timed_runs(run, float(spec["budget_s"]), int(spec["min_runs"]), int(spec["max_runs"]))
    out = {"ok": True, "compile_s": compile_s, "times_ms": times, "mode": spec.get("config", {}).get("mode", "infer")}
    if engine != "ort":
        out["memory"] = result_memory
    return out


def _train_batch(sess: Any, feeds: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """A batch for a training step: the benchmark's inputs at the step's batch size, and labels
    (class ids 0/1 for an integer label, standard normal values for a float one)."""
    rng = np.random.default_rng(0)
    batch = {}
    for name, t in sess.input_types.items():
        shape = tuple(int(d) for d in t.shape)
        if name in feeds and feeds[name].shape[1:] == shape[1:]:
            reps = -(-shape[0] // max(feeds[name].shape[0], 1))
            batch[name] = np.concatenate([feeds[name]] * reps)[:shape[0]].astype(t.dtype.numpy)
        elif t.dtype.is_float:
            batch[name] = rng.standard_normal(shape).astype(t.dtype.numpy)
        else:
            batch[name] = rng.integers(0, 2, size=shape).astype(t.dtype.numpy)
    return batch


def worker_main(spec_json: str) -> int:
    spec = json.loads(spec_json)
    try:
        result = _worker(spec)
    except Exception as e:  # noqa: BLE001 - report, never crash the parent's table
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        result = {"ok": False, "error": f"{type(e).__name__}: {msg}"[:400]}
    sys.stdout.write(json.dumps(result) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        sys.exit(worker_main(sys.argv[2]))
    sys.exit("usage: python -m nnc.bench --worker SPEC_JSON (use 'nnc bench MODEL' instead)")

"""Shape-generic code against specialised code, at batch 1: the price of reading dims at run time.

Each PyTorch bench model is exported to ONNX with a symbolic batch (and a symbolic sequence for the
BERT encoder). "generic" compiles that model once (docs/dynamic-shapes.md); "static" compiles it
with the dims fixed (``dims={...}``, the specialised code). Both run the same batch-1 input. Each
configuration is timed in its own process, alternating generic, static, generic, static...; the
table gives each one's best-process median and the ratio. ``uptime`` before and after says how
quiet the machine was.

    python bench/dynamic_shapes.py [--models mlp,cnn_small,resnet18,mobilenet_v2,bert_small]
                                   [--threads 1] [--rounds 3] [--out bench/DYNAMIC.md]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, os.path.dirname(__file__))

import models  # noqa: E402

SEQUENCE = {"bert_small": 128}


def dynamic_model(name: str) -> Path:
    """The bench model exported with a symbolic batch (and sequence), cached beside the static one."""
    path = models.cache_dir() / f"{name}.dyn.v{models.EXPORT_VERSION}.onnx"
    if path.exists():
        return path
    import warnings

    import torch

    model, args = models.torch_module(name)
    axes = {0: "N", 1: "S"} if name in SEQUENCE else {0: "N"}
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(tmp), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"], dynamic_axes={"input": axes, "output": {0: "N"}})
    os.replace(tmp, path)
    return path


def _one(argv: list[str]) -> None:
    """Child process: compile one configuration, time it, print one JSON line."""
    import numpy as np

    import nnc

    path, kind, threads, budget = argv[0], argv[1], int(argv[2]), float(argv[3])
    name = Path(path).name.split(".")[0]
    seq = SEQUENCE.get(name)
    dims = {"N": 1, **({"S": seq} if seq else {})}
    opts = {"dims": dims} if kind == "static" else {}
    t0 = time.perf_counter()
    cm = nnc.compile(path, target="x86", threads=threads, quiet=True, cache=False, **opts)  # a cold compile
    compile_s = time.perf_counter() - t0
    (inp,) = cm.input_types.items()
    shape = tuple(dims.get(d, d) if isinstance(d, str) else d for d in inp[1].shape)
    rng = np.random.default_rng(0)
    x = rng.integers(0, 1000, shape) if inp[1].dtype.is_int else rng.standard_normal(shape)
    feeds = {inp[0]: x.astype(inp[1].dtype.numpy)}
    for _ in range(3):
        cm.run(feeds)
    times = []
    end = time.perf_counter() + budget
    while time.perf_counter() < end or len(times) < 10:
        t = time.perf_counter()
        cm.run(feeds)
        times.append(time.perf_counter() - t)
    print(json.dumps({"median_ms": float(np.median(times)) * 1e3, "compile_s": compile_s,
                      "generic": bool((cm.report.get("shapes") or {}).get("generic"))}))


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        _one(sys.argv[2:])
        return 0
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="mlp,cnn_small,resnet18,mobilenet_v2,bert_small")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "DYNAMIC.md"))
    a = ap.parse_args()
    uptime = lambda: subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()  # noqa: E731
    before = uptime()
    rows = []
    for name in a.models.split(","):
        path = str(dynamic_model(name))
        best: dict[str, dict] = {}
        for _ in range(a.rounds):
            for kind in ("generic", "static"):
                out = subprocess.run([sys.executable, __file__, "--child", path, kind, str(a.threads), str(a.budget)],
                                     capture_output=True, text=True)
                if out.returncode:
                    print(out.stderr, file=sys.stderr)
                    raise SystemExit(f"{name} {kind} failed")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                if kind not in best or r["median_ms"] < best[kind]["median_ms"]:
                    best[kind] = r
        g, s = best["generic"], best["static"]
        rows.append((name, g, s))
        print(f"{name}: generic {g['median_ms']:.3f} ms (generic={g['generic']}), static {s['median_ms']:.3f} ms, "
              f"ratio {g['median_ms'] / s['median_ms']:.2f}", flush=True)
    after = uptime()
    lines = ["# Shape-generic vs specialised x86 code, batch 1", "",
             f"`python bench/dynamic_shapes.py --threads {a.threads} --rounds {a.rounds}`: each configuration in its "
             "own process, alternating; best-process median latency. \"generic\" is one compile with the batch (and "
             "sequence) read at run time; \"static\" fixes them at compile time.", "",
             f"- uptime before: `{before}`", f"- uptime after: `{after}`", "",
             "| model | generic (ms) | static (ms) | generic / static | shape-generic? | compile generic (s) | "
             "compile static (s) |", "|---|---|---|---|---|---|---|"]
    for name, g, s in rows:
        lines.append(f"| {name} | {g['median_ms']:.3f} | {s['median_ms']:.3f} | {g['median_ms'] / s['median_ms']:.2f} "
                     f"| {'yes' if g['generic'] else 'no (per shape)'} | {g['compile_s']:.1f} | {s['compile_s']:.1f} |")
    Path(a.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

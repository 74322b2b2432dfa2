"""Two nnc configurations against each other from the shell, as a user measures them:
``nnc bench MODEL --quantize int8 --calibration c.npz --compare fp32`` and ``nnc bench MODEL -O3
--compare -O0``, on ResNet-18 and MobileNetV2 with the realistic weights of ``models.realistic_model``
(so the INT8 row's SQNR means something). Each engine runs in its own process, rounds alternating;
the tables ``nnc bench`` prints are collected into a markdown file with ``uptime`` before and after.

    python bench/compare.py [--models resnet18,mobilenet_v2] [--threads 1] [--rounds 3] [--out bench/COMPARE.md]

Calibration: 8 standard-normal inputs, seed 1 (there is no real data set).
"""

from __future__ import annotations

import argparse
import datetime
import os
import subprocess
import sys
import tempfile

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))

import models  # noqa: E402

CONFIGS = [("INT8 vs FP32", ["--quantize", "int8", "--calibration", "{cal}", "--compare", "fp32"]),
           ("-O3 vs -O0", ["-O3", "--compare", "-O0"])]


def _uptime() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="resnet18,mobilenet_v2")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=2.0)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "COMPARE.md"))
    a = ap.parse_args()
    sections = []
    before = _uptime()
    with tempfile.TemporaryDirectory() as tmp:
        for name in a.models.split(","):
            path = str(models.realistic_model(name))
            cal = os.path.join(tmp, f"{name}-calibration.npz")
            np.savez(cal, input=np.random.default_rng(1).standard_normal((8, 1, 3, 224, 224)).astype(np.float32))
            for title, flags in CONFIGS:
                argv = [sys.executable, "-m", "nnc", "bench", path, "--threads", str(a.threads), "--rounds",
                        str(a.rounds), "--budget", str(a.budget)] + [f.replace("{cal}", cal) for f in flags]
                out = subprocess.run(argv, capture_output=True, text=True)
                text = (out.stdout + out.stderr).strip()
                print(text, flush=True)
                sections.append(f"### {name}: {title}\n\n```\n$ nnc bench {name}.onnx {' '.join(flags[:-2])} "
                                f"--compare {flags[-1]} --threads {a.threads}\n{text}\n```\n")
    after = _uptime()
    with open(a.out, "w") as f:
        f.write(f"# nnc configurations compared with `nnc bench --compare`\n\n"
                f"Measured {datetime.date.today()} with `python bench/compare.py --threads {a.threads} --rounds "
                f"{a.rounds}` on this repository's 2-core machine, nothing else running.\n\n"
                f"- uptime before: `{before}`\n- uptime after: `{after}`\n\n" + "\n".join(sections))
    print(f"wrote {a.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Simulate ResNet-50 (onnx light model), ResNet-18 and MobileNetV2 (PyTorch definitions in
bench/models.py) on the ASIC presets and write bench/ASIC.md: latency, fps vs the 40 ms target,
TOPS, utilization, mJ per inference, the int8 output's SQNR against fp32, and simulation time.

    python bench/asic.py [--presets edge,x1] [--models resnet50,resnet18,mobilenet_v2]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import models  # noqa: E402

import nnc  # noqa: E402


def sqnr_db(ref: np.ndarray, got: np.ndarray) -> float:
    ref, got = ref.astype(np.float64), got.astype(np.float64)
    err = ((ref - got) ** 2).sum()
    return float("inf") if err == 0 else float(10 * np.log10((ref ** 2).sum() / err))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="edge,x1")
    ap.add_argument("--models", default="resnet50,resnet18,mobilenet_v2")
    ap.add_argument("--out", default=str(Path(__file__).parent / "ASIC.md"))
    args = ap.parse_args()
    rows = []
    for name in args.models.split(","):
        path = str(models.all_models()[name]())
        ref = nnc.compile(path, target="reference")
        rng = np.random.default_rng(0)
        feeds = {n: rng.standard_normal([int(d) for d in t.shape]).astype(np.float32)
                 for n, t in ref.input_types.items()}
        want = ref.run(feeds)
        for preset in args.presets.split(","):
            t0 = time.perf_counter()
            cm = nnc.compile(path, target="asic", asic_preset=preset, calibration=[feeds])
            t1 = time.perf_counter()
            got = cm.run(feeds)
            t2 = time.perf_counter()
            r = cm.report["asic"]
            q = min(sqnr_db(want[k], got[k]) for k in want)
            rows.append(f"| {name} | {preset} | {r['latency_ms']:.2f} | {r['fps']:.0f} | "
                        f"{'yes' if r['meets_40ms'] else 'no'} | {r['tops_achieved']:.2f} / {r['tops_peak']:.2f} | "
                        f"{r['utilization']:.1%} | {r['energy_mj']['total']:.2f} | {r['dram_bytes'] / 2**20:.1f} | "
                        f"{q:.1f} | {', '.join(r['host_ops'])} | {t1 - t0:.1f} | {t2 - t1:.1f} |")
            print(rows[-1], flush=True)
    head = ["# ASIC simulation results", "",
            "`python bench/asic.py`: batch 1, 224x224, int8 (per-channel weights, per-tensor activations, minmax "
            "calibration on the one random input that is then run). The models carry random weights, so SQNR "
            "says how closely int8 tracks fp32 on these weights, not accuracy. Compile time includes "
            "calibration; sim time is the bit-exact functional simulation (timing is computed at compile time). "
            "Host ops run on the reference interpreter; their transfers are charged, their compute is not.", "",
            "| model | preset | latency ms | fps | meets 40 ms | TOPS achieved / peak | utilization | mJ | "
            "DRAM MiB | SQNR dB | host ops | compile s | sim s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    Path(args.out).write_text("\n".join(head + rows) + "\n")


if __name__ == "__main__":
    main()

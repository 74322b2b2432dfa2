"""Simulate ResNet-50 (onnx light model), ResNet-18 and MobileNetV2 (PyTorch definitions in
bench/models.py), with the realistic random weights of ``models.realistic_model``, on the ASIC
presets and write bench/ASIC.md: latency, fps vs the 40 ms target, TOPS, utilization, mJ per
inference, the int8 logits' SQNR against fp32 (calibrated on 4 standard-normal inputs, measured on a
fifth), the fp32 noise floor (the fp32 logits' SQNR when the input alone gets Gaussian noise 40 dB
below it), and simulation time.

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
        path = str(models.realistic_model(name) if name in models.REALISTIC else models.all_models()[name]())
        ref = nnc.compile(path, target="reference")
        shapes = {n: [int(d) for d in t.shape] for n, t in ref.input_types.items()}

        def normal(seed: int, shapes: dict = shapes) -> dict[str, np.ndarray]:
            rng = np.random.default_rng(seed)
            return {n: rng.standard_normal(s).astype(np.float32) for n, s in shapes.items()}

        feeds, calibration = normal(0), [normal(s) for s in (1, 2, 3, 4)]
        want = ref.run(feeds)
        rng = np.random.default_rng(7)
        noisy = ref.run({n: (v + rng.standard_normal(v.shape) * np.sqrt(float((v.astype(np.float64) ** 2).mean())
                                                                         / 1e4)).astype(np.float32)
                         for n, v in feeds.items()})
        floor = min(sqnr_db(want[k], noisy[k]) for k in want)
        for preset in args.presets.split(","):
            t0 = time.perf_counter()
            cm = nnc.compile(path, target="asic", asic_preset=preset, calibration=calibration)
            t1 = time.perf_counter()
            got = cm.run(feeds)
            t2 = time.perf_counter()
            r = cm.report["asic"]
            q = min(sqnr_db(want[k], got[k]) for k in want)
            rows.append(f"| {name} | {preset} | {r['latency_ms']:.2f} | {r['fps']:.0f} | "
                        f"{'yes' if r['meets_40ms'] else 'no'} | {r['tops_achieved']:.2f} / {r['tops_peak']:.2f} | "
                        f"{r['utilization']:.1%} | {r['energy_mj']['total']:.2f} | {r['dram_bytes'] / 2**20:.1f} | "
                        f"{q:.1f} | {floor:.1f} | {', '.join(r['host_ops'])} | {t1 - t0:.1f} | {t2 - t1:.1f} |")
            print(rows[-1], flush=True)
    head = ["# ASIC simulation results", "",
            "`python bench/asic.py`: batch 1, 224x224, int8 (per-channel weights, per-tensor activations, minmax "
            "calibration on 4 standard-normal inputs; the SQNR is measured on a fifth). The models carry the "
            "realistic random weights of `models.realistic_model` (seeded He-normal weights, BatchNorm statistics "
            "from one batch, ResNet-50 cut before its Softmax), so SQNR says how closely int8 tracks fp32 on "
            "these weights, not accuracy. \"fp32 floor\" is the SQNR of the fp32 logits when only the input gets "
            "Gaussian noise 40 dB below it: how much these weights amplify any perturbation. Compile time "
            "includes calibration; sim time is the bit-exact functional simulation (timing is computed at "
            "compile time). Host ops run on the reference interpreter; their transfers are charged, their "
            "compute is not.", "",
            "| model | preset | latency ms | fps | meets 40 ms | TOPS achieved / peak | utilization | mJ | "
            "DRAM MiB | SQNR dB | fp32 floor dB | host ops | compile s | sim s |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    Path(args.out).write_text("\n".join(head + rows) + "\n")


if __name__ == "__main__":
    main()

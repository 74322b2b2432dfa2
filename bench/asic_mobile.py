"""Mobile networks on the ASIC: MobileNetV3-large, EfficientNet-B0 (and MobileNetV3-small) with the
realistic random weights of ``models.realistic_model``, per preset: latency, host compute and its
share of the latency, link time, utilisation, TOPS, energy, and the int8 logits' SQNR against fp32
(minmax calibration on 4 standard-normal inputs, measured on a fifth), beside the fp32 noise floor.

    python bench/asic_mobile.py [--presets edge] [--models mobilenet_v3_large,efficientnet_b0] \
        [--json rows.json] [--before before.json] [--write] [--input-quantize chip|host]

``--json`` saves the rows (``--rows`` reads them back instead of measuring); ``--before`` reads rows
saved by an earlier run (e.g. of the previous commit) so that ``--write`` puts both in the "Mobile
networks on-chip" section of bench/ASIC.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

import models  # noqa: E402
from asic import sqnr_db, write_section  # noqa: E402

import nnc  # noqa: E402

TITLE = "## Mobile networks on-chip: MobileNetV3-large and EfficientNet-B0"
DEFAULT = "mobilenet_v3_large,efficientnet_b0,mobilenet_v3_small"


def measure(name: str, presets: list[str], config: dict | None = None) -> list[dict]:
    path = str(models.realistic_model(name))
    shape = (1, 3, 224, 224)

    def normal(seed: int) -> dict[str, np.ndarray]:
        return {"input": np.random.default_rng(seed).standard_normal(shape).astype(np.float32)}

    ref = nnc.compile(path, target="reference")
    feeds, calibration = normal(0), [normal(s) for s in (1, 2, 3, 4)]
    want = ref.run(feeds)["output"]
    rng = np.random.default_rng(7)
    x = feeds["input"]
    noisy = x + rng.standard_normal(x.shape) * np.sqrt(float((x.astype(np.float64) ** 2).mean()) / 1e4)
    floor = sqnr_db(want, ref.run({"input": noisy.astype(np.float32)})["output"])
    rows = []
    for preset in presets:
        t0 = time.perf_counter()
        cm = nnc.compile(path, target="asic", asic_preset=preset, calibration=calibration, asic_config=config)
        t1 = time.perf_counter()
        got = cm.run(feeds)["output"]
        t2 = time.perf_counter()
        r = cm.report["asic"]
        h = r["host"]
        ghz = r["config"]["clock_ghz"]
        ops: dict[str, int] = {}
        for o in h["ops"]:
            ops[o["op"]] = ops.get(o["op"], 0) + 1
        vec = sum(1 for li in r["layers"] if li.get("bound") == "vector")
        rows.append({"model": name, "preset": preset, "latency_ms": r["latency_ms"], "host_ms": h["ms"],
                     "host_share": h["share"], "exposed_share": h["exposed_share"],
                     "link_ms": r["transfers"]["cycles"] / ghz / 1e6,
                     "utilization": r["utilization"], "tops": r["tops_achieved"], "mj": r["energy_mj"]["total"],
                     "dram_mib": r["dram_bytes"] / 2**20, "sqnr_db": sqnr_db(want, got), "floor_db": floor,
                     "host_ops": ops, "chip_layers": len(r["layers"]), "vector_bound_layers": vec,
                     "macs": r["macs"], "compile_s": t1 - t0, "run_s": t2 - t1})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def table(rows: list[dict], label: str) -> list[str]:
    out = []
    for r in rows:
        ops = ", ".join(f"{k} {v}" for k, v in sorted(r["host_ops"].items(), key=lambda e: -e[1]))
        # rows from before streaming have no exposed share: their timeline was serial (host + link)
        exposed = r.get("exposed_share", (r["host_ms"] + r["link_ms"]) / r["latency_ms"])
        out.append(f"| {r['model']} | {r['preset']} | {label} | {r['latency_ms']:.2f} | {r['host_ms']:.3f} | "
                   f"{r['host_share']:.1%} | {exposed:.1%} | {r['link_ms']:.3f} | {r['utilization']:.1%} | "
                   f"{r['tops']:.2f} | {r['mj']:.2f} | {r['dram_mib']:.1f} | {r['sqnr_db']:.1f} | "
                   f"{r['floor_db']:.1f} | {sum(r['host_ops'].values())} ({ops}) | {r['chip_layers']} |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--presets", default="edge")
    ap.add_argument("--models", default=DEFAULT)
    ap.add_argument("--json", default=None)
    ap.add_argument("--input-quantize", choices=("chip", "host"), default=None,
                    help="who quantizes the FP32 input (default: the preset's input_quantize)")
    ap.add_argument("--rows", default=None, help="rows saved by --json instead of measuring again")
    ap.add_argument("--before", default=None)
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--notes", default=None, help="a text file appended below the table")
    ap.add_argument("--out", default=str(Path(__file__).parent / "ASIC.md"))
    args = ap.parse_args()
    if args.rows:
        rows = json.loads(Path(args.rows).read_text())
    else:
        config = {"input_quantize": args.input_quantize} if args.input_quantize else None
        rows = [r for n in args.models.split(",") for r in measure(n, args.presets.split(","), config)]
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    if not args.write:
        return
    before = json.loads(Path(args.before).read_text()) if args.before else []
    merged = []
    for r in rows:
        merged += table([b for b in before if (b["model"], b["preset"]) == (r["model"], r["preset"])], "before")
        merged += table([r], "after")
    body = [TITLE, "",
            "`python bench/asic_mobile.py --write`: batch 1, 224x224, the torchvision-like definitions of "
            "bench/models.py with realistic random weights (`models.realistic_model`), int8 with minmax "
            "calibration on 4 standard-normal inputs, SQNR of the int8 logits against fp32 on a fifth "
            "(\"fp32 floor\": the fp32 logits' SQNR when only the input gets noise 40 dB below it). Latency, "
            "host and link times are modelled (simulated chip, roofline host CPU of the preset, host link). "
            "\"host share\" is the host's compute over the latency; \"host exposed\" the part of the latency no "
            "chip segment covers (host compute and link transfers the streamed input does not hide: "
            "docs/asic.md). \"before\" is the same script on the commit this work started from (`--before`).",
            "",
            "| model | preset | run | latency ms | host ms | host share | host exposed | link ms | utilization | "
            "TOPS | mJ | DRAM MiB | SQNR dB | fp32 floor dB | host ops | chip layers |",
            "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|", *merged, ""]
    if args.notes:
        body += [Path(args.notes).read_text().rstrip("\n"), ""]
    write_section(Path(args.out), TITLE, "\n".join(body) + "\n")


if __name__ == "__main__":
    main()

"""Training vs inference memory for every bench model, at the same batch, with and without remat.

    python bench/train_memory.py [--models resnet18,bert_small] [--budget 0.5] [--out FILE.md]

For each model of bench/models.py (the PyTorch-defined ones and the onnx package's light models, batch
1 as exported; the light models' ConstantOfShape weights are made initializers so they train) the
training step (MSE loss on the first output, SGD) is built and planned, and so is
the inference model at the same batch (-O3). Memory is deterministic, so this needs no timing and
runs on the reference target (planning only, no native compile). Columns:

- infer arena: intermediates of the inference model (weights are separate and the same for both);
- train arena: activations kept for the backward pass, gradients and temporaries of the step
  (parameters and optimizer state are inputs, counted in "state");
- remat: the train arena after ``remat{budget=...}`` and the FLOPs it adds, as a percentage of the
  forward pass's FLOPs;
- activations: the peak bytes of forward activations held for the backward pass (the arena minus
  gradients and backward temporaries), before and after remat.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import models  # noqa: E402


def trainable_copy(path: str, out: str) -> str:
    """The onnx light models make every weight with ConstantOfShape (no initializers, so nothing
    would train): write a copy whose weights are initializers of the same values."""
    import numpy as np
    import onnx
    from onnx import numpy_helper

    m = onnx.load(path)
    inits = {i.name: numpy_helper.to_array(i) for i in m.graph.initializer}
    keep = []
    for n in m.graph.node:
        if n.op_type == "ConstantOfShape" and n.input[0] in inits:
            value = numpy_helper.to_array(n.attribute[0].t).reshape(-1)[0] if n.attribute else np.float32(0)
            m.graph.initializer.append(numpy_helper.from_array(
                np.full(inits[n.input[0]].astype(np.int64), value), n.output[0]))
        else:
            keep.append(n)
    if len(keep) == len(m.graph.node):
        return path
    del m.graph.node[:]
    m.graph.node.extend(keep)
    onnx.save(m, out)
    return out


def measure(name: str, budget: str) -> dict:
    import tempfile

    import nnc

    path = trainable_copy(str(models.all_models()[name]()), str(Path(tempfile.mkdtemp()) / f"{name}.onnx"))
    base = nnc.compile(path, target="reference", mode="train", loss="mse", optimizer="sgd", lr=1e-3)
    mem = base.report["memory"]
    remat = nnc.compile(path, target="reference", mode="train", loss="mse", optimizer="sgd", lr=1e-3,
                        memory_budget=budget)
    stats = next(p["stats"] for p in remat.report["passes"] if p["name"] == "remat")
    return {"infer": mem["inference"]["arena_bytes"], "train": mem["arena_bytes"], "state": mem["state_bytes"],
            "weights": mem["inference"]["weights_bytes"], "remat": stats["arena_after"],
            "act": stats["activations_before"], "act_remat": stats["activations_after"],
            "extra": stats["extra_flops"] / max(stats["forward_flops"], 1), "met": stats["budget_met"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default=",".join(models.all_models()))
    ap.add_argument("--budget", default="0.5")
    ap.add_argument("--out")
    a = ap.parse_args()
    mb = 1 / 2 ** 20
    lines = [f"batch 1 (as exported), MSE loss, SGD; remat budget {a.budget}", "",
             "| model | weights | infer arena | train arena | train / infer | state | remat arena | arena cut | "
             "activations | remat activations | activation cut | extra FLOPs |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for name in a.models.split(","):
        t0 = time.perf_counter()
        try:
            r = measure(name, a.budget)
        except Exception as e:  # noqa: BLE001  (a model that cannot train is reported, not fatal)
            lines.append(f"| {name} | {type(e).__name__}: {str(e).splitlines()[0][:90]} |||||||| ")
            print(lines[-1], file=sys.stderr)
            continue
        lines.append(f"| {name} | {r['weights'] * mb:.1f} MB | {r['infer'] * mb:.2f} MB | {r['train'] * mb:.2f} MB | "
                     f"{r['train'] / max(r['infer'], 1):.1f}x | {r['state'] * mb:.1f} MB | {r['remat'] * mb:.2f} MB | "
                     f"{r['train'] / max(r['remat'], 1):.2f}x | {r['act'] * mb:.2f} MB | "
                     f"{r['act_remat'] * mb:.2f} MB | "
                     f"{r['act'] / max(r['act_remat'], 1):.2f}x | {100 * r['extra']:.0f}% |")
        print(lines[-1], f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    text = "\n".join(lines)
    print(text)
    if a.out:
        Path(a.out).write_text(text + "\n")


if __name__ == "__main__":
    main()

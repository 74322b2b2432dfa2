"""Training-step latency: nnc x86 against PyTorch eager on CPU, and training vs inference memory.

    python bench/train.py [--models mlp,cnn,resnet18,encoder] [--threads 2] [--rounds 3] [--budget 1.0]
                          [--batch 32] [--out FILE.md]

For each model (an MLP and a small CNN defined here; ResNet-18 at 3x224x224 with 1000 classes, the
BasicBlock definition of bench/models.py; a transformer encoder: the four 256-wide layers of
bench/models.py's BERT-small over a float [128, 256] sequence, mean-pooled into a linear head of 10;
all in PyTorch, batch norm in training form, exported to ONNX with ``dynamo=False``) each engine
runs in its own subprocess, rounds alternating
between the engines (as bench/suite.py does): nnc (``nnc.compile(mode="train", target="x86")``,
``TrainingSession.step``) and torch eager (forward, loss, backward, ``optimizer.step``), both SGD
with momentum on an MSE loss against one-hot targets, with the same thread count. The table gives
the median step time of each engine and the ratio torch / nnc (above 1: nnc is faster).

Memory: for the same batch, the x86 arena of the compiled training step (activations, gradients
and temporaries; parameters and optimizer state are inputs and counted beside it) against the
arena plus weights of the compiled inference model.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

MODELS = ("mlp", "cnn", "resnet18", "encoder")
DEFAULT_MODELS = ("mlp", "cnn")


def _net(name: str):
    import torch

    if name in ("resnet18", "encoder"):
        return _bench_net(name)
    torch.manual_seed(0)
    if name == "mlp":
        net = torch.nn.Sequential(torch.nn.Linear(784, 512), torch.nn.ReLU(), torch.nn.Linear(512, 256),
                                  torch.nn.ReLU(), torch.nn.Linear(256, 10))
        return net, (784,)
    net = torch.nn.Sequential(torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
                              torch.nn.Conv2d(16, 32, 3, stride=2, padding=1), torch.nn.BatchNorm2d(32),
                              torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(32 * 14 * 14, 10))
    return net, (1, 28, 28)


def _bench_net(name: str):
    """ResNet-18 and the encoder from bench/models.py (seeded weights), in training mode."""
    import torch

    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import models

    if name == "resnet18":
        net, _ = models.torch_module("resnet18")
        return net.train(), (3, 224, 224)
    bert, _ = models.torch_module("bert_small")
    torch.manual_seed(1)

    class Encoder(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.layers = bert.layers
            self.head = torch.nn.Linear(256, 10)

        def forward(self, x):
            return self.head(self.layers(x).mean(dim=1))

    return Encoder().train(), (128, 256)


def _export(name: str, batch: int, path: str) -> None:
    import torch

    net, shape = _net(name)
    net.train()
    torch.onnx.export(net, (torch.randn(batch, *shape),), path, dynamo=False, input_names=["x"],
                      training=torch.onnx.TrainingMode.TRAINING, do_constant_folding=False)


def _data(name: str, batch: int):
    import numpy as np

    _, shape = _net(name)
    classes = 1000 if name == "resnet18" else 10
    rng = np.random.default_rng(0)
    x = rng.standard_normal((batch, *shape)).astype(np.float32)
    y = np.eye(classes, dtype=np.float32)[rng.integers(0, classes, batch)]
    return x, y


def worker(engine: str, name: str, batch: int, threads: int, budget: float, path: str) -> dict:
    """Runs in a subprocess: median step time of one engine on one model."""
    x, y = _data(name, batch)
    if engine == "nnc":
        import nnc

        sess = nnc.compile(path, target="x86", mode="train", loss="mse", optimizer="sgd", lr=1e-3, momentum=0.9,
                           threads=threads, quiet=True, gradients=False)

        def step():
            sess.step({"x": x, "labels": y})
    else:
        import torch

        torch.set_num_threads(threads)
        net, _ = _net(name)
        net.train()
        opt = torch.optim.SGD(net.parameters(), lr=1e-3, momentum=0.9)
        xt, yt = torch.tensor(x), torch.tensor(y)

        def step():
            opt.zero_grad()
            torch.nn.functional.mse_loss(net(xt), yt).backward()
            opt.step()
    for _ in range(3):
        step()
    times = []
    t_end = time.perf_counter() + budget
    while time.perf_counter() < t_end or len(times) < 5:
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    return {"median_ms": statistics.median(times) * 1e3, "runs": len(times)}


def memory(name: str, batch: int, path: str) -> dict:
    import nnc

    sess = nnc.compile(path, target="x86", mode="train", loss="mse", optimizer="sgd", lr=1e-3, momentum=0.9,
                       quiet=True, gradients=False, cache=False)
    state = sum(a.nbytes for a in list(sess.parameters().values()) + list(sess.buffers().values())
                + list(sess.optimizer_state().values()))
    inf = nnc.compile(sess.export_inference().module, target="x86", quiet=True, cache=False)
    return {"train_arena": sess.executable.interface.arena_bytes, "train_state": state,
            "infer_arena": inf.executable.interface.arena_bytes, "weights": sum(
                a.nbytes for a in sess.parameters().values()) + sum(a.nbytes for a in sess.buffers().values())}


def _run(engine: str, name: str, batch: int, threads: int, budget: float, path: str) -> dict:
    code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); import train; "
            f"print(json.dumps(train.worker({engine!r}, {name!r}, {batch}, {threads}, {budget}, {path!r})))")
    env = dict(os.environ, NNC_NUM_THREADS=str(threads), OMP_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    if out.returncode:
        return {"error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "failed"}
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--budget", type=float, default=1.0)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--models", default=",".join(DEFAULT_MODELS), help=f"comma-separated, of {', '.join(MODELS)}")
    ap.add_argument("--out")
    a = ap.parse_args()
    names = [n.strip() for n in a.models.split(",") if n.strip()]
    unknown = sorted(set(names) - set(MODELS))
    if unknown:
        ap.error(f"unknown model(s) {unknown}; choose from {', '.join(MODELS)}")
    lines = [f"batch {a.batch}, {a.threads} threads, SGD momentum 0.9, MSE loss; median step time over "
             f"{a.rounds} alternating rounds", "",
             "| model | nnc x86 (ms) | torch eager (ms) | torch / nnc | train arena + state | infer arena + weights |",
             "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            path = os.path.join(tmp, f"{name}.onnx")
            _export(name, a.batch, path)
            res: dict[str, list[float]] = {"nnc": [], "torch": []}
            for _ in range(a.rounds):
                for engine in ("nnc", "torch"):
                    r = _run(engine, name, a.batch, a.threads, a.budget, path)
                    if "error" in r:
                        print(f"{name} {engine}: {r['error']}", file=sys.stderr)
                    else:
                        res[engine].append(r["median_ms"])
            mem = memory(name, a.batch, path)
            n = statistics.median(res["nnc"]) if res["nnc"] else float("nan")
            t = statistics.median(res["torch"]) if res["torch"] else float("nan")
            mb = 1 / 2 ** 20
            lines.append(f"| {name} | {n:.3f} | {t:.3f} | {t / n:.2f} | "
                         f"{mem['train_arena'] * mb:.2f} + {mem['train_state'] * mb:.2f} MB | "
                         f"{mem['infer_arena'] * mb:.2f} + {mem['weights'] * mb:.2f} MB |")
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

"""Rematerialisation: memory saved and step time paid, on a ResNet-style CNN and an attention encoder.

    python bench/remat.py [--budget 0.5] [--threads 2] [--rounds 3] [--time-budget 2.0] [--out FILE.md]

Both models are defined here in PyTorch and exported to ONNX (TorchScript exporter; the CNN in
training form, batch norm on batch statistics). The
training step (SGD, MSE loss) is compiled for x86 twice: without remat and with
``memory_budget=BUDGET`` (``remat{budget=...}``). Memory comes from the compile report (deterministic):
the step's arena, and the peak of forward activations held for the backward pass. Step time is timed
with each variant in its own process, rounds alternating, medians quoted, as in bench/suite.py.
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

MODELS = ("resnet_style", "attention")


def _net(name: str):
    import torch
    from torch import nn

    torch.manual_seed(0)
    if name == "resnet_style":
        class Block(nn.Module):
            def __init__(self, cin: int, cout: int, stride: int):
                super().__init__()
                self.a = nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())
                self.b = nn.Sequential(nn.Conv2d(cout, cout, 3, 1, 1, bias=False), nn.BatchNorm2d(cout))
                self.down = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                             if stride != 1 or cin != cout else nn.Identity())

            def forward(self, x):
                return torch.relu(self.b(self.a(x)) + self.down(x))

        net = nn.Sequential(nn.Conv2d(3, 32, 3, 1, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU(),
                            Block(32, 32, 1), Block(32, 32, 1), Block(32, 64, 2), Block(64, 64, 1),
                            Block(64, 128, 2), Block(128, 128, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(128, 10))
        return net, (8, 3, 32, 32)

    class Layer(nn.Module):
        def __init__(self, d: int = 128, heads: int = 4, ffn: int = 512):
            super().__init__()
            self.h, self.dk = heads, d // heads
            self.qkv, self.o = nn.Linear(d, 3 * d), nn.Linear(d, d)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.f1, self.f2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

        def forward(self, x):
            b, s, d = x.shape
            q, k, v = self.qkv(x).reshape(b, s, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)
            a = torch.softmax(q @ k.transpose(-1, -2) / self.dk ** 0.5, dim=-1)
            x = self.ln1(x + self.o((a @ v).transpose(1, 2).reshape(b, s, d)))
            return self.ln2(x + self.f2(torch.nn.functional.gelu(self.f1(x))))

    return nn.Sequential(*[Layer() for _ in range(4)]), (4, 64, 128)


def _export(name: str, path: str) -> None:
    """The CNN in training form (batch norm on batch statistics, as it trains), the encoder as is."""
    import warnings

    import torch

    net, shape = _net(name)
    training = name == "resnet_style"
    net.train(training)
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.randn(*shape),), path, dynamo=False, input_names=["x"],
                          do_constant_folding=False, training=mode)


def _compile(path: str, budget: str | None, threads: int):
    import onnx

    import nnc

    out = onnx.load(path).graph.output[0].type.tensor_type.shape
    opts = {"memory_budget": budget} if budget else {}
    sess = nnc.compile(path, target="x86", mode="train", loss="mse", optimizer="sgd", lr=1e-3, threads=threads,
                       quiet=True, gradients=False, **opts)
    return sess, [d.dim_value for d in out.dim]


def worker(path: str, shape: list[int], budget: str | None, threads: int, seconds: float) -> dict:
    """Runs in a subprocess: median step time of one variant."""
    import numpy as np

    sess, out = _compile(path, budget, threads)
    rng = np.random.default_rng(0)
    feeds = {"x": rng.standard_normal(shape).astype(np.float32), "labels": rng.standard_normal(out).astype(np.float32)}
    for _ in range(2):
        sess.step(feeds)
    times = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = time.perf_counter()
        sess.step(feeds)
        times.append(time.perf_counter() - t0)
    return {"median_ms": statistics.median(times) * 1e3}


def _run(path: str, shape: list[int], budget: str | None, threads: int, seconds: float) -> float:
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys, json; sys.path.insert(0, {here!r}); import remat; "
            f"print(json.dumps(remat.worker({path!r}, {shape!r}, {budget!r}, {threads}, {seconds})))")
    env = dict(os.environ, NNC_NUM_THREADS=str(threads))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=1800)
    if out.returncode:
        raise RuntimeError(out.stderr.strip()[-500:])
    return json.loads(out.stdout.strip().splitlines()[-1])["median_ms"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--budget", default="0.5")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--time-budget", type=float, default=2.0)
    ap.add_argument("--out")
    a = ap.parse_args()
    mb = 1 / 2 ** 20
    lines = [f"remat budget {a.budget}, {a.threads} threads, median step time over {a.rounds} alternating rounds", "",
             "| model | arena | remat arena | activations | remat activations | activation cut | "
             "extra FLOPs | step | remat step | time ratio |", "|---|---|---|---|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in MODELS:
            path = os.path.join(tmp, f"{name}.onnx")
            _export(name, path)
            _, shape = _net(name)
            sess, _ = _compile(path, a.budget, a.threads)
            st = next(p["stats"] for p in sess.report["passes"] if p["name"] == "remat")
            times: dict[str, list[float]] = {"base": [], "remat": []}
            for _ in range(a.rounds):
                times["base"].append(_run(path, list(shape), None, a.threads, a.time_budget))
                times["remat"].append(_run(path, list(shape), a.budget, a.threads, a.time_budget))
            base, rem = statistics.median(times["base"]), statistics.median(times["remat"])
            lines.append(f"| {name} | {st['arena_before'] * mb:.2f} MB | {st['arena_after'] * mb:.2f} MB | "
                         f"{st['activations_before'] * mb:.2f} MB | {st['activations_after'] * mb:.2f} MB | "
                         f"{st['activations_before'] / max(st['activations_after'], 1):.2f}x | "
                         f"{100 * st['extra_flops'] / max(st['forward_flops'], 1):.0f}% | {base:.1f} ms | "
                         f"{rem:.1f} ms | {rem / base:.2f}x |")
            print(lines[-1], file=sys.stderr)
    text = "\n".join(lines)
    print(text)
    if a.out:
        with open(a.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

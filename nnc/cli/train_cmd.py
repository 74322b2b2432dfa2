"""``nnc train``: compile a model's training step and run epochs over arrays from an ``.npz``.

    nnc train model.onnx --data data.npz --epochs 5 --batch-size 32 -o trained.onnx

It runs epochs over arrays from an ``.npz`` (one array per model input, named as the input, and the
labels under ``labels``, or ``y``), shows a progress bar with the loss on stderr, and writes the
trained model (``-o trained.onnx``) and/or a checkpoint. ``nnc compile --mode train -o step.so``
saves the step itself (``compile_cmd.py``).
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

import nnc
from nnc.ir import InputError, NncError

from .common import Formatter, add_train_flags, compile_options


class ProgressBar:
    """One line on stderr, rewritten in place on a terminal; one line per epoch elsewhere."""

    def __init__(self, total: int, label: str, quiet: bool = False, width: int = 30):
        self.total, self.label, self.quiet, self.width = total, label, quiet, width
        self.tty = sys.stderr.isatty()
        self.t0 = time.perf_counter()

    def update(self, done: int, loss: float) -> None:
        if self.quiet or not self.tty:
            return
        fill = int(self.width * done / max(self.total, 1))
        sys.stderr.write(f"\r\033[K{self.label} [{'#' * fill}{'.' * (self.width - fill)}] {done}/{self.total} "
                         f"loss {loss:.4f}")
        sys.stderr.flush()

    def close(self, loss: float) -> None:
        if self.quiet:
            return
        fill = "#" * self.width
        clear = "\r\033[K" if self.tty else ""
        sys.stderr.write(f"{clear}{self.label} [{fill}] {self.total}/{self.total} "
                         f"loss {loss:.4f} ({time.perf_counter() - self.t0:.1f} s)\n")
        sys.stderr.flush()


def _load_data(path: str, inputs: list[str], label: str) -> dict[str, np.ndarray]:
    with np.load(path, allow_pickle=False) as z:
        arrays = {k: z[k] for k in z.files}
    if label not in arrays and "y" in arrays:
        arrays[label] = arrays.pop("y")
    if len(inputs) == 1 and inputs[0] not in arrays and "x" in arrays:
        arrays[inputs[0]] = arrays.pop("x")
    missing = [n for n in inputs + [label] if n not in arrays]
    if missing:
        raise InputError(f"{path}: no array for {missing}; it has {sorted(arrays)} (name arrays after the model's "
                         f"inputs, and the labels '{label}' or 'y')")
    n = {len(arrays[k]) for k in inputs + [label]}
    if len(n) != 1:
        raise InputError(f"{path}: the arrays have different lengths {sorted(n)}")
    return {k: arrays[k] for k in inputs + [label]}


def cmd_train(args: argparse.Namespace) -> int:
    probe_label = args.label_name or "labels"
    with np.load(args.data, allow_pickle=False) as z:
        first = {k: z[k] for k in z.files}
    batch = args.batch_size or min(32, len(next(iter(first.values()))))
    sess = nnc.compile(args.model, options=compile_options(args, batch_size=batch, quiet=True))
    sig = sess.signature
    data = _load_data(args.data, sig.data_inputs, probe_label)
    n = len(data[probe_label])
    steps = n // batch
    if steps == 0:
        raise InputError(f"{args.data}: {n} samples is less than one batch of {batch}")
    rng = np.random.default_rng(args.seed)
    loss = float("nan")
    for epoch in range(args.epochs):
        order = rng.permutation(n) if args.shuffle else np.arange(n)
        bar = ProgressBar(steps, f"epoch {epoch + 1}/{args.epochs}", args.quiet)
        total = 0.0
        for i in range(steps):  # the last partial batch is dropped: the step has a static batch size
            idx = order[i * batch:(i + 1) * batch]
            loss = sess.step({k: v[idx] for k, v in data.items()})
            total += loss
            bar.update(i + 1, total / (i + 1))
        bar.close(total / steps)
    if args.checkpoint:
        sess.save(args.checkpoint)
    if args.output:
        inf = sess.export_inference()
        if args.output.endswith(".onnx"):
            inf.save_onnx(args.output)
        else:
            raise NncError("-o writes the trained model as ONNX: name it *.onnx")
    if not args.quiet:
        wrote = [p for p in (args.output, args.checkpoint) if p]
        print(f"trained {args.model}: {args.epochs} epochs x {steps} steps of {batch}, final loss {loss:.4f}"
              + (f"; wrote {', '.join(wrote)}" if wrote else ""))
    return 0


def add_train_command(sub: Any) -> None:
    t = sub.add_parser("train", formatter_class=Formatter, help="train a model on arrays from an .npz",
                       description="Compile MODEL's training step and run epochs over DATA (an .npz with one "
                                   "array per model input and the labels as 'labels' or 'y'), showing the loss.",
                       epilog="example:\n  nnc train mlp.onnx --data digits.npz --epochs 5 --optimizer adam "
                              "--lr 1e-3 -o trained.onnx")
    t.add_argument("model", metavar="MODEL", help="an ONNX model (.onnx)")
    t.add_argument("--data", required=True, metavar="FILE.npz", help="training arrays")
    t.add_argument("--epochs", type=int, default=1, help="passes over the data (default 1)")
    t.add_argument("--target", "-t", default="x86", help="compilation target (default x86)")
    t.add_argument("--threads", type=int, default=None, help="x86 threads")
    t.add_argument("--seed", type=int, default=0, help="shuffling seed")
    t.add_argument("--no-shuffle", dest="shuffle", action="store_false", help="keep the data order")
    t.add_argument("-o", "--output", metavar="OUT.onnx", help="write the trained model (inference form)")
    t.add_argument("--checkpoint", metavar="FILE.npz", help="write parameters and optimizer state")
    t.add_argument("-q", "--quiet", action="store_true", help="no progress, no summary")
    add_train_flags(t, defaults=True)
    t.set_defaults(fn=cmd_train, mode="train")

"""The training side of the CLI: ``nnc train`` and ``nnc compile --mode train``.

    nnc compile model.onnx --mode train --loss cross_entropy --optimizer adam --lr 1e-3 -o step.so
    nnc train model.onnx --data data.npz --epochs 5 --batch-size 32 -o trained.onnx

``compile --mode train -o step.so`` writes the training step as an x86 shared library (with its C
header and manifest; inputs: data, labels, lr, step, parameters, optimizer state; outputs: loss and
the updated tensors, see docs/training.md) and the initial parameters and state beside it
(``step.init.npz``). ``train`` runs epochs over arrays from an ``.npz`` (one array per model input,
named as the input, and the labels under ``labels``, or ``y``), shows a progress bar with the loss
on stderr, and writes the trained model (``-o trained.onnx``) and/or a checkpoint.
"""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import numpy as np

from nnc.ir import InputError, NncError
from nnc.passes.training.losses import LOSSES, REDUCTIONS
from nnc.passes.training.optimizers import OPTIMIZERS


def add_train_flags(p: argparse.ArgumentParser, defaults: bool = False) -> None:
    t = p.add_argument_group("training (--mode train)" if not defaults else "training")
    t.add_argument("--loss", choices=LOSSES, default="cross_entropy" if defaults else None,
                   help="loss on the model's first output (default cross_entropy)")
    t.add_argument("--loss-output", metavar="NAME", help="attach the loss to this output instead")
    t.add_argument("--reduction", choices=REDUCTIONS, default=None, help="loss reduction (default mean)")
    t.add_argument("--label-smoothing", type=float, default=None, help="cross_entropy label smoothing")
    t.add_argument("--label-name", default=None, help="name of the labels input (default labels)")
    t.add_argument("--optimizer", choices=OPTIMIZERS, default="sgd" if defaults else None, help="default sgd")
    t.add_argument("--lr", type=float, default=None, help="learning rate (default 1e-2 for sgd, 1e-3 else)")
    t.add_argument("--momentum", type=float, default=None, help="sgd momentum")
    t.add_argument("--nesterov", action="store_true", default=None, help="sgd Nesterov momentum")
    t.add_argument("--weight-decay", type=float, default=None, help="L2 (sgd, adam) or decoupled (adamw)")
    t.add_argument("--betas", type=float, nargs=2, metavar=("B1", "B2"), default=None, help="adam/adamw betas")
    t.add_argument("--batch-size", type=int, default=None, help="the (static) batch size, for models whose "
                                                                "batch dimension is symbolic")
    t.add_argument("--freeze", action="append", metavar="NAME", help="a parameter not to train; repeatable")
    t.add_argument("--memory-budget", metavar="BYTES|FRACTION", default=None,
                   help="rematerialise activations to fit the step's arena in BYTES (64MB, 1.5GiB) or a "
                        "FRACTION of it (0.5); the report gives memory and extra FLOPs (docs/autodiff.md)")


def train_options(args: argparse.Namespace) -> dict[str, Any]:
    """nnc.compile(mode="train") keyword arguments from the flags that were given."""
    names = {"loss": "loss", "loss_output": "loss_output", "reduction": "reduction",
             "label_smoothing": "label_smoothing", "label_name": "label_name", "optimizer": "optimizer",
             "lr": "lr", "momentum": "momentum", "nesterov": "nesterov", "weight_decay": "weight_decay",
             "betas": "betas", "batch_size": "batch_size", "freeze": "frozen", "memory_budget": "memory_budget"}
    return {kw: getattr(args, a) for a, kw in names.items() if getattr(args, a, None) is not None}


def cmd_compile_train(args: argparse.Namespace) -> int:
    """``nnc compile --mode train``: build the step; with -o FILE.so write it as an x86 library."""
    from nnc.training import build_step_module

    opts = train_options(args)
    if args.output is None:
        from nnc.cli import _compile_options

        t0 = time.perf_counter()
        import nnc

        sess = nnc.compile(args.model, target=args.target, mode="train", **opts, **_compile_options(args))
        from nnc.cli_pipeline import write_report

        write_report(args, sess.report)
        sig = sess.signature
        if not args.quiet:
            print(f"compiled the training step of {args.model} for {args.target} in "
                  f"{time.perf_counter() - t0:.1f} s: {len(sig.params)} parameters, optimizer {sess.optimizer.name}")
            print("nothing written; pass -o FILE.so (--target x86) to save the step as a library")
        return 0
    if args.target != "x86" or not args.output.endswith(".so"):
        raise NncError("a training step is saved as an x86 shared library: use --target x86 -o FILE.so")
    from nnc.backends.x86 import aot

    t0 = time.perf_counter()
    step_module, sig, lib_module = build_step_module(args.model, **opts)
    xopts = {k: getattr(args, k) for k in ("cpu", "target_features", "threads") if getattr(args, k, None) is not None}
    man = aot.compile_aot(lib_module, args.output, xopts)
    init = args.output[:-3] + ".init.npz"
    np.savez(init, **{n: step_module.constants[sig.bindings[n]] for n in sig.params + sig.buffers + sig.state})
    if not args.quiet:
        print(f"compiled the training step of {args.model} for x86 in {time.perf_counter() - t0:.1f} s: wrote "
              f"{args.output}, {man['header']} and {init} (initial parameters and optimizer state)")
        print(f"  inputs:  {', '.join([*sig.data_inputs, sig.label, sig.lr, sig.step])}, then "
              f"{len(sig.params) + len(sig.buffers) + len(sig.state)} parameter/state tensors")
        print("  outputs: loss, then <name>.new for each parameter/state tensor")
    return 0


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
    import nnc

    opts = train_options(args)
    probe_label = opts.get("label_name", "labels")
    with np.load(args.data, allow_pickle=False) as z:
        first = {k: z[k] for k in z.files}
    batch = args.batch_size or min(32, len(next(iter(first.values()))))
    opts["batch_size"] = batch
    copts: dict[str, Any] = {"quiet": True}
    if args.threads:
        copts["threads"] = args.threads
    sess = nnc.compile(args.model, target=args.target, mode="train", **opts, **copts)
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


def add_train_command(sub: Any, formatter: Any) -> None:
    t = sub.add_parser("train", formatter_class=formatter, help="train a model on arrays from an .npz",
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
    t.set_defaults(fn=cmd_train)

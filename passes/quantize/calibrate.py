"""Calibration: run the float graph on the reference interpreter over a set of inputs and let one
observer per floating-point value (graph inputs and every op result) watch the values it takes.

The result is ``{value name: (lo, hi)}``, the real range each activation's int8 encoding must
cover. Calibration data is a list of feed dicts, one dict, or a ``.npz`` file whose arrays are keyed
by input name and hold either one sample (the input's exact shape) or several stacked along a new
leading axis (or along the batch axis, which is then split into batch-sized samples).
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nnc.ir import InputError, Interpreter, Module, Op

from .observers import Observer, make_observer

Feeds = Mapping[str, np.ndarray]


class _ObservingInterpreter(Interpreter):
    """The reference interpreter, handing every float result to its value's observer."""

    def __init__(self, module: Module, kind: str):
        super().__init__(module, check_types=False)
        self.kind = kind
        self.observers: dict[str, Observer] = {}

    def watch(self, name: str, a: np.ndarray) -> None:
        if a.dtype.kind == "f":
            obs = self.observers.get(name)
            if obs is None:
                obs = self.observers[name] = make_observer(self.kind)
            obs.observe(a)

    def run_op(self, op: Op, arrays: list[np.ndarray]) -> list[np.ndarray]:
        results = super().run_op(op, arrays)
        if op.opname != "const":
            for r, a in zip(op.results, results):
                self.watch(r.name, a)
        return results


def _split_samples(name: str, arr: np.ndarray, shape: Sequence[Any]) -> list[np.ndarray]:
    """One input's array from an .npz as a list of samples of the input's shape."""
    rank = len(shape)
    if arr.ndim == rank + 1:
        return list(arr)
    if arr.ndim == rank:
        fixed = all(not isinstance(d, int) or d == s for d, s in zip(shape, arr.shape))
        if fixed:
            return [arr]
        batch = shape[0] if rank and isinstance(shape[0], int) else None
        if batch and arr.shape[0] % batch == 0:
            return [arr[i:i + batch] for i in range(0, arr.shape[0], batch)]
    raise InputError(f"calibration array {name!r} of shape {list(arr.shape)} does not fit input shape "
                     f"{list(shape)} (give one sample or samples stacked on a new leading axis)")


def load_calibration(source: str | Path | Feeds | Iterable[Feeds], module: Module) -> list[dict[str, np.ndarray]]:
    """Calibration feeds as a list of dicts, from any of the accepted forms."""
    if isinstance(source, (str, Path)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"calibration file {str(path)!r} does not exist")
        with np.load(path) as data:
            arrays = {k: data[k] for k in data.files}
        params = {p.name: p for p in module.main.params if p.binding is None}
        unknown = sorted(set(arrays) - set(params))
        if unknown:
            raise InputError(f"calibration file has arrays {unknown} that name no input; "
                             f"the model takes {sorted(params)}")
        samples = {k: _split_samples(k, a, params[k].type.shape or ()) for k, a in arrays.items()}
        counts = {len(v) for v in samples.values()}
        if len(counts) != 1:
            raise InputError(f"calibration arrays hold different sample counts: {sorted(counts)}")
        return [{k: v[i] for k, v in samples.items()} for i in range(counts.pop())]
    if isinstance(source, Mapping):
        return [dict(source)]
    feeds = [dict(f) for f in source]
    if not feeds:
        raise InputError("the calibration set is empty")
    return feeds


def synthetic_calibration(module: Module, count: int = 8, seed: int = 0) -> list[dict[str, np.ndarray]]:
    """Standard-normal feeds for every static float input: a stand-in when no data is given."""
    rng = np.random.default_rng(seed)
    feeds = []
    for _ in range(count):
        f = {}
        for p in module.main.params:
            if p.binding is not None:
                continue
            shape = p.type.shape or ()
            if not all(isinstance(d, int) for d in shape) or not p.type.dtype.is_float:
                raise InputError(f"cannot synthesise calibration data for input {p.name!r} ({p.type}); "
                                 "give calibration data")
            f[p.name] = rng.standard_normal(shape).astype(p.type.dtype.numpy)
        feeds.append(f)
    return feeds


def calibrate(module: Module, feeds: Sequence[Feeds], observer: str = "minmax",
              progress: bool = False) -> dict[str, tuple[float, float]]:
    """Run ``module``'s main graph on every feed dict; return each float value's observed range."""
    interp = _ObservingInterpreter(module, observer)
    g = module.main
    for i, f in enumerate(feeds):
        for p in g.params:
            if p.name in f:
                interp.watch(p.name, np.asarray(f[p.name]))
        interp.run(f)
        if progress:
            print(f"\rcalibrating: {i + 1}/{len(feeds)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return {name: obs.range() for name, obs in interp.observers.items()}

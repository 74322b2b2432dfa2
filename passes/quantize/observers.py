"""Calibration observers: each watches every value one activation tensor takes over the calibration
set and proposes the real range [lo, hi] its int8 encoding should cover.

- ``minmax``: the extremes seen (no clipping; one outlier stretches the scale).
- ``percentile``: the magnitude below which ``percentile`` % of the values fall (clips outliers).
- ``entropy``: TensorRT's calibration: the clipping threshold whose 128-level quantized histogram
  has the least KL divergence from the observed one.

The histogram observers bin |x| over [0, max |x|] in 2048 bins; when a later batch raises the
maximum, the old counts are re-binned onto the wider range (each old bin's count lands in the new
bin holding its centre).
"""

from __future__ import annotations

import numpy as np

OBSERVERS = ("minmax", "percentile", "entropy")


class Observer:
    """Keeps the extremes; subclasses refine ``range``."""

    def __init__(self) -> None:
        self.lo, self.hi = np.inf, -np.inf

    def observe(self, x: np.ndarray) -> None:
        if x.size:
            finite = x[np.isfinite(x)] if not np.isfinite(x).all() else x
            if finite.size:
                self.lo = min(self.lo, float(finite.min()))
                self.hi = max(self.hi, float(finite.max()))

    def range(self) -> tuple[float, float]:
        if self.lo > self.hi:
            return 0.0, 0.0
        return self.lo, self.hi


class MinMaxObserver(Observer):
    pass


class HistogramObserver(Observer):
    def __init__(self, bins: int = 2048) -> None:
        super().__init__()
        self.bins = bins
        self.amax = 0.0
        self.hist = np.zeros(bins, dtype=np.float64)
        self.zeros = 0

    def observe(self, x: np.ndarray) -> None:
        super().observe(x)
        a = np.abs(x[np.isfinite(x)].astype(np.float64)).ravel()
        # exact zeros (half of every post-ReLU tensor) are exact at any scale: kept out of the
        # histogram, where they would swamp the first bin of the entropy search
        self.zeros += int(a.size - np.count_nonzero(a))
        a = a[a > 0]
        if not a.size:
            return
        top = float(a.max())
        if top > self.amax:
            if self.hist.any():
                centres = (np.arange(self.bins) + 0.5) * (self.amax / self.bins)
                self.hist, _ = np.histogram(centres, bins=self.bins, range=(0, top), weights=self.hist)
            self.amax = top
        if self.amax > 0:
            h, _ = np.histogram(a, bins=self.bins, range=(0, self.amax))
            self.hist += h

    def threshold(self) -> float:
        raise NotImplementedError

    def range(self) -> tuple[float, float]:
        lo, hi = super().range()
        if self.amax <= 0:
            return lo, hi
        t = self.threshold()
        return max(lo, -t), min(hi, t)


class PercentileObserver(HistogramObserver):
    def __init__(self, percentile: float = 99.99, bins: int = 2048) -> None:
        super().__init__(bins)
        self.percentile = percentile

    def threshold(self) -> float:
        cdf = np.cumsum(self.hist) + self.zeros
        i = int(np.searchsorted(cdf, cdf[-1] * self.percentile / 100.0))
        return min(self.bins, i + 1) * self.amax / self.bins


def kl_threshold(hist: np.ndarray, amax: float, levels: int = 128, stride: int = 1) -> float:
    """TensorRT's entropy calibration on a histogram of |x| over [0, amax]."""
    bins = len(hist)
    best_i, best_kl = bins, np.inf
    for i in range(levels, bins + 1, stride):
        p = hist[:i].copy()
        p[i - 1] += hist[i:].sum()  # the clipped outliers pile up in the last kept bin
        # q: hist[:i] merged into ``levels`` chunks, each chunk's mass spread over its nonzero bins
        edges = np.linspace(0, i, levels + 1).astype(np.int64)
        nz = (hist[:i] != 0).astype(np.float64)
        mass = np.add.reduceat(hist[:i], edges[:-1])
        count = np.add.reduceat(nz, edges[:-1])
        per = np.divide(mass, count, out=np.zeros_like(mass), where=count > 0)
        q = np.repeat(per, np.diff(edges)) * nz
        ps, qs = p.sum(), q.sum()
        if ps <= 0 or qs <= 0:
            continue
        p, q = p / ps, q / qs
        m = p > 0
        # bins where p > 0 but q == 0 (the outlier bin when hist[i-1] was empty) get a small floor
        kl = float(np.sum(p[m] * np.log(p[m] / np.maximum(q[m], 1e-12))))
        if kl < best_kl:
            best_kl, best_i = kl, i
    return (best_i + 0.5) * amax / bins if best_i < bins else amax


class EntropyObserver(HistogramObserver):
    def __init__(self, bins: int = 2048, stride: int = 8) -> None:
        super().__init__(bins)
        self.stride = stride

    def threshold(self) -> float:
        return kl_threshold(self.hist, self.amax, stride=self.stride)


def make_observer(kind: str) -> Observer:
    if kind == "minmax":
        return MinMaxObserver()
    if kind == "percentile":
        return PercentileObserver()
    if kind == "entropy":
        return EntropyObserver()
    raise ValueError(f"unknown observer {kind!r}; choose one of {', '.join(OBSERVERS)}")

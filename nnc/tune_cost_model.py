"""The learned cost model of ``nnc tune``: a ridge regression (numpy only) from schedule features to
the log of a candidate's time relative to the kernel's default schedule.

It ranks the candidates of a kernel so the search measures the promising ones first, and it learns
across kernels (and across tuning runs: it trains on every measurement in the database for the
target). How well it ranks is measured honestly: for each kernel with enough measurements, a model
trained on the *other* kernels predicts this kernel's candidates, and the Spearman rank correlation
between predicted and measured times is averaged over those held-out kernels (``held_out_rank``).
"""

from __future__ import annotations

import math
from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from nnc.backends.x86.kernels import conv_winograd
from nnc.backends.x86.kernels.conv_channel_vectors import chunks
from nnc.backends.x86.schedule import CHANVEC_LANES, Schedule
from nnc.backends.x86.schedule_space import gemm_dims


def _ceil(a: int, b: int) -> int:
    return -(-a // b)


def features(sig: Mapping[str, Any], sched: Schedule) -> np.ndarray:
    """A fixed-length vector describing (kernel, schedule): work, padding, register use, blocking, and
    which kind of kernel runs (the last two columns: the channel-vector conv, the Winograd conv)."""
    threads = int(sig.get("threads", 1))
    if sched.kind == "dwconv":
        out = sig["outputs"][0][1]
        plane = math.prod(out[2:])
        flat = 1.0 if sched.flat == 1 else (0.5 if sched.flat == -1 else 0.0)
        return np.array([1.0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, flat, math.log(plane), flat * math.log(plane),
                         math.log(threads), 0.0, 0.0])
    batch, M, N, K = gemm_dims(sig)
    chanvec, wino = sched.kind == "chanvec", sched.kind == "winograd"
    mc = sched.mc
    if wino:  # 16 products [tiles x C] @ [C x M]: rows are 2x2 tiles, vectors output channels
        th, tw = conv_winograd.tiles(*sig["outputs"][0][1][2:])
        N, K = M, K // 9
        M = th * tw
        lanes, tasks, mc = CHANVEC_LANES, sched.tn * sched.tp, sched.tb * tw
        nc = conv_winograd.chunks(N, th, sched.nv, sched.tn, sched.tp)[0]
    elif chanvec:  # the product transposed: the tile's rows are output pixels, its vectors output channels
        M, N = N, M
        lanes, tasks = CHANVEC_LANES, sched.tn * sched.tp
        nc = chunks(N, M, sched.mr, sched.nv, sched.tn, sched.tp)[0]  # the channels of a task
    else:
        lanes, nc = sched.vector_bits // 32, sched.nc
        tasks = sched.tm * sched.tn if sched.tm else threads
    nr = sched.nv * lanes
    mpad = _ceil(M, sched.mr) * sched.mr / max(M, 1)
    npad = _ceil(N, nr) * nr / max(N, 1)
    balance = _ceil(tasks * batch, threads) * threads / max(tasks * batch, 1)
    return np.array([
        0.0, math.log(mpad), math.log(npad),
        sched.mr * sched.nv / 28.0,                      # accumulator registers used
        1.0 / sched.mr + 1.0 / sched.nv,                 # loads per FMA (smaller tiles reload more)
        math.log(sched.kc / 256), math.log(min(sched.kc, K) / max(K, 1) + 1e-3),
        math.log(mc / 192), math.log(nc / 1024),
        1.0 if lanes < 16 else 0.0,
        1.0 if sched.order == "mn" and not (chanvec or wino) else 0.0,
        math.log(balance), math.log(max(tasks, 1) / threads),
        0.0, math.log(max(batch * M * N * K * (16 if wino else 1), 1)) / 10, 0.0, math.log(threads),
        float(chanvec), float(wino),
    ])


class CostModel:
    """Ridge regression on the features and their squares (standardised); ``predict`` gives
    log(time / default)."""

    # a strong penalty: a database holds few, noisy measurements per kernel (held-out Spearman on two
    # small databases measured on a loaded machine, ResNet-18 / MobileNetV2: alpha 1 gave 0.50 / 0.29,
    # alpha 30 gave 0.71 / 0.44)
    def __init__(self, alpha: float = 30.0):
        self.alpha = alpha
        self.w: np.ndarray | None = None
        self.n = 0
        self.mean = self.scale = np.zeros(0)

    def _design(self, x: np.ndarray) -> np.ndarray:
        q = np.hstack([x, x * x])
        # standardised columns, so that one penalty suits features of any scale (a constant column stays 0)
        return np.hstack([np.ones((len(x), 1)), (q - self.mean) / self.scale])

    def fit(self, xs: Sequence[np.ndarray], ys: Sequence[float]) -> "CostModel":
        self.n = len(xs)
        if self.n < 4:
            self.w = None
            return self
        x = np.array(xs)
        q = np.hstack([x, x * x])
        self.mean, self.scale = q.mean(axis=0), np.where(q.std(axis=0) > 0, q.std(axis=0), 1.0)
        a = self._design(x)
        reg = self.alpha * np.eye(a.shape[1])
        reg[0, 0] = 0.0  # the intercept is not shrunk
        self.w = np.linalg.solve(a.T @ a + reg, a.T @ np.asarray(ys, dtype=np.float64))
        return self

    @property
    def trained(self) -> bool:
        return self.w is not None

    def predict(self, xs: Sequence[np.ndarray]) -> np.ndarray:
        if self.w is None:
            return np.zeros(len(xs))
        return self._design(np.array(xs)) @ self.w


def training_set(records: Iterable[Mapping[str, Any]]) -> dict[str, list[tuple[np.ndarray, float]]]:
    """Per kernel key, (features, log(time / default time)) of every correct measurement whose
    kernel has a measured default."""
    recs = [r for r in records if r["ok"] and r["us"]]
    default = {r["key"]: r["us"] for r in recs if r["default"]}
    out: dict[str, list[tuple[np.ndarray, float]]] = {}
    for r in recs:
        if r["key"] in default:
            x = features(r["signature"], Schedule.from_json(r["schedule"]))
            out.setdefault(r["key"], []).append((x, math.log(r["us"] / default[r["key"]])))
    return out


def fit(records: Iterable[Mapping[str, Any]]) -> CostModel:
    data = [p for rows in training_set(records).values() for p in rows]
    return CostModel().fit([x for x, _ in data], [y for _, y in data])


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation (average ranks for ties); nan when either side is constant."""
    ra, rb = _ranks(np.asarray(a, float)), _ranks(np.asarray(b, float))
    if ra.std() == 0 or rb.std() == 0:
        return float("nan")
    return float(np.corrcoef(ra, rb)[0, 1])


def _ranks(x: np.ndarray) -> np.ndarray:
    order = np.argsort(x, kind="stable")
    ranks = np.empty(len(x))
    ranks[order] = np.arange(len(x), dtype=float)
    for v in np.unique(x):  # ties share their average rank
        same = x == v
        ranks[same] = ranks[same].mean()
    return ranks


def held_out_rank(records: Iterable[Mapping[str, Any]], min_points: int = 3) -> dict[str, Any]:
    """Leave-one-kernel-out: the mean Spearman correlation of predicted and measured times over
    the kernels with at least ``min_points`` measurements, each predicted by a model trained
    without it. ``kernels`` is how many were held out (0: not enough data to say)."""
    data = training_set(records)
    scores = []
    for key, rows in data.items():
        if len(rows) < min_points:
            continue
        rest = [p for k, rs in data.items() if k != key for p in rs]
        model = CostModel().fit([x for x, _ in rest], [y for _, y in rest])
        if not model.trained:
            continue
        rho = spearman(model.predict([x for x, _ in rows]), [y for _, y in rows])
        if not math.isnan(rho):
            scores.append(rho)
    return {"spearman": float(np.mean(scores)) if scores else None, "kernels": len(scores)}


def rank_text(rank: Mapping[str, Any]) -> str:
    """One line on ``held_out_rank``'s result."""
    if rank["spearman"] is None:
        return "cost model: not enough measurements to rank held-out kernels"
    return f"cost model: Spearman {rank['spearman']:.2f} on {rank['kernels']} held-out kernel(s)"

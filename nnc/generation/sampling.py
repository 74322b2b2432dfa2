"""Choosing the next token from logits, on the host: greedy (the first largest logit, as
``argmax``) or sampling with temperature, top-k and top-p (nucleus) from a seeded numpy generator.

The filters follow the usual definitions: top-k keeps every logit at least the k-th largest (ties
at the boundary stay), top-p keeps the smallest set of most likely tokens whose probability
reaches p (always at least the most likely one); sampling then draws from the softmax of what is
left. Probabilities are computed in float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import InputError


@dataclass(frozen=True)
class Sampling:
    do_sample: bool = False
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None

    def __post_init__(self) -> None:
        if not self.temperature > 0:
            raise InputError(f"temperature must be > 0, got {self.temperature}")
        if self.top_k is not None and self.top_k < 1:
            raise InputError(f"top_k must be >= 1, got {self.top_k}")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise InputError(f"top_p must be in (0, 1], got {self.top_p}")


def allowed(logits: np.ndarray, top_k: int | None, top_p: float | None) -> np.ndarray:
    """The mask of tokens that survive top-k then top-p, for each row of ``logits`` [B, V]."""
    x = np.asarray(logits, np.float64)
    keep = np.ones(x.shape, bool)
    if top_k is not None and top_k < x.shape[-1]:
        kth = np.partition(x, -top_k, axis=-1)[:, -top_k][:, None]
        keep &= x >= kth
    if top_p is not None and top_p < 1:
        masked = np.where(keep, x, -np.inf)
        order = np.argsort(-masked, axis=-1, kind="stable")
        p = _softmax(np.take_along_axis(masked, order, axis=-1))
        before = np.cumsum(p, axis=-1) - p  # probability of the tokens ranked above each one
        ranked_keep = before < top_p  # the first token always stays (before = 0)
        nucleus = np.zeros_like(keep)
        np.put_along_axis(nucleus, order, ranked_keep, axis=-1)
        keep &= nucleus
    return keep


def _softmax(x: np.ndarray) -> np.ndarray:
    m = np.max(x, axis=-1, keepdims=True)
    e = np.exp(x - m)
    return e / np.sum(e, axis=-1, keepdims=True)


def next_tokens(logits: np.ndarray, how: Sampling, rng: np.random.Generator) -> np.ndarray:
    """The next token of each row of ``logits`` [B, V] (i64[B])."""
    if not how.do_sample:
        return np.argmax(logits, axis=-1).astype(np.int64)
    x = np.asarray(logits, np.float64) / how.temperature
    x = np.where(allowed(x, how.top_k, how.top_p), x, -np.inf)
    p = _softmax(x)
    return np.array([rng.choice(p.shape[-1], p=row) for row in p], np.int64)

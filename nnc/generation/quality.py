"""What weight-only quantization costs a decoder: its weight bytes, and how far its logits and greedy
tokens are from the same decoder in FP32 (``generate(..., quality=True)``; docs/generation.md).

The FP32 decoder is the quantized one's own (checked, rewritten) step compiled again without the
quantize options. FP32 greedy decoding gives the reference tokens and logits; the quantized decoder
then runs on the same tokens (teacher forcing), so every position compares logits from the same
context:

- ``logit_sqnr_db``: ``10 log10(sum l_fp32**2 / sum (l_fp32 - l_q)**2)`` over all those logits;
- ``teacher_forced_agreement``: the share of positions where the quantized argmax is the FP32 token;
- ``greedy_agreement``: the share of positions where the quantized decoder's own greedy tokens equal
  FP32's (after a first difference the contexts differ, so this is the stricter figure), and
  ``first_difference``, the first such position (None if none).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.backends.options import WEIGHT_ONLY_MODES, CompileOptions
from nnc.ir import InputError

from .decoder import Decoder


def weight_report(dec: Decoder) -> dict[str, Any] | None:
    """The decode graph's ``quantize-weights`` figures (None when it quantized nothing): weights
    quantized, their float bytes and the bytes of their codes, scales and zero points, the output
    layer's (the lm head's) precision and how many output layers there are."""
    for rec in dec.decode.report.get("passes", []):
        if rec.get("name") == "quantize-weights" and rec.get("stats"):
            s = rec["stats"]
            return {"quantize": dec.options.quantize, "matrices": s["weights_quantized"],
                    "float_bytes": s["float_weight_bytes"], "quantized_bytes": s["quantized_weight_bytes"],
                    "ratio": round(s["float_weight_bytes"] / max(s["quantized_weight_bytes"], 1), 2),
                    "head": dec.options.quantize_head or "int8", "output_layers": s.get("output_layers", 0)}
    return None


def _greedy(dec: Decoder, ids: np.ndarray, n: int, forced: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(tokens [B, n], logits [n, B, vocab]) of ``n`` greedy steps after ``ids``; with ``forced``
    ([B, n]) the decoder is fed those tokens instead of its own."""
    dec.reset()
    logits = [dec.step(ids)]
    tokens = [np.argmax(logits[0], axis=-1)]
    for t in range(n - 1):
        nxt = tokens[-1] if forced is None else forced[:, t]
        logits.append(dec.step(nxt[:, None]))
        tokens.append(np.argmax(logits[-1], axis=-1))
    return np.stack(tokens, axis=1), np.stack(logits)


def check_quality_request(model: Any, options: CompileOptions | None, kwargs: dict[str, Any]) -> None:
    """Before anything compiles: ``quality`` needs a weight-quantized decoder (InputError)."""
    mode = model.options.quantize if isinstance(model, Decoder) else \
        options.quantize if options is not None else kwargs.get("quantize")
    if mode not in WEIGHT_ONLY_MODES:
        raise InputError(f"quality compares a weight-quantized decoder with FP32: build it with quantize= one of "
                         f"{', '.join(WEIGHT_ONLY_MODES)} (it has quantize={mode!r})")


def quality_report(dec: Decoder, ids: np.ndarray, n: int) -> dict[str, Any]:
    """Compare ``n`` greedy tokens after ``ids`` of the weight-quantized ``dec`` with FP32."""
    check_quality_request(dec, None, {})
    fp32 = Decoder(dec.module, options=dec.options.replace(quantize=None, quantize_group=None,
                                                           quantize_asymmetric=None, quantize_head=None))
    ref_tokens, ref_logits = _greedy(fp32, ids, n)
    _, forced_logits = _greedy(dec, ids, n, forced=ref_tokens)
    own_tokens, _ = _greedy(dec, ids, n)
    dec.reset()
    noise = float(np.sum((ref_logits.astype(np.float64) - forced_logits) ** 2))
    signal = float(np.sum(ref_logits.astype(np.float64) ** 2))
    same = own_tokens == ref_tokens
    differ = np.flatnonzero(~same.all(axis=0))
    # how decisive FP32's choice is (top-1 minus top-2 logit) against what quantization does to that
    # difference: a token flips where the change exceeds the margin
    top2 = np.argsort(ref_logits, axis=-1)[..., -2:]
    ref_top = np.take_along_axis(ref_logits.astype(np.float64), top2, axis=-1)
    q_top = np.take_along_axis(forced_logits.astype(np.float64), top2, axis=-1)
    margin = ref_top[..., 1] - ref_top[..., 0]
    change = (q_top[..., 1] - q_top[..., 0]) - margin
    return {
        "positions": int(n),
        "logit_sqnr_db": round(float(10 * np.log10(signal / noise)), 2) if noise > 0 else float("inf"),
        "teacher_forced_agreement": float(np.mean(np.argmax(forced_logits, axis=-1).T == ref_tokens)),
        "greedy_agreement": float(same.mean()),
        "first_difference": int(differ[0]) if differ.size else None,
        "top1_margin_median": round(float(np.median(margin)), 4),
        "margin_change_rms": round(float(np.sqrt(np.mean(change ** 2))), 4),
        "fp32_compiles": fp32.compiles,
    }

"""Text generation with decoder models: ``nnc.generate`` and ``Decoder`` (docs/generation.md).

A decoder step (token ids and a position in, logits and the KV caches out; from a ``transformers``
causal LM, or a saved step) is compiled twice through ``nnc.compile``, prefill and decode; the
cache is allocated once for the maximum length and updated in place; the next token is chosen on
the host from the logits (``sampling.py``).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from nnc.backends.options import CompileOptions
from nnc.ir import InputError, Module

from .decoder import Decoder, DecoderSpec, NotADecoderError, decoder_spec
from .onnx_decoder import LAYOUT as ONNX_LAYOUT
from .onnx_decoder import decoder_step_from_onnx, is_onnx_decoder
from .quality import check_quality_request, quality_report, weight_report
from .sampling import Sampling, allowed, next_tokens

__all__ = ["Decoder", "DecoderSpec", "Generation", "NotADecoderError", "Sampling", "allowed", "decoder_spec",
           "decoder_step_from_onnx",
           "generate", "load_decoder", "next_tokens", "save_decoder"]


@dataclass
class Generation:
    """The result of ``generate``: ``tokens`` (the prompt then the new tokens, i64[B, n]),
    ``new_tokens`` (i64[B, m]) and ``report`` (compiles, timings, cache bytes)."""

    tokens: np.ndarray
    new_tokens: np.ndarray
    report: dict[str, Any] = field(default_factory=dict)


def load_decoder(model: Any, target: str = "x86", max_length: int | None = None, batch: int = 1,
                 options: CompileOptions | None = None, **kwargs: Any) -> Decoder:
    """A ``Decoder`` from a ``Decoder`` (as is), a ``transformers`` causal LM (exported with caches
    of ``max_length`` for ``batch`` sequences), a Module or a saved decoder step (``.nnc`` text IR
    with its ``.npz``, or ``.pt2``)."""
    if isinstance(model, Decoder):
        return model
    from nnc.frontends.torch.loader import is_torch_module

    if is_torch_module(model):
        if max_length is None:
            raise InputError("a torch model needs max_length (the cache's length) to build its decoder")
        return Decoder.from_torch(model, max_length, batch, target, options, **kwargs)
    if not isinstance(model, Module):
        if not isinstance(model, (str, os.PathLike)):
            raise InputError(f"generate takes a Decoder, a transformers model, a Module or a saved decoder path, "
                             f"not {type(model).__name__}")
        from nnc.loading import check_weights, load_module

        path = os.fspath(model)
        if not os.path.exists(path):
            raise InputError(f"{path}: no such file")
        source, model = path, load_module(path)
        check_weights(model, source)
        if path.lower().endswith(".onnx") and not is_onnx_decoder(model):
            raise NotADecoderError(f"{path}: not a decoder step: an ONNX model without past_key_values.{{i}}.key/.value"
                                   f" inputs (expected {ONNX_LAYOUT})")
    if is_onnx_decoder(model):
        if max_length is None:
            raise InputError("an ONNX decoder with past key/values needs max_length (the cache's length)")
        model = decoder_step_from_onnx(model, max_length, batch)
    return Decoder(model, target, options, **kwargs)


def save_decoder(model: Any, path: str | os.PathLike, max_length: int, batch: int = 1) -> list[str]:
    """Write the decoder step of a ``transformers`` causal LM (or a decoder Module, or an imported
    ONNX decoder with past key/values, rewritten here for caches of ``max_length``) as text IR:
    ``path`` (``.nnc``) and its weights beside it (``.npz``); ``nnc generate PATH`` runs it."""
    from nnc.backends.artifact import text_ir_files, write_files

    path = os.fspath(path)
    if not path.endswith(".nnc"):
        raise InputError(f"{path}: a saved decoder is text IR; give a .nnc path")
    if isinstance(model, Module):
        module = decoder_step_from_onnx(model, max_length, batch) if is_onnx_decoder(model) else model
    else:
        from nnc.frontends.torch.hf_decoder import from_hf_decoder

        module = from_hf_decoder(model, max_length, batch)
    decoder_spec(module)  # refuse to save something generate cannot run
    files = text_ir_files(module, path)
    write_files(files)
    return list(files)


def generate(model: Any, input_ids: Any, max_new_tokens: int = 20, do_sample: bool = False,
             temperature: float = 1.0, top_k: int | None = None, top_p: float | None = None,
             seed: int | None = None, eos_token_id: int | list[int] | None = None, pad_token_id: int | None = None,
             callback: Callable[[int, np.ndarray], Any] | None = None, max_length: int | None = None,
             target: str = "x86", options: CompileOptions | None = None, quality: bool = False,
             **kwargs: Any) -> Generation:
    """Generate up to ``max_new_tokens`` tokens after ``input_ids`` ([B, n] or [n]).

    ``model``: a ``Decoder`` (compiled already), a ``transformers`` causal LM (``max_length``
    defaults to prompt + new tokens), a decoder Module or a saved decoder path. Greedy unless
    ``do_sample``; sampling uses ``temperature``, ``top_k``, ``top_p`` and a numpy generator seeded
    with ``seed``. A sequence stops at any of ``eos_token_id`` (included in its tokens; a finished
    sequence of a batch gets ``pad_token_id``, default the first eos, until all finish).
    ``callback(step, tokens)`` gets each step's new tokens (i64[B]) as they are chosen. Compile
    options (keywords as ``nnc.compile``'s, or ``options``) apply when the decoder is built here.
    A weight-quantized decoder (``quantize="int8-weights"|"int4-weights"``) reports its weight bytes
    (``report["weights"]``); ``quality=True`` adds ``report["quality"]``: logit SQNR and greedy-token
    agreement against the same decoder in FP32 (quality.py)."""
    ids = np.asarray(input_ids)
    if ids.ndim == 1:
        ids = ids[None]
    if ids.ndim != 2 or ids.shape[1] == 0 or ids.dtype.kind not in "iu":
        raise InputError(f"input_ids must be a non-empty [batch, n] array of token ids, got "
                         f"{ids.dtype}{list(ids.shape)}")
    if max_new_tokens < 1:
        raise InputError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    how = Sampling(do_sample, temperature, top_k, top_p)
    if quality:
        check_quality_request(model, options, kwargs)
    eos = [] if eos_token_id is None else [eos_token_id] if isinstance(eos_token_id, int) else list(eos_token_id)
    pad = pad_token_id if pad_token_id is not None else (eos[0] if eos else 0)
    t0 = time.perf_counter()
    dec = load_decoder(model, target, max_length or ids.shape[1] + max_new_tokens, ids.shape[0], options, **kwargs)
    setup = time.perf_counter() - t0
    if ids.shape[1] + max_new_tokens > dec.spec.max_length:
        raise InputError(f"{ids.shape[1]} prompt + {max_new_tokens} new tokens exceed the decoder's maximum length "
                         f"{dec.spec.max_length}")
    if ids.max() >= dec.spec.vocab or ids.min() < 0:
        raise InputError(f"token ids must be in [0, {dec.spec.vocab}), got {int(ids.min())}..{int(ids.max())}")
    rng = np.random.default_rng(seed)
    dec.reset()
    t0 = time.perf_counter()
    logits = dec.step(ids)
    prefill_s = time.perf_counter() - t0
    new: list[np.ndarray] = []
    done = np.zeros(ids.shape[0], bool)
    decode_s = 0.0
    for step in range(max_new_tokens):
        tok = next_tokens(logits, how, rng)
        tok = np.where(done, pad, tok)
        new.append(tok)
        if callback is not None:
            callback(step, tok.copy())
        done |= np.isin(tok, eos)
        if done.all() or step == max_new_tokens - 1:
            break
        t0 = time.perf_counter()
        logits = dec.step(tok[:, None])
        decode_s += time.perf_counter() - t0
    new_tokens = np.stack(new, axis=1)
    steps = len(new) - 1  # decode steps run (the last token needs no forward pass)
    b = ids.shape[0]
    report = {
        "compiles": dec.compiles, "compile_seconds": round(dec.compile_seconds, 3),
        "setup_seconds": round(setup, 3),
        "prefill": {"tokens": int(ids.size), "seconds": prefill_s,
                    "tokens_per_s": ids.size / prefill_s if prefill_s > 0 else None},
        "decode": {"tokens": steps * b, "seconds": decode_s,
                   "tokens_per_s": steps * b / decode_s if decode_s > 0 else None},
        "new_tokens": int(new_tokens.shape[1]), "stopped_at_eos": bool(done.all() and eos),
        "cache": {"bytes": dec.spec.cache_bytes, "shape": list(dec.spec.cache_shape), "count": len(dec.spec.caches),
                  "dtype": str(dec.spec.cache_dtype), "max_length": dec.spec.max_length,
                  "in_place": dict(dec.in_place),
                  "bytes_copied_per_decode_step": dec.cache_bytes_copied_per_step("decode"),
                  "attentions_reading_written_rows_only": dec.bounded_attentions},
    }
    weights = weight_report(dec)
    if weights is not None:
        report["weights"] = weights
    if quality:
        report["quality"] = quality_report(dec, ids, int(new_tokens.shape[1]))
    return Generation(np.concatenate([ids.astype(np.int64), new_tokens], axis=1), new_tokens, report)

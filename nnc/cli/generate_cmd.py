"""``nnc generate``: generate tokens with a saved decoder step (``nnc.save_decoder``; text IR with
its weights, or a ``.pt2``) or an ONNX decoder with past key/values (the transformers/optimum
layout, rewritten onto a preallocated in-place cache), compiled twice through ``nnc.compile`` (prefill and decode; the
compile flags apply to both). Tokens are printed as they are chosen, then the report's figures
(docs/generation.md)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

import numpy as np

from nnc.ir import InputError

from .common import Formatter, add_compile_flags, compile_options, positive_int, write_report


def _token_ids(text: str | None, what: str) -> list[int]:
    if text is None or not text.strip():
        raise InputError(f"{what} is required: comma-separated token ids, e.g. {what} 1,2,3")
    try:
        ids = [int(t) for t in text.split(",")]
    except ValueError:
        raise InputError(f"{what} {text!r}: expected comma-separated integers, e.g. 1,2,3") from None
    if any(i < 0 for i in ids):
        raise InputError(f"{what} {text!r}: token ids are >= 0")
    return ids


def cmd_generate(args: argparse.Namespace) -> int:
    from nnc.generation import generate

    prompt = _token_ids(args.prompt_ids, "--prompt-ids")
    eos = _token_ids(args.eos_token_id, "--eos-token-id") if args.eos_token_id is not None else None
    options = compile_options(args)
    stream = not args.quiet

    def show(step: int, tokens: np.ndarray) -> None:
        if stream:
            print(("" if step == 0 else ",") + ",".join(str(int(t)) for t in tokens), end="", flush=True)

    out = generate(args.model, np.array([prompt], np.int64), max_new_tokens=args.max_new_tokens,
                   do_sample=args.do_sample, temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                   seed=args.seed, eos_token_id=eos, callback=show, options=options, quality=args.quality)
    if stream:
        print()
    else:
        print(",".join(str(int(t)) for t in out.new_tokens[0]))
    r = out.report
    if stream:
        print(_summary(r), file=sys.stderr)
        if "quality" in r:
            q = r["quality"]
            print(f"against FP32 ({q['positions']} positions): logit SQNR {q['logit_sqnr_db']} dB, greedy tokens "
                  f"agree {q['greedy_agreement']:.0%} (teacher-forced {q['teacher_forced_agreement']:.0%}); weights "
                  f"{r['weights']['float_bytes']} -> {r['weights']['quantized_bytes']} bytes (lm head "
                  f"{r['weights']['head']})", file=sys.stderr)
    write_report(args, r)
    return 0


def _summary(r: dict[str, Any]) -> str:
    def rate(part: dict[str, Any]) -> str:
        tps = part["tokens_per_s"]
        return f"{part['tokens']} tokens" + (f" at {tps:.1f} tokens/s" if tps else "")
    c = r["cache"]
    return (f"compiles: {r['compiles']} (prefill, decode); prefill: {rate(r['prefill'])}; decode: {rate(r['decode'])}; "
            f"KV cache: {c['bytes']} bytes ({c['count']} x {c['shape']} {c['dtype']}), updated in place: "
            f"{all(c['in_place'].values())}")


def add_generate_command(sub: Any) -> None:
    g = sub.add_parser("generate", formatter_class=Formatter, help="generate tokens with a decoder model",
                       description="Generate tokens after --prompt-ids with a decoder step saved by "
                                   "nnc.save_decoder (MODEL.nnc with its .npz, or a .pt2) or an ONNX decoder with "
                                   "past key/values (inputs input_ids, attention_mask, optional position_ids, "
                                   "past_key_values.{i}.key/.value; outputs logits, present.{i}.key/.value), whose "
                                   "Concat(past, new) becomes a write into the cache. The step is compiled "
                                   "twice (prefill and decode), the KV cache allocated once and updated in place. "
                                   "The new tokens are printed as they come, then the timings and cache size "
                                   "(stderr).",
                       epilog="examples:\n"
                              "  nnc generate gpt2.nnc --prompt-ids 1,2,3 --max-new-tokens 16\n"
                              "  nnc generate llama.nnc --prompt-ids 5,6 --do-sample --top-k 40 --seed 0\n"
                              "  nnc generate decoder_with_past.onnx --prompt-ids 1,2,3 --max-new-tokens 32\n"
                              "  nnc generate llama.nnc --prompt-ids 1,2 --quantize int4-weights --quantize-group 64 "
                              "--quality")
    g.add_argument("model", metavar="MODEL", help="a saved decoder step (.nnc text IR with its .npz, or .pt2), "
                                                  "or an ONNX decoder with past key/values (.onnx)")
    g.add_argument("--prompt-ids", metavar="IDS", help="the prompt: comma-separated token ids (required)")
    g.add_argument("--max-new-tokens", type=positive_int, default=20, metavar="N",
                   help="tokens to generate (default 20)")
    g.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    g.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1)")
    g.add_argument("--top-k", type=int, default=None, metavar="K", help="sample among the K most likely tokens")
    g.add_argument("--top-p", type=float, default=None, metavar="P", help="nucleus sampling: the smallest set of "
                                                                          "most likely tokens reaching P")
    g.add_argument("--seed", type=int, default=None, help="seed of the sampling generator")
    g.add_argument("--eos-token-id", metavar="IDS", default=None, help="stop at these token ids (comma-separated)")
    g.add_argument("--quality", action="store_true",
                   help="with --quantize int8-weights|int4-weights: also compile the decoder in FP32 and report "
                        "logit SQNR and greedy-token agreement against it")
    add_compile_flags(g, "x86", mode=False)
    g.set_defaults(fn=cmd_generate)

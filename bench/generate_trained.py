"""Weight-only quantized greedy decoding on a *trained* small GPT-2 against FP32: agreement of the
first 64 greedy tokens, logit SQNR, and how decisive the logits are (docs/generation.md, quality).

    python bench/generate_trained.py            # train ~1-2 minutes on 1 thread (cached), then compare
    python bench/generate_trained.py --quick    # the test's size (tests/generation/test_generate_trained.py)

Random-weight decoders (bench/generate.py) have next-token logits that are nearly tied, so the
quantization noise flips their greedy tokens and a flipped token sends the rest of the sequence
elsewhere: their agreement says little. A trained model's logits have margins. This script trains
a byte-level GPT-2 (``transformers``, vocabulary of the 256 byte values) with torch on text that
ships with the repository (its ``docs/*.md`` and ``README.md``), for a fixed number of AdamW
steps with a fixed seed on one thread (the checkpoint is cached under
``$NNC_BENCH_CACHE/generate_trained``), then generates 64 tokens greedily with nnc after a prompt
taken from that text, in FP32 and weight-quantized, for the same model untrained (its initial
weights) and trained. Each row is ``nnc.generate(..., quality=True)``: ``greedy`` is the share of
the 64 positions where the quantized decoder's own greedy tokens equal FP32's, ``margin`` the median
of FP32's top-1 minus top-2 logit, ``change`` the rms of what quantization does to that difference.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

HERE = Path(__file__).resolve().parent
SIZES = {  # name: (config, AdamW steps, batch, sequence length)
    "default": ({"n_embd": 192, "n_layer": 4, "n_head": 6}, 600, 16, 128),
    "quick": ({"n_embd": 64, "n_layer": 2, "n_head": 4}, 300, 16, 64),
}
BYTES = {"n_positions": 256, "vocab_size": 256, "bos_token_id": None, "eos_token_id": None}  # byte-level, no specials
# (quantize, quantize_head)
SCHEMES = [("int8-weights", None), ("int4-weights", None), ("int4-weights", "int4")]
NEW = 64


def corpus() -> bytes:
    """The repository's documentation, as bytes (the tokens are the byte values)."""
    root = HERE.parent
    return b"\n".join(p.read_bytes() for p in [root / "README.md", *sorted((root / "docs").glob("*.md"))])


def build(config: dict[str, Any]) -> Any:
    import torch
    import transformers

    torch.manual_seed(0)
    return transformers.GPT2LMHeadModel(transformers.GPT2Config(**config, **BYTES)).eval()


def train(model: Any, text: bytes, steps: int, batch: int, seq: int) -> list[float]:
    """``steps`` AdamW steps on random windows of ``text`` (seeded); the losses."""
    import torch

    data = torch.tensor(np.frombuffer(text, np.uint8).astype(np.int64))
    gen = torch.Generator().manual_seed(1)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=3e-3, total_steps=steps, pct_start=0.1)
    model.train()
    losses = []
    for _ in range(steps):
        starts = torch.randint(0, len(data) - seq - 1, (batch,), generator=gen)
        x = torch.stack([data[s:s + seq] for s in starts])
        loss = model(x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


def trained_model(size: str, cache: bool = True) -> tuple[Any, float]:
    """The trained model of ``size`` (cached by config, steps and text) and its final loss (nats per byte)."""
    import torch

    config, steps, batch, seq = SIZES[size]
    text = corpus()
    key = hashlib.sha256(repr(({**config, **BYTES}, steps, batch, seq)).encode() + text).hexdigest()[:12]
    root = Path(os.environ.get("NNC_BENCH_CACHE") or Path.home() / ".cache" / "nnc" / "bench")
    path = root / "generate_trained" / f"{size}-{key}.pt"
    model = build(config)
    if cache and path.exists():
        state = torch.load(path)
        model.load_state_dict(state["model"])
        return model, state["loss"]
    torch.set_num_threads(1)
    losses = train(model, text, steps, batch, seq)
    loss = float(np.mean(losses[-20:]))
    if cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save({"model": model.state_dict(), "loss": loss}, path)
    return model, loss


def prompt(n: int = 32) -> np.ndarray:
    """A passage of the training text (docs/generation.md's first line), as byte ids [1, n]."""
    text = (HERE.parent / "docs" / "generation.md").read_bytes()
    return np.frombuffer(text[:n], np.uint8).astype(np.int64)[None]


def compare(model: Any, quantize: str, head: str | None, threads: int = 1) -> dict[str, Any]:
    """nnc's quality report of ``model`` weight-quantized as asked, against FP32, over NEW greedy tokens."""
    from nnc.generation import generate

    out = generate(model, prompt(), max_new_tokens=NEW, quantize=quantize, quantize_head=head, quality=True,
                   threads=threads, quiet=True)
    return {**out.report["quality"], "head": out.report["weights"]["head"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter,
                                 epilog="\n".join(__doc__.splitlines()[2:4]))
    ap.add_argument("--quick", action="store_true", help="the small model of the test (~10 s of training)")
    ap.add_argument("--no-cache", action="store_true", help="train again even if a checkpoint is cached")
    args = ap.parse_args()
    size = "quick" if args.quick else "default"
    config, steps, batch, seq = SIZES[size]
    t0 = time.perf_counter()
    trained, loss = trained_model(size, cache=not args.no_cache)
    print(f"# byte-level GPT-2 {config}; {steps} AdamW steps of {batch} x {seq} bytes of README.md + docs/*.md "
          f"({len(corpus())} bytes): loss {loss:.3f} nats/byte ({time.perf_counter() - t0:.0f} s with the cache)")
    print(f"# prompt {bytes(prompt()[0].astype(np.uint8)).decode(errors='replace')!r}, {NEW} greedy tokens\n")
    print("| model | quantize | lm head | logit SQNR | teacher-forced | greedy (first 64) | first difference "
          "| margin (median) | change (rms) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for label, model in (("untrained (random init)", build(config)), ("trained", trained)):
        for quantize, head in SCHEMES:
            q = compare(model, quantize, head)
            print(f"| {label} | {quantize} | {q['head']} | {q['logit_sqnr_db']:.1f} dB | "
                  f"{q['teacher_forced_agreement']:.0%} | {q['greedy_agreement']:.0%} | {q['first_difference']} | "
                  f"{q['top1_margin_median']:.3f} | {q['margin_change_rms']:.3f} |", flush=True)


if __name__ == "__main__":
    sys.path.insert(0, str(HERE.parent))
    main()

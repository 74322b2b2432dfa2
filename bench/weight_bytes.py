"""Weight bytes of a GPT-2-small-sized decoder (124M parameters, transformers' default GPT2Config,
random weights) in FP32 and with weight-only INT8 / INT4 quantization, and the bytes a decode step
reads: the quantized matrices (attention, MLP, lm head) plus the float embeddings it gathers from.

    python bench/weight_bytes.py [--max-length 256]

No timing: the figures are exact byte counts from the quantize-weights pass's report (the codes,
their f32 scales and u8 zero points), printed as a Markdown table.
"""

from __future__ import annotations

import argparse

import numpy as np


def main() -> None:
    import torch
    import transformers

    from nnc.frontends.torch.hf_decoder import from_hf_decoder
    from nnc.passes import PassManager
    from nnc.passes.quantize import PREPARE
    from nnc.passes.quantize.weights import QuantizeWeights

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-length", type=int, default=256)
    args = p.parse_args()
    torch.manual_seed(0)
    model = transformers.GPT2LMHeadModel(transformers.GPT2Config()).eval()
    params = sum(t.numel() for t in model.parameters())
    module = from_hf_decoder(model, args.max_length)
    PassManager(PREPARE).run(module)
    total_fp32 = sum(a.nbytes for a in module.constants.values() if a.dtype == np.float32)
    rows = []
    # the lm head (the output layer) is int8 per channel unless the scheme says int4
    schemes = (("INT8 per channel", 8, 32, True, "int8"),
               ("INT4 g32 symmetric, head INT8 (the default)", 4, 32, True, "int8"),
               ("INT4 g32 symmetric, head INT4", 4, 32, True, "int4"),
               ("INT4 g32 zero points, head INT8", 4, 32, False, "int8"),
               ("INT4 g128 symmetric, head INT8", 4, 128, True, "int8"),
               ("INT4 g128 symmetric, head INT4", 4, 128, True, "int4"))
    for label, bits, group, symmetric, head in schemes:
        q = QuantizeWeights(bits=bits, group=group, symmetric=symmetric, head=head)
        q.run(module.clone())
        rows.append((label, q.stats))
    s0 = rows[0][1]
    others = total_fp32 - s0["float_weight_bytes"]  # embeddings, norms, biases stay f32
    print(f"GPT-2 small ({params / 1e6:.1f}M parameters), {s0['weights_quantized']} quantized matrices "
          f"({s0['float_weight_bytes'] / 4 / 1e6:.1f}M weights, lm head included); other f32 constants "
          f"{others / 2**20:.1f} MiB (embeddings, biases, norms)\n")
    print("| weights | matrices (MiB) | bits per weight | vs FP32 |")
    print("|---|---|---|---|")
    n = s0["float_weight_bytes"] / 4
    print(f"| FP32 | {s0['float_weight_bytes'] / 2**20:.1f} | 32 | 1.00x |")
    for label, s in rows:
        b = s["quantized_weight_bytes"]
        print(f"| {label} | {b / 2**20:.1f} | {8 * b / n:.2f} | {s['float_weight_bytes'] / b:.2f}x |")


if __name__ == "__main__":
    main()

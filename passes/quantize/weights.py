"""``quantize-weights``: weight-only quantization for memory-bound inference (decoding).

Every ``matmul``/``gemm`` whose weight is a constant ``[K, N]`` matrix becomes ``matmul_nbits``
(ir/ops/quant_weights.py) reading that weight as 8- or 4-bit codes; activations stay float, and a
gemm's bias becomes an ``add`` after it. Embedding tables (read by ``gather``) are not touched.

The output layer (``output_layers``: a product whose result reaches the graph's outputs and
nothing else, through data-movement ops only; a language model's head, the largest single matrix
of a small model and the one that picks the token) is quantized as ``head`` says: ``int8`` per
channel (the default, as llama.cpp keeps its output layer at higher precision), ``int4`` like the
others, or ``float`` (left alone). A model whose only products are output layers still needs one
quantized.

- ``bits=8``: one block per output column (``block_size = K``), per-channel scales.
- ``bits=4``: blocks of ``group`` (32, 64 or 128) consecutive reduction elements per column (one
  block of K, rounded up to even, when K is shorter than the group).
- ``symmetric=true``: ``scale = max|w| / (2**(bits-1) - 1)``, codes ``round(w / scale) + 2**(bits-1)``
  (no zero points stored); ``false``: ``scale = (max - min) / (2**bits - 1)`` over the block's range
  widened to hold 0, a zero point ``round(-min / scale)`` per block, codes ``round(w / scale) + zp``.

Rounding is to nearest, so each weight is off by at most half its block's scale; the pass records
the bytes of the float weights it replaced and of their codes, scales and zero points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Builder, Module, Op, Trait, Value, get_opdef
from nnc.ir.builder import const_value
from nnc.ir.ops.quant_weights import pack_codes

from ..registry import Pass, PassError, register_pass

GROUPS = (32, 64, 128)
HEADS = ("int8", "int4", "float")


def quantize_weight(w: np.ndarray, bits: int, block_size: int, symmetric: bool = True
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Codes ``u8[N, blocks, block_size*bits/8]``, scales ``[N, blocks]`` (w's dtype) and zero points
    ``u8[N, blocks]`` (None when symmetric) of the weight ``w [K, N]``."""
    K, N = w.shape
    nb = -(-K // block_size)
    wt = np.zeros((N, nb * block_size), np.float64)
    wt[:, :K] = w.T  # padded with zeros, which code to the zero point (dequantize to 0)
    blocks = wt.reshape(N, nb, block_size)
    top = (1 << bits) - 1
    if symmetric:
        qmax = (1 << (bits - 1)) - 1
        scales = (np.abs(blocks).max(axis=2) / qmax).astype(w.dtype)
        zp = np.full((N, nb), 1 << (bits - 1), np.int64)
    else:
        lo = np.minimum(blocks.min(axis=2), 0.0)
        hi = np.maximum(blocks.max(axis=2), 0.0)
        scales = ((hi - lo) / top).astype(w.dtype)
        safe = np.where(scales > 0, scales, 1).astype(np.float64)
        zp = np.clip(np.rint(-lo / safe), 0, top).astype(np.int64)
    # divide by the stored (rounded) scale so that the codes fit what is dequantized
    safe = np.where(scales > 0, scales, 1).astype(np.float64)[:, :, None]
    codes = np.clip(np.rint(blocks / safe) + zp[:, :, None], 0, top)
    packed = pack_codes(codes.astype(np.uint8).reshape(N, nb * block_size), bits).reshape(N, nb, -1)
    return packed, scales, None if symmetric else zp.astype(np.uint8)


def product_weight(module: Module, op: Op) -> tuple[np.ndarray, np.ndarray | None] | None:
    """(the constant weight [K, N], the constant bias [N] or None) of a matmul/gemm, or None when
    the op is not a float product with a constant 2-D weight (and a vector bias)."""
    a, b = op.operands[0], op.operands[1]
    w = const_value(module, b)
    if w is None or w.ndim != 2 or w.dtype.kind != "f" or a.dtype.numpy != w.dtype or a.type.rank in (None, 0):
        return None
    if op.opname == "matmul":
        return w, None
    at = op.attrs
    if at["trans_a"] or at["alpha"] != 1.0:
        return None
    w = w.T if at["trans_b"] else w
    if len(op.operands) < 3 or at["beta"] == 0.0:
        return w, None
    c = const_value(module, op.operands[2])
    if c is None or c.size != w.shape[1] or c.ndim > 2 or (c.ndim == 2 and c.shape[0] != 1):
        return None  # a bias per row (or computed at run time) stays a float gemm
    return w, (c.reshape(-1) * at["beta"]).astype(w.dtype)


def quantizable(module: Module) -> list[Op]:
    """The matmul/gemm ops of ``module`` whose weight ``quantize-weights`` would quantize."""
    return [op for g in module.graphs.values() for op in g.ops
            if op.opname in ("matmul", "gemm") and product_weight(module, op) is not None]


def _feeds_only_outputs(v: Value, outputs: set[int]) -> bool:
    """Every use of ``v`` is a graph output or a data-movement op whose results are, recursively."""
    if not v.uses:
        return id(v) in outputs
    for user, _ in v.uses:
        if not get_opdef(user.opname).has(Trait.SHAPE_ONLY):
            return False
        if not all(_feeds_only_outputs(r, outputs) for r in user.results):
            return False
    return True


def output_layers(module: Module, ops: list[Op]) -> set[int]:
    """The ids of those of ``ops`` whose result is a model output (possibly reshaped, sliced...)
    and read by nothing else: the output layer, such as a language model's head."""
    ids = {id(op) for op in ops}
    out = set()
    for g in module.graphs.values():
        outputs = {id(v) for v in g.outputs}
        out |= {id(op) for op in g.ops if id(op) in ids and _feeds_only_outputs(op.results[0], outputs)}
    return out


@register_pass("quantize-weights")
@dataclass
class QuantizeWeights(Pass):
    bits: int = 4
    group: int = 32
    symmetric: bool = True
    head: str = "int8"  # the output layer: int8, int4 or float

    def run(self, module: Module) -> bool:
        if self.bits not in (4, 8):
            raise PassError(f"quantize-weights: bits must be 4 or 8, got {self.bits}")
        if self.bits == 4 and self.group not in GROUPS:
            raise PassError(f"quantize-weights: group must be one of {', '.join(map(str, GROUPS))}, got {self.group}")
        if self.head not in HEADS or (self.head == "int4" and self.bits != 4):
            raise PassError(f"quantize-weights: head must be int8, float{' or int4' if self.bits == 4 else ''}, "
                            f"got {self.head!r}")
        self.stats = {"weights_quantized": 0, "float_weight_bytes": 0, "quantized_weight_bytes": 0,
                      "output_layers": 0, "output_layers_quantized": 0}
        ops = quantizable(module)
        heads = output_layers(module, ops)
        if self.head == "float":
            ops = [op for op in ops if id(op) not in heads]
        if not ops:
            raise PassError(f"int{self.bits}-weights: the model has no matmul or gemm with a constant weight "
                            "to quantize" + (" but its output layer (--quantize-head float)" if heads else ""))
        self.note("output_layers", len(heads))
        cache: dict[tuple, list] = {}  # one weight read by several products is quantized once
        for op in ops:
            head = id(op) in heads
            if head:
                self.note("output_layers_quantized")
            self._rewrite(module, op, cache, 8 if head and self.head == "int8" else self.bits)
        return True

    def _rewrite(self, module: Module, op: Op, cache: dict[tuple, list], bits: int) -> None:
        w, bias = product_weight(module, op)
        K, N = w.shape
        # a group longer than K would only pad: one block of K (rounded up to whole bytes) instead
        bs = K if bits == 8 else min(self.group, K + K % 2)
        g = next(g for g in module.graphs.values() if any(o is op for o in g.ops))
        b = Builder(module, g)
        b.set_insertion_before(op)
        b.loc = op.loc
        name = op.operands[1].name
        # ops are visited in order, so constants made for an earlier reader dominate a later one
        key = (id(g), id(op.operands[1].producer), op.opname == "gemm" and bool(op.attrs["trans_b"]), bits)
        if key not in cache:
            codes, scales, zp = quantize_weight(w, bits, bs, self.symmetric)
            self.note("weights_quantized")
            self.note("float_weight_bytes", w.nbytes)
            self.note("quantized_weight_bytes", codes.nbytes + scales.nbytes + (0 if zp is None else zp.nbytes))
            cache[key] = [b.const(codes, name=f"{name}.q{bits}"), b.const(scales, name=f"{name}.scales")] + \
                ([] if zp is None else [b.const(zp, name=f"{name}.zero_points")])
        operands = [op.operands[0], *cache[key]]
        out_name = op.results[0].name
        y = b.create("matmul_nbits", operands, {"K": K, "bits": bits, "block_size": bs},
                     names=[out_name + (".nobias" if bias is not None else "")]).results[0]
        if bias is not None:
            y = b.op("add", y, b.const(bias, name=f"{name}.bias"), name=out_name + ".biased")
        if y.type != op.results[0].type:
            raise PassError(f"quantize-weights: {op.where()}: the rewrite changed the type {op.results[0].type} -> "
                            f"{y.type}")
        g.replace_all_uses(op.results[0], y)
        g.erase(op)
        g.rename(y, out_name)


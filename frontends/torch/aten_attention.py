"""Converter for ``aten.scaled_dot_product_attention``: one IR ``attention`` op (4-D [B, H, S, D]
heads, boolean or additive mask, causal, custom scale, grouped-query with ``enable_gqa``).

The importer keeps this op out of torch's decomposition, so the backends see attention whole
instead of bmm/softmax/bmm.
"""

from __future__ import annotations

from nnc.ir import DType, Value

from .context import AtenNode, TorchContext
from .registry import aten


@aten("aten.scaled_dot_product_attention.default")
def sdpa(ctx: TorchContext, node: AtenNode):
    q, k, v = node.positional[:3]
    mask = node.args.get("attn_mask")
    if float(node.arg("dropout_p", 0.0)) != 0.0:
        raise node.unsupported("attention dropout (dropout_p > 0) in an inference graph")
    if q.type.rank != 4 or k.type.rank != 4 or v.type.rank != 4:
        raise node.unsupported(f"only 4-D [batch, heads, seq, dim] inputs are supported, got ranks "
                               f"{q.type.rank}, {k.type.rank}, {v.type.rank}")
    if _heads(node, 0, q) != _heads(node, 1, k) and not node.arg("enable_gqa", False):
        raise node.unsupported("different q and kv head counts need enable_gqa=True")
    operands = [q, k, v]
    if mask is not None:
        operands.append(mask if mask.dtype == DType.bool else ctx.cast(mask, q.dtype))
    scale = node.args.get("scale")
    return ctx.op1("attention", *operands, scale=None if scale is None else float(scale),
                  is_causal=int(bool(node.arg("is_causal", False))))


def _heads(node: AtenNode, i: int, x: Value) -> int | str | None:
    """The head count of operand ``i``: torch's traced size when the IR type lost it (a symbolic
    sequence length through ``arange`` leaves unknown dims that broadcast onto q)."""
    val = getattr(node.fx.args[i], "meta", {}).get("val")
    n = val.shape[1] if val is not None else None
    return int(n) if isinstance(n, int) or (n is not None and str(n).isdigit()) else x.shape[1]

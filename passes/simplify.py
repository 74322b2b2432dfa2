"""``simplify``: algebraic identities and no-op removal, as worklist-driven rewrite patterns.

- no-ops: ``identity``; ``cast`` to the same dtype; reshape/expand/transpose/slice/squeeze/unsqueeze
  whose result has the operand's type and layout unchanged; ``concat`` of one operand;
- arithmetic identities: ``x * 1``, ``1 * x``, ``x / 1``, ``x + 0``, ``0 + x``, ``x - 0`` (only when the
  result type equals ``x``'s, so broadcasting never changes);
- chains: ``reshape(reshape(x))`` -> one reshape; ``transpose(transpose(x))`` -> one transpose
  (none if the permutations cancel); ``squeeze``/``unsqueeze``/static ``reshape`` -> a single
  ``reshape`` with an explicit shape, so reshape chains collapse;
- inference-mode ``dropout`` (training attribute 0 or absent): the result is its input;
- grouped-query attention written out: ``attention(q, repeat_kv(k), repeat_kv(v))``, where
  ``repeat_kv`` is unsqueeze -> expand -> reshape giving each kv head to ``n`` consecutive query
  heads (``transformers``' ``repeat_kv``), becomes ``attention(q, k, v)``, whose grouped-query
  semantics are the same; a KV cache is then read where it is, not copied ``n`` times per step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Module, Op, Value, const_value
from nnc.ir.types import UNKNOWN

from .registry import Pass, register_pass
from .rewrite import Pattern, Rewriter, apply_patterns


def _is_const_scalar(module: Module, v, value: float) -> bool:
    a = const_value(module, v)
    return a is not None and a.size > 0 and bool(np.all(a == value))


class RemoveNoOps(Pattern):
    opnames = ("identity", "cast", "reshape", "expand", "transpose", "slice", "squeeze", "unsqueeze", "concat")

    def rewrite(self, op: Op, rw: Rewriter) -> bool:
        x = op.operands[0]
        if op.results[0].type != x.type:
            return False
        if op.opname not in ("identity", "cast") and (x.type.shape is None or UNKNOWN in x.type.shape):
            return False  # "?" equals "?" but two unknown sizes need not: a slice may still cut
        if op.opname == "transpose":
            perm = op.attrs["perm"]
            if perm is not None and list(perm) != list(range(len(perm))):
                return False
        if op.opname == "slice" and len(op.operands) > 1:
            return False  # run-time parameters: cannot tell
        if op.opname == "slice" and any(s != 1 for s in (op.attrs.get("steps") or ())):
            return False  # same type, but a reversal (step -1) still moves the elements
        if op.opname == "concat" and len(op.operands) != 1:
            return False
        if op.opname in ("reshape", "expand", "squeeze", "unsqueeze") and len(op.operands) > 1 \
                and not x.type.is_static:
            return False
        rw.replace(op, [x])
        return True


class ArithmeticIdentities(Pattern):
    opnames = ("mul", "div", "add", "sub")

    def rewrite(self, op: Op, rw: Rewriter) -> bool:
        a, b = op.operands
        out = op.results[0].type
        unit = 1.0 if op.opname in ("mul", "div") else 0.0
        if a.type == out and _is_const_scalar(rw.module, b, unit):
            rw.replace(op, [a])
            return True
        if op.opname in ("mul", "add") and b.type == out and _is_const_scalar(rw.module, a, unit):
            rw.replace(op, [b])
            return True
        return False


class CanonicalReshape(Pattern):
    """squeeze/unsqueeze/reshape with static shapes -> reshape with the explicit result shape."""

    opnames = ("squeeze", "unsqueeze", "reshape")

    def rewrite(self, op: Op, rw: Rewriter) -> bool:
        x, out = op.operands[0], op.results[0]
        if not (x.type.is_static and out.type.is_static):
            return False
        inner = x.producer
        chained = inner is not None and inner.opname == "reshape" and len(inner.operands) == 1
        if op.opname == "reshape" and len(op.operands) == 1 and op.attrs["shape"] == tuple(out.shape) \
                and not op.attrs["copy_zero"] and not chained:
            return False  # already canonical
        src = inner.operands[0] if chained else x  # reshape of a reshape: skip the inner one
        b = rw.builder_before(op)
        new = b.op("reshape", src, shape=tuple(out.shape), name=out.name + ".r")
        rw.replace(op, [new])
        rw.graph.rename(new, out.name)
        return True


class MergeTransposes(Pattern):
    opnames = ("transpose",)

    def rewrite(self, op: Op, rw: Rewriter) -> bool:
        inner = op.operands[0].producer
        if inner is None or inner.opname != "transpose":
            return False
        p1, p2 = inner.attrs["perm"], op.attrs["perm"]
        if p1 is None or p2 is None:
            return False
        perm = tuple(p1[i] for i in p2)
        src = inner.operands[0]
        out = op.results[0]
        if perm == tuple(range(len(perm))):
            rw.replace(op, [src])
            return True
        b = rw.builder_before(op)
        new = b.op("transpose", src, perm=perm, name=out.name + ".t")
        rw.replace(op, [new])
        rw.graph.rename(new, out.name)
        return True


class InferenceDropout(Pattern):
    opnames = ("dropout",)

    def rewrite(self, op: Op, rw: Rewriter) -> bool:
        if op.attrs.get("training") or len(op.operands) > 2 or op.results[1].uses:
            return False
        if any(v is op.results[1] for v in rw.graph.outputs):
            return False
        for r in op.results[1:]:
            if r.uses:
                return False
        rw.graph.replace_all_uses(op.results[0], op.operands[0])
        rw.touched.extend(u for u, _ in op.operands[0].uses)
        rw.graph.erase(op)
        return True


def _repeated_heads(v: Value) -> tuple[Value, int] | None:
    """(x, n) when ``v`` = reshape(expand(unsqueeze(x, 2))) repeats each head of x [B,H,T,D] n
    times in place ([B, H*n, T, D], head h*n + i = head h of x); else None."""
    outer = v.producer
    if outer is None or outer.opname != "reshape" or len(outer.operands) != 1 or v.type.rank != 4:
        return None
    mid = outer.operands[0].producer
    if mid is None or mid.opname != "expand":
        return None
    inner = mid.operands[0].producer
    if inner is None or inner.opname not in ("reshape", "unsqueeze") or len(inner.operands) != 1:
        return None
    x = inner.operands[0]
    xs, us, es, vs = x.shape, inner.results[0].shape, mid.results[0].shape, v.shape
    if xs is None or us is None or es is None or vs is None or len(xs) != 4 or UNKNOWN in xs + es:
        return None
    b, h, t, d = xs
    n = es[2]
    if not isinstance(n, int) or not isinstance(h, int) or us != (b, h, 1, t, d) or es != (b, h, n, t, d) \
            or vs != (b, h * n, t, d):
        return None
    return x, n


class GroupedQueryAttention(Pattern):
    """attention over repeated kv heads -> attention over the kv heads themselves (module doc)."""

    opnames = ("attention",)

    def rewrite(self, op: Op, rw: Rewriter) -> bool:
        if len(op.operands) > 4 or op.results[1].uses or op.results[2].uses or \
                any(o is r for o in rw.graph.outputs for r in op.results[1:3]):
            return False  # with a past, or with the presents read, the kv heads are visible
        k, v = _repeated_heads(op.operands[1]), _repeated_heads(op.operands[2])
        if k is None or v is None or k[1] != v[1] or op.operands[0].type.rank != 4:
            return False
        b = rw.builder_before(op)
        new = b.create("attention", [op.operands[0], k[0], v[0], *op.operands[3:]], dict(op.attrs),
                       names=[r.name + ".gqa" for r in op.results])
        for old, r in ((op.results[0], new.results[0]), (op.results[3], new.results[3])):
            if r.type != old.type:
                rw.graph.erase(new)
                return False
        rw.touched.extend(u for r in (op.results[0], op.results[3]) for u, _ in r.uses)
        rw.graph.replace_all_uses(op.results[0], new.results[0])
        rw.graph.replace_all_uses(op.results[3], new.results[3])
        rw.graph.erase(op)
        for old_name, r in zip([r.name for r in op.results], new.results):
            rw.graph.rename(r, old_name)
        return True


@register_pass("simplify")
@dataclass
class Simplify(Pass):
    def run(self, module: Module) -> bool:
        n = apply_patterns(module, [RemoveNoOps(), ArithmeticIdentities(), CanonicalReshape(), MergeTransposes(),
                                    InferenceDropout(), GroupedQueryAttention()])
        if n:
            self.note("rewrites", n)
        return n > 0

"""``bound-kv-reads``: an attention over a KV cache reads only the cache rows written so far.

In a decoder step, the keys and values are ``index_copy(cache, positions, new)`` of a cache
preallocated for the maximum length: the rows after the last position written hold nothing of
this sequence yet, and a correct decoder step never lets a query attend to them (its causal mask
removes them). This pass states that as ``nonpad_kv_seqlen = max(positions) + 1`` on the
attention, so a backend reads the first ``position + new`` rows instead of all of them (x86: the
score, softmax and value loops stop there), and a decode step's attention costs what the sequence
so far costs, not what the cache could hold.

The rewrite relies on that decoder contract, which it cannot see in the graph (the mask is the
model's own computation): it is not in the -O presets, and ``nnc.generation.Decoder`` runs it on
graphs it has checked to be decoder steps. Applied only where the attention has no past, no
``nonpad_kv_seqlen`` yet, a 4-D key and value each written by one ``index_copy`` along the
sequence axis (2) with the same positions, and no reader of its score output.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Builder, DType, Module, Op

from .registry import Pass, register_pass


def _written(v, axis: int = 2) -> Op | None:
    op = v.producer
    if op is None or op.opname != "index_copy" or v.type.rank != 4 or op.attrs["axis"] % 4 != axis:
        return None
    return op


@register_pass("bound-kv-reads")
@dataclass
class BoundKvReads(Pass):
    def run(self, module: Module) -> bool:
        changed = False
        g = module.main
        for op in list(g.ops):
            if op.opname != "attention" or len(op.operands) > 4:
                continue
            if op.results[3].uses or any(o is op.results[3] for o in g.outputs):
                continue
            k, v = _written(op.operands[1]), _written(op.operands[2])
            if k is None or v is None or k.operands[1] is not v.operands[1]:
                continue
            b = Builder(module, g)
            b.set_insertion_before(op)
            b.loc = op.loc
            pos = k.operands[1]
            batch = op.operands[1].shape[0]
            if not isinstance(batch, int):
                continue
            last = b.op("reduce_max", pos, keepdims=1, name=f"{op.results[0].name}.last_written")
            one = b.const(np.array([1], pos.dtype.numpy), name="one")
            n = b.op("add", last, one, name=f"{op.results[0].name}.written")
            if pos.dtype != DType.i64:
                n = b.op("cast", n, to=DType.i64)
            if batch != 1:
                n = b.op("expand", n, shape=[batch])
            operands = list(op.operands)
            if len(operands) == 3:
                operands.append(b.const(np.zeros((0,), np.bool_), name="no_mask"))
            absent = b.const(np.zeros((0, 0, 0, 0), op.operands[1].dtype.numpy), name="no_past")
            new = b.create("attention", operands + [absent, absent, n], dict(op.attrs),
                           names=[r.name + ".bounded" for r in op.results])
            if any(r.type != o.type for r, o in zip(new.results, op.results)):
                g.erase(new)
                continue
            names = [r.name for r in op.results]
            for old, r in zip(op.results, new.results):
                g.replace_all_uses(old, r)
            g.erase(op)
            for name, r in zip(names, new.results):
                g.rename(r, name)
            self.note("attentions_bounded")
            changed = True
        return changed

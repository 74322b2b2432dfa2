"""``bound-kv-reads`` (a decoder-contract rewrite, not in the presets): an attention over keys and
values written into a preallocated cache by ``index_copy`` gets ``nonpad_kv_seqlen`` = the last
written position + 1. Under a causal mask over the positions (what a decoder builds) the results
do not change; on x86 the rows after it are then not read at all (NaN there leaves the result
untouched, where the unbounded reference turns it to NaN)."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.ir import Builder, Graph, Module, interpret, tensor
from nnc.passes import PassManager

RNG = np.random.default_rng(2)
MAX = 10


def step(symbolic: bool) -> Module:
    m = Module("t")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    S = "S" if symbolic else 3
    q = g.add_param("q", tensor("f32", [1, 4, S, 8]))
    ck, cv = (g.add_param(n, tensor("f32", [1, 2, MAX, 8])) for n in ("cache_k", "cache_v"))
    pos = g.add_param("pos", tensor("i64", [S]))
    nk, nv = (g.add_param(n, tensor("f32", [1, 2, S, 8])) for n in ("new_k", "new_v"))
    mask = g.add_param("mask", tensor("bool", [1, 1, S, MAX]))
    k = b.op("index_copy", ck, pos, nk, axis=2)
    v = b.op("index_copy", cv, pos, nv, axis=2)
    y = b.op("attention", q, k, v, mask)[0]
    g.set_outputs([y, k, v], ["y", "present_k", "present_v"])
    return m


def feeds(start: int, n: int, fill: float = 0.0) -> dict[str, np.ndarray]:
    pos = np.arange(start, start + n)
    cache = RNG.standard_normal((2, 1, 2, MAX, 8)).astype(np.float32)
    cache[:, :, :, start:] = fill  # nothing written there yet
    return {"q": RNG.standard_normal((1, 4, n, 8), np.float32), "cache_k": cache[0], "cache_v": cache[1],
            "pos": pos, "new_k": RNG.standard_normal((1, 2, n, 8), np.float32),
            "new_v": RNG.standard_normal((1, 2, n, 8), np.float32),
            "mask": (np.arange(MAX)[None, :] <= pos[:, None])[None, None]}  # causal over the positions


def bounded(m: Module) -> Module:
    out = m.clone()
    records = PassManager("bound-kv-reads", verify_each=True).run(out)
    assert records[0].stats == {"attentions_bounded": 1}
    (att,) = [op for op in out.main.ops if op.opname == "attention"]
    assert len(att.operands) == 7 and att.operands[6].dtype.name == "i64"
    return out


@pytest.mark.parametrize("start,n", [(0, 3), (4, 3), (7, 3)])
def test_same_results_under_a_causal_mask(start: int, n: int) -> None:
    m = step(False)
    f = feeds(start, n, fill=123.0)  # stale, finite rows after the written ones
    want = interpret(m, f)
    got = interpret(bounded(m), f)
    for key in want:
        np.testing.assert_allclose(got[key], want[key], rtol=1e-6, atol=1e-6)


def test_x86_reads_only_the_written_rows() -> None:
    m = step(True)
    cm = nnc.compile(bounded(m), target="x86", cache=False, quiet=True)
    assert cm.report["shapes"]["generic"] is True
    for start, n in ((0, 4), (5, 1), (9, 1)):
        clean = feeds(start, n)
        want = interpret(m, clean)
        np.testing.assert_allclose(cm.run(clean)["y"], want["y"], rtol=1e-5, atol=1e-6)
        poisoned = {k: a.copy() for k, a in clean.items()}
        for c in ("cache_k", "cache_v"):
            poisoned[c][:, :, start + n:] = np.nan
        assert np.isnan(interpret(m, poisoned)["y"]).all() == (start + n < MAX)  # the reference reads them
        np.testing.assert_allclose(cm.run(poisoned)["y"], want["y"], rtol=1e-5, atol=1e-6)


def test_not_applied_without_the_cache_write() -> None:
    m = Module("t")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    q, k, v = (g.add_param(n, tensor("f32", [1, 2, 3, 4])) for n in "qkv")
    g.set_outputs([b.op("attention", q, k, v)[0]], ["y"])
    assert PassManager("bound-kv-reads").run(m)[0].changed is False

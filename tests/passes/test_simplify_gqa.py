"""``simplify`` folds a written-out grouped-query attention (``transformers``' repeat_kv:
unsqueeze -> expand -> reshape of the kv heads) into the attention op itself; the result is the
same on the interpreter, and on x86, which then reads the kv heads where they are (no copy)."""

from __future__ import annotations

import os

import numpy as np
import pytest
from test_golden import HERE, split_case

import nnc
from nnc.ir import interpret, parse_module
from nnc.passes import PassManager

RNG = np.random.default_rng(3)


def case() -> str:
    with open(os.path.join(HERE, "simplify_gqa.nnc")) as f:
        return split_case(f.read())[1]


def feeds() -> dict[str, np.ndarray]:
    mask = np.tril(np.ones((3, 5), bool), k=2)[None, None]  # causal with 2 past positions
    return {"q": RNG.standard_normal((1, 4, 3, 8), np.float32), "k": RNG.standard_normal((1, 2, 5, 8), np.float32),
            "v": RNG.standard_normal((1, 2, 5, 8), np.float32), "m": mask}


def test_folded_attention_computes_the_same() -> None:
    m = parse_module(case())
    f = feeds()
    want = interpret(m, f)["y"]
    # independently: each kv head serves two consecutive query heads
    k, v = np.repeat(f["k"], 2, axis=1), np.repeat(f["v"], 2, axis=1)
    s = f["q"] @ k.transpose(0, 1, 3, 2) / np.sqrt(8) + np.where(f["m"], 0, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    np.testing.assert_allclose(want, (p / p.sum(-1, keepdims=True)) @ v, rtol=1e-5, atol=1e-6)
    folded = parse_module(case())
    PassManager("simplify,dce", verify_each=True).run(folded)
    assert [op.opname for op in folded.main.ops] == ["attention"]
    np.testing.assert_allclose(interpret(folded, f)["y"], want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("opt_level", [0, 3])
def test_x86_matches_the_interpreter_with_and_without_the_fold(opt_level: int) -> None:
    m = parse_module(case())
    f = feeds()
    cm = nnc.compile(m, target="x86", opt_level=opt_level, cache=False, quiet=True)
    expands = [op.opname for op in cm.module.main.ops].count("expand")
    assert expands == (2 if opt_level == 0 else 0)  # -O0 keeps the written-out repeat
    np.testing.assert_allclose(cm.run(f)["y"], interpret(m, f)["y"], rtol=1e-5, atol=1e-6)

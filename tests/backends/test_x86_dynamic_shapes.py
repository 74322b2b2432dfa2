"""Shape-generic x86 code (backends/x86/generic.py): a model with symbolic dims compiles once, and
each run reads its dims and arena offsets from a frame planned per input signature.

Every output is compared with the reference interpreter at the same shapes; the models use only
ops whose f32 kernels are single IEEE operations (add, mul, relu...), so the comparisons are exact.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

import nnc
from nnc.backends.x86.generic import GenericExecutable
from nnc.ir import TargetError, interpret
from nnc.ir.parser import parse_module
from nnc.specializer import Specializer

ELEMENTWISE = """
module @m

graph @main(%x: f32[N,S], %y: f32[S]) -> (out: f32[N,S], e: f32[N,S]) {
  %a = add(%x, %y) : f32[N,S]
  %b = relu(%a) : f32[N,S]
  %c = mul(%b, %x) : f32[N,S]
  %d = mul(%c, %y) : f32[N,S]
  %e = sub(%d, %a) : f32[N,S]
  %f = neg(%e) : f32[N,S]
  return %f, %e
}
"""


def feeds(n: int, s: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {"x": rng.standard_normal((n, s)).astype(np.float32), "y": rng.standard_normal(s).astype(np.float32)}


@pytest.mark.parametrize("opt_level", [0, 3])
def test_one_compile_serves_every_size(opt_level: int) -> None:
    m = parse_module(ELEMENTWISE)
    cm = nnc.compile(m, target="x86", cache=False, opt_level=opt_level, quiet=True)
    assert cm.report["shapes"] == {"generic": True, "symbols": ["N", "S"]}
    exe = cm.executable
    assert isinstance(exe, GenericExecutable)
    sizes = [(1, 1), (2, 3), (7, 129), (1, 4096), (0, 5), (64, 33), (2, 3)]
    for n, s in sizes:
        f = feeds(n, s, seed=n * 1000 + s)
        got, want = cm.run(f), interpret(m, f)
        for k in want:
            assert got[k].shape == (n, s)
            np.testing.assert_array_equal(got[k], want[k])
    assert exe.plans_made == len(set(sizes))  # (2, 3) twice: its frame is reused
    seen = exe.shapes_seen()
    assert {tuple(r["dims"].values()) for r in seen} == set(sizes)
    for r in seen:  # the planner never does better than the most bytes live at once
        assert r["lower_bound_bytes"] <= r["arena_bytes"]


def test_two_threads_split_rows_at_run_time() -> None:
    m = parse_module(ELEMENTWISE)
    cm = nnc.compile(m, target="x86", cache=False, threads=2, quiet=True)
    assert isinstance(cm.executable, GenericExecutable)
    for n, s in ((3, 5), (513, 1025), (4096, 64)):
        f = feeds(n, s)
        got, want = cm.run(f), interpret(m, f)
        for k in want:
            np.testing.assert_array_equal(got[k], want[k])


def test_concurrent_runs_with_different_shapes() -> None:
    m = parse_module(ELEMENTWISE)
    cm = nnc.compile(m, target="x86", cache=False, quiet=True)
    errors: list[BaseException] = []

    def worker(n: int, s: int) -> None:
        try:
            for i in range(20):
                f = feeds(n, s, seed=i)
                got, want = cm.run(f), interpret(m, f)
                np.testing.assert_array_equal(got["out"], want["out"])
        except BaseException as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=a) for a in ((3, 700), (200, 9), (1, 1))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_a_cache_hit_runs_the_same_generic_code(tmp_path) -> None:
    m = parse_module(ELEMENTWISE)
    first = nnc.compile(m, target="x86", cache_dir=str(tmp_path), quiet=True)
    again = nnc.compile(m, target="x86", cache_dir=str(tmp_path), quiet=True)
    assert first.executable.cache_status == "miss" and again.executable.cache_status == "hit"
    assert isinstance(again.executable, GenericExecutable)
    f = feeds(5, 77)
    np.testing.assert_array_equal(again.run(f)["out"], first.run(f)["out"])


def test_fixing_a_dim_gives_static_code_and_a_library(tmp_path) -> None:
    m = parse_module(ELEMENTWISE)
    cm = nnc.compile(m, target="x86", cache=False, quiet=True)
    with pytest.raises(TargetError, match="symbolic input dims"):
        cm.save(str(tmp_path / "m.so"))
    assert not list(tmp_path.iterdir())  # nothing half-written
    fixed = nnc.compile(m, target="x86", cache=False, quiet=True, dims={"N": 2, "S": 3})
    assert "shapes" not in fixed.report and not isinstance(fixed.executable, GenericExecutable)
    fixed.save(str(tmp_path / "m.so"))
    f = feeds(2, 3)
    np.testing.assert_array_equal(nnc.load(str(tmp_path / "m.so")).run(f)["out"], cm.run(f)["out"])


DET = """
module @m

graph @main(%x: f32[N,3,3]) -> (d: f32[N]) {
  %a = relu(%x) : f32[N,3,3]
  %d = det(%a) : f32[N]
  return %d
}
"""


def test_an_op_without_a_generic_kernel_compiles_per_shape_and_says_why() -> None:
    m = parse_module(DET)
    cm = nnc.compile(m, target="x86", cache=False, quiet=True)
    shapes = cm.report["shapes"]
    assert shapes["generic"] is False and "det" in shapes["reason"] and "shape-generic" in shapes["reason"]
    assert isinstance(cm.executable, Specializer)
    x = np.random.default_rng(1).standard_normal((4, 3, 3)).astype(np.float32)
    np.testing.assert_allclose(cm.run({"x": x})["d"], interpret(m, {"x": x})["d"], rtol=1e-5, atol=1e-6)


LINEAR = """
module @m

graph @main(%x: f32[N,64], %w: f32[64,40]) -> (y: f32[N,40]) {
  %y = matmul(%x, %w) : f32[N,40]
  return %y
}
"""


@pytest.mark.parametrize("threads", [1, 2])
def test_gemm_versions_by_run_time_rows(threads: int) -> None:
    """A run-time row count picks a 1-row, 4-row or full-tile version of the GEMM: each must be
    right at and around its limit. The products sum 64 terms in another order than numpy's
    (pairwise) sum: rtol 1e-5 is ~100 ulp, well above that order's error, far below any real bug."""
    m = parse_module(LINEAR)
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 40)).astype(np.float32)
    m.main.params[1].binding = m.add_constant("w", w)  # a weight: packed at compile time
    cm = nnc.compile(m, target="x86", cache=False, threads=threads, quiet=True)
    assert cm.report["shapes"]["generic"] is True
    for n in (1, 2, 4, 5, 12, 13, 257):
        x = rng.standard_normal((n, 64)).astype(np.float32)
        np.testing.assert_allclose(cm.run({"x": x})["y"], x @ w, rtol=1e-5, atol=1e-5)


def test_repeated_layers_share_one_kernel() -> None:
    """Three linear layers of one shape with different weights: one kernel function (the packed
    weights' offsets are in each call site's table, not in the code), and each layer still uses its
    own weights. Expected values from numpy; rtol as in test_gemm_versions_by_run_time_rows."""
    text = """
module @m

graph @main(%x: f32[N,32], %w1: f32[32,32], %w2: f32[32,32], %w3: f32[32,32]) -> (y: f32[N,32]) {
  %a = matmul(%x, %w1) : f32[N,32]
  %b = matmul(%a, %w2) : f32[N,32]
  %c = matmul(%b, %w3) : f32[N,32]
  return %c
}
"""
    m = parse_module(text)
    rng = np.random.default_rng(3)
    ws = [rng.standard_normal((32, 32)).astype(np.float32) / 6 for _ in range(3)]
    for p, w, name in zip(m.main.params[1:], ws, ("w1", "w2", "w3")):
        p.binding = m.add_constant(name, w)
    for dims in ({}, {"N": 4}):  # shape-generic and static code alike
        cm = nnc.compile(m, target="x86", cache=False, quiet=True, dims=dims)
        assert cm.report["x86"]["kernels"] == {"calls": 3, "distinct": 1}
        x = rng.standard_normal((4, 32)).astype(np.float32)
        np.testing.assert_allclose(cm.run({"x": x})["y"], x @ ws[0] @ ws[1] @ ws[2], rtol=1e-5, atol=1e-5)

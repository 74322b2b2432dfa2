"""How a GEMM splits into tasks over the threads (kernels/gemm_grid.py): few multiply-adds stay one
task on the calling thread, except a matrix-vector product that streams a large pre-packed weight
(an MLP at batch 1), whose columns split; the split never changes a result (each output element
is the same dot product in the same order)."""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.backends.x86.kernels.gemm import blocking
from nnc.backends.x86.kernels.gemm_grid import STREAMED_SPLIT_BYTES, task_grid
from nnc.ir import Builder, Graph, Module, interpret, tensor


def grid(M: int, N: int, K: int, threads: int, pack_b: bool | str = False) -> tuple[int, int]:
    return task_grid(1, M, N, K, blocking(512, False, M, N), threads, pack_a=True, pack_b=pack_b)


@pytest.mark.parametrize("N,K", [(512, 784), (512, 512)])
def test_matrix_vector_with_a_large_packed_weight_splits_its_columns(N, K):
    assert 4 * N * K >= STREAMED_SPLIT_BYTES and 2 * N * K < 2e6  # few multiply-adds, many bytes
    tm, tn = grid(1, N, K, 2)
    assert tm == 1 and tn >= 2
    assert grid(1, N, K, 1) == (1, 1)


@pytest.mark.parametrize("N,K,pack_b", [(10, 512, False),  # a small weight: one task
                                        (512, 512, True),  # B packed at run time: nothing streamed
                                        (512, 512, "im2col")])  # a conv's gathers
def test_small_products_stay_one_task(N, K, pack_b):
    assert grid(1, N, K, 2, pack_b) == (1, 1)


def mlp() -> Module:
    rng = np.random.default_rng(0)
    m = Module("mlp")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [1, 784]))
    h = b.op("relu", b.op("matmul", x, b.const((rng.standard_normal((784, 512)) * 0.05).astype(np.float32), name="w1")))
    y = b.op("matmul", h, b.const((rng.standard_normal((512, 10)) * 0.05).astype(np.float32), name="w2"))
    g.set_outputs([y], ["y"])
    return m


def test_split_matrix_vector_gives_the_one_thread_result(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path))
    m = mlp()
    feeds = {"x": np.random.default_rng(1).standard_normal((1, 784)).astype(np.float32)}
    one = nnc.compile(m, target="x86", threads=1, quiet=True)
    two = nnc.compile(m, target="x86", threads=2, quiet=True)
    got = two.run(feeds)["y"]
    np.testing.assert_array_equal(got, one.run(feeds)["y"])
    np.testing.assert_allclose(got, interpret(m, feeds)["y"], rtol=1e-5, atol=1e-5)  # f32 sums, other order
    prof = two.profile(feeds, runs=2)
    first = min(k for k, *_ in prof.thread_spans)
    assert first == 0, "the 784x512 matrix-vector product did not go to the thread pool"

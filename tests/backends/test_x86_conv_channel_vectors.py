"""The conv path that vectorises over output channels (conv_channel_vectors.py) against the interpreter.

The path takes f32 convs with one group on AVX-512 (filters that are an input: packed per call): 1x1
convs with K >= 256 and output rows of <= 14 pixels, spatial filters with K = C*KH*KW >= 128 and
rows of <= 112. The shapes are ragged on purpose: output widths whose register tile is 7 to 14
pixels (7 x 3, 7 x 2, 8 x 3 and 14 x 2 tiles), channel counts that are not a multiple of the 48- or
32-wide filter panel (masked edge columns, a partial 16-channel group in the transpose), K that is
not a multiple of the KC slice, pixel blocks smaller than the plane, strides 1 and 2, dilation,
asymmetric padding, a batch, two threads (the output channels or the pixels split between tasks) and
a fused residual + relu epilogue. Each case also checks that the path was taken (its microkernel is
named in the generated LLVM IR), so a change of the selection rule cannot silently turn the test
into one of the other GEMM. The 3x3 stride-1 cases that are Winograd convs by default are pinned to
this path by a schedule (its own plan, from a tuning table).

Tolerance: f32 dot products of up to ~2300 unit-variance terms (weights scaled by 0.05) summed in
another order differ by a few ulps of the sum's magnitude: rtol/atol 1e-4 scaled by the largest |y|.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.backends.x86.schedule import ScheduleTable, TableEntry
from nnc.backends.x86.schedule_space import chanvec_default, gemm_dims
from nnc.backends.x86.target import host
from nnc.ir import Builder, Graph, Module, interpret, tensor
from nnc.tune import model_kernels

pytestmark = pytest.mark.skipif(host().vector_bits != 512,
                                reason="the channel-vector conv path is AVX-512 only; this host has no AVX-512")

CASES = [  # (N, C, H, W, M, kernel, stride, pads (top, left, bottom, right), dilation)
    (1, 64, 7, 7, 40, 3, 1, (1, 1, 1, 1), 1),        # 7 x 3 tile; M = 40 < one 48-wide panel
    (1, 64, 14, 14, 64, 3, 2, (1, 1, 1, 1), 1),      # 7 x 2 tile: 64 channels are two 32-wide panels
    (1, 32, 14, 14, 70, 3, 1, (1, 1, 1, 1), 1),      # 14 x 2 tile; K = 288: two KC slices
    (2, 40, 28, 28, 33, 3, 2, (1, 1, 1, 1), 1),      # stride 2, batch 2, 33 channels
    (1, 300, 12, 12, 50, 1, 1, (0, 0, 0, 0), 1),     # 1x1, 12-pixel rows: the image read in place
    (1, 256, 13, 14, 40, 1, 2, (0, 0, 0, 0), 1),     # 1x1 stride 2 in place: the last row's last pixel
    (1, 30, 13, 13, 24, 3, 1, (2, 1, 0, 1), 1),      # 13-pixel tile, asymmetric padding
    (1, 48, 20, 18, 20, 3, 2, (2, 2, 2, 2), 2),      # dilated, stride 2: 9-pixel rows
    (1, 16, 28, 28, 96, 5, 1, (2, 2, 2, 2), 1),      # 5x5 filter, 28-pixel rows: blocks < plane
    (1, 32, 4, 56, 20, 3, 1, (1, 1, 1, 1), 1),       # 56-pixel rows: four 14-pixel panels a row
    (1, 24, 3, 56, 48, 3, 1, (1, 1, 1, 1), 1),       # 48 channels: the 8 x 3 tile, not 14 x 2
    (1, 16, 3, 55, 64, 3, 1, (1, 1, 1, 1), 1),       # K = 144, 11-pixel tiles
    (1, 3, 8, 224, 16, 7, 2, (3, 3, 3, 3), 1),       # a stem: 7x7 stride 2, K = 147, 112-pixel rows
]


def _out(n: int, k: int, s: int, lo: int, hi: int, d: int) -> int:
    return (n + lo + hi - d * (k - 1) - 1) // s + 1


def _model(N, C, H, W, M, k, s, pads, d, residual: bool, runtime_filters: bool = False):
    rng = np.random.default_rng(C * 1000 + M)
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    oh, ow = _out(H, k, s, pads[0], pads[2], d), _out(W, k, s, pads[1], pads[3], d)
    x = g.add_param("x", tensor("f32", [N, C, H, W]))
    warr = (rng.standard_normal((M, C, k, k)) * 0.05).astype(np.float32)
    w = g.add_param("w", tensor("f32", [M, C, k, k])) if runtime_filters else b.const(warr, name="w")
    bias = b.const(rng.standard_normal(M).astype(np.float32), name="bias")
    y = b.op("conv", x, w, bias, strides=[s, s], pads=list(pads), dilations=[d, d])
    feeds = {"x": rng.standard_normal((N, C, H, W)).astype(np.float32)}
    if runtime_filters:
        feeds["w"] = warr
    if residual:
        r = g.add_param("r", tensor("f32", [N, M, oh, ow]))
        feeds["r"] = rng.standard_normal((N, M, oh, ow)).astype(np.float32)
        y = b.op("relu", b.op("add", y, r))
    g.set_outputs([y], ["y"])
    return m, feeds


def _pinned(m, threads: int) -> ScheduleTable | None:
    """The 3x3 stride-1 convs of 49 or more 2x2 tiles are Winograd convs by default
    (conv_winograd.py): a table holding the channel-vector path's own plan keeps them on this path."""
    (k,) = [k for k in model_kernels(m, threads) if k.signature["op"] == "conv"]
    if k.default.kind != "winograd":
        return None
    _, M, P, _ = gemm_dims(k.signature)
    return ScheduleTable({k.key: TableEntry(chanvec_default(k.signature, M, P))}, "chanvec")


def _check(m, feeds, threads: int) -> None:
    cm = nnc.compile(m, target="x86", quiet=True, cache=False, threads=threads, keep_llvm=True,
                     tuning_db=_pinned(m, threads))
    assert ".chanvec_micro" in cm.executable.compiled.llvm_ir, "the conv did not take the channel-vector path"
    got = cm.run(feeds)["y"]
    want = interpret(m, feeds)["y"]
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


@pytest.mark.parametrize("case", CASES, ids=[f"{c[1]}x{c[2]}x{c[3]}-{c[4]}-k{c[5]}s{c[6]}" for c in CASES])
def test_conv_channel_vectors(case):
    _check(*_model(*case, residual=False), threads=1)


@pytest.mark.parametrize("case", [CASES[2], CASES[3], (1, 32, 7, 7, 200, 3, 1, (1, 1, 1, 1), 1)],
                         ids=["14x14", "stride2-batch2", "7x7-200"])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_channel_vectors_fused_residual_relu(case, threads):
    """conv + bias + add + relu: the fused epilogue runs on each transposed block of the output. At two
    threads the 70- and 33-channel convs split their pixels between the tasks, the 200-channel one
    its channels."""
    _check(*_model(*case, residual=True), threads=threads)


@pytest.mark.parametrize("case", [CASES[0], CASES[2], CASES[3], CASES[4]],
                         ids=["7x7-40", "14x14-K288", "stride2-batch2", "1x1"])
@pytest.mark.parametrize("threads", [1, 2])
def test_conv_channel_vectors_with_filters_that_are_an_input(case, threads):
    """Filters fed at run time (a training step's parameters) are packed once per call into the
    compile-time layout: ragged panels, two KC slices, a batch, and both task splits."""
    _check(*_model(*case, residual=False, runtime_filters=True), threads=threads)


def test_conv_channel_vectors_not_taken_for_shallow_k():
    """A 1x1 conv with K < 256 (here 64 channels) stays on the pixel-vector GEMM: the transpose of
    the channel-vector path would cost more than its tiles save."""
    m, feeds = _model(1, 64, 14, 14, 64, 1, 1, (0, 0, 0, 0), 1, residual=False)
    cm = nnc.compile(m, target="x86", quiet=True, cache=False, keep_llvm=True)
    assert ".chanvec_micro" not in cm.executable.compiled.llvm_ir
    want = interpret(m, feeds)["y"]
    np.testing.assert_allclose(cm.run(feeds)["y"], want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))

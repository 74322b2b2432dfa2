"""The bounded forms of the data-dependent ops (``ir/ops/bounded.py``): the leading ``count`` entries
along each result's count axis are the original op's result, the rest is zero, and type inference
gives the bound from the operand shapes alone. Expected values come from numpy."""

from __future__ import annotations

import numpy as np
import pytest

from nnc.ir import DType, get_opdef, tensor
from nnc.ir.ops.bounded import BOUNDED

RNG = np.random.default_rng(3)


def run(opname: str, *arrays: np.ndarray, **attrs):
    d = get_opdef(opname)
    full = d.complete_attrs(attrs)
    types = [tensor(DType.from_numpy(a.dtype), list(a.shape)) for a in arrays]
    inferred = d.run_infer(types, full, [None] * len(arrays))
    outs = d.reference(*arrays, **full)
    assert [tuple(t.shape) for t in inferred] == [np.shape(o) for o in outs]  # the bound is the inferred shape
    return outs


def test_nonzero_bounded():
    x = RNG.integers(0, 2, (3, 4)) * RNG.standard_normal((3, 4))
    idx, count = run("nonzero_bounded", x)
    want = np.array(np.nonzero(x))
    assert idx.shape == (2, 12) and int(count) == want.shape[1]
    np.testing.assert_array_equal(idx[:, :int(count)], want)
    assert not idx[:, int(count):].any()


@pytest.mark.parametrize("axis", [None, 1])
def test_unique_bounded(axis):
    x = RNG.integers(0, 3, (4, 5)).astype(np.float32)
    y, first, inverse, counts, count = run("unique_bounded", x, axis=axis, sorted=1)
    wy, wf, wi, wc = np.unique(x, return_index=True, return_inverse=True, return_counts=True, axis=axis)
    c = int(count)
    assert c == len(wf)
    np.testing.assert_array_equal(y[:c] if axis is None else y[:, :c], wy)
    np.testing.assert_array_equal(first[:c], wf)
    np.testing.assert_array_equal(counts[:c], wc)
    np.testing.assert_array_equal(inverse, wi.reshape(-1))


def test_nms_bounded_bound_uses_an_attribute_limit():
    boxes = RNG.uniform(0, 1, (2, 6, 4)).astype(np.float32)
    scores = RNG.random((2, 3, 6)).astype(np.float32)
    sel, count = run("nms_bounded", boxes, scores, max_output_boxes_per_class=2, iou_threshold=0.5)
    assert sel.shape == (12, 3) and 0 < int(count) <= 12
    want = get_opdef("nms").reference(boxes, scores, center_point_box=0, max_output_boxes_per_class=2,
                                      iou_threshold=0.5, score_threshold=None)
    np.testing.assert_array_equal(sel[:int(count)], want)
    limit = np.array([2], np.int64)  # a run-time limit: the bound is every box
    sel, count = run("nms_bounded", boxes, scores, limit)
    want = get_opdef("nms").reference(boxes, scores, center_point_box=0, max_output_boxes_per_class=2,
                                      iou_threshold=None, score_threshold=None)
    assert sel.shape == (36, 3) and int(count) == len(want)
    np.testing.assert_array_equal(sel[:int(count)], want)


def test_topk_bounded():
    x = RNG.integers(0, 5, (3, 7)).astype(np.float32)
    v, i, count = run("topk_bounded", x, np.array([3]), axis=1)
    order = np.argsort(-x, axis=1, kind="stable")[:, :3]
    assert int(count) == 3 and v.shape == x.shape
    np.testing.assert_array_equal(i[:, :3], order)
    np.testing.assert_array_equal(v[:, :3], np.take_along_axis(x, order, axis=1))
    assert not v[:, 3:].any() and not i[:, 3:].any()


def test_symbolic_operands_give_unknown_or_symbolic_bounds():
    nz = get_opdef("nonzero_bounded").run_infer([tensor("f32", ["N", 3])], {}, [None])
    assert nz[0].shape == (2, "?") and nz[1].shape == ()
    u = get_opdef("unique_bounded").run_infer([tensor("f32", ["N", 3])], {"axis": 0, "sorted": 1}, [None])
    assert u[0].shape == ("N", 3) and u[1].shape == ("N",)
    assert set(BOUNDED) == {"nonzero", "unique", "nms", "topk"}

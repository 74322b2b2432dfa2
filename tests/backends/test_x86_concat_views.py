"""Concats written in place (passes/concat_views.py): a batch-1 channel concat's inputs are computed
into their slices of the result and its kernel copies nothing; the outputs equal onnxruntime's on
inception-like blocks (random weights, a conv after the concat mixing every channel, so a slice
written in the wrong place shows), and the cases that must copy still do."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.passes.concat_views import concat_views

ort = pytest.importorskip("onnxruntime")


def block_model(batch: int = 1, reuse: bool = False, concat_out: bool = False) -> onnx.ModelProto:
    """x -> three branches (1x1 conv+relu, 3x3 conv, maxpool+1x1 conv) -> concat(channels) -> 1x1 conv
    -> second concat of a 5x5 and a 1x1 branch -> global average pool. ``reuse``: a branch also feeds the
    output (the concat must copy it); ``concat_out``: the first concat is a graph output."""
    rng = np.random.default_rng(0)
    c = 6

    def w(name, *shape):
        return numpy_helper.from_array((rng.standard_normal(shape) / np.sqrt(np.prod(shape[1:]))).astype(np.float32),
                                       name)

    node = helper.make_node
    nodes = [node("Conv", ["x", "w1"], ["b1"]), node("Relu", ["b1"], ["r1"]),
             node("Conv", ["x", "w3"], ["b3"], pads=[1, 1, 1, 1]),
             node("MaxPool", ["x"], ["mp"], kernel_shape=[3, 3], pads=[1, 1, 1, 1], strides=[1, 1]),
             node("Conv", ["mp", "wp"], ["bp"]),
             node("Concat", ["r1", "b3", "bp"], ["cat"], axis=1),
             node("Conv", ["cat", "wm"], ["m"]), node("Relu", ["m"], ["mr"]),
             node("Conv", ["mr", "w5"], ["b5"], pads=[2, 2, 2, 2]), node("Conv", ["mr", "w6"], ["b6"]),
             node("Concat", ["b5", "b6"], ["cat2"], axis=1),
             node("GlobalAveragePool", ["cat2"], ["y"])]
    inits = [w("w1", 4, c, 1, 1), w("w3", 5, c, 3, 3), w("wp", 3, c, 1, 1), w("wm", 7, 12, 1, 1), w("w5", 2, 7, 5, 5),
             w("w6", 3, 7, 1, 1)]
    outs = [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    if reuse:
        nodes.append(node("ReduceSum", ["b3"], ["b3s"], keepdims=0))
        outs.append(helper.make_tensor_value_info("b3s", TensorProto.FLOAT, None))
    if concat_out:
        outs.append(helper.make_tensor_value_info("cat", TensorProto.FLOAT, None))
    g = helper.make_graph(nodes, "block", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, c, 9, 9])],
                          outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def _check(model: onnx.ModelProto, tmp_path, batch: int = 1, opt_level: int = 0) -> nnc.CompiledModel:
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    cm = nnc.compile(str(path), target="x86", quiet=True, cache=False, opt_level=opt_level)
    x = np.random.default_rng(1).standard_normal((batch, 6, 9, 9)).astype(np.float32)
    want = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(None, {"x": x})
    got = list(cm.run({"x": x}).values())
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5 * float(np.abs(w).max()))
    return cm


@pytest.mark.parametrize("opt_level", [0, 3])  # -O0: relus in place over their convs; -O3: fused
def test_both_concats_of_an_inception_block_are_written_in_place(tmp_path, opt_level: int) -> None:
    cm = _check(block_model(), tmp_path, opt_level=opt_level)
    assert len(cm.executable.storage.view_concats) == 2


@pytest.mark.parametrize("kind", ["batch2", "reuse", "concat_out"])
def test_concats_that_must_copy_still_do(kind: str, tmp_path) -> None:
    model = block_model(batch=2) if kind == "batch2" else block_model(reuse=kind == "reuse",
                                                                      concat_out=kind == "concat_out")
    cm = _check(model, tmp_path, batch=2 if kind == "batch2" else 1)
    views = cm.executable.storage.view_concats
    # batch 2: the slices interleave (copy both); a branch read again, or a concat returned to the
    # caller: that concat copies, the other is still in place
    assert len(views) == (0 if kind == "batch2" else 1)


def test_views_lie_inside_their_concat_and_the_plan_holds(tmp_path) -> None:
    from nnc.passes.concat_views import plan_with_views

    path = tmp_path / "m.onnx"
    onnx.save(block_model(), path)
    g = nnc.compile(str(path), target="x86", quiet=True, cache=False, opt_level=0).executable.graph
    cv = concat_views(g)
    plan, offsets = plan_with_views(g, cv)
    for vid, (r, off) in cv.views.items():
        v = next(x for op in g.ops for x in op.results if id(x) == vid)
        assert offsets[vid] == offsets[id(r)] + off and off + v.type.nbytes <= r.type.nbytes
    # concats' buffers live from their first input's definition: the planned arena is at least the
    # most bytes live at once of that schedule (check_plan proved there is no overlap)
    assert plan.arena_bytes >= plan.liveness.lower_bound

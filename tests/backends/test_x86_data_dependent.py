"""Ops whose output size depends on data, compiled for x86 (``backends/x86/data_dependent.py``):
NonZero, Compress, Unique, NonMaxSuppression and TopK with a run-time k, each a generated bounded
kernel run as a host step between compiled segments.

Expected values come from numpy or onnxruntime, never from nnc. Cases cover empty results (count
0), all-true inputs, ties, symbolic input dims (one compile for every size and count: checked with
``executable.compiles``) and a detection-style model with compute before and after NMS.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc import cli
from nnc.backends.x86.segments import SegmentedExecutable
from nnc.ir import InputError

RNG = np.random.default_rng(12)
F, I64 = TensorProto.FLOAT, TensorProto.INT64


def onnx_model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info(n, t, s) for n, t, s in inputs],
                          [helper.make_tensor_value_info(n, t, None) for n, t in outputs],
                          initializer=[numpy_helper.from_array(a, n) for n, a in inits])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def ort_run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


def compile_x86(m: onnx.ModelProto):
    cm = nnc.compile(m, target="x86", cache=False, quiet=True)
    assert isinstance(cm.executable, SegmentedExecutable)
    return cm


def same(got: dict[str, np.ndarray], want: dict[str, np.ndarray], exact: bool = True) -> None:
    for k, w in want.items():
        assert got[k].dtype == w.dtype and got[k].shape == w.shape, (k, got[k].shape, w.shape)
        if exact:
            np.testing.assert_array_equal(got[k], w, err_msg=k)
        else:  # f32 arithmetic after the host step, in another order than onnxruntime's
            np.testing.assert_allclose(got[k], w, rtol=1e-6, atol=1e-6, err_msg=k)


# -- NonZero, Compress ------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.int64, np.bool_, np.float16])
def test_nonzero_at_every_size_with_one_compile(dtype):
    et = helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
    cm = compile_x86(onnx_model([helper.make_node("NonZero", ["x"], ["y"])], [("x", et, ["A", 3, "B"])], [("y", I64)]))
    for shape in [(2, 3, 4), (1, 3, 1), (5, 3, 7), (0, 3, 2)]:
        for x in (RNG.integers(0, 2, shape) * RNG.standard_normal(shape), np.zeros(shape), np.ones(shape)):
            x = x.astype(dtype)
            got = cm.run({"x": x})["y"]
            np.testing.assert_array_equal(got, np.array(np.nonzero(x), dtype=np.int64).reshape(3, -1))
    assert cm.executable.compiles == 1  # the NonZero kernel: nothing else to compile


def test_nonzero_counts_nan_and_not_negative_zero():
    cm = compile_x86(onnx_model([helper.make_node("NonZero", ["x"], ["y"])], [("x", F, [5])], [("y", I64)]))
    x = np.array([0.0, -0.0, np.nan, 2.0, -1.0], np.float32)
    np.testing.assert_array_equal(cm.run({"x": x})["y"], [[2, 3, 4]])


@pytest.mark.parametrize("axis", [None, 0, 1])
def test_compress(axis):
    kw = {} if axis is None else {"axis": axis}
    m = onnx_model([helper.make_node("Compress", ["x", "c"], ["y"], **kw)],
                   [("x", F, ["N", 4]), ("c", TensorProto.BOOL, ["M"])], [("y", F)])
    cm = compile_x86(m)
    for n in (3, 6, 1):
        x = RNG.standard_normal((n, 4)).astype(np.float32)
        size = x.size if axis is None else x.shape[axis]
        for c in (RNG.random(size) < 0.5, np.zeros(size, bool), np.ones(size, bool)):
            same(cm.run({"x": x, "c": c}), {"y": np.compress(c, x, axis=axis)})
    assert cm.executable.compiles == 2  # the NonZero kernel and the gather after it


# -- Unique -----------------------------------------------------------------------------------------
UNIQUE_OUTS = [("y", F), ("indices", I64), ("inverse", I64), ("counts", I64)]


@pytest.mark.parametrize("axis", [None, 0, 1, -1])
@pytest.mark.parametrize("sorted_", [1, 0])
def test_unique_matches_onnxruntime(axis, sorted_):
    kw = {"sorted": sorted_} if axis is None else {"sorted": sorted_, "axis": axis}
    m = onnx_model([helper.make_node("Unique", ["x"], [n for n, _ in UNIQUE_OUTS], **kw)], [("x", F, ["N", 3])],
                   UNIQUE_OUTS)
    cm = compile_x86(m)
    for n in (1, 4, 9, 30):
        for high in (2, 4, 1000):  # many ties, some, almost none
            x = RNG.integers(0, high, (n, 3)).astype(np.float32)
            same(cm.run({"x": x}), ort_run(m, {"x": x}))
    assert cm.executable.compiles == 1


def test_unique_of_an_empty_tensor_and_integers():
    m = onnx_model([helper.make_node("Unique", ["x"], [n for n, _ in UNIQUE_OUTS], sorted=1)], [("x", I64, ["N"])],
                   [("y", I64)] + UNIQUE_OUTS[1:])
    cm = compile_x86(m)
    for x in (np.zeros(0, np.int64), np.array([5, -3, 5, 5, -3, 2**40, 0]), np.full(7, 9)):
        y, first, inverse, counts = np.unique(x, return_index=True, return_inverse=True, return_counts=True)
        same(cm.run({"x": x}), {"y": y, "indices": first, "inverse": inverse.reshape(-1), "counts": counts})


# -- NonMaxSuppression ------------------------------------------------------------------------------
def random_boxes(b: int, n: int, corner_order: bool = True) -> np.ndarray:
    lo = RNG.uniform(0, 10, (b, n, 2))
    hi = lo + RNG.uniform(0.5, 4, (b, n, 2))
    boxes = np.concatenate([lo, hi], axis=-1)
    if not corner_order:  # corners in either order: y2 < y1 for some boxes
        flip = RNG.random((b, n)) < 0.5
        boxes[flip] = boxes[flip][:, [2, 3, 0, 1]]
    return boxes.astype(np.float32)


@pytest.mark.parametrize("center", [0, 1])
def test_nms_matches_onnxruntime_with_run_time_parameters(center):
    m = onnx_model([helper.make_node("NonMaxSuppression", ["b", "s", "max", "iou", "thr"], ["sel"],
                                     center_point_box=center)],
                   [("b", F, ["B", "N", 4]), ("s", F, ["B", "C", "N"]), ("max", I64, [1]), ("iou", F, [1]),
                    ("thr", F, [1])], [("sel", I64)])
    cm = compile_x86(m)
    for b, c, n in [(1, 1, 6), (2, 3, 20), (3, 2, 1), (1, 2, 0)]:
        boxes = random_boxes(b, n, corner_order=bool(center))
        scores = RNG.random((b, c, n)).astype(np.float32)
        scores[..., ::3] = 0.5  # ties: the lower box index first
        for limit, iou, thr in [(3, 0.3, 0.2), (100, 0.0, 0.0), (0, 0.5, 0.1), (2, 1.0, 0.99)]:
            feeds = {"b": boxes, "s": scores, "max": np.array([limit]), "iou": np.array([iou], np.float32),
                     "thr": np.array([thr], np.float32)}
            same(cm.run(feeds), ort_run(m, feeds))
    assert cm.executable.compiles == 1


def test_nms_with_constant_parameters_has_a_tighter_bound():
    m = onnx_model([helper.make_node("NonMaxSuppression", ["b", "s", "max", "iou"], ["sel"])],
                   [("b", F, [2, 30, 4]), ("s", F, [2, 4, 30])], [("sel", I64)],
                   inits=[("max", np.array([5], np.int64)), ("iou", np.array([0.4], np.float32))])
    cm = compile_x86(m)
    step = [p for p in cm.report["x86"]["segments"]["pieces"] if "host_step" in p][0]
    assert step["bound"] == "i64[40,3]"  # 2 batches x 4 classes x min(5, 30)
    feeds = {"b": random_boxes(2, 30, corner_order=False), "s": RNG.random((2, 4, 30)).astype(np.float32)}
    same(cm.run(feeds), ort_run(m, feeds))


# -- TopK with a run-time k -------------------------------------------------------------------------
@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("axis", [0, -1])
def test_topk_with_a_run_time_k(axis, largest):
    m = onnx_model([helper.make_node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=largest)],
                   [("x", F, ["N", 6]), ("k", I64, [1])], [("v", F), ("i", I64)])
    cm = compile_x86(m)
    for n in (1, 5, 12):
        x = RNG.integers(0, 4, (n, 6)).astype(np.float32)  # ties: the lower index first
        for k in sorted({0, 1, x.shape[axis] // 2, x.shape[axis]}):
            feeds = {"x": x, "k": np.array([k])}
            same(cm.run(feeds), ort_run(m, feeds))
    assert cm.executable.compiles == 1
    with pytest.raises(InputError, match="k = 7 is outside"):
        cm.run({"x": np.zeros((3, 6), np.float32), "k": np.array([7 if axis else 4])} if axis else
               {"x": np.zeros((6, 6), np.float32), "k": np.array([7])})


def test_topk_with_k_computed_from_data():
    """k = the number of positive entries, computed by a segment before the TopK."""
    nodes = [helper.make_node("Greater", ["x", "zero"], ["pos"]),
             helper.make_node("Cast", ["pos"], ["posi"], to=I64),
             helper.make_node("ReduceSum", ["posi"], ["k"], keepdims=1),
             helper.make_node("TopK", ["x", "k"], ["v", "i"]),
             helper.make_node("Mul", ["v", "v"], ["v2"])]
    m = onnx_model(nodes, [("x", F, ["N"])], [("v2", F), ("i", I64)], inits=[("zero", np.zeros((), np.float32))])
    cm = compile_x86(m)
    for n in (1, 7, 40):
        for x in (RNG.standard_normal(n), -np.ones(n), np.ones(n)):
            x = x.astype(np.float32)
            same(cm.run({"x": x}), ort_run(m, {"x": x}))
    assert cm.executable.compiles == 3


# -- a detection post-process: compute before and after NMS ---------------------------------------
def detector() -> onnx.ModelProto:
    """logits -> sigmoid scores; NMS; gather the selected boxes and scores; scale the boxes."""
    nodes = [helper.make_node("Sigmoid", ["logits"], ["scores"]),
             helper.make_node("NonMaxSuppression", ["boxes", "scores", "max", "iou", "thr"], ["sel"]),
             helper.make_node("Gather", ["sel", "two"], ["box_idx"], axis=1),
             helper.make_node("Squeeze", ["boxes", "zero"], ["boxes0"]),
             helper.make_node("Gather", ["boxes0", "box_idx"], ["picked"], axis=0),
             helper.make_node("Mul", ["picked", "scale"], ["scaled"]),
             helper.make_node("Add", ["scaled", "offset"], ["out_boxes"]),
             helper.make_node("Gather", ["sel", "one"], ["cls"], axis=1),
             helper.make_node("Squeeze", ["scores", "zero"], ["scores0"]),
             helper.make_node("Gather", ["scores0", "cls"], ["rows"], axis=0),
             helper.make_node("Gather", ["rows", "box_idx"], ["diag"], axis=1)]
    inits = [("max", np.array([4], np.int64)), ("iou", np.array([0.45], np.float32)),
             ("thr", np.array([0.3], np.float32)), ("two", np.array([2], np.int64)), ("one", np.array(1, np.int64)),
             ("zero", np.array([0], np.int64)), ("scale", np.array([2.0, 2.0, 0.5, 0.5], np.float32)),
             ("offset", np.array([1.0, -1.0, 0.0, 3.0], np.float32))]
    return onnx_model(nodes, [("boxes", F, [1, "N", 4]), ("logits", F, [1, 3, "N"])],
                      [("sel", I64), ("out_boxes", F), ("diag", F)], inits)


def test_detection_postprocess_compiles_once_for_every_size_and_count():
    m = detector()
    cm = compile_x86(m)
    seg = cm.report["x86"]["segments"]
    assert seg["compiled"] == 2 and seg["host_steps"] == 1 and "nms" in seg["reason"]
    counts = set()
    for n in (5, 17, 40, 1):
        for bias in (0.0, -5.0):  # -5: every score under the threshold, nothing selected
            feeds = {"boxes": random_boxes(1, n), "logits": (RNG.standard_normal((1, 3, n)) + bias).astype(np.float32)}
            got = cm.run(feeds)
            same(got, ort_run(m, feeds), exact=False)
            counts.add(len(got["sel"]))
    assert 0 in counts and len(counts) >= 4
    assert cm.executable.compiles == 3  # segment, NMS kernel, segment: once for every N and count


def test_cli_compile_and_run(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    path = tmp_path / "det.onnx"
    onnx.save(detector(), path)
    assert cli.main(["compile", str(path), "--target", "x86"]) == 0
    out = capsys.readouterr().out
    assert "2 compiled segments and 1 host steps (nms" in out
    boxes, logits = random_boxes(1, 9), RNG.standard_normal((1, 3, 9)).astype(np.float32)
    np.save(tmp_path / "b.npy", boxes)
    np.save(tmp_path / "l.npy", logits)
    assert cli.main(["run", str(path), "--target", "x86", "-q", "--input", f"boxes={tmp_path / 'b.npy'}",
                     "--input", f"logits={tmp_path / 'l.npy'}", "--output-dir", str(tmp_path / "o")]) == 0
    want = ort_run(detector(), {"boxes": boxes, "logits": logits})
    np.testing.assert_array_equal(np.load(tmp_path / "o" / "sel.npy"), want["sel"])
    capsys.readouterr()
    assert cli.main(["compile", str(path), "--target", "x86", "-q", "-o", str(tmp_path / "det.so")]) != 0
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "segments" in err


def test_two_host_steps_in_a_row():
    """abs -> Unique -> compare -> NonZero -> arithmetic: three segments around two host steps."""
    nodes = [helper.make_node("Abs", ["x"], ["a"]),
             helper.make_node("Unique", ["a"], ["u"], sorted=1),
             helper.make_node("Greater", ["u", "half"], ["big"]),
             helper.make_node("NonZero", ["big"], ["nz"]),
             helper.make_node("Cast", ["nz"], ["f"], to=F),
             helper.make_node("Mul", ["f", "three"], ["y"])]
    m = onnx_model(nodes, [("x", F, ["N"])], [("u", F), ("y", F)],
                   inits=[("half", np.array(1.5, np.float32)), ("three", np.array(3.0, np.float32))])
    cm = compile_x86(m)
    seg = cm.report["x86"]["segments"]
    assert seg["compiled"] == 3 and seg["host_steps"] == 2
    for n in (1, 6, 25, 0):
        x = RNG.integers(-4, 5, n).astype(np.float32)
        u = np.unique(np.abs(x))
        same(cm.run({"x": x}), {"u": u, "y": np.array(np.nonzero(u > 1.5), np.float32) * 3})
    assert cm.executable.compiles == 5

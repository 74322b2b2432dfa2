"""The image and signal op families (resize, grid_sample, affine_grid, roi_align, nms, dft, stft,
windows, mel_weight_matrix, det): ONNX import plus reference semantics checked against onnxruntime
or onnx.reference, and type inference (static when the size-giving inputs are constants, "?" when
they arrive at run time) checked against the shapes that come out.

Each case is one ONNX node built with onnx.helper. An input is either fed at run time or, when
listed in ``consts``, an initializer (a compile-time constant, so it becomes an attribute).
"""

from __future__ import annotations

import time

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper
from onnx.reference import ReferenceEvaluator

import nnc
from nnc.frontends.onnx.importer import import_model

RNG = np.random.default_rng(0)
_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
         np.dtype(np.int64): TensorProto.INT64, np.dtype(np.uint8): TensorProto.UINT8,
         np.dtype(np.int8): TensorProto.INT8, np.dtype(np.int32): TensorProto.INT32}


def _model(op: str, inputs: dict[str, np.ndarray | None], consts: set[str], opset: int,
           **attrs) -> onnx.ModelProto:
    node = helper.make_node(op, [k if v is not None else "" for k, v in inputs.items()], ["y"], **attrs)
    feeds = [helper.make_tensor_value_info(k, _ELEM[v.dtype], v.shape)
             for k, v in inputs.items() if v is not None and k not in consts]
    inits = [numpy_helper.from_array(v, k) for k, v in inputs.items() if v is not None and k in consts]
    g = helper.make_graph([node], "g", feeds, [onnx.ValueInfoProto(name="y")], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def check(op: str, inputs: dict[str, np.ndarray | None], consts: set[str] = frozenset(), opset: int = 19,
          oracle: str = "ort", rtol: float = 1e-5, atol: float = 1e-5, static: bool | None = None,
          **attrs) -> np.ndarray:
    """Run one node through nnc and an oracle; compare. ``static`` asserts whether the imported
    result type is fully static (None: do not check)."""
    m = _model(op, inputs, set(consts), opset, **attrs)
    feeds = {k: v for k, v in inputs.items() if v is not None and k not in consts}
    got = nnc.compile(m).run(feeds)["y"]
    if oracle == "ort":
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        want = sess.run(None, feeds)[0]
    else:
        want = ReferenceEvaluator(m).run(None, feeds)[0]
    assert got.dtype == want.dtype and got.shape == want.shape, (got.dtype, got.shape, want.dtype, want.shape)
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol)
    if static is not None:
        t = import_model(m).main.outputs[0].type
        assert t.is_static == static, t
        if static:
            assert tuple(t.shape) == want.shape
    return got


def _f32(*shape: int) -> np.ndarray:
    return RNG.standard_normal(shape).astype(np.float32)


# -- resize ---------------------------------------------------------------------------------------

X4 = _f32(2, 3, 7, 9)


@pytest.mark.parametrize("mode", ["nearest", "linear", "cubic"])
@pytest.mark.parametrize("coord", ["half_pixel", "pytorch_half_pixel", "align_corners", "asymmetric",
                                   "half_pixel_symmetric"])
@pytest.mark.parametrize("scales", [[1, 1, 1.7, 0.6], [1, 1, 0.5, 2.0]])
def test_resize_scales_const(mode, coord, scales):
    # onnx.reference is the spec's oracle (onnxruntime's align_corners divides by the rounded output
    # length, the spec by the unrounded one); its half_pixel_symmetric nearest picks the wrong pixel
    # when float rounding lands the source coordinate a hair off an integer, so that one uses onnxruntime
    oracle = "ort" if coord == "half_pixel_symmetric" else "ref"
    check("Resize", {"x": X4, "roi": None, "scales": np.array(scales, np.float32)}, consts={"scales"},
          oracle=oracle, mode=mode, coordinate_transformation_mode=coord, static=True)


@pytest.mark.parametrize("nearest_mode", ["round_prefer_floor", "round_prefer_ceil", "floor", "ceil"])
def test_resize_nearest_modes_sizes_runtime(nearest_mode):
    check("Resize", {"x": X4, "roi": None, "scales": None, "sizes": np.array([2, 3, 11, 5], np.int64)},
          mode="nearest", nearest_mode=nearest_mode, coordinate_transformation_mode="asymmetric", static=False)


@pytest.mark.parametrize("mode", ["linear", "cubic"])
@pytest.mark.parametrize("sizes", [[3, 4], [12, 20]])
def test_resize_antialias(mode, sizes):
    check("Resize", {"x": X4, "roi": None, "scales": None, "sizes": np.array(sizes, np.int64)},
          consts={"sizes"}, oracle="ref", mode=mode, antialias=1, axes=[2, 3], static=True)


def test_resize_cubic_exclude_outside_vs_ort():
    check("Resize", {"x": X4, "roi": None, "scales": np.array([1, 1, 0.8, 1.4], np.float32)},
          mode="cubic", cubic_coeff_a=-0.5, exclude_outside=1, rtol=1e-4, atol=1e-5)


def test_resize_tf_crop_and_resize_runtime_roi():
    check("Resize", {"x": X4, "roi": np.array([0, 0, 0.2, -0.1, 1, 1, 0.9, 1.3], np.float32), "scales": None,
                     "sizes": np.array([2, 3, 6, 6], np.int64)},
          mode="linear", coordinate_transformation_mode="tf_crop_and_resize", extrapolation_value=7.5)


@pytest.mark.parametrize("policy", ["not_larger", "not_smaller"])
def test_resize_keep_aspect_ratio_axes(policy):
    check("Resize", {"x": X4, "roi": None, "scales": None, "sizes": np.array([5, 4], np.int64)},
          consts={"sizes"}, oracle="ref", mode="linear", axes=[3, 2], keep_aspect_ratio_policy=policy,
          static=True)


def test_resize_uint8_rounds_and_saturates():
    x = RNG.integers(0, 256, (1, 3, 6, 6)).astype(np.uint8)  # cubic overshoots past 0 and 255
    check("Resize", {"x": x, "roi": None, "scales": np.array([1, 1, 2.5, 1.5], np.float32)},
          consts={"scales"}, oracle="ref", mode="cubic", atol=0, rtol=0)


def test_resize_opset11_empty_scales_with_sizes():
    check("Resize", {"x": X4, "roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
                     "sizes": np.array([2, 3, 4, 13], np.int64)},
          consts={"roi", "scales"}, opset=11, mode="linear")


@pytest.mark.parametrize("op,opset", [("Resize", 10), ("Upsample", 9)])
@pytest.mark.parametrize("mode", ["nearest", "linear"])
def test_resize_legacy_forms_vs_ort(op, opset, mode):
    scales = [1, 1, 0.6, 0.7] if op == "Resize" else [1, 1, 1.5, 2.5]
    check(op, {"x": X4, "scales": np.array(scales, np.float32)}, opset=opset, mode=mode)


def test_upsample_v7_attribute_scales():
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Upsample", ["x"], ["y"], mode="nearest", scales=[1.0, 1.0, 2.0, 3.0])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, X4.shape)], [onnx.ValueInfoProto(name="y")]),
        opset_imports=[helper.make_opsetid("", 7)])
    got = nnc.compile(m).run({"x": X4})["y"]
    np.testing.assert_array_equal(got, X4.repeat(2, axis=2).repeat(3, axis=3))


def test_resize_symbolic_dims_infer():
    node = helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, "H", 8])],
                          [onnx.ValueInfoProto(name="y")],
                          [numpy_helper.from_array(np.array([1, 1, 2, 0.5], np.float32), "s")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 19)])
    assert import_model(m).main.outputs[0].type.shape == ("N", 3, "?", 4)


def test_resize_large_image_is_vectorised():
    x = _f32(1, 3, 512, 512)
    m = _model("Resize", {"x": x, "roi": None, "scales": np.array([1, 1, 2, 2], np.float32)}, {"scales"}, 19,
               mode="cubic")
    cm = nnc.compile(m)
    t0 = time.perf_counter()
    got = cm.run({"x": x})["y"]
    assert time.perf_counter() - t0 < 5.0
    want = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)


# -- grid_sample, affine_grid, roi_align, nms --------------------------------------------------------

@pytest.mark.parametrize("mode", ["linear", "nearest", "cubic"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
@pytest.mark.parametrize("align", [0, 1])
def test_grid_sample_2d(mode, padding, align):
    grid = RNG.uniform(-1.4, 1.4, (2, 4, 5, 2)).astype(np.float32)
    # cubic with border/reflection padding follows PyTorch (pads each tap), as onnxruntime does;
    # onnx.reference clamps the sample position instead
    oracle = "ort" if mode == "cubic" and padding != "zeros" else "ref"
    check("GridSample", {"x": _f32(2, 3, 5, 6), "grid": grid}, opset=20, oracle=oracle, mode=mode,
          padding_mode=padding, align_corners=align, static=True, rtol=1e-4)


@pytest.mark.parametrize("mode", ["linear", "nearest"])
@pytest.mark.parametrize("padding", ["zeros", "border", "reflection"])
def test_grid_sample_3d(mode, padding):
    grid = RNG.uniform(-1.3, 1.3, (1, 3, 2, 4, 3)).astype(np.float32)
    check("GridSample", {"x": _f32(1, 2, 4, 3, 5), "grid": grid}, opset=20, oracle="ref", mode=mode,
          padding_mode=padding)


def test_grid_sample_opset16_bilinear_vs_ort():
    grid = RNG.uniform(-1.2, 1.2, (1, 6, 4, 2)).astype(np.float32)
    check("GridSample", {"x": _f32(1, 2, 5, 5), "grid": grid}, opset=16, mode="bicubic", padding_mode="border",
          rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("size", [[2, 3, 4, 5], [2, 3, 2, 4, 3]])
@pytest.mark.parametrize("align", [0, 1])
def test_affine_grid(size, align):
    nd = len(size) - 2
    theta = _f32(2, nd, nd + 1)
    check("AffineGrid", {"theta": theta, "size": np.array(size, np.int64)}, consts={"size"}, opset=20,
          oracle="ref", align_corners=align, static=True)


@pytest.mark.parametrize("mode", ["avg", "max"])
@pytest.mark.parametrize("coord", ["half_pixel", "output_half_pixel"])
def test_roi_align(mode, coord):
    rois = np.array([[0, 0, 9, 9], [1.5, 2, 7.3, 5.1], [-2, 3, 4, 12], [4, 4, 4.2, 4.1]], np.float32)
    check("RoiAlign", {"x": _f32(2, 3, 10, 10), "rois": rois, "batch_indices": np.array([0, 1, 1, 0], np.int64)},
          opset=16, mode=mode, coordinate_transformation_mode=coord, output_height=3, output_width=4,
          sampling_ratio=0, spatial_scale=0.9, rtol=1e-4, static=True)


@pytest.mark.parametrize("center", [0, 1])
@pytest.mark.parametrize("with_score", [True, False])
def test_nms(center, with_score):
    xy = RNG.uniform(0, 10, (2, 12, 2)).astype(np.float32)
    wh = RNG.uniform(1, 5, (2, 12, 2)).astype(np.float32)
    boxes = np.concatenate([xy, xy + wh], -1) if not center else np.concatenate([xy, wh], -1)
    scores = RNG.random((2, 3, 12)).astype(np.float32)
    inputs = {"boxes": boxes, "scores": scores, "max": np.array([4], np.int64), "iou": np.array([0.3], np.float32),
              "score": np.array([0.2], np.float32) if with_score else None}
    check("NonMaxSuppression", inputs, consts={"max", "iou"}, opset=11, center_point_box=center)


# -- signal ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("inverse,onesided,complex_in", [(0, 0, False), (0, 1, False), (0, 0, True),
                                                           (1, 0, True), (1, 1, True)])
@pytest.mark.parametrize("length", [None, 7, 12])
def test_dft_opset20(inverse, onesided, complex_in, length):
    x = _f32(2, 8, 3, 2 if complex_in else 1)
    inputs = {"x": x, "n": None if length is None else np.array(length, np.int64), "axis": np.array(1, np.int64)}
    check("DFT", inputs, consts={"n", "axis"}, opset=20, oracle="ref", inverse=inverse, onesided=onesided,
          rtol=1e-4, atol=1e-4, static=True)


def test_dft_opset17_runtime_length():
    x = _f32(2, 6, 5, 2)
    check("DFT", {"x": x, "n": np.array(8, np.int64)}, opset=17, oracle="ref", axis=2, rtol=1e-4, atol=1e-4,
          static=False)


@pytest.mark.parametrize("onesided", [0, 1])
def test_stft_const_params(onesided):
    sig = _f32(2, 40, 1)
    check("STFT", {"signal": sig, "step": np.array(6, np.int64), "window": np.hanning(10).astype(np.float32)},
          consts={"step"}, opset=17, oracle="ref", onesided=onesided, rtol=1e-4, atol=1e-4, static=True)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows_fold_to_constants(op, periodic):
    inputs = {"size": np.array(11, np.int64)}
    check(op, inputs, consts={"size"}, opset=17, oracle="ref", periodic=periodic, output_datatype=TensorProto.DOUBLE,
          static=True)
    mod = import_model(_model(op, inputs, {"size"}, 17, periodic=periodic))
    assert {o.opname for o in mod.main.ops} == {"const"}


def test_mel_weight_matrix_folds():
    inputs = {"mels": np.array(6, np.int64), "n": np.array(32, np.int64), "sr": np.array(8000, np.int64),
              "lo": np.array(50.0, np.float32), "hi": np.array(3500.0, np.float32)}
    check("MelWeightMatrix", inputs, consts=set(inputs), opset=17, oracle="ref", static=True)


def test_det_batched():
    check("Det", {"x": _f32(2, 3, 4, 4)}, opset=11, rtol=1e-4, atol=1e-5, static=True)

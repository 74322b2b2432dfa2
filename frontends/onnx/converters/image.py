"""Converters for ONNX image ops: Resize (every opset form), Upsample, GridSample, AffineGrid, RoiAlign
and NonMaxSuppression.

Resize and Upsample all become one IR ``resize`` op: the legacy forms (Upsample, Resize-10) are
asymmetric resizes with onnxruntime's legacy nearest rule. Tensors that ONNX passes as inputs (scales,
sizes, roi, NMS thresholds) go through ``ctx.op_dynamic``: constants become attributes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.ir import Value

from ..context import ConvertContext, Node
from ..registry import converter


def _present(ctx: ConvertContext, v: Value | None) -> Value | None:
    """None for a missing input or an empty constant tensor (ONNX's way to leave one out)."""
    if v is None:
        return None
    a = ctx.const_value(v)
    if a is not None and a.size == 0:
        return None
    if v.shape is not None and 0 in v.shape:
        return None
    return v


def _fill_gaps(ctx: ConvertContext, params: dict[str, Any], defaults: dict[str, Any]) -> dict[str, Any]:
    """Give a missing dynamic parameter a constant meaning "absent" (an empty list, or the ONNX
    default) when a later one is known only at run time: dynamic operands are positional."""
    names = list(params)
    runtime = [i for i, k in enumerate(names) if isinstance(params[k], Value) and not ctx.is_const(params[k])]
    last = max(runtime, default=-1)
    out = dict(params)
    for k in names[:last]:
        if out[k] is None:
            out[k] = ctx.const(np.asarray(defaults[k]))
    return out


def _resize(ctx: ConvertContext, node: Node, x: Value, roi: Value | None, scales: Value | None,
            sizes: Value | None, **attrs: Any) -> Value:
    roi, scales, sizes = _present(ctx, roi), _present(ctx, scales), _present(ctx, sizes)
    if attrs.get("coordinate_transformation_mode") != "tf_crop_and_resize":
        roi = None
    if scales is None and sizes is None:
        raise node.unsupported("Resize needs scales or sizes")
    params = _fill_gaps(ctx, {"roi": roi, "scales": scales, "sizes": sizes},
                        {"roi": np.zeros(0, np.float32), "scales": np.zeros(0, np.float32),
                         "sizes": np.zeros(0, np.int64)})
    return ctx.op_dynamic("resize", [x], params, **attrs)


def _legacy_mode(node: Node) -> str:
    mode = node.attr("mode", "nearest")
    mode = {"bilinear": "linear", "trilinear": "linear"}.get(mode, mode)
    if mode not in ("nearest", "linear"):
        raise node.unsupported(f"mode {mode!r} (supported: nearest, linear)")
    return mode


@converter("Upsample", since=7)
def upsample_v7(ctx: ConvertContext, node: Node):
    scales = ctx.const(np.asarray(node.attr("scales"), np.float32))
    return _resize(ctx, node, node.inputs[0], None, scales, None, mode=_legacy_mode(node),
                   coordinate_transformation_mode="asymmetric", nearest_mode="simple")


@converter("Upsample", since=9)
@converter("Resize", since=10)
def resize_v10(ctx: ConvertContext, node: Node):
    return _resize(ctx, node, node.inputs[0], None, node.input(1), None, mode=_legacy_mode(node),
                   coordinate_transformation_mode="asymmetric", nearest_mode="simple")


@converter("Resize", since=11)
def resize(ctx: ConvertContext, node: Node):
    mode = node.attr("mode", "nearest")
    attrs: dict[str, Any] = dict(
        mode=mode,
        coordinate_transformation_mode=node.attr("coordinate_transformation_mode", "half_pixel"),
        nearest_mode=node.attr("nearest_mode", "round_prefer_floor"),
        cubic_coeff_a=node.attr("cubic_coeff_a", -0.75),
        exclude_outside=node.attr("exclude_outside", 0),
        extrapolation_value=node.attr("extrapolation_value", 0.0))
    if node.opset >= 18:
        attrs.update(antialias=node.attr("antialias", 0), axes=node.attr("axes", None),
                     keep_aspect_ratio_policy=node.attr("keep_aspect_ratio_policy", "stretch"))
    if attrs["coordinate_transformation_mode"] == "tf_half_pixel_for_nn" and node.opset >= 13:
        raise node.unsupported("tf_half_pixel_for_nn was removed in opset 13")
    return _resize(ctx, node, node.inputs[0], node.input(1), node.input(2), node.input(3), **attrs)


@converter("GridSample", since=16)
def grid_sample(ctx: ConvertContext, node: Node):
    mode = node.attr("mode", "bilinear" if node.opset < 20 else "linear")
    mode = {"bilinear": "linear", "bicubic": "cubic"}.get(mode, mode)
    x, grid = node.inputs[0], node.inputs[1]
    if node.opset < 20 and x.type.rank not in (None, 4):
        raise node.unsupported("GridSample before opset 20 takes 4-D input")
    return ctx.op("grid_sample", x, grid, mode=mode, padding_mode=node.attr("padding_mode", "zeros"),
                  align_corners=node.attr("align_corners", 0))


@converter("AffineGrid", since=20)
def affine_grid(ctx: ConvertContext, node: Node):
    return ctx.op_dynamic("affine_grid", [node.inputs[0]], {"size": node.inputs[1]},
                          align_corners=node.attr("align_corners", 0))


@converter("RoiAlign", since=10)
def roi_align(ctx: ConvertContext, node: Node):
    default = "half_pixel" if node.opset >= 16 else "output_half_pixel"
    x, rois, idx = node.inputs[:3]
    return ctx.op("roi_align", x, rois, idx, mode=node.attr("mode", "avg"),
                  output_height=node.attr("output_height", 1), output_width=node.attr("output_width", 1),
                  sampling_ratio=node.attr("sampling_ratio", 0), spatial_scale=node.attr("spatial_scale", 1.0),
                  coordinate_transformation_mode=node.attr("coordinate_transformation_mode", default))


@converter("NonMaxSuppression", since=10)
def non_max_suppression(ctx: ConvertContext, node: Node):
    params = {"max_output_boxes_per_class": _present(ctx, node.input(2)),
              "iou_threshold": _present(ctx, node.input(3)),
              "score_threshold": _present(ctx, node.input(4))}
    params = _fill_gaps(ctx, params, {"max_output_boxes_per_class": np.int64(0),
                                      "iou_threshold": np.float32(0.0), "score_threshold": None})
    return ctx.op_dynamic("nms", [node.inputs[0], node.inputs[1]], params,
                          center_point_box=node.attr("center_point_box", 0))

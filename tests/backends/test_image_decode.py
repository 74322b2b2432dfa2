"""ONNX ImageDecoder -> ``image_decode``: the decoded pixels equal the image Pillow encoded (lossless
formats) in every pixel format, bad bytes and a missing codec give typed errors; on x86 the decode is
a host step (backends/x86/codec_steps.py) and the compiled preprocessing after it serves every size."""

from __future__ import annotations

import io

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnc
from nnc.ir import InputError, UnsupportedOpError
from nnc.ir.codecs import register_image_decoder

Image = pytest.importorskip("PIL.Image", reason="image_decode decodes with Pillow (pip install 'nnc[images]')")


def encoded(pixels: np.ndarray, fmt: str) -> np.ndarray:
    with io.BytesIO() as f:
        Image.fromarray(pixels).save(f, format=fmt)
        return np.frombuffer(f.getvalue(), np.uint8).copy()


def decoder(pixel_format: str | None) -> onnx.ModelProto:
    attrs = {} if pixel_format is None else {"pixel_format": pixel_format}
    node = helper.make_node("ImageDecoder", ["data"], ["image"], **attrs)
    g = helper.make_graph([node], "decode", [helper.make_tensor_value_info("data", TensorProto.UINT8, ["bytes"])],
                          [helper.make_tensor_value_info("image", TensorProto.UINT8, None)])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


PIXELS = np.random.default_rng(0).integers(0, 256, (13, 21, 3), dtype=np.uint8)


@pytest.mark.parametrize("fmt", ["PNG", "BMP", "TIFF", "PPM"])
@pytest.mark.parametrize("pixel_format", [None, "RGB", "BGR", "Grayscale"])
def test_lossless_formats_decode_to_the_encoded_pixels(fmt: str, pixel_format: str | None) -> None:
    cm = nnc.compile(decoder(pixel_format), target="reference")
    (got,) = cm.run({"data": encoded(PIXELS, fmt)}).values()
    if pixel_format == "Grayscale":
        # ITU-R 601-2 luma, as Pillow's "L" conversion computes it (integer arithmetic, rounded)
        r, g, b = (PIXELS[..., i].astype(np.int64) for i in range(3))
        want = ((r * 19595 + g * 38470 + b * 7471 + 0x8000) >> 16).astype(np.uint8)[..., None]
    else:
        want = PIXELS[..., ::-1] if pixel_format == "BGR" else PIXELS
    assert got.dtype == np.uint8 and got.shape == want.shape
    np.testing.assert_array_equal(got, want)


def test_a_grayscale_file_decodes_to_three_equal_channels_in_rgb() -> None:
    gray = PIXELS[..., 0]
    (got,) = nnc.compile(decoder("RGB"), target="reference").run({"data": encoded(gray, "PNG")}).values()
    np.testing.assert_array_equal(got, np.repeat(gray[..., None], 3, axis=2))


def test_bytes_that_are_no_image_are_an_input_error() -> None:
    cm = nnc.compile(decoder("RGB"), target="reference")
    with pytest.raises(InputError, match="cannot decode"):
        cm.run({"data": np.frombuffer(b"not an image at all", np.uint8).copy()})


def test_without_a_codec_the_error_says_what_to_install() -> None:
    cm = nnc.compile(decoder("RGB"), target="reference")
    previous = register_image_decoder(None)
    try:
        with pytest.raises(UnsupportedOpError, match="nnc\\[images\\]"):
            cm.run({"data": encoded(PIXELS, "PNG")})
    finally:
        register_image_decoder(previous)


def preprocess() -> onnx.ModelProto:
    """Decode, then the usual preprocessing: u8 HWC -> f32 CHW scaled to [0, 1]."""
    nodes = [helper.make_node("ImageDecoder", ["data"], ["hwc"], pixel_format="RGB"),
             helper.make_node("Cast", ["hwc"], ["f"], to=TensorProto.FLOAT),
             helper.make_node("Div", ["f", "scale"], ["scaled"]),
             helper.make_node("Transpose", ["scaled"], ["chw"], perm=[2, 0, 1])]
    scale = onnx.numpy_helper.from_array(np.array(255.0, np.float32), "scale")
    g = helper.make_graph(nodes, "pre", [helper.make_tensor_value_info("data", TensorProto.UINT8, ["bytes"])],
                          [helper.make_tensor_value_info("chw", TensorProto.FLOAT, None)], [scale])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)])


def test_x86_decodes_on_the_host_and_compiles_the_rest_once_for_every_image_size() -> None:
    cm = nnc.compile(preprocess(), target="x86", quiet=True, cache=False)
    segments = cm.report["x86"]["segments"]
    assert segments["host_steps"] == 1 and "codec" in segments["reason"], segments
    rng = np.random.default_rng(1)
    compiles = None
    for h, w in ((13, 21), (32, 8), (5, 40)):
        pixels = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        (got,) = cm.run({"data": encoded(pixels, "PNG")}).values()
        want = pixels.transpose(2, 0, 1).astype(np.float32) / np.float32(255.0)
        np.testing.assert_array_equal(got, want)
        if compiles is None:
            compiles = cm.executable.compiles
        assert cm.executable.compiles == compiles  # the segment after the decode is shape-generic

"""ONNX ImageDecoder -> ``image_decode``: the decoded pixels equal the image Pillow encoded (lossless
formats) in every pixel format, bad bytes and a missing codec give typed errors."""

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

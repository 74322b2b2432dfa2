"""The image decoder behind ``image_decode`` (ONNX ImageDecoder): Pillow, imported on first use.

Registered with the IR's codec hook (``nnc.ir.codecs``) when nnc is imported, so the reference
interpreter and the x86 backend decode the same way. Pillow is the optional extra ``nnc[images]``
(and part of ``nnc[test]``, for the official ImageDecoder tests); without it a decode raises
``UnsupportedOpError`` saying what to install. Pixel formats follow the ONNX spec: RGB and BGR give
``uint8[H, W, 3]``, Grayscale ``uint8[H, W, 1]`` (an image stored in another mode, palette or
RGBA say, is converted first).
"""

from __future__ import annotations

import io

import numpy as np

from nnc.ir import InputError, UnsupportedOpError
from nnc.ir.codecs import register_image_decoder


def pillow_decode(data: bytes, pixel_format: str) -> np.ndarray:
    try:
        from PIL import Image, UnidentifiedImageError
    except ImportError:
        raise UnsupportedOpError("image_decode (ONNX ImageDecoder) decodes with Pillow, which is not installed: "
                                 "pip install 'nnc[images]'") from None
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            if pixel_format == "Grayscale":
                return np.asarray(img.convert("L"))[:, :, None]
            rgb = np.asarray(img.convert("RGB"))
    except (UnidentifiedImageError, OSError, ValueError) as e:
        raise InputError(f"image_decode: {len(data)} bytes that Pillow cannot decode as an image ({e})") from None
    return rgb[:, :, ::-1] if pixel_format == "BGR" else rgb


def install() -> None:
    register_image_decoder(pillow_decode)

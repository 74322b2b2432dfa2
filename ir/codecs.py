"""Codecs that some ops' semantics need but the IR layer does not ship.

``image_decode`` (ONNX ImageDecoder) turns JPEG/PNG/BMP/TIFF/WebP/PNM/JPEG 2000 bytes into pixels.
Decoding those formats is a codec library's job, not a compiler's, and ``ir/`` knows only numpy and
networkx; so the IR holds a hook and the driver layer registers a decoder (``nnc/codecs.py``
registers Pillow's when nnc is imported; Pillow itself is imported on the first decode, from the
optional extra ``nnc[images]``). Every backend decodes through this hook: the reference interpreter
directly, x86 on the host between compiled segments (the decoded size is known only afterwards).
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from .errors import InputError, UnsupportedOpError

PIXEL_FORMATS = ("RGB", "BGR", "Grayscale")
ImageDecoder = Callable[[bytes, str], np.ndarray]
_image_decoder: ImageDecoder | None = None


def register_image_decoder(fn: ImageDecoder | None) -> ImageDecoder | None:
    """Install ``fn(data, pixel_format) -> uint8[H, W, C]`` as the image decoder; returns the previous
    one (None uninstalls)."""
    global _image_decoder
    previous, _image_decoder = _image_decoder, fn
    return previous


def decode_image(data: bytes, pixel_format: str) -> np.ndarray:
    """Decode ``data`` to ``uint8[H, W, 3]`` (RGB, BGR) or ``uint8[H, W, 1]`` (Grayscale)."""
    if pixel_format not in PIXEL_FORMATS:
        raise InputError(f"image_decode: pixel_format {pixel_format!r} is not one of {', '.join(PIXEL_FORMATS)}")
    if _image_decoder is None:
        raise UnsupportedOpError("image_decode needs an image codec and none is registered "
                                 "(import nnc to register Pillow's: pip install 'nnc[images]')")
    out = np.asarray(_image_decoder(data, pixel_format))
    channels = 1 if pixel_format == "Grayscale" else 3
    if out.dtype != np.uint8 or out.ndim != 3 or out.shape[2] != channels:
        raise UnsupportedOpError(f"image_decode: the registered decoder returned {out.dtype}{list(out.shape)}, "
                                 f"not uint8[H, W, {channels}]")
    return np.ascontiguousarray(out)

"""``image_decode`` (ONNX ImageDecoder) as a host-sync step of segmented execution (``segments.py``).

Decoding JPEG/PNG/BMP/TIFF/WebP/PNM/JPEG 2000 is a codec library's work, not generated code: the
step calls the image decoder registered with the IR (``ir/codecs.py``; nnc registers Pillow's, the
optional extra ``nnc[images]``) on the encoded bytes, on the host, exactly as the reference
interpreter does. The decoded image's height and width are known only then, so the segment after
the step sees them as symbols and compiles shape-generic once (a resize or normalisation after the
decode serves every image size). Without a codec the step raises the hook's ``UnsupportedOpError``
when it runs; the compile itself needs none.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from nnc.ir import Op
from nnc.ir.codecs import decode_image

from .segments import SegmentContext, register_host_sync


class ImageDecodeStep:
    def __init__(self, op: Op):
        self.inputs = list(op.operands)
        self.pixel_format = op.attrs["pixel_format"]

    def run(self, args: list[np.ndarray]) -> list[np.ndarray]:
        return [decode_image(np.ascontiguousarray(args[0], dtype=np.uint8).tobytes(), self.pixel_format)]

    def report(self) -> dict[str, Any]:
        return {"codec": "the registered image decoder (ir/codecs.py)", "pixel_format": self.pixel_format}


@register_host_sync("image_decode", why="decoding an image is a codec's work, done on the host; its size is known "
                                        "only after decoding")
def build_image_decode(op: Op, ctx: SegmentContext) -> ImageDecodeStep:
    return ImageDecodeStep(op)

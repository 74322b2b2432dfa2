"""Converters for ONNX signal-processing ops: DFT (axis as attribute in opset 17, as input from 20),
STFT, the Blackman/Hamming/Hann windows, MelWeightMatrix, Det and ImageDecoder (``image_decode``,
decoded through the codec hook of ir/codecs.py: Pillow, the optional extra ``nnc[images]``).

Windows and mel matrices whose inputs are constants fold to constants here (``ctx.op`` folds ops
whose operands are all constant).
"""

from __future__ import annotations

import numpy as np

from ..context import ConvertContext, Node, dtype_from_onnx
from ..registry import converter


@converter("DFT", since=17)
def dft_v17(ctx: ConvertContext, node: Node):
    return ctx.op_dynamic("dft", [node.inputs[0]], {"axis": node.attr("axis", 1), "dft_length": node.input(1)},
                          inverse=node.attr("inverse", 0), onesided=node.attr("onesided", 0))


@converter("DFT", since=20)
def dft(ctx: ConvertContext, node: Node):
    axis = node.input(2) if node.input(2) is not None else -2
    return ctx.op_dynamic("dft", [node.inputs[0]], {"axis": axis, "dft_length": node.input(1)},
                          inverse=node.attr("inverse", 0), onesided=node.attr("onesided", 0))


@converter("STFT", since=17)
def stft(ctx: ConvertContext, node: Node):
    signal = node.inputs[0]
    window = node.input(2)
    if window is None:  # an empty window is the op's "rectangular of frame_length"
        window = ctx.const(np.zeros(0, signal.dtype.numpy))
    return ctx.op_dynamic("stft", [signal, window], {"frame_step": node.inputs[1], "frame_length": node.input(3)},
                          onesided=node.attr("onesided", 1))


def _window(kind: str):
    def convert(ctx: ConvertContext, node: Node):
        dt = dtype_from_onnx(node.attr("output_datatype", 1), f"{node.describe()}: ")
        return ctx.op_dynamic("window", [], {"size": node.inputs[0]}, kind=kind,
                              periodic=node.attr("periodic", 1), dtype=dt)
    return convert


converter("HannWindow", since=17)(_window("hann"))
converter("HammingWindow", since=17)(_window("hamming"))
converter("BlackmanWindow", since=17)(_window("blackman"))


@converter("MelWeightMatrix", since=17)
def mel_weight_matrix(ctx: ConvertContext, node: Node):
    names = ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz")
    dt = dtype_from_onnx(node.attr("output_datatype", 1), f"{node.describe()}: ")
    return ctx.op_dynamic("mel_weight_matrix", [], dict(zip(names, node.inputs)), dtype=dt)


@converter("Det", since=11)
def det(ctx: ConvertContext, node: Node):
    return ctx.op("det", node.inputs[0])


@converter("ImageDecoder", since=20)
def image_decoder(ctx: ConvertContext, node: Node):
    return ctx.op("image_decode", node.inputs[0], pixel_format=node.attr("pixel_format", "RGB"))

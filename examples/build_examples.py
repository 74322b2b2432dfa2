"""Build the small example models used by the README, docs/cli.md and the CLI tests.

    python examples/build_examples.py            # writes mlp.onnx, cnn.onnx, mlp_input.npy here
    python examples/build_examples.py --out DIR  # somewhere else

The models are written with ``onnx.helper`` and seeded numpy only, so the files are reproducible
byte for byte. Their weights are random (untrained): the examples show the tool, not accuracy.
Layers follow what PyTorch's ONNX exporter emits (Gemm with transB=1 for a Linear layer).
"""

from __future__ import annotations

import argparse
import os

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # the IR version of opset 17; keeps the files loadable by older tools


def _linear(rng: np.random.Generator, name: str, n_in: int, n_out: int) -> list[onnx.TensorProto]:
    # Kaiming-uniform like torch.nn.Linear, so activations keep a sensible scale through layers
    bound = 1.0 / np.sqrt(n_in)
    w = rng.uniform(-bound, bound, size=(n_out, n_in)).astype(np.float32)
    b = rng.uniform(-bound, bound, size=(n_out,)).astype(np.float32)
    return [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]


def _model(graph: onnx.GraphProto) -> onnx.ModelProto:
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="nnc-examples")
    m.ir_version = IR_VERSION
    onnx.checker.check_model(m, full_check=True)
    return m


def build_mlp(seed: int = 0) -> onnx.ModelProto:
    """x: f32[N,784] (a flattened 28x28 image) -> 32 hidden units (ReLU) -> logits: f32[N,10]."""
    rng = np.random.default_rng(seed)
    inits = _linear(rng, "fc1", 784, 32) + _linear(rng, "fc2", 32, 10)
    nodes = [
        helper.make_node("Gemm", ["x", "fc1.weight", "fc1.bias"], ["fc1"], name="fc1", transB=1),
        helper.make_node("Relu", ["fc1"], ["relu1"], name="relu1"),
        helper.make_node("Gemm", ["relu1", "fc2.weight", "fc2.bias"], ["logits"], name="fc2", transB=1),
    ]
    graph = helper.make_graph(nodes, "mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 784])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", 10])], inits)
    return _model(graph)


def build_cnn(seed: int = 0) -> onnx.ModelProto:
    """image: f32[1,1,28,28] -> conv 3x3 (4) -> relu -> maxpool 2 -> conv 3x3 (8) -> relu -> maxpool 2
    -> flatten -> gemm -> logits: f32[1,10]."""
    rng = np.random.default_rng(seed)

    def conv(name: str, c_in: int, c_out: int) -> list[onnx.TensorProto]:
        bound = 1.0 / np.sqrt(c_in * 9)
        w = rng.uniform(-bound, bound, size=(c_out, c_in, 3, 3)).astype(np.float32)
        b = rng.uniform(-bound, bound, size=(c_out,)).astype(np.float32)
        return [numpy_helper.from_array(w, f"{name}.weight"), numpy_helper.from_array(b, f"{name}.bias")]

    inits = conv("conv1", 1, 4) + conv("conv2", 4, 8) + _linear(rng, "fc", 8 * 7 * 7, 10)
    pool = {"kernel_shape": [2, 2], "strides": [2, 2]}
    nodes = [
        helper.make_node("Conv", ["image", "conv1.weight", "conv1.bias"], ["conv1"], name="conv1",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv1"], ["relu1"], name="relu1"),
        helper.make_node("MaxPool", ["relu1"], ["pool1"], name="pool1", **pool),
        helper.make_node("Conv", ["pool1", "conv2.weight", "conv2.bias"], ["conv2"], name="conv2",
                         kernel_shape=[3, 3], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["conv2"], ["relu2"], name="relu2"),
        helper.make_node("MaxPool", ["relu2"], ["pool2"], name="pool2", **pool),
        helper.make_node("Flatten", ["pool2"], ["flat"], name="flatten", axis=1),
        helper.make_node("Gemm", ["flat", "fc.weight", "fc.bias"], ["logits"], name="fc", transB=1),
    ]
    graph = helper.make_graph(nodes, "cnn",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 1, 28, 28])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, 10])], inits)
    return _model(graph)


def build_mlp_input(seed: int = 1) -> np.ndarray:
    """A sample for the MLP: a 28x28 'image' with a bright square on a noisy background, flattened."""
    rng = np.random.default_rng(seed)
    img = rng.uniform(0.0, 0.1, size=(28, 28))
    img[8:20, 10:18] = 1.0
    return img.reshape(1, 784).astype(np.float32)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Build nnc's example ONNX models.")
    p.add_argument("--out", default=os.path.dirname(os.path.abspath(__file__)), help="output folder")
    out = p.parse_args(argv).out
    os.makedirs(out, exist_ok=True)
    onnx.save(build_mlp(), os.path.join(out, "mlp.onnx"))
    onnx.save(build_cnn(), os.path.join(out, "cnn.onnx"))
    np.save(os.path.join(out, "mlp_input.npy"), build_mlp_input())
    print(f"wrote mlp.onnx, cnn.onnx and mlp_input.npy to {out}")


if __name__ == "__main__":
    main()

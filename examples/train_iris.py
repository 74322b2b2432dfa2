"""Train a small MLP on the Iris data set with nnc's training mode, on x86, and report accuracy.

The data is Fisher's Iris (150 flowers, 4 measurements, 3 species; R. A. Fisher 1936, UCI Machine
Learning Repository, CC BY 4.0), shipped with this example as ``examples/data/iris.npz`` (2 KB:
``x`` [150, 4] float32, ``y`` [150] species 0..2, rows in species order, 50 each), so nothing is
downloaded and no dataset package is needed (scikit-learn is not a dependency).

    python examples/train_iris.py [--epochs 60] [-o iris_trained.onnx]

Every fifth flower is held out for testing (30 flowers, 10 per species). The model (4-16-16-3,
tanh) is built with onnx.helper, trained with Adam on a one-vs-rest logistic loss
(``bce_with_logits`` on one-hot targets) and evaluated by exporting the trained weights to an
inference model compiled with ``mode="infer"``.
"""

from __future__ import annotations

import argparse
import os
import time

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

import nnc


def load_iris() -> tuple[np.ndarray, np.ndarray]:
    with np.load(os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "iris.npz")) as z:
        return z["x"], z["y"]


def mlp(batch: int, seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)
    sizes = [4, 16, 16, 3]
    inits, nodes, h = [], [], "x"
    for i, (a, b) in enumerate(zip(sizes, sizes[1:])):
        bound = 1 / np.sqrt(a)  # torch.nn.Linear's initialisation
        inits += [numpy_helper.from_array(rng.uniform(-bound, bound, (a, b)).astype(np.float32), f"fc{i}.weight"),
                  numpy_helper.from_array(rng.uniform(-bound, bound, b).astype(np.float32), f"fc{i}.bias")]
        out = "logits" if i == len(sizes) - 2 else f"h{i}"
        pre = out if out == "logits" else out + "_pre"
        nodes.append(helper.make_node("Gemm", [h, f"fc{i}.weight", f"fc{i}.bias"], [pre]))
        if out != "logits":
            nodes.append(helper.make_node("Tanh", [out + "_pre"], [out]))
        h = out
    g = helper.make_graph(nodes, "iris_mlp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [batch, 4])],
                          [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, 3])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--batch", type=int, default=10)
    ap.add_argument("--lr", type=float, default=1e-2)
    ap.add_argument("-o", "--output", help="write the trained model as ONNX")
    a = ap.parse_args()
    x, y = load_iris()
    test = np.arange(len(x)) % 5 == 4
    mean, std = x[~test].mean(0), x[~test].std(0)
    x = (x - mean) / std
    xtr, ytr, xte, yte = x[~test], y[~test], x[test], y[test]
    onehot = np.eye(3, dtype=np.float32)[ytr]

    sess = nnc.compile(mlp(a.batch), target="x86", mode="train", loss="bce_with_logits", optimizer="adam",
                       lr=a.lr, quiet=True)
    rng = np.random.default_rng(0)
    t0 = time.perf_counter()
    for epoch in range(a.epochs):
        order = rng.permutation(len(xtr))
        losses = [sess.step({"x": xtr[idx], "labels": onehot[idx]})
                  for idx in (order[i:i + a.batch] for i in range(0, len(order) - a.batch + 1, a.batch))]
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  loss {np.mean(losses):.4f}")
    print(f"trained {sess.step_count} steps in {time.perf_counter() - t0:.2f} s")

    inf = sess.export_inference()
    # the exported model keeps the training batch size; evaluate the 30 test flowers in batches
    model = nnc.compile(inf.module, target="x86", quiet=True)
    pred = np.concatenate([model(xte[i:i + a.batch]) for i in range(0, len(xte) - a.batch + 1, a.batch)]).argmax(1)
    n = len(pred)
    print(f"test accuracy: {np.mean(pred == yte[:n]) * 100:.1f}% ({n} held-out flowers)")
    if a.output:
        inf.save_onnx(a.output)
        print(f"wrote {a.output}")


if __name__ == "__main__":
    main()

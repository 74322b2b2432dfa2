"""The kernel cache (backends/x86/kernel_cache.py): a second, different CNN that shares layer shapes
with a first one links the first one's kernel objects instead of compiling them again, and still
computes what the reference interpreter computes, bit for bit what a compile without any cache
gives. Each test has its own cache folder."""

from __future__ import annotations

import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.backends.x86 import cache as x86cache
from nnc.backends.x86.kernel_cache import KERNEL_PREFIX, split_kernels


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    monkeypatch.setenv("NNC_CACHE_DIR", str(root))
    monkeypatch.setattr(x86cache, "_warned", set())
    return root / "x86"


def cnn(seed: int, tail: list[tuple[int, int]], classes: int) -> onnx.ModelProto:
    """conv3x3(3->8)+relu, conv3x3(8->8)+relu (the layers both test models share), then ``tail``
    convs (out channels, stride), global average pool and a classifier; weights from ``seed``."""
    rng = np.random.default_rng(seed)
    inits, nodes = [], []

    def conv(x: str, cin: int, cout: int, stride: int, i: int) -> str:
        w = numpy_helper.from_array((rng.standard_normal((cout, cin, 3, 3)) * 0.3).astype(np.float32), f"w{i}")
        b = numpy_helper.from_array((rng.standard_normal(cout) * 0.1).astype(np.float32), f"b{i}")
        inits.extend([w, b])
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"], kernel_shape=[3, 3],
                                      pads=[1, 1, 1, 1], strides=[stride, stride]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        return f"r{i}"

    x, cin = "x", 3
    for i, (cout, stride) in enumerate([(8, 1), (8, 1), *tail]):
        x, cin = conv(x, cin, cout, stride, i), cout
    nodes.append(helper.make_node("GlobalAveragePool", [x], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["flat"]))
    inits.append(numpy_helper.from_array(rng.standard_normal((classes, cin)).astype(np.float32), "fc"))
    nodes.append(helper.make_node("Gemm", ["flat", "fc"], ["y"], transB=1))
    g = helper.make_graph(nodes, f"cnn{seed}", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, classes])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


X = {"x": np.random.default_rng(9).standard_normal((1, 3, 16, 16)).astype(np.float32)}
# f32 convolutions of up to 72 terms summed in another order than numpy's
TOL = {"rtol": 1e-4, "atol": 1e-5}


def kernel_entries(cache_dir) -> list[str]:
    d = cache_dir / "kernels"
    return sorted(n for n in os.listdir(d) if n.endswith(x86cache.SUFFIX)) if d.is_dir() else []


def test_second_cnn_reuses_the_first_ones_kernels(cache_dir):
    first = cnn(1, [(16, 2)], 10)
    second = cnn(2, [(16, 1), (16, 2)], 5)  # other weights, another depth, the same first two layers
    a = nnc.compile(first, target="x86", quiet=True)
    ka = a.report["x86"]["kernels"]
    assert ka["from_cache"] == 0 and ka["compiled"] > 0
    assert len(kernel_entries(cache_dir)) == ka["compiled"]
    b = nnc.compile(second, target="x86", quiet=True)
    kb = b.report["x86"]["kernels"]
    assert kb["from_cache"] >= 2, kb  # the two shared conv+relu layers at least
    assert kb["from_cache"] + kb["compiled"] <= kb["distinct"]
    for model, cm in ((first, a), (second, b)):
        want = nnc.compile(model, target="reference").run(X)["y"]
        got = cm.run(X)["y"]
        np.testing.assert_allclose(got, want, **TOL)
        np.testing.assert_array_equal(got, nnc.compile(model, target="x86", quiet=True, cache=False).run(X)["y"])


def test_kernel_parts_of_a_shared_layer_are_the_same_text():
    from nnc.backends.x86 import generate

    texts = []
    for model in (cnn(1, [(16, 2)], 10), cnn(2, [(16, 1), (16, 2)], 5)):
        cm = nnc.compile(model, target="x86", quiet=True, cache=False)
        text = generate(cm.module, {"threads": 1})[3]
        part0, parts = split_kernels(text, "nnc_entry")
        assert all(name.startswith(KERNEL_PREFIX) and name in part0 for name, _ in parts)
        texts.append(dict(parts))
    shared = set(texts[0]) & set(texts[1])
    assert len(shared) >= 2 and all(texts[0][n] == texts[1][n] for n in shared)


def test_tampered_kernel_object_is_not_linked(cache_dir):
    model = cnn(1, [(16, 2)], 10)
    nnc.compile(model, target="x86", quiet=True)
    for name in kernel_entries(cache_dir):  # flip a byte in every kernel entry, past the header
        path = cache_dir / "kernels" / name
        data = bytearray(path.read_bytes())
        data[-5] ^= 0xFF
        path.write_bytes(bytes(data))
    for name in os.listdir(cache_dir):  # and drop the model's own entry, so the kernels are looked up
        if name.endswith(x86cache.SUFFIX):
            os.unlink(cache_dir / name)
    cm = nnc.compile(model, target="x86", quiet=True)
    k = cm.report["x86"]["kernels"]
    assert k["from_cache"] == 0 and k["compiled"] == len(kernel_entries(cache_dir))
    np.testing.assert_allclose(cm.run(X)["y"], nnc.compile(model, target="reference").run(X)["y"], **TOL)
    os.unlink(next(cache_dir.glob("*" + x86cache.SUFFIX)))
    again = nnc.compile(model, target="x86", quiet=True)  # the rebuilt kernel entries are whole again
    assert again.report["x86"]["kernels"]["from_cache"] == k["compiled"]

"""``com.microsoft.MatMulNBits`` import against onnxruntime running the same model (its CPU kernel,
accuracy_level 0: f32 compute). The codes, scales and zero points are random bytes and floats, not
nnc's quantizer output, so the layout (nibble order, packed zero points, the last block's padding)
is checked against onnxruntime's reading of it. Tolerance: both sum K f32 products in different
orders; 1e-5 relative to the output's magnitude covers K <= 257 (K * 2**-24 ~ 1.5e-5 worst case,
far less in practice) and no more."""

from __future__ import annotations

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.ir import UnsupportedOpError

RNG = np.random.default_rng(5)


def nbits_model(K: int, N: int, bits: int, bs: int, zero_points: str | None = None, bias: bool = False,
                scales_2d: bool = False, g_idx: np.ndarray | None = None):
    nb = -(-K // bs)
    B = RNG.integers(0, 256, (N, nb, bs * bits // 8), dtype=np.uint8)
    S = (RNG.random((N, nb)) * 0.1 + 0.01).astype(np.float32)
    inits = [numpy_helper.from_array(B, "B"), numpy_helper.from_array(S if scales_2d else S.reshape(-1), "S")]
    ins = ["A", "B", "S", "", "", ""]
    if zero_points == "packed":  # 4 bits: two per byte, ceil(blocks / 2) bytes per column
        Z = RNG.integers(0, 256, (N * -(-nb // 2),), dtype=np.uint8)
    elif zero_points == "u8":
        Z = RNG.integers(0, 1 << bits, (N * nb,), dtype=np.uint8)
    elif zero_points == "float":
        Z = RNG.random((N * nb,)).astype(np.float32)
    if zero_points:
        inits.append(numpy_helper.from_array(Z, "Z"))
        ins[3] = "Z"
    if g_idx is not None:
        inits.append(numpy_helper.from_array(g_idx.astype(np.int32), "G"))
        ins[4] = "G"
    if bias:
        inits.append(numpy_helper.from_array(RNG.standard_normal(N).astype(np.float32), "bias"))
        ins[5] = "bias"
    while not ins[-1]:
        ins.pop()
    node = helper.make_node("MatMulNBits", ins, ["Y"], domain="com.microsoft", K=K, N=N, bits=bits, block_size=bs,
                            accuracy_level=0)
    g = helper.make_graph([node], "nbits", [helper.make_tensor_value_info("A", TensorProto.FLOAT, ["b", "s", K])],
                          [helper.make_tensor_value_info("Y", TensorProto.FLOAT, ["b", "s", N])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])


CASES = [  # K, N, bits, block, zero points, bias, scales [N, blocks]
    (64, 16, 4, 32, None, False, False),
    (100, 37, 4, 32, "packed", True, False),  # K % block != 0, odd block count, N not a multiple of 16
    (257, 33, 4, 16, "packed", False, True),
    (256, 19, 4, 128, None, True, False),
    (200, 21, 8, 64, "u8", False, False),
    (96, 5, 8, 128, None, True, True),
]


@pytest.mark.parametrize("K,N,bits,bs,zp,bias,scales_2d", CASES)
@pytest.mark.parametrize("target", ["reference", "x86"])
def test_matches_onnxruntime(target: str, K, N, bits, bs, zp, bias, scales_2d) -> None:
    model = nbits_model(K, N, bits, bs, zp, bias, scales_2d)
    a = RNG.standard_normal((2, 3, K)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    cm = nnc.compile(model, target=target, quiet=True, **({"cache": False} if target == "x86" else {}))
    assert any(op.opname == "matmul_nbits" for op in cm.module.main.ops)
    np.testing.assert_allclose(cm.run({"A": a})["Y"], want, rtol=0, atol=1e-5 * np.abs(want).max())


def test_plain_g_idx_is_accepted() -> None:
    K, bs = 64, 32
    model = nbits_model(K, 8, 4, bs, g_idx=np.arange(K) // bs)
    a = RNG.standard_normal((1, 2, K)).astype(np.float32)
    want = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"A": a})[0]
    np.testing.assert_allclose(nnc.compile(model).run({"A": a})["Y"], want, rtol=0, atol=1e-5 * np.abs(want).max())


@pytest.mark.parametrize("kwargs,why", [
    ({"zero_points": "float"}, "float zero points"),
    ({"g_idx": (np.arange(64) // 32)[::-1].copy()}, "g_idx other than the plain block order"),
])
def test_unsupported_forms_name_the_node(kwargs, why: str) -> None:
    with pytest.raises(UnsupportedOpError, match=f"MatMulNBits node .*{why}"):
        nnc.from_onnx(nbits_model(64, 8, 4, 32, **kwargs))


def test_two_bit_codes_are_refused() -> None:
    model = nbits_model(64, 8, 4, 32)
    next(a for a in model.graph.node[0].attribute if a.name == "bits").i = 2
    with pytest.raises(UnsupportedOpError, match="bits=2"):
        nnc.from_onnx(model)


@pytest.mark.parametrize("bits,symmetric,block", [(4, True, 32), (4, False, 64), (8, True, 32), (8, False, 16)])
def test_onnxruntime_quantizer_output_matches_onnxruntime(bits: int, symmetric: bool, block: int) -> None:
    """A model as onnxruntime's own MatMulNBitsQuantizer writes it (its zero-point packing and
    initializer names), not built by hand."""
    pytest.importorskip("onnx_ir", reason="onnxruntime's matmul_nbits_quantizer imports onnx_ir (pip install onnx-ir)")
    from onnxruntime.quantization.matmul_nbits_quantizer import DefaultWeightOnlyQuantConfig, MatMulNBitsQuantizer

    K, N = 96, 40
    w = numpy_helper.from_array(RNG.standard_normal((K, N)).astype(np.float32), "w")
    g = helper.make_graph([helper.make_node("MatMul", ["x", "w"], ["y"])], "mm",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", K])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", N])], [w])
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    q = MatMulNBitsQuantizer(model, algo_config=DefaultWeightOnlyQuantConfig(block_size=block, is_symmetric=symmetric,
                                                                             bits=bits))
    q.process()
    qm = q.model.model if hasattr(q.model, "model") else q.model
    assert [n.op_type for n in qm.graph.node] == ["MatMulNBits"]
    a = RNG.standard_normal((5, K)).astype(np.float32)
    want = ort.InferenceSession(qm.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": a})[0]
    for target in ("reference", "x86"):
        got = nnc.compile(qm, target=target, quiet=True, **({"cache": False} if target == "x86" else {}))
        np.testing.assert_allclose(got.run({"x": a})["y"], want, rtol=0, atol=1e-5 * np.abs(want).max())

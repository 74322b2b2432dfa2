"""Weight-only quantization (ir/ops/quant_weights.py, passes/quantize/weights.py, the x86
``matmul_nbits`` kernel): the op's reference against an independent per-element decoding of the
codes, the quantizer's rounding bound, the x86 kernel against the reference over shapes with K not
a multiple of the block, N not a multiple of the vector width and rows read at run time, and the
option errors.

Tolerances: the reference sums in f64; the kernel in f32 FMAs in a different order, so the classic
bound for a float dot product of length K applies: |y - y_exact| <= K * 2**-24 * (|a| @ |w|)
(plus the rounding of the result); nothing looser."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnc
from nnc.cli import main as cli
from nnc.ir import Builder, Graph, Module, NncError, interpret, parse_module, tensor
from nnc.ir.ops.quant_weights import dequantize_nbits, pack_codes, unpack_codes
from nnc.passes import PassManager
from nnc.passes.quantize.weights import quantize_weight

RNG = np.random.default_rng(11)


def decode_by_hand(b: np.ndarray, scales: np.ndarray, zp: np.ndarray | None, K: int, bits: int, bs: int) -> np.ndarray:
    """w [K, N] element by element from the MatMulNBits layout (even element in the low nibble)."""
    N = b.shape[0]
    w = np.zeros((K, N), np.float64)
    for n in range(N):
        for k in range(K):
            blk, j = divmod(k, bs)
            if bits == 8:
                code = int(b[n, blk, j])
            else:
                byte = int(b[n, blk, j // 2])
                code = (byte >> 4) if j % 2 else (byte & 0xF)
            z = (1 << (bits - 1)) if zp is None else int(zp[n, blk])
            w[k, n] = (code - z) * float(scales[n, blk])
    return w


def nbits_model(codes, scales, zp, K: int, bits: int, bs: int, rows) -> Module:
    m = Module("nbits")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [*rows, K]))
    ops = [x, b.const(codes, name="w"), b.const(scales, name="s")] + ([] if zp is None else [b.const(zp, name="z")])
    g.set_outputs([b.create("matmul_nbits", ops, {"K": K, "bits": bits, "block_size": bs}).results[0]], ["y"])
    return m


@pytest.mark.parametrize("bits,bs,zero_points", [(4, 32, False), (4, 16, True), (8, 64, False), (8, 32, True)])
def test_reference_decodes_the_matmulnbits_layout(bits: int, bs: int, zero_points: bool) -> None:
    K, N = 70, 5  # K not a multiple of the block: the last block's padding codes must not count
    nb = -(-K // bs)
    codes = RNG.integers(0, 256, (N, nb, bs * bits // 8), dtype=np.uint8)
    scales = RNG.random((N, nb)).astype(np.float32)
    zp = RNG.integers(0, 1 << bits, (N, nb), dtype=np.uint8) if zero_points else None
    a = RNG.standard_normal((3, K)).astype(np.float32)
    y = interpret(nbits_model(codes, scales, zp, K, bits, bs, [3]), {"x": a})["y"]
    want = a.astype(np.float64) @ decode_by_hand(codes, scales, zp, K, bits, bs)
    np.testing.assert_allclose(y, want, rtol=2**-23, atol=2**-23 * np.abs(want).max())


def test_pack_unpack_round_trip() -> None:
    codes = RNG.integers(0, 16, (3, 64), dtype=np.uint8)
    np.testing.assert_array_equal(unpack_codes(pack_codes(codes, 4), 4), codes)
    assert pack_codes(np.array([[1, 2]]), 4)[0, 0] == 0x21  # the even element in the low nibble


@pytest.mark.parametrize("bits,bs,symmetric", [(4, 32, True), (4, 64, False), (8, 100, True), (8, 100, False)])
def test_quantizer_rounds_to_nearest_code(bits: int, bs: int, symmetric: bool) -> None:
    K, N = 100, 7
    w = RNG.standard_normal((K, N)).astype(np.float32)
    w[:, 0] = 0  # an all-zero column keeps a zero scale and decodes to exact zeros
    codes, scales, zp = quantize_weight(w, bits, bs, symmetric)
    assert (zp is None) == symmetric
    dq = dequantize_nbits(codes, scales, zp, K=K, bits=bits, block_size=bs).astype(np.float64)
    # every weight within half a step of its block's scale (the range includes both extremes)
    step = np.repeat(scales.astype(np.float64), bs, axis=1)[:, :K].T
    assert np.all(np.abs(dq - w) <= step / 2 * (1 + 1e-6) + 1e-12)
    assert np.all(dq[:, 0] == 0)
    if symmetric:  # codes span [-(2**(bits-1) - 1), 2**(bits-1) - 1] around the implicit zero point
        c = unpack_codes(codes, bits).astype(int) - (1 << (bits - 1))
        assert c.min() >= -((1 << (bits - 1)) - 1) and c.max() <= (1 << (bits - 1)) - 1


# rows, K, N, bits, block, zero points; up to 4 rows run the dot-product form, more the packed GEMM
SHAPES = [
    ((1,), 64, 16, 4, 32, False),
    ((1,), 100, 37, 4, 32, True),  # K % 32 != 0, N not a multiple of 4 or 16
    ((3,), 130, 70, 4, 64, False),
    ((2, 3), 257, 33, 4, 128, True),
    ((1,), 200, 21, 8, 200, False),  # int8 per channel: one block of K = 200 (not a multiple of 32)
    ((5,), 96, 5, 8, 96, True),
    ((1,), 8, 3, 4, 32, False),  # K smaller than one block
    ((7,), 20, 9, 4, 6, True),  # a block of 6 codes (the op allows any whole-byte block): no 16-code runs
]


@pytest.mark.parametrize("rows,K,N,bits,bs,zero_points", SHAPES)
def test_x86_kernel_matches_reference(rows, K: int, N: int, bits: int, bs: int, zero_points: bool) -> None:
    w = RNG.standard_normal((K, N)).astype(np.float32)
    codes, scales, zp = quantize_weight(w, bits, bs, not zero_points)
    m = nbits_model(codes, scales, zp, K, bits, bs, list(rows))
    a = RNG.standard_normal((*rows, K)).astype(np.float32)
    want = interpret(m, {"x": a})["y"]
    got = nnc.compile(m, target="x86", cache=False, quiet=True).run({"x": a})["y"]
    wq = dequantize_nbits(codes, scales, zp, K=K, bits=bits, block_size=bs).astype(np.float64)
    bound = K * 2**-24 * (np.abs(a.astype(np.float64)) @ np.abs(wq)) + 2**-24 * np.abs(want)
    assert np.all(np.abs(got - want) <= bound)


@pytest.mark.parametrize("rows,bits,bs,zero_points", [((1,), 4, 32, True), ((7,), 4, 64, False), ((6,), 8, 130, True)])
def test_x86_kernel_on_avx2(rows, bits: int, bs: int, zero_points: bool) -> None:
    """The 16-lane vectors split into AVX2 halves; the GEMM form packs 16-wide panels there."""
    K, N = 130, 37
    codes, scales, zp = quantize_weight(RNG.standard_normal((K, N)).astype(np.float32), bits, bs, not zero_points)
    m = nbits_model(codes, scales, zp, K, bits, bs, list(rows))
    a = RNG.standard_normal((*rows, K)).astype(np.float32)
    cm = nnc.compile(m, target="x86", cache=False, quiet=True, cpu="haswell", target_features="+avx2,+fma,-avx512f")
    np.testing.assert_allclose(cm.run({"x": a})["y"], interpret(m, {"x": a})["y"], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("bits,bs,zero_points", [(4, 32, False), (4, 64, True), (8, 70, False), (8, 70, True)])
def test_x86_repacked_records_hold_what_the_layout_says(bits: int, bs: int, zero_points: bool) -> None:
    """The kernel's copy, read back by hand from the layout of its module doc: per group of four
    columns and block, the four f32 scales, the four zero points (if stored), then each chunk of
    32 codes for the four columns in turn (4 bits: byte j = code j | code j + 16 << 4)."""
    from nnc.backends.x86.kernels.matmul_nbits import Layout, repack

    K, N = 70, 6  # two groups, the second half padding; K % 32 != 0
    codes, scales, zp = quantize_weight(RNG.standard_normal((K, N)).astype(np.float32), bits, bs, not zero_points)
    nb = codes.shape[1]
    lay = Layout(N, nb, bits, bs, zero_points)
    blob = repack(codes, scales, zp, bits=bits, block_size=bs)
    recs = blob.reshape(2, nb, -1)
    assert recs.shape[2] == lay.record == 16 + 4 * zero_points + -(-bs // 32) * 4 * 32 * bits // 8
    want = dequantize_nbits(codes, scales, zp, K=K, bits=bits, block_size=bs)
    for n in range(8):
        g, c = divmod(n, 4)
        for blk in range(nb):
            rec = recs[g, blk]
            s = rec[4 * c:4 * c + 4].view(np.float32)[0]
            z = int(rec[16 + c]) if zero_points else 1 << (bits - 1)
            assert s == (scales[n, blk] if n < N else 0)
            for j in range(min(bs, K - blk * bs)):
                ch, i = divmod(j, 32)
                at = lay.head + (ch * 4 + c) * 32 * bits // 8
                if bits == 4:
                    code = int(rec[at + i] & 15) if i < 16 else int(rec[at + i - 16] >> 4)
                else:
                    code = int(rec[at + i]) if zero_points else int(rec[at + i].view(np.int8)) + 128
                if n < N:
                    assert (code - z) * s == want[blk * bs + j, n]


def test_x86_kernel_rows_read_at_run_time() -> None:
    K, N = 100, 37
    codes, scales, zp = quantize_weight(RNG.standard_normal((K, N)).astype(np.float32), 4, 32, False)
    m = nbits_model(codes, scales, zp, K, 4, 32, ["M"])
    cm = nnc.compile(m, target="x86", cache=False, quiet=True)
    assert cm.report["shapes"]["generic"]
    for rows in (1, 7):
        a = RNG.standard_normal((rows, K)).astype(np.float32)
        np.testing.assert_allclose(cm.run({"x": a})["y"], interpret(m, {"x": a})["y"], rtol=1e-5, atol=1e-5)


def decoded_weight(module: Module, op) -> np.ndarray:
    codes, scales, *zp = (module.constants[v.producer.attrs["ref"]] for v in op.operands[1:])
    return dequantize_nbits(codes, scales, zp[0] if zp else None, K=op.attrs["K"], bits=op.attrs["bits"],
                            block_size=op.attrs["block_size"]).astype(np.float64)


def mlp_onnx(with_matmul: bool = True) -> onnx.ModelProto:
    w1 = RNG.standard_normal((48, 64)).astype(np.float32) / 7
    w2 = RNG.standard_normal((64, 10)).astype(np.float32) / 8
    inits = [onnx.numpy_helper.from_array(w1, "w1"), onnx.numpy_helper.from_array(w2, "w2"),
             onnx.numpy_helper.from_array(RNG.standard_normal(10).astype(np.float32), "b2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])]
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 48])
    if not with_matmul:
        nodes, inits = [helper.make_node("Relu", ["x"], ["y"])], []
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 48])
    else:
        y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])
    return helper.make_model(helper.make_graph(nodes, "mlp", [x], [y], inits),
                             opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("quantize,extra", [("int8-weights", {}), ("int4-weights", {"quantize_group": 32}),
                                            ("int4-weights", {"quantize_asymmetric": True})])
def test_compile_rewrites_every_matmul_and_gemm(quantize: str, extra: dict) -> None:
    model = mlp_onnx()
    x = RNG.standard_normal((4, 48)).astype(np.float32)
    cm = nnc.compile(model, target="reference", quantize=quantize, **extra)
    ops = [op.opname for op in cm.module.main.ops]
    assert ops.count("matmul_nbits") == 2 and "matmul" not in ops and "gemm" not in ops
    stats = next(r["stats"] for r in cm.report["passes"] if r["name"] == "quantize-weights")
    assert stats["weights_quantized"] == 2 and stats["float_weight_bytes"] == (48 * 64 + 64 * 10) * 4
    # the quantized model computes exactly the float model with the decoded weights
    w1q, w2q = (decoded_weight(cm.module, op) for op in cm.module.main.ops if op.opname == "matmul_nbits")
    b2 = onnx.numpy_helper.to_array(model.graph.initializer[2]).astype(np.float64)
    want = np.maximum(x.astype(np.float64) @ w1q, 0) @ w2q + b2
    np.testing.assert_allclose(cm.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
    x86 = nnc.compile(model, target="x86", quantize=quantize, cache=False, quiet=True, **extra)
    np.testing.assert_allclose(x86.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
    assert str(parse_module(str(cm.module))) == str(cm.module)  # the text IR round-trips


@pytest.mark.parametrize("shape_option", [{"dims": {"N": 2}}, {"max_dims": {"N": 8}}])
def test_x86_library_holds_the_codes(tmp_path, shape_option: dict) -> None:
    """A library with N fixed, and one taking N at run time (both the one-row and the GEMM form)."""
    model = mlp_onnx()
    cm = nnc.compile(model, target="x86", quantize="int4-weights", cache=False, quiet=True, **shape_option)
    cm.save(tmp_path / "m.so")
    lib, ref = nnc.load(tmp_path / "m.so"), nnc.compile(model, target="reference", quantize="int4-weights")
    for n in (2,) if "dims" in shape_option else (1, 2, 8):
        x = RNG.standard_normal((n, 48)).astype(np.float32)
        np.testing.assert_array_equal(lib.run({"x": x})["y"], cm.run({"x": x})["y"])
        np.testing.assert_allclose(lib.run({"x": x})["y"], ref.run({"x": x})["y"], rtol=1e-5, atol=1e-5)


def test_a_shared_weight_is_quantized_once_and_the_float_copy_goes() -> None:
    m = Module("shared")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [2, 40]))
    w = b.const(RNG.standard_normal((40, 40)).astype(np.float32), name="w")
    g.set_outputs([b.op("matmul", b.op("relu", b.op("matmul", x, w)), w)], ["y"])
    # (the second product is the output layer: int4 like the first, so that both read one copy)
    cm = nnc.compile(m, target="reference", quantize="int4-weights", quantize_head="int4",
                     opt_level=1)  # -O1: no fuse, no late dce
    stats = next(r["stats"] for r in cm.report["passes"] if r["name"] == "quantize-weights")
    assert stats["weights_quantized"] == 1
    assert sorted(str(a.dtype) for a in cm.module.constants.values()) == ["float32", "uint8"]
    xv = RNG.standard_normal((2, 40)).astype(np.float32)
    wq = decoded_weight(cm.module, next(op for op in cm.module.main.ops if op.opname == "matmul_nbits"))
    want = np.maximum(xv.astype(np.float64) @ wq, 0) @ wq
    np.testing.assert_allclose(cm.run({"x": xv})["y"], want, rtol=1e-5, atol=1e-5)


def test_bad_options_are_typed_errors() -> None:
    with pytest.raises(NncError, match="quantize_group=48"):
        nnc.compile(mlp_onnx(), target="reference", quantize="int4-weights", quantize_group=48)
    with pytest.raises(NncError, match="--quantize-group applies to --quantize int4-weights"):
        nnc.compile(mlp_onnx(), target="reference", quantize="int8-weights", quantize_group=32)
    with pytest.raises(NncError, match="--quantize-group applies"):
        nnc.compile(mlp_onnx(), target="reference", quantize_group=32)
    with pytest.raises(NncError, match="--quantize-asymmetric applies"):
        nnc.compile(mlp_onnx(), target="reference", quantize="int8", quantize_asymmetric=True)
    with pytest.raises(NncError, match="no matmul or gemm with a constant weight"):
        nnc.compile(mlp_onnx(with_matmul=False), target="reference", quantize="int4-weights")
    with pytest.raises(NncError, match="needs --quantize int8"):
        nnc.compile(mlp_onnx(), target="reference", quantize="int4-weights", observer="entropy")


def test_pass_refuses_other_groups() -> None:
    m = nnc.from_onnx(mlp_onnx())
    with pytest.raises(NncError, match="group must be one of 32, 64, 128"):
        PassManager("freeze,fold-constants,quantize-weights{group=48}").run(m)


def test_cli_bad_group_is_one_line(tmp_path, capsys) -> None:
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_onnx(), path)
    assert cli(["compile", str(path), "--quantize", "int4-weights", "--quantize-group", "48"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "quantize_group=48" in err[0]
    assert cli(["run", str(path), "-t", "x86", "--no-cache", "-q", "--random-inputs", "--dim", "N=2",
                "--quantize", "int4-weights",
                "--quantize-group", "64", "--quantize-asymmetric"]) == 0


def nbits_of(module: Module) -> list[int]:
    return [op.attrs["bits"] for op in module.main.ops if op.opname == "matmul_nbits"]


def test_the_output_layer_is_int8_by_default_and_as_asked() -> None:
    """mlp_onnx: MatMul -> Relu -> Gemm -> output; the Gemm is the output layer."""
    model = mlp_onnx()
    x = RNG.standard_normal((4, 48)).astype(np.float32)
    cm = nnc.compile(model, target="reference", quantize="int4-weights")
    assert nbits_of(cm.module) == [4, 8]
    stats = next(r["stats"] for r in cm.report["passes"] if r["name"] == "quantize-weights")
    assert stats["output_layers"] == 1 and stats["output_layers_quantized"] == 1
    head = [op for op in cm.module.main.ops if op.opname == "matmul_nbits"][1]
    assert head.attrs["block_size"] == 64  # per channel: one block of K
    assert nbits_of(nnc.compile(model, target="reference", quantize="int4-weights", quantize_head="int4").module) \
        == [4, 4]
    flt = nnc.compile(model, target="reference", quantize="int4-weights", quantize_head="float")
    assert nbits_of(flt.module) == [4] and [op.opname for op in flt.module.main.ops].count("gemm") == 1
    # the float head computes with the model's own w2 and b2
    w1q = decoded_weight(flt.module, next(op for op in flt.module.main.ops if op.opname == "matmul_nbits"))
    w2, b2 = (onnx.numpy_helper.to_array(model.graph.initializer[i]).astype(np.float64) for i in (1, 2))
    want = np.maximum(x.astype(np.float64) @ w1q, 0) @ w2 + b2
    np.testing.assert_allclose(flt.run({"x": x})["y"], want, rtol=1e-5, atol=1e-5)
    assert nbits_of(nnc.compile(model, target="reference", quantize="int8-weights",
                                quantize_head="float").module) == [8]


def test_an_output_also_read_inside_is_not_the_output_layer() -> None:
    m = Module("two_outputs")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [2, 32]))
    h = b.op("matmul", x, b.const(RNG.standard_normal((32, 32)).astype(np.float32), name="w1"))
    y = b.op("matmul", b.op("relu", h), b.const(RNG.standard_normal((32, 8)).astype(np.float32), name="w2"))
    g.set_outputs([h, b.op("reshape", y, b.const(np.array([16], np.int64), name="shape"))], ["h", "y"])
    cm = nnc.compile(m, target="reference", quantize="int4-weights")
    assert nbits_of(cm.module) == [4, 8]  # h is an output but relu reads it; y reaches its output reshaped


def test_head_option_errors() -> None:
    with pytest.raises(NncError, match="quantize_head='int4' with int8-weights: choose one of int8, float"):
        nnc.compile(mlp_onnx(), target="reference", quantize="int8-weights", quantize_head="int4")
    with pytest.raises(NncError, match="--quantize-head applies to --quantize int8-weights or int4-weights"):
        nnc.compile(mlp_onnx(), target="reference", quantize="int8", quantize_head="int8")
    with pytest.raises(NncError, match="quantize_head='int2'"):
        nnc.compile(mlp_onnx(), target="reference", quantize="int4-weights", quantize_head="int2")
    m = nnc.from_onnx(mlp_onnx())
    with pytest.raises(NncError, match="head must be int8, float or int4"):
        PassManager("freeze,fold-constants,quantize-weights{head=int2}").run(m)
    # a model whose only product is its output layer, kept float: nothing left to quantize
    m = Module("one")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [2, 32]))
    g.set_outputs([b.op("matmul", x, b.const(RNG.standard_normal((32, 8)).astype(np.float32), name="w"))], ["y"])
    with pytest.raises(NncError, match=r"but its output layer \(--quantize-head float\)"):
        nnc.compile(m, target="reference", quantize="int4-weights", quantize_head="float")


def test_cli_quantize_head(tmp_path, capsys) -> None:
    path = tmp_path / "mlp.onnx"
    onnx.save(mlp_onnx(), path)
    assert cli(["run", str(path), "-t", "x86", "--no-cache", "-q", "--random-inputs", "--dim", "N=2",
                "--quantize", "int4-weights", "--quantize-head", "float"]) == 0
    capsys.readouterr()
    assert cli(["compile", str(path), "--quantize", "int8-weights", "--quantize-head", "int4"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "quantize_head='int4'" in err[0]

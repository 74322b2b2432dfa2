"""bf16 on x86 and the weights blob.

bf16: kernels widen the 16-bit words to f32, compute in f32 and round back to nearest even, which is
exactly what ml_dtypes does for one op, so elementwise results and conversions are compared
bit for bit with the interpreter (NaNs compared as NaN, and +0 equal to -0). Fused groups round every
intermediate, as the unfused ops would. Kernels that do not support bf16 fail with a TargetError.

Weights: a constant that a GEMM/conv kernel reads only pre-packed is stored once (packed) in the
blob, in the JIT, the compilation cache and an AOT library; one that some kernel also reads raw is
stored raw too.
"""

from __future__ import annotations

import json
import shutil

import ml_dtypes
import numpy as np
import pytest

import nnc
from nnc.backends import x86
from nnc.ir import Builder, DType, Graph, Module, TargetError, interpret, tensor
from nnc.passes import PassManager

BF = ml_dtypes.bfloat16
RNG = np.random.default_rng(0)
UNARY = ["neg", "abs", "sign", "exp", "log", "sqrt", "reciprocal", "sin", "cos", "tan", "asin", "acos", "atan",
         "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "floor", "ceil", "round", "sigmoid", "relu",
         "leaky_relu", "elu", "softplus", "gelu", "hard_sigmoid", "hard_swish", "isnan", "isinf"]
BINARY = ["add", "sub", "mul", "div", "pow", "max", "min", "equal", "less", "less_equal", "greater",
          "greater_equal"]
# exactly rounded in f32 (then one rounding to bf16, as ml_dtypes): bit-exact. The others use f32
# polynomial approximations (vecmath) where the reference uses libm in f32/f64; the f32 results
# differ by a few f32 ulps, which can move a bf16 rounding by one bf16 ulp (2^-8 relative).
EXACT = {"neg", "abs", "sign", "sqrt", "reciprocal", "floor", "ceil", "round", "relu", "leaky_relu", "isnan",
         "isinf", "add", "sub", "mul", "div", "max", "min", "equal", "less", "less_equal", "greater",
         "greater_equal", "clip"}


def bf16_values(n: int, lo: float = -4.0, hi: float = 4.0) -> np.ndarray:
    x = RNG.uniform(lo, hi, n).astype(np.float32)
    x[:6] = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0]
    return x.astype(BF)


def module_of(build, feeds: dict[str, np.ndarray]) -> Module:
    m = Module("bf16")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    params = {k: g.add_param(k, tensor(str(DType.from_numpy(v.dtype)), list(v.shape))) for k, v in feeds.items()}
    outs = build(b, params)
    g.set_outputs(list(outs.values()), list(outs))
    return m


def same(got: np.ndarray, want: np.ndarray, ulps: int = 0) -> None:
    """Equal values (bf16: within ``ulps`` units in the last place), NaN where the reference has NaN."""
    assert got.dtype == want.dtype and got.shape == want.shape
    if want.dtype == BF:
        g32, w32 = got.astype(np.float32), want.astype(np.float32)
        np.testing.assert_array_equal(np.isnan(g32), np.isnan(w32))
        ok = ~np.isnan(w32)
        # bf16 words ordered as integers: one ulp apart = adjacent words (same sign)
        gi, wi = got.view(np.int16).astype(np.int32), want.view(np.int16).astype(np.int32)
        close = (g32 == w32) | ((np.sign(g32) == np.sign(w32)) & (np.abs(gi - wi) <= ulps))
        assert close[ok].all(), f"{(~close & ok).sum()} elements differ: got {got[~close & ok][:4]}, " \
                                f"want {want[~close & ok][:4]}"
    else:
        np.testing.assert_array_equal(got, want)


# -- bf16 -----------------------------------------------------------------------------------------
def test_rounding_to_bf16_is_ml_dtypes_on_every_bit_pattern_kind():
    bits = RNG.integers(0, 2 ** 32, 200_000, dtype=np.uint64).astype(np.uint32)
    # overflow to inf, ties (even/odd), subnormal ties, NaNs with low payload bits, negative NaN
    bits[:10] = [0x7F7FFFFF, 0xFF7FFFFF, 0x7F7F8000, 0x7F7F7FFF, 0x00008000, 0x00018000, 0x80008000,
                 0x7FFFFFFF, 0x7F800001, 0xFFC12345]
    words = np.arange(65536, dtype=np.uint32).astype(np.uint16).view(BF)  # every bf16 value
    feeds = {"x": bits.view(np.float32), "w": words}
    m = module_of(lambda b, p: {"to_bf16": b.op("cast", p["x"], to=DType.bf16),
                                "to_f32": b.op("cast", p["w"], to=DType.f32)}, feeds)
    got = nnc.compile(m, target="x86").run(feeds)
    want = interpret(m, feeds)
    with np.errstate(invalid="ignore"):
        expected = feeds["x"].astype(BF)
    np.testing.assert_array_equal(got["to_f32"].view(np.uint32), want["to_f32"].view(np.uint32))
    # bit for bit, NaNs included: ml_dtypes turns every NaN into the quiet NaN 0x7FC0 with its sign
    np.testing.assert_array_equal(got["to_bf16"].view(np.uint16), expected.view(np.uint16))


def test_elementwise_ops_on_bf16_match_the_interpreter():
    feeds = {"x": bf16_values(512), "y": bf16_values(512)}

    def build(b, p):
        outs = {u: b.op(u, p["x"]) for u in UNARY}
        outs.update({o: b.op(o, p["x"], p["y"]) for o in BINARY})
        outs["clip"] = b.op("clip", p["x"], min=-1.3, max=2.71)  # bounds rounded to bf16 as the reference
        outs["leaky_relu"] = b.op("leaky_relu", p["x"], alpha=0.3)
        outs["mod"] = b.op("mod", p["x"], p["y"])
        outs["fmod"] = b.op("mod", p["x"], p["y"], fmod=1)
        outs["where"] = b.op("where", b.op("greater", p["x"], p["y"]), p["x"], p["y"])
        return outs

    m = module_of(build, feeds)
    got = nnc.compile(m, target="x86").run(feeds)
    want = interpret(m, feeds)
    for name in want:
        same(got[name], want[name], ulps=0 if name in EXACT else 1)


def test_a_fused_bf16_chain_rounds_every_intermediate():
    x, y = bf16_values(4096, -2, 2), bf16_values(4096, -2, 2)
    feeds = {"x": x, "y": y}
    m = module_of(lambda b, p: {"z": b.op("sub", b.op("mul", b.op("add", p["x"], p["y"]), p["y"]), p["x"])}, feeds)
    fused = m.clone()
    PassManager("fuse").run(fused)
    assert [op.opname for op in fused.main.ops] == ["fused"]
    got, want = x86.compile(fused, {"cache": False}).run(feeds)["z"], interpret(m, feeds)["z"]
    same(got, want)
    # the check has teeth: the same chain carried in f32 without the intermediate roundings differs
    f = [a.astype(np.float32) for a in (x, y)]
    with np.errstate(invalid="ignore"):
        unrounded = ((f[0] + f[1]) * f[1] - f[0]).astype(BF)
    assert (unrounded.view(np.uint16) != want.view(np.uint16)).any()


INTS = ["i64", "i32", "i16", "i8", "u64", "u32", "u16", "u8"]


def test_casts_between_bf16_and_every_dtype():
    src = {"f64": RNG.standard_normal(300) * 100, "f32": (RNG.standard_normal(300) * 100).astype(np.float32),
           "f16": (RNG.standard_normal(300) * 1000).astype(np.float16), "bool": RNG.integers(0, 2, 300).astype(bool)}
    src["f32"][:3] = [np.nan, np.inf, 1 + 2 ** -8]  # a tie: rounds to even
    src["f64"][:2] = [np.nan, 1 + 2 ** -8 + 2 ** -30]  # just above a tie: 1.0078125 (through f32 it would tie)
    for d in INTS:
        info = np.iinfo(DType(d).numpy)
        src[d] = RNG.integers(info.min, info.max, 300, dtype=DType(d).numpy, endpoint=True)
        src[d][:2] = [info.min, info.max]
    # bf16 -> integer only on values the integer type holds (out of range is undefined in C and numpy)
    x = np.concatenate([bf16_values(100, -100, 100)[6:], np.array([0.5, 1.5, 2.5, -0.5, 255, 127], BF)])
    feeds = {"x": x, "nan": np.array([np.nan, -1.5, 3.0], BF), **{f"s_{d}": a for d, a in src.items()}}

    def build(b, p):
        outs = {f"bf16_{d}": b.op("cast", p["x"], to=DType(d)) for d in ["f64", "f32", "f16", "bool"]}
        for d in INTS:
            outs[f"bf16_{d}"] = b.op("cast", b.op("abs", p["x"]) if d.startswith("u") else p["x"], to=DType(d))
        outs["nan_i32"] = b.op("cast", p["nan"], to=DType.i32)  # NaN -> 0, as the reference does
        outs.update({f"{d}_bf16": b.op("cast", p[f"s_{d}"], to=DType.bf16) for d in src})
        return outs

    m = module_of(build, feeds)
    got = nnc.compile(m, target="x86").run(feeds)
    want = interpret(m, feeds)
    for name in want:
        same(got[name], want[name])
    assert got["nan_i32"].tolist() == [0, -1, 3]


def nearest_bf16(v: int | float) -> float:
    """The bf16 nearest to ``v`` (exactly, ties to even), by exact rational arithmetic: an oracle
    independent of ml_dtypes, whose f64 and integer conversions rounded twice before 0.7."""
    from fractions import Fraction

    f = Fraction(v)
    if f == 0:
        return 0.0
    e = abs(f).numerator.bit_length() - abs(f).denominator.bit_length()
    if abs(f) < Fraction(2) ** e:
        e -= 1  # now 2**e <= |f| < 2**(e+1)
    step = Fraction(2) ** (max(e, -126) - 7)  # 8 significant bits; subnormal below 2**-126
    q, r = divmod(f / step, 1)
    if r > Fraction(1, 2) or (r == Fraction(1, 2) and q % 2 == 1):
        q += 1
    return float(q * step)


def test_casts_to_bf16_round_once():
    """Values just above or below a bf16 tie, which a conversion through f32 rounded to nearest
    would put exactly on the tie: f64, 32- and 64-bit integers, each rounded once."""
    rng = np.random.default_rng(5)
    cases: dict[str, np.ndarray] = {}
    m = rng.integers(128, 256, 64) * 2 + 1  # odd 9-bit: a bf16 tie once scaled
    cases["f64"] = np.concatenate([(m * 2.0 ** -8 + s * 2.0 ** -35) for s in (1, -1)] + [-(m * 2.0 ** 90 + 2.0 ** 60)])
    for d, bits in (("i32", 31), ("u32", 32), ("i64", 63), ("u64", 64)):
        shift = bits - 10
        vals = [(int(k) << shift) + (1 if j % 2 else -1) for j, k in enumerate(m)]
        if d.startswith("i"):
            vals += [-v for v in vals[:8]] + [-(2 ** bits)]  # the most negative value too
        vals = [v for v in vals if 0 <= v < 2 ** bits or (d.startswith("i") and -(2 ** bits) <= v < 0)]
        cases[d] = np.array(vals, dtype=DType(d).numpy)
    feeds = {f"s_{d}": a for d, a in cases.items()}
    m = module_of(lambda b, p: {d: b.op("cast", p[f"s_{d}"], to=DType.bf16) for d in cases}, feeds)
    got = nnc.compile(m, target="x86").run(feeds)
    for d, a in cases.items():
        want = np.array([nearest_bf16(int(v) if d != "f64" else float(v)) for v in a])
        twice = a.astype(np.float32).astype(BF).astype(np.float64)
        assert (twice != want).sum() > len(a) // 4, d  # the inputs do tell one rounding from two
        np.testing.assert_array_equal(got[d].astype(np.float64), want, err_msg=d)


def test_matmul_gemm_einsum_softmax_and_reductions_on_bf16():
    a, w, c = (RNG.standard_normal(s).astype(BF) for s in ((5, 37), (37, 6), (6,)))
    feeds = {"a": a, "w": w, "c": c}

    def build(b, p):
        return {"matmul": b.op("matmul", p["a"], p["w"]),
                "gemm": b.op("gemm", p["a"], p["w"], p["c"], alpha=0.5, beta=2.0),
                "einsum": b.op("einsum", p["a"], p["w"], equation="ik,kj->ij"),
                "softmax": b.op("softmax", p["a"], axis=-1), "softmax0": b.op("softmax", p["a"], axis=0),
                "log_softmax": b.op("log_softmax", p["a"], axis=1),
                "sum": b.op("reduce_sum", p["a"], axes=[1], keepdims=0),
                "mean": b.op("reduce_mean", p["a"], axes=[0], keepdims=1),
                "max": b.op("reduce_max", p["a"], axes=[1], keepdims=1), "min": b.op("reduce_min", p["a"])}

    m = module_of(build, feeds)
    got = nnc.compile(m, target="x86").run(feeds)
    want = interpret(m, feeds)
    for name in want:
        # f32 sums in another order (and f32 exp): the f32 results differ by a few f32 ulps, which can
        # move the final bf16 rounding by one bf16 ulp; max/min are exact
        same(got[name], want[name], ulps=0 if name in ("max", "min") else 1)


def test_a_kernel_without_bf16_support_is_a_target_error():
    feeds = {"x": bf16_values(2 * 3 * 5 * 5).reshape(2, 3, 5, 5), "w": bf16_values(4 * 3 * 3 * 3).reshape(4, 3, 3, 3)}
    m = module_of(lambda b, p: {"y": b.op("conv", p["x"], p["w"])}, feeds)
    with pytest.raises(TargetError, match="bf16"):
        nnc.compile(m, target="x86", cache=False)


# -- the weights blob ---------------------------------------------------------------------------
def matmul_model(k: int = 512, n: int = 512, raw_too: bool = False) -> Module:
    m = Module("big_weight")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [k, k]))
    w = b.const(np.random.default_rng(3).standard_normal((k, n)).astype(np.float32), name="w")
    y = b.op("matmul", x, w, name="y")
    if raw_too:  # an elementwise kernel reads the same weight raw
        y = b.op("add", y, w, name="z")
    g.set_outputs([y, w], ["y", "w_out"])  # a constant output is copied from its raw form
    return m


def matmul_feeds(k: int = 512) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(4).standard_normal((k, k)).astype(np.float32)}


def check_matmul(got: dict[str, np.ndarray], m: Module) -> None:
    want = interpret(m, matmul_feeds())
    # f32 dot products of length 512 summed in another order: a few ulps of the sums
    np.testing.assert_allclose(got["y"], want["y"], rtol=1e-4, atol=1e-4)
    np.testing.assert_array_equal(got["w_out"], m.constants["w"])


@pytest.mark.parametrize("raw_too", [False, True])
def test_a_weight_read_only_packed_is_stored_once(raw_too, tmp_path):
    m = matmul_model(raw_too=raw_too)
    nbytes = m.constants["w"].nbytes
    fused = m.clone()
    PassManager("fuse").run(fused)  # with raw_too, the add reading w raw is the packed matmul's epilogue
    assert [op.opname for op in fused.main.ops if op.opname != "const"] == ["fused" if raw_too else "matmul"]
    exe = x86.compile(fused, {"cache_dir": str(tmp_path)})
    blob = exe.storage.weights.nbytes
    check_matmul(exe.run(matmul_feeds()), m)
    # the packed copy (the same 1 MB, padded to the register blocks) plus the raw copy the constant
    # output needs; an add reading the weight raw shares that raw copy
    assert nbytes * 2 <= blob < nbytes * 2.25
    # the cache stores the same blob, and a hit runs the same code on it
    hit = x86.compile(fused, {"cache_dir": str(tmp_path)})
    assert hit.cache_status == "hit"
    check_matmul(hit.run(matmul_feeds()), m)


def test_no_raw_copy_when_only_the_packed_weight_is_read():
    m = matmul_model()
    m.main.set_outputs([m.main.outputs[0]], ["y"])
    exe = x86.compile(m, {"cache": False})
    want = interpret(m, matmul_feeds())["y"]
    np.testing.assert_allclose(exe.run(matmul_feeds())["y"], want, rtol=1e-4, atol=1e-4)
    nbytes = m.constants["w"].nbytes
    assert nbytes <= exe.storage.weights.nbytes < nbytes * 1.25
    assert list(exe.storage.weight_offsets) == ["w.packed_b"]


@pytest.mark.skipif(shutil.which("gcc") is None, reason="AOT links with gcc")
def test_aot_library_holds_the_packed_weight_once(tmp_path):
    m = matmul_model()
    m.main.set_outputs([m.main.outputs[0]], ["y"])
    so = tmp_path / "big.so"
    nnc.compile(m, target="x86", threads=1, quiet=True).save(so)
    manifest = json.loads(so.with_suffix(".json").read_text())
    nbytes = m.constants["w"].nbytes
    assert nbytes <= manifest["weights"]["nbytes"] < nbytes * 1.25
    assert [t["name"] for t in manifest["weights"]["tensors"]] == ["w.packed_b"]
    assert so.stat().st_size < nbytes * 1.25 + 512 * 1024  # the blob plus the code
    got = nnc.load(so).run(matmul_feeds())["y"]
    np.testing.assert_allclose(got, interpret(m, matmul_feeds())["y"], rtol=1e-4, atol=1e-4)

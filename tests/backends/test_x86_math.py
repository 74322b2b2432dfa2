"""x86 math kernels against independent oracles: every elementwise op for every dtype it accepts,
the vecmath polynomials over dense f32 sweeps, reductions/scans/topk, and the normalizations.

Ops are batched into one module per dtype (each op one graph output) to keep compiles few.
Tolerances by dtype: integer and bool results are exact; f32 results from vecmath or libm are
within a few ulps (rtol 2e-6 is 16 ulps, atol 1e-37 excuses subnormal-range differences); f64
within 1e-12; f16 computes in f32 and rounds once, so it can differ by one f16 ulp (rtol 2e-3).
Reductions are reassociated (vector partial sums), so sums carry rtol proportional to length.
"""

from __future__ import annotations

import ctypes
import math

import numpy as np
import pytest
from llvmlite import ir

import nnc
from nnc.backends.x86.jit import JitModule, optimize
from nnc.backends.x86.kernels import vecmath
from nnc.backends.x86.llvm_types import F32, I64, PTR, VOID, for_range
from nnc.backends.x86.target import TRIPLE, resolve
from nnc.ir import Builder, DType, Graph, Module, NncError, interpret, tensor

RNG = np.random.default_rng(7)
TOL = {DType.f32: (2e-6, 1e-37), DType.f64: (1e-12, 1e-300), DType.f16: (2e-3, 1e-7)}
INT_DTS = [DType.i64, DType.i32, DType.i16, DType.i8, DType.u64, DType.u32, DType.u16, DType.u8]
FLOAT_DTS = [DType.f32, DType.f64, DType.f16]



# float64 references (the kernels compute in f32; the oracle is exact to f64 rounding)
def _sigmoid64(x):
    x = np.asarray(x, np.float64)
    return np.where(x >= 0, 1 / (1 + np.exp(-x)), np.exp(x) / (1 + np.exp(x)))


_erf64 = np.vectorize(math.erf, otypes=[np.float64])
_erfc64 = np.vectorize(math.erfc, otypes=[np.float64])

def compile_many(dt_inputs: dict[str, np.ndarray], ops: list[tuple[str, list[str], dict]]):
    """One module: parameters ``dt_inputs``, one output per (opname, operand names, attrs) that the
    op accepts (type inference rejects the others). Returns (names, got, want)."""
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    params = {k: g.add_param(k, tensor(str(DType.from_numpy(v.dtype)), list(v.shape))) for k, v in dt_inputs.items()}
    outs, names = [], []
    for i, (opname, args, attrs) in enumerate(ops):
        try:
            r = b.op(opname, *[params[a] for a in args], **attrs)
        except NncError:
            continue
        for j, v in enumerate(r if isinstance(r, (list, tuple)) else [r]):
            outs.append(v)
            names.append(f"{opname}.{i}.{j}")
    g.set_outputs(outs, names)
    got = nnc.compile(m, target="x86").run(dict(dt_inputs))
    with np.errstate(all="ignore"):
        want = interpret(m, dict(dt_inputs))
    return names, got, want


def assert_close(name: str, got: np.ndarray, want: np.ndarray, dt: DType, scale: float = 1.0) -> None:
    assert got.shape == want.shape and got.dtype == want.dtype, (name, got.shape, want.shape, got.dtype)
    if not np.issubdtype(want.dtype, np.floating):
        np.testing.assert_array_equal(got, want, err_msg=name)
        return
    rtol, atol = TOL[DType.from_numpy(want.dtype)]
    np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol * scale,
                               atol=atol * scale, equal_nan=True, err_msg=name)


# -- elementwise ----------------------------------------------------------------------------------
UNARY = ["neg", "abs", "sign", "exp", "log", "sqrt", "reciprocal", "sin", "cos", "tan", "asin", "acos",
         "atan", "sinh", "cosh", "tanh", "asinh", "acosh", "atanh", "erf", "floor", "ceil", "round",
         "sigmoid", "relu", "softplus", "hard_swish", "bitwise_not", "isnan"]
UNARY_ATTRS = [("leaky_relu", {"alpha": 0.1}), ("elu", {"alpha": 0.7}), ("gelu", {}),
               ("gelu", {"approximate": "tanh"}), ("hard_sigmoid", {"alpha": 0.3, "beta": 0.4}),
               ("clip", {"min": -1.5, "max": 2.5}), ("clip", {"min": None, "max": 3.0}),
               ("clip", {"min": 1.0, "max": None}), ("isinf", {}), ("isinf", {"detect_negative": 0}),
               ("isinf", {"detect_positive": 0})]
BINARY = ["add", "sub", "mul", "div", "pow", "max", "min", "bitwise_and", "bitwise_or", "bitwise_xor",
          "shift_left", "shift_right", "equal", "less", "less_equal", "greater", "greater_equal"]


def _float_input(dt: DType) -> np.ndarray:
    # a spread of magnitudes (tails of exp/sigmoid/erf/gelu), exact halves for round, specials
    v = np.concatenate([np.linspace(-12, 12, 301), RNG.standard_normal(200) * 40, [0.5, 1.5, 2.5, -0.5, -2.5],
                        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-30, -1e-30, 88.5, -90.0, 0.999, -0.999]])
    return v.astype(dt.numpy)


def _int_input(dt: DType) -> np.ndarray:
    info = np.iinfo(dt.numpy)
    v = [0, 1, 2, 3, 7, 100, int(info.max), int(info.min), int(info.max) - 1]
    if dt.is_signed:
        v += [-1, -2, -3, -7, -100]
    return np.array(v + list(RNG.integers(max(info.min, -1000), min(info.max, 1000), 40)), dt.numpy)


@pytest.mark.parametrize("dt", FLOAT_DTS + INT_DTS)
def test_unary_ops_match_interpreter(dt: DType):
    x = _float_input(dt) if dt.is_float else _int_input(dt)
    ops = [(n, ["x"], {}) for n in UNARY] + [(n, ["x"], a) for n, a in UNARY_ATTRS]
    # float -> int of NaN, inf or out-of-range values is undefined: cast the finite values only
    ops.append(("cast", ["c"], {"to": DType.f32 if not dt.is_float else DType.i32}))
    names, got, want = compile_many({"x": x, "c": x[np.isfinite(x)] if dt.is_float else x}, ops)
    assert len(names) >= (25 if dt.is_float else 7)
    for n in names:
        # the reference's gelu computes 1 + erf(x / sqrt 2) in f64, which cancels for x < -8
        # (absolute error ~1e-16 |x|); ours uses erfc and is closer to the true value there
        if n.startswith("gelu") and dt is not DType.f16:
            np.testing.assert_allclose(got[n], want[n], rtol=TOL[dt][0], atol=1e-14, equal_nan=True, err_msg=n)
            continue
        assert_close(n, got[n], want[n], dt)


@pytest.mark.parametrize("dt", FLOAT_DTS + [DType.i64, DType.i32, DType.i8, DType.u8, DType.u32])
def test_binary_ops_with_broadcasting_match_interpreter(dt: DType):
    if dt.is_float:
        a = (RNG.standard_normal((4, 1, 6)) * 4).astype(dt.numpy)
        b = (RNG.standard_normal((5, 1)) * 4).astype(dt.numpy)
        b[0, 0] = 0.0
        a[0, 0, :3] = [np.nan, np.inf, -0.0]
    else:
        info = np.iinfo(dt.numpy)
        a = RNG.integers(max(info.min, -50), min(info.max, 50), (4, 1, 6)).astype(dt.numpy)
        # the type's minimum (wrapping cases); for i64 the reference's own |a| overflows, so min + 1
        a[0, 0, 0] = info.min + (dt is DType.i64)
        b = RNG.integers(max(info.min, -6), 7, (5, 1)).astype(dt.numpy)
        b[:4, 0] = [0, 1, (-1 if dt.is_signed else 2), 9]
    # negative shift amounts and negative integer powers are not defined (numpy refuses them):
    # those get non-negative right operands, including shifts by the width and more
    nonneg = {"pow", "shift_left", "shift_right"} if dt.is_int else set()
    ops = [(n, ["a", "p" if n in nonneg else "b"], {}) for n in BINARY]
    ops += [("mod", ["a", "b"], {"fmod": f}) for f in (0, 1)]
    p = np.abs(b) if dt.is_float else np.array([[0], [1], [2], [9], [70]], dt.numpy)
    names, got, want = compile_many({"a": a, "b": b, "p": p}, ops)
    for n in names:
        assert_close(n, got[n], want[n], dt)


def test_bool_logic_where_and_bitcast():
    p = np.array([True, False, True, False])
    q = np.array([True, True, False, False])
    f = np.array([1.5, -2.0, np.nan, np.inf], np.float32)
    ops = [(n, ["p", "q"], {}) for n in ("and", "or", "xor", "equal")] + [("not", ["p"], {})]
    ops += [("where", ["p", "f", "g"], {}), ("bitcast", ["f"], {"to": DType.i32}),
            ("bitcast", ["i"], {"to": DType.f32}), ("cast", ["f"], {"to": DType.bool}),
            ("cast", ["p"], {"to": DType.f32}), ("cast", ["p"], {"to": DType.i64})]
    feeds = {"p": p, "q": q, "f": f, "g": -f, "i": np.array([0, 1065353216, -1, 2139095040], np.int32)}
    names, got, want = compile_many(feeds, ops)
    assert len(names) == len(ops)
    for n in names:
        np.testing.assert_array_equal(got[n], want[n], err_msg=n)


# -- vecmath accuracy -----------------------------------------------------------------------------
def _vm_kernel(name: str, scalef: bool = False):
    m = ir.Module(name)
    m.triple = TRIPLE
    vecmath.use_scalef(m, scalef)
    f = ir.Function(m, ir.FunctionType(VOID, [PTR, PTR, I64]), name="run")
    b = ir.IRBuilder(f.append_basic_block())
    src, dst, n = f.args
    with for_range(b, n) as i:
        x = b.load(b.gep(src, [i], source_etype=F32), typ=F32)
        b.store(vecmath.call(b, name, x), b.gep(dst, [i], source_etype=F32))
    b.ret_void()
    mod, tm = optimize(str(m), resolve(None, None), 3)
    jit = JitModule(mod, tm)
    fn = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(jit.address("run"))
    return fn, jit, str(mod)


def _ulps(got: np.ndarray, want64: np.ndarray) -> np.ndarray:
    want32 = want64.astype(np.float32)
    want64 = np.where(np.isinf(want32), want32.astype(np.float64), want64)  # beyond FLT_MAX: inf
    spacing = np.maximum(np.spacing(np.abs(want32)).astype(np.float64), 2.0 ** -149)
    d = np.abs(got.astype(np.float64) - want64) / spacing
    same = (np.isnan(got) & np.isnan(want64)) | (got.astype(np.float64) == want64)
    return np.where(same, 0.0, d)


VM_ORACLES = {"exp": (np.exp, 2), "expm1": (np.expm1, 3), "log": (np.log, 2), "log1p": (np.log1p, 3),
              "tanh": (np.tanh, 2), "sigmoid": (_sigmoid64, 3), "erf": (_erf64, 3),
              "erfc": (_erfc64, 10)}


@pytest.mark.parametrize("scalef", [False, True])  # two exponent-bit factors / one vscalefps (AVX-512)
@pytest.mark.parametrize("name", list(VM_ORACLES))
def test_vecmath_accuracy_over_all_f32_exponents(name: str, scalef: bool):
    # every 4099th bit pattern: ~1M values covering every exponent of both signs, NaNs and infs
    bits = np.arange(0, 2 ** 32, 4099, dtype=np.uint64).astype(np.uint32)
    x = np.concatenate([bits.view(np.float32), np.float32([0, -0.0, np.inf, -np.inf, np.nan, 88.72, 88.73,
                                                           -87.3, -103.9, -104.0, 1e-45, -1e-45, 0.625, 1.0])])
    fn, jit, text = _vm_kernel(name, scalef)
    assert ("llvm.ldexp" in text) == (scalef and name != "log" and name != "log1p"), "the scaling was not the one asked"
    y = np.empty_like(x)
    fn(x.ctypes.data, y.ctypes.data, x.size)
    oracle, max_ulps = VM_ORACLES[name]
    with np.errstate(all="ignore"):
        want = oracle(x.astype(np.float64))
    np.testing.assert_array_equal(np.isnan(y), np.isnan(want))
    u = _ulps(y, want)
    assert u.max() <= max_ulps, (name, u.max(), x[np.argmax(u)])
    assert "x float>" in text, f"the {name} loop did not vectorise"


# -- reductions, scans, topk ----------------------------------------------------------------------
@pytest.mark.parametrize("dt", [DType.f32, DType.f16, DType.f64, DType.i32, DType.u8, DType.i64])
def test_reductions_match_interpreter(dt: DType):
    shape = (3, 4, 5)
    if dt.is_float:
        x = RNG.uniform(0.5, 1.5, shape).astype(dt.numpy)
    else:
        x = RNG.integers(0, 3, shape).astype(dt.numpy)
    ops = []
    for kind in ("sum", "mean", "prod", "max", "min"):
        for axes in (None, [1], [0, 2], [2], [0], [-1, 0, 1], []):
            for keep in (0, 1):
                ops.append((f"reduce_{kind}", ["x"], {"axes": axes, "keepdims": keep}))
        ops.append((f"reduce_{kind}", ["x"], {"axes": [], "noop_with_empty_axes": 1}))
        if dt.is_float or kind != "mean":  # the mean of nothing is NaN, undefined as an integer
            ops.append((f"reduce_{kind}", ["e"], {"axes": [1], "keepdims": 0}))
    big = {"sum": [1], "max": [0], "mean": [0, 1]}
    for kind, axes in big.items():
        ops.append((f"reduce_{kind}", ["w"], {"axes": axes}))
    feeds = {"x": x, "e": np.zeros((2, 0, 3), dt.numpy),
             "w": (RNG.standard_normal((64, 700)) if dt.is_float else RNG.integers(0, 9, (64, 700))).astype(dt.numpy)}
    names, got, want = compile_many(feeds, ops)
    assert len(names) == len(ops)
    w = feeds["w"].astype(np.float64)
    magnitude = {"sum": np.abs(w).sum(1, keepdims=True), "mean": np.abs(w).mean(keepdims=True)}
    for n, (opname, args, _) in zip(names, ops):
        kind = opname.split("_", 1)[1]
        if args == ["w"] and kind in magnitude and dt.is_float:
            # reassociated sums of 700 terms that cancel: beside the result's own tolerance, one
            # epsilon of the accumulating type times the sum of the magnitudes (the scale of a float
            # sum's rounding error, which a small result does not bound)
            rtol = TOL[dt][0] * (10.0 if dt is DType.f32 else 1.0)
            eps = np.finfo(np.float64 if dt is DType.f64 else np.float32).eps
            assert_within(n, got[n], want[n], rtol * np.abs(want[n].astype(np.float64)) + eps * magnitude[kind])
            continue
        # f16 sums accumulate in f32 and round once; reassociated f32 sums of 700 terms: ~1e-5
        assert_close(n, got[n], want[n], dt, scale=10.0 if dt is DType.f32 else 1.0)


def assert_within(name: str, got: np.ndarray, want: np.ndarray, bound) -> None:
    """|got - want| <= bound element by element (a per-element error bound)."""
    err = np.abs(got.astype(np.float64) - want.astype(np.float64)).reshape(-1)
    assert got.shape == want.shape and got.dtype == want.dtype, name
    assert (err <= np.broadcast_to(bound, want.shape).reshape(-1)).all(), (name, err.max())


@pytest.mark.parametrize("dt", [DType.f32, DType.f64])
def test_contiguous_sums_in_vectors(dt: DType):
    """Sums and means over contiguous runs of at least two vectors add whole vectors
    (``reduce.contiguous_sum``): global average pools of 8x8 and 13x13 planes (a masked tail), runs of
    exactly 2, 3 and 5 vectors (fewer than or not a multiple of the four accumulators), an outer
    reduced axis around them, a NaN and an inf that must reach their sums."""
    lanes = 16 if dt is DType.f32 else 8
    feeds = {"g8": RNG.standard_normal((1, 6, 8, 8)), "g13": RNG.standard_normal((1, 5, 13, 13)),
             "v": RNG.standard_normal((3, 2, 5 * lanes + 3)), "w2": RNG.standard_normal((4, 2 * lanes)),
             "w3": RNG.standard_normal((4, 3 * lanes))}
    feeds = {k: v.astype(dt.numpy) for k, v in feeds.items()}
    feeds["g13"][0, 1, 4, 7] = np.nan
    feeds["g13"][0, 2, 12, 12] = np.inf  # in the masked tail
    ops = []
    for kind in ("sum", "mean"):
        ops += [(f"reduce_{kind}", ["g8"], {"axes": [2, 3]}), (f"reduce_{kind}", ["g13"], {"axes": [2, 3]}),
                (f"reduce_{kind}", ["v"], {"axes": [2]}), (f"reduce_{kind}", ["v"], {"axes": [0, 2]}),
                (f"reduce_{kind}", ["w2"], {"axes": [1]}), (f"reduce_{kind}", ["w3"], {"axes": [1]})]
    names, got, want = compile_many(feeds, ops)
    assert len(names) == len(ops)
    for n in names:
        assert_close(n, got[n], want[n], dt)
    g13 = got[names[1]].reshape(-1)
    assert np.isnan(g13[1]) and g13[2] == np.inf


@pytest.mark.parametrize("dt", [DType.f32, DType.f16, DType.i32])
def test_arg_scan_topk_match_interpreter(dt: DType):
    x = np.round(RNG.standard_normal((3, 7, 5)) * 2).astype(dt.numpy)  # rounded: many ties
    if dt.is_float:
        x[1, 2, 3] = np.nan
    ops = []
    for axis in (0, 1, -1):
        for last in (0, 1):
            attrs = {"axis": axis, "select_last_index": last, "keepdims": last}
            ops += [(op, ["x"], attrs) for op in ("argmax", "argmin")]
        for ex in (0, 1):
            for rev in (0, 1):
                ops += [("cumsum", ["x"], {"axis": axis, "exclusive": ex, "reverse": rev}),
                        ("cumprod", ["p"], {"axis": axis, "exclusive": ex, "reverse": rev})]
        for largest in (0, 1):
            ops.append(("topk", ["x"], {"k": 3, "axis": axis, "largest": largest}))
    p = (RNG.integers(1, 3, (3, 7, 5)) * np.where(RNG.random((3, 7, 5)) < 0.2, -1, 1)).astype(dt.numpy)
    names, got, want = compile_many({"x": x, "p": p}, ops)
    assert len(names) == sum(2 if o[0] == "topk" else 1 for o in ops)
    for n in names:
        assert_close(n, got[n], want[n], dt)


# -- normalizations -------------------------------------------------------------------------------
@pytest.mark.parametrize("dt", FLOAT_DTS)
def test_normalizations_match_interpreter(dt: DType):
    x = (RNG.standard_normal((2, 6, 5, 4)) * 3 + 1).astype(dt.numpy)
    c = [RNG.standard_normal(6).astype(dt.numpy) for _ in range(4)]
    c[3] = np.abs(c[3]) + 0.1
    tail = RNG.standard_normal((5, 4)).astype(dt.numpy)
    tail_b = RNG.standard_normal((4,)).astype(dt.numpy)
    ops = [(n, ["x"], {"axis": a}) for n in ("softmax", "log_softmax") for a in (-1, 1, 0, 2)]
    ops += [("layer_norm", ["x", "t", "tb"], {"axis": 2}), ("layer_norm", ["x", "tb"], {"axis": -1}),
            ("rms_norm", ["x", "t"], {"axis": 2}), ("rms_norm", ["x", "tb"], {"axis": 3, "epsilon": 0.1}),
            ("batch_norm", ["x", "s", "b", "m", "v"], {"epsilon": 1e-3}),
            ("group_norm", ["x", "s", "b"], {"num_groups": 3}), ("group_norm", ["x", "s", "b"], {"num_groups": 6}),
            ("lrn", ["x"], {"size": 3}), ("lrn", ["x"], {"size": 4, "alpha": 0.01, "beta": 0.5, "bias": 2.0})]
    feeds = {"x": x, "s": c[0], "b": c[1], "m": c[2], "v": c[3], "t": tail, "tb": tail_b}
    names, got, want = compile_many(feeds, ops)
    assert len(names) == sum(3 if o[0] == "layer_norm" else 1 for o in ops)
    # outputs are O(1) sums of O(1) terms (x_hat * scale + bias), so the absolute error is a few
    # ulps of 1: f32 statistics (also for f64 inputs: stash_type) summed in another order give ~1e-6;
    # f16 rounds each step to f16 like the reference but may round differently by an ulp (~4e-3 at 4)
    rtol, atol = (4e-3, 4e-3) if dt is DType.f16 else (1e-5, 1e-6)
    for n in names:
        assert got[n].dtype == want[n].dtype and got[n].shape == want[n].shape, n
        np.testing.assert_allclose(got[n].astype(np.float64), want[n].astype(np.float64), rtol=rtol, atol=atol,
                                   err_msg=n)


def test_softmax_is_stable_for_large_inputs():
    x = np.array([[1000.0, 1001.0, 1002.0], [-np.inf, 0.0, 1.0], [-1e30, -1e30, -1e30]], np.float32)
    names, got, want = compile_many({"x": x}, [("softmax", ["x"], {}), ("log_softmax", ["x"], {})])
    for n in names:
        assert np.all(np.isfinite(got[n][:, 1:]))
        assert_close(n, got[n], want[n], DType.f32)

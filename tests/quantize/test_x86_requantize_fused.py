"""``fuse-requantize`` (backends/x86/fuse_requantize.py) and the requantize epilogues of the VNNI
qconv and qmatmul kernels: the fused group's int8 result equals the reference interpreter's bit for
bit (per-channel and per-tensor multipliers, shift 0, clip bounds, zero points, u8 output, channel
and pixel tails), groups form only where a kernel can take the epilogue, and a whole quantized
MobileNetV2 from bench/models.py runs bit-exact with every requantize fused."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

import nnc
from nnc.backends.x86 import prepare
from nnc.ir import Builder, DType, Graph, Module, interpret, tensor

RNG = np.random.default_rng(5)


def _graph(anchor: str, x: np.ndarray, consts: list[np.ndarray], attrs: dict, rq: dict,
           also_output: bool = False) -> Module:
    m = Module("rq")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    xv = g.add_param("x", tensor(str(DType.from_numpy(x.dtype)), list(x.shape)))
    acc = b.op(anchor, xv, *[b.const(c, name=f"c{i}") for i, c in enumerate(consts)], **attrs)
    rq = dict(rq)
    y = b.op("requantize", acc, b.const(rq.pop("multiplier"), name="mult"), b.const(rq.pop("shift"), name="shift"),
             **rq)
    if also_output:
        g.set_outputs([y, acc], ["y", "acc"])
    else:
        g.set_outputs([y], ["y"])
    return m


def _kernels(m: Module) -> list[str]:
    return [op.opname for op in prepare(m).main.ops if op.opname != "const"]


def _check(m: Module, x: np.ndarray, **target) -> None:
    want = interpret(m, {"x": x})
    got = nnc.compile(m, target="x86", quiet=True, **target).run({"x": x})
    for k, v in want.items():
        assert got[k].dtype == v.dtype
        np.testing.assert_array_equal(got[k], v)


def _rq(channels: int, per_channel: bool = True, **attrs) -> dict:
    n = channels if per_channel else 1
    mult = RNG.integers(1 << 30, 1 << 31, size=n).astype(np.int32)
    shift = RNG.integers(30, 40, size=n).astype(np.int32)
    if n > 2:
        mult[1], shift[1] = 1, 0  # shift 0: the rounding's own path
    if not per_channel:
        mult, shift = mult.reshape(()), shift.reshape(())
    return {"multiplier": mult, "shift": shift, **attrs}


def i8(*shape: int) -> np.ndarray:
    return RNG.integers(-128, 128, size=shape).astype(np.int8)


@pytest.mark.parametrize("n,m,c,h,k,s,p,g,zp", [
    (1, 20, 16, 9, 1, 1, 0, 1, 0),      # pointwise, channel tail (12 + 8), pixel tail (81 = 2*32 + 17)
    (2, 33, 3, 17, 3, 2, 1, 1, -5),     # stem-like: 3 input channels, stride 2, batch 2
    (1, 24, 8, 10, 3, 1, 1, 2, 7),      # grouped
    (1, 20, 16, 39, 1, 1, 0, 1, 0),     # the 6 x 64 tile: pixel tail 49, channel tail 2
    (2, 13, 3, 64, 3, 2, 1, 1, -5),     # the 6 x 64 tile, stem-like, batch 2
])
@pytest.mark.parametrize("rqattrs", [{"zero_point": 0, "clip_min": 0, "clip_max": 127},
                                     {"zero_point": 5}, {"zero_point": -20, "dtype": DType.u8}])
def test_qconv_vnni_with_requantize(n, m, c, h, k, s, p, g, zp, rqattrs):
    if rqattrs.get("dtype") is DType.u8:
        rqattrs = {**rqattrs, "zero_point": 120}
    x = i8(n, c, h, h)
    w = RNG.integers(-127, 128, size=(m, c // g, k, k)).astype(np.int8)
    bias = RNG.integers(-5000, 5000, size=m).astype(np.int32)
    model = _graph("qconv", x, [w, bias], {"strides": [s, s], "pads": [p] * 4, "x_zero_point": zp, "group": g},
                   _rq(m, **rqattrs))
    assert _kernels(model) == ["fused"]
    _check(model, x)


@pytest.mark.parametrize("shape,k,nn,per_channel", [((1, 1280), 1280, 1000, True), ((2, 13, 37), 37, 50, False),
                                                    ((5, 64), 64, 17, True)])
def test_qmatmul_with_requantize(shape, k, nn, per_channel):
    x = i8(*shape)
    w = RNG.integers(-127, 128, size=(k, nn)).astype(np.int8)
    bias = RNG.integers(-5000, 5000, size=nn).astype(np.int32)
    model = _graph("qmatmul", x, [w, bias], {"a_zero_point": 3},
                   _rq(nn, per_channel, axis=-1, zero_point=-1, clip_min=-100))
    assert _kernels(model) == ["fused"]
    _check(model, x)


def test_no_group_where_the_accumulator_is_read_elsewhere_or_no_kernel_fuses():
    x = i8(1, 8, 6, 6)
    w = RNG.integers(-127, 128, size=(8, 8, 3, 3)).astype(np.int8)
    attrs = {"strides": [1, 1], "pads": [1] * 4, "x_zero_point": 0, "group": 1}
    shared = _graph("qconv", x, [w], attrs, _rq(8), also_output=True)
    assert _kernels(shared) == ["qconv", "requantize"]
    _check(shared, x)
    dilated = _graph("qconv", x, [RNG.integers(-127, 128, size=(8, 1, 3, 3)).astype(np.int8)],
                     {**attrs, "group": 8, "dilations": [2, 2], "pads": [2] * 4}, _rq(8))
    assert _kernels(dilated) == ["qconv", "requantize"]  # the direct loop nest has no epilogue
    _check(dilated, x)


@pytest.mark.slow
def test_quantized_mobilenet_v2_is_bit_exact_with_every_requantize_fused():
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "bench"))
    import models

    from nnc.passes.quantize import quantize_module

    path = models.realistic_model("mobilenet_v2")
    rng = np.random.default_rng(1)
    cal = [{"input": rng.standard_normal((1, 3, 224, 224)).astype(np.float32)} for _ in range(2)]
    q = quantize_module(nnc.from_onnx(str(path)), cal)
    prepared = prepare(q)
    kinds = [op.attrs["kind"] for op in prepared.main.ops if op.opname == "fused"]
    assert (kinds.count("qconv"), kinds.count("qmatmul")) == (52, 1)  # every conv and the classifier
    assert not any(op.opname in ("qconv", "qmatmul") for op in prepared.main.ops)  # (the pooling's stays)
    cm = nnc.compile(q, target="x86", quiet=True)
    feed = {"input": np.random.default_rng(0).standard_normal((1, 3, 224, 224)).astype(np.float32)}
    want = interpret(q, feed)
    got = cm.run(feed)
    for k, v in want.items():
        np.testing.assert_array_equal(got[k], v)


def _anchor_model(anchor: str, c: int, lim: int, rq: dict, bias: np.ndarray) -> tuple[Module, np.ndarray]:
    """A ``c``-channel depthwise 3x3 / pointwise qconv or qmatmul, inputs and weights in [-lim, lim),
    with ``rq`` reading it."""
    if anchor == "qmatmul":
        x = RNG.integers(-lim, lim, size=(7, 40)).astype(np.int8)
        return _graph("qmatmul", x, [RNG.integers(-lim, lim, size=(40, c)).astype(np.int8), bias],
                      {"a_zero_point": 0}, rq), x
    x = RNG.integers(-lim, lim, size=(1, c, 9, 9)).astype(np.int8)
    g = c if anchor == "depthwise" else 1
    k = 3 if anchor == "depthwise" else 1
    w = RNG.integers(-lim, lim, size=(c, c // g, k, k)).astype(np.int8)
    return _graph("qconv", x, [w, bias], {"strides": [1, 1], "pads": [k // 2] * 4, "x_zero_point": 0, "group": g},
                  rq), x


# multiplier/shift regimes of the epilogue: on a CPU without FMA (x86-64-v2) the f64 form (every
# shift <= 44) with many exact .5 ties, the boundary, and the i64 form (a shift above 44 anywhere in
# the layer); on the host (FMA) every regime takes the one-rounding FMA form
REGIMES = {
    "ties_half": (1 << 30, 31),        # v = acc / 2: every odd accumulator is a tie
    "ties_quarter": (3 << 28, 30),     # v = 3 acc / 4: acc = 2 mod 4 ties
    "shift_44": (1 << 30, 44),
    "i64_shift_45": (1 << 30, 45),
    "i64_shift_62": (2**31 - 1, 62),
}


@pytest.mark.parametrize("regime", sorted(REGIMES))
@pytest.mark.parametrize("anchor", ["depthwise", "pointwise", "qmatmul"])
@pytest.mark.parametrize("cpu", [None, "x86-64-v2"])
def test_epilogue_rounding_regimes(regime, anchor, cpu):
    m, s = REGIMES[regime]
    c = 24
    mult, shift = np.full(c, m, np.int32), np.full(c, s, np.int32)
    if regime.startswith("i64"):
        shift[:-1] = 36  # one channel past the f64 bound sends the whole layer to the i64 form
    # small accumulators for the tie regimes so that the results do not all saturate
    lim = 3 if regime.startswith("ties") else 128
    rq = {"multiplier": mult, "shift": shift, "zero_point": 1, "axis": -1 if anchor == "qmatmul" else 1}
    model, x = _anchor_model(anchor, c, lim, rq, np.zeros(c, np.int32))
    assert _kernels(model) == ["fused"]
    _check(model, x, **({"cpu": cpu} if cpu else {}))


# the one-rounding FMA form (requant_epilogue._requantize_fma, every layer on an FMA target): zero
# points at the ends of the range (added back modulo 256 after the clamp), odd zero points with
# ties (an odd MAGIC would round them to odd), clamps, negative accumulators, saturation from
# |v| >= 2**51 (shift 0, the largest multiplier: the FMA result leaves the exact-integer band), u8
FMA_CASES = {
    "zp_min_i8": dict(mult=1 << 30, shift=31, zero_point=-128),
    "zp_max_i8": dict(mult=1 << 30, shift=31, zero_point=127),
    "zp_odd_ties_clip": dict(mult=1 << 30, shift=31, zero_point=-3, clip_min=-7, clip_max=9),
    "zp_max_u8": dict(mult=3 << 28, shift=30, zero_point=255, dtype=DType.u8),
    "zp_min_u8_relu6": dict(mult=1 << 30, shift=31, zero_point=0, clip_min=0, clip_max=6, dtype=DType.u8),
    "saturate_shift0": dict(mult=2**31 - 1, shift=0, zero_point=-1, big=True),
    "saturate_shift20": dict(mult=2**31 - 1, shift=20, zero_point=2, big=True),
    "shift62": dict(mult=2**31 - 1, shift=62, zero_point=7, big=True),
    "shift50_mixed": dict(mult=None, shift=50, zero_point=-100, big=True),
}


@pytest.mark.parametrize("case", sorted(FMA_CASES))
@pytest.mark.parametrize("anchor", ["depthwise", "pointwise", "qmatmul"])
@pytest.mark.parametrize("per_channel", [True, False])
def test_epilogue_fma_form(case, anchor, per_channel):
    spec = dict(FMA_CASES[case])
    big = spec.pop("big", False)
    m, s = spec.pop("mult"), spec.pop("shift")
    c = 24
    n = c if per_channel else 1
    mult = RNG.integers(1 << 30, 1 << 31, size=n) if m is None else np.full(n, m)
    shift = np.full(n, s)
    if per_channel and n > 2:
        mult[2] = 0  # a zero multiplier: everything maps to the zero point
    mult, shift = mult.astype(np.int32), shift.astype(np.int32)
    if not per_channel:
        mult, shift = mult.reshape(()), shift.reshape(())
    rq = {"multiplier": mult, "shift": shift, **spec, "axis": -1 if anchor == "qmatmul" else 1}
    # small accumulators (many ties, few saturations) or large ones, with a bias pulling some
    # channels negative and some positive
    lim = 128 if big else 3
    bias = (RNG.integers(-(1 << 20), 1 << 20, size=c) if big else RNG.integers(-4, 5, size=c)).astype(np.int32)
    model, x = _anchor_model(anchor, c, lim, rq, bias)
    assert _kernels(model) == ["fused"]
    _check(model, x)


def test_accumulator_bound_selects_the_i32_clamp_only_below_2_30():
    from nnc.backends.x86.kernels.requant_epilogue import RequantSpec, acc_bound
    from nnc.ir import Op

    w = RNG.integers(-127, 128, size=(6, 5, 3, 3)).astype(np.int8)
    bias = RNG.integers(-5000, 5000, size=6).astype(np.int32)
    for zp in (-128, 0, 127):
        conv = Op("qconv", [], {"x_zero_point": zp}, [], [])
        bound = acc_bound(conv, w, bias)
        # the extreme accumulators: every x at the end of the range that the weight's sign favours
        for sign in (1, -1):
            xs = np.where(sign * w.astype(np.int64) > 0, 127, -128) - zp
            xs = np.where(sign * w.astype(np.int64) == 0, 0, xs)
            extreme = np.abs((xs * w).reshape(6, -1).sum(axis=1) + bias)
            assert np.all(extreme <= bound)
    attrs = {"dtype": DType.i8, "zero_point": 0, "clip_min": None, "clip_max": None}
    mult = np.full(6, 1 << 30, np.int64)
    bound = acc_bound(Op("qconv", [], {"x_zero_point": 0}, [], []), w, bias)
    s = int(np.ceil(np.log2(bound.max()))) + 1  # the largest |v| is just under 2**30 ...
    for shift, small in ((s, True), (s - 2, False)):  # ... and with two bits less shift above it
        spec = RequantSpec.build(attrs, 3, 4, mult, np.full(6, shift), fma=True)
        spec.bound_accumulators(bound, mult, np.full(6, shift))
        assert spec.small is small
    spec = RequantSpec.build(attrs, 3, 4, mult, np.full(6, s), fma=False)  # no FMA: no FMA form at all
    spec.bound_accumulators(bound, mult, np.full(6, s))
    assert not spec.small

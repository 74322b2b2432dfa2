"""The Winograd F(2x2, 3x3) conv path (kernels/conv_winograd.py) and its schedule kind ``winograd``.

On small integers (|x| <= 2, the tuner's data) every value of F(2x2, 3x3) is a multiple of 1/4 far
below 2^22, so the path computes the interpreter's output (and every other path's) bit for bit:
odd and even output sizes, paddings 0/1/2 and asymmetric, channel counts that are not multiples of
16, a batch, 1 and 2 threads, several register tiles, K slices and task splits, bias or none, and
fused ReLU / residual-add epilogues. On random normal data it agrees with the interpreter within the
tolerance of the other conv tests (rtol/atol 1e-4 scaled by the largest |y|), and a ResNet-style
block through ``nnc.compile`` agrees with onnxruntime at that tolerance. Each compiled case checks
that the path ran (its microkernel is named in the LLVM IR).
"""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnc
from nnc.backends.x86.kernels import conv_winograd as wg
from nnc.backends.x86.schedule import Schedule, ScheduleError, ScheduleTable, TableEntry, tuning_text
from nnc.backends.x86.schedule_space import candidates, winograd_space
from nnc.backends.x86.target import host
from nnc.ir import Builder, Graph, Module, interpret, tensor
from nnc.tune import model_kernels
from nnc.tune_cost_model import features

pytestmark = pytest.mark.skipif(host().vector_bits != 512, reason="the Winograd conv path is AVX-512 only")
MARK = ".winograd_micro"


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NNC_TUNING_DB", raising=False)


def _model(N, C, H, W, M, pads, epilogue="bias", ints=True, stride=1, seed=0):
    rng = np.random.default_rng(seed + C * 100 + M)
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    oh, ow = (H + pads[0] + pads[2] - 3) // stride + 1, (W + pads[1] + pads[3] - 3) // stride + 1

    def data(*shape, scale=1.0):
        if ints:
            return rng.integers(-2, 3, size=shape).astype(np.float32)
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    x = g.add_param("x", tensor("f32", [N, C, H, W]))
    ops = [x, b.const(data(M, C, 3, 3, scale=0.1), name="w")]
    if epilogue != "none":
        ops.append(b.const(data(M), name="bias"))
    y = b.op("conv", *ops, strides=[stride, stride], pads=list(pads))
    feeds = {"x": data(N, C, H, W)}
    if epilogue == "residual":
        r = g.add_param("r", tensor("f32", [N, M, oh, ow]))
        feeds["r"] = data(N, M, oh, ow)
        y = b.op("relu", b.op("add", y, r))
    elif epilogue in ("relu", "none"):
        y = b.op("relu", y)
    g.set_outputs([y], ["y"])
    return m, feeds


def _kernel(m, threads):
    (k,) = [k for k in model_kernels(m, threads) if k.signature["op"] == "conv"]
    return k


def _compile(m, threads, sched: Schedule | None = None):
    table = ScheduleTable({_kernel(m, threads).key: TableEntry(sched)}, "one") if sched else None
    return nnc.compile(m, target="x86", quiet=True, cache=False, threads=threads, keep_llvm=True, tuning_db=table)


def _wino(mr, nv, kc, tb, tn=1, tp=1) -> Schedule:
    return Schedule("winograd", mr=mr, nv=nv, kc=kc, tb=tb, tn=tn, tp=tp)


# (N, C, H, W, M, pads (top, left, bottom, right), threads, epilogue, schedule or None for the default)
EXACT = [
    (2, 20, 9, 11, 24, (1, 1, 1, 1), 1, "residual", _wino(14, 2, 20, 1)),    # odd OH/OW, batch 2
    (1, 33, 10, 7, 40, (0, 0, 0, 0), 2, "relu", _wino(8, 3, 16, 2, 1, 2)),   # no padding, 3 K slices
    (1, 17, 6, 30, 50, (2, 2, 2, 2), 2, "residual", _wino(12, 1, 17, 3, 2, 1)),  # pad 2, a channel split
    (2, 40, 12, 36, 33, (2, 1, 0, 2), 1, "bias", None),                        # the default; a ragged row
    (1, 24, 15, 15, 16, (1, 1, 1, 1), 2, "none", _wino(4, 1, 24, 2, 1, 4)),   # no bias, 4 row tasks
    (1, 64, 28, 28, 64, (1, 1, 1, 1), 2, "residual", None),                    # a ResNet shape, default
]


@pytest.mark.parametrize("case", EXACT, ids=[f"{c[1]}x{c[2]}x{c[3]}-{c[4]}-p{c[5][0]}{c[5][1]}-t{c[6]}-{c[7]}"
                                             for c in EXACT])
def test_winograd_is_exact_on_small_integers(case):
    N, C, H, W, M, pads, threads, epilogue, sched = case
    m, feeds = _model(N, C, H, W, M, pads, epilogue)
    cm = _compile(m, threads, sched)
    assert MARK in cm.executable.compiled.llvm_ir
    got, want = cm.run(feeds)["y"], interpret(m, feeds)["y"]
    assert np.array_equal(got, want), f"max |diff| {np.abs(got - want).max()}"


def test_winograd_equals_the_other_paths_bit_for_bit():
    m, feeds = _model(1, 32, 14, 14, 48, (1, 1, 1, 1), "residual")
    k = _kernel(m, 2)
    assert k.default.kind == "winograd"
    wino = _compile(m, 2).run(feeds)["y"]
    others = [c for c in candidates(k.signature, k.default, 512) if c.kind != "winograd"]
    for kind in ("chanvec", "gemm"):
        other = next(c for c in others if c.kind == kind)
        assert np.array_equal(_compile(m, 2, other).run(feeds)["y"], wino), kind


@pytest.mark.parametrize("case, sched", [
    ((1, 64, 28, 28, 64, (1, 1, 1, 1)), None),
    ((2, 48, 13, 17, 40, (1, 0, 2, 1)), _wino(10, 2, 32, 2, 1, 2)),
], ids=["64@28-default", "odd-asymmetric"])
def test_winograd_accuracy_on_random_normal_data(case, sched):
    m, feeds = _model(*case, epilogue="residual", ints=False)
    cm = _compile(m, 2, sched)
    assert MARK in cm.executable.compiled.llvm_ir
    got, want = cm.run(feeds)["y"], interpret(m, feeds)["y"]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))


# -- the schedule kind ----------------------------------------------------------------------------

def test_winograd_schedule_json_and_text():
    s = _wino(14, 2, 128, 3, 1, 2)
    assert s.to_json() == {"kind": "winograd", "mr": 14, "nv": 2, "kc": 128, "tb": 3, "tn": 1, "tp": 2}
    assert Schedule.from_json(s.to_json()) == s
    assert s.text() == "winograd tile 14t x 2v kc128 tb3 tasks 1ch x 2rows"


@pytest.mark.parametrize("change, match", [
    ({"mr": 0}, "does not fit"), ({"nv": 5}, "does not fit"), ({"mr": 14, "nv": 3}, "does not fit"),
    ({"kc": 0}, "must be positive"), ({"tb": 0}, "must be positive"), ({"tp": 0}, "must be positive"),
    ({"mc": 64}, "no field 'mc'"), ({"tb": None}, "needs tb"),
])
def test_bad_winograd_schedules_are_rejected(change, match):
    d = {"kind": "winograd", "mr": 8, "nv": 2, "kc": 64, "tb": 2, "tn": 1, "tp": 1, **change}
    d = {k: v for k, v in d.items() if v is not None}
    with pytest.raises(ScheduleError, match=match):
        Schedule.from_json(d)
    with pytest.raises(ScheduleError, match="no field 'tb'"):
        Schedule.from_json({"kind": "dwconv", "flat": 1, "tb": 2})


@pytest.mark.parametrize("sched, match", [
    (_wino(8, 2, 64, 2), "deeper than the input channels"),
    (_wino(8, 2, 32, 8), "more tile rows than a task has"),
    (_wino(8, 2, 32, 2, 3, 1), "no channels or tile rows"),   # 40 channels in 32-wide panels
])
def test_a_winograd_schedule_that_does_not_fit_is_a_schedule_error(sched, match):
    m, _ = _model(1, 32, 12, 12, 40, (1, 1, 1, 1))
    with pytest.raises(ScheduleError, match=f"kernel .*{match}"):
        _compile(m, 1, sched)


def test_a_winograd_schedule_for_a_conv_the_path_cannot_run_is_a_schedule_error():
    m, _ = _model(1, 32, 14, 14, 32, (1, 1, 1, 1), stride=2)
    assert _kernel(m, 1).default.kind != "winograd"
    with pytest.raises(ScheduleError, match="winograd schedule needs a 2-D f32 3x3 conv of stride"):
        _compile(m, 1, _wino(8, 2, 32, 1))


def test_a_winograd_db_entry_is_used_and_reported(tmp_path):
    m, feeds = _model(1, 20, 9, 9, 24, (1, 1, 1, 1))  # 25 tiles: the default is another path
    k = _kernel(m, 1)
    assert k.default.kind != "winograd"
    tuned = _wino(6, 2, 20, 2)
    h = host()
    rec = {"cpu": h.cpu, "features": h.features, "key": k.key, "signature": k.signature, "default": False,
           "schedule": tuned.to_json(), "us": 1.0, "ok": True, "error": None}
    base = {**rec, "default": True, "schedule": k.default.to_json(), "us": 1.5}
    db = tmp_path / "db.jsonl"
    db.write_text(json.dumps(base) + "\n" + json.dumps(rec) + "\n")
    cm = nnc.compile(m, target="x86", quiet=True, cache=False, threads=1, keep_llvm=True, tuning_db=str(db))
    rep = cm.report["x86"]["tuning"]
    assert rep["from_db"] == 1 and rep["kernels"][0]["schedule"] == tuned.to_json()
    assert "winograd tile 6t x 2v kc20 tb2 tasks 1ch x 1rows; gain alone x1.50" in tuning_text(rep)
    assert MARK in cm.executable.compiled.llvm_ir
    assert np.array_equal(cm.run(feeds)["y"], interpret(m, feeds)["y"])


@pytest.mark.parametrize("C, HW, M, wins", [
    (64, 56, 64, True), (128, 28, 128, True), (256, 14, 256, True), (128, 56, 32, True), (128, 14, 32, True),
    (16, 13, 16, True), (512, 7, 512, False), (128, 7, 32, False), (3, 224, 64, False), (8, 56, 8, False),
    (15, 56, 64, False),
])
def test_the_default_rule(C, HW, M, wins):
    """Winograd by default for 49 or more 2x2 tiles (outputs of 13x13 and up) and 16 or more input
    and output channels, not for one output row (figures: conv_winograd.py)."""
    for threads in (1, 2):
        p = wg.plan(threads, M, C, HW, HW)
        assert (p is not None) == wins
        if p is not None:
            assert wg.plan_from_schedule(wg.schedule_of(p), M, C, HW, HW, "k") == p
    # one output row of 100: 50 tiles, but half their outputs would be thrown away
    assert wg.plan(1, 64, 64, 1, 100) is None and wg.plan(1, 64, 64, 3, 100) is not None


def test_the_default_path_in_the_generated_code():
    for (C, HW, stride), wins in (((32, 14, 1), True), ((32, 7, 1), False), ((8, 14, 1), False),
                                  ((32, 14, 2), False)):
        m, _ = _model(1, C, HW, HW, 32, (1, 1, 1, 1), stride=stride)
        assert (MARK in _compile(m, 1).executable.compiled.llvm_ir) == wins, (C, HW, stride)


def test_candidates_hold_every_path():
    m, _ = _model(1, 32, 14, 14, 48, (1, 1, 1, 1))
    k = _kernel(m, 2)
    cands = candidates(k.signature, k.default, 512)
    assert k.default not in cands and len(set(cands)) == len(cands)
    assert {c.kind for c in cands} == {"winograd", "chanvec", "gemm"}
    assert {c for c in cands if c.kind == "winograd"} <= set(winograd_space(k.signature, k.default))
    assert len({len(features(k.signature, c)) for c in cands + [k.default]}) == 1
    assert all(np.isfinite(features(k.signature, c)).all() for c in cands + [k.default])
    # a conv another path runs by default gets some Winograd plans where this path can run it
    m7, _ = _model(1, 64, 7, 7, 64, (1, 1, 1, 1))
    k7 = _kernel(m7, 1)
    assert k7.default.kind == "chanvec"
    assert any(c.kind == "winograd" for c in candidates(k7.signature, k7.default, 512))


def test_winograd_candidates_compute_the_reference():
    m, feeds = _model(1, 20, 7, 9, 24, (1, 1, 1, 1), "residual")
    want = interpret(m, feeds)["y"]
    k = _kernel(m, 2)
    space = winograd_space(k.signature)
    fields = ("mr", "nv", "kc", "tb", "tn", "tp")
    todo = {(f, getattr(s, f)) for s in space for f in fields}
    for s in space:  # a set of candidates in which every value of every knob appears
        mine = {(f, getattr(s, f)) for f in fields}
        if mine & todo:
            todo -= mine
            got = _compile(m, 2, s).run(feeds)["y"]
            assert np.array_equal(got, want), s.text()


def test_resnet_block_agrees_with_onnxruntime(tmp_path):
    """conv 3x3 + bias + relu, conv 3x3 + bias, + identity, relu (a ResNet-18 BasicBlock with its
    BatchNorms folded) at 64 channels x 56 x 56, through the ONNX frontend and nnc.compile."""
    ort = pytest.importorskip("onnxruntime")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(7)
    inits = [numpy_helper.from_array((rng.standard_normal((64, 64, 3, 3)) * 0.06).astype(np.float32), n)
             for n in ("w1", "w2")] + \
        [numpy_helper.from_array(rng.standard_normal(64).astype(np.float32) * 0.1, n) for n in ("b1", "b2")]
    conv = dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1])
    nodes = [helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], **conv), helper.make_node("Relu", ["c1"], ["r1"]),
             helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], **conv), helper.make_node("Add", ["c2", "x"], ["s"]),
             helper.make_node("Relu", ["s"], ["y"])]
    io = [helper.make_tensor_value_info(n, TensorProto.FLOAT, [1, 64, 56, 56]) for n in ("x", "y")]
    path = str(tmp_path / "block.onnx")
    model = helper.make_model(helper.make_graph(nodes, "block", [io[0]], [io[1]], inits),
                              opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    with open(path, "wb") as f:
        f.write(model.SerializeToString())
    x = rng.standard_normal((1, 64, 56, 56)).astype(np.float32)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    for threads in (1, 2):
        cm = nnc.compile(path, target="x86", quiet=True, cache=False, threads=threads, keep_llvm=True)
        assert cm.executable.compiled.llvm_ir.count(MARK) >= 1
        got = cm.run({"x": x})["y"]
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * max(1.0, float(np.abs(want).max())))

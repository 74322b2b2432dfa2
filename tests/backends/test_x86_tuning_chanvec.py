"""Schedules of kind ``chanvec`` (docs/tuning.md): the channel-vector conv path's plan as a tunable
schedule. The default schedule is exactly the plan the path picks on its own; every candidate the
search space holds for a conv compiles and computes the interpreter's output; a database entry of
kind chanvec is what the compile uses (and reports); an entry of kind gemm for such a conv selects
the other GEMM, as before; bad chanvec schedules are typed errors.

Inputs, weights and biases are small integers, so every partial sum is exact in f32 whatever the
order of the additions: outputs are compared with the interpreter's bit for bit."""

from __future__ import annotations

import json

import numpy as np
import pytest

import nnc
from nnc.backends.x86.kernels import conv_channel_vectors as cv
from nnc.backends.x86.kernels.gemm import blocking
from nnc.backends.x86.schedule import (
    CHANVEC_FIELDS,
    Schedule,
    ScheduleError,
    ScheduleTable,
    TableEntry,
    gemm_default,
    tuning_text,
)
from nnc.backends.x86.schedule_space import candidates, chanvec_space, gemm_dims
from nnc.backends.x86.target import TargetInfo, host
from nnc.backends.x86.tuning_db import TuningDB
from nnc.ir import Builder, Graph, InputError, Module, interpret, tensor
from nnc.tune import Kernel, model_kernels
from nnc.tune_cost_model import features

AVX512 = TargetInfo("test", "+avx512f")
needs_avx512 = pytest.mark.skipif(host().vector_bits != 512,
                                  reason="the channel-vector conv path is AVX-512 only; this host has no AVX-512")


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NNC_TUNING_DB", raising=False)


# (N, C, H, W, M, kernel, stride, pad, threads, epilogue): each takes the channel-vector path by default
SHAPES = [
    (2, 16, 7, 7, 24, 3, 1, 1, 1, "bias"),            # 7-pixel tiles, K = 144 < every kc but 64, 128
    (2, 16, 14, 14, 40, 3, 2, 1, 2, "residual"),      # stride 2; channel and pixel splits over 2 threads
    (1, 256, 7, 7, 32, 1, 1, 0, 1, "relu"),           # 1x1: A packed into panels
    (2, 256, 14, 14, 20, 1, 2, 0, 1, "residual"),     # 1x1 stride 2, batch 2; blocks start mid-plane
    # 7- and 14-pixel tiles, blocks smaller than the plane; 15 input channels (K = 135), as 16 or more
    # would make this 3x3 stride-1 conv of 49 2x2 tiles a Winograd one by default (conv_winograd.plan)
    (1, 15, 14, 14, 24, 3, 1, 1, 1, "bias"),
]


def _model(N, C, H, W, M, k, s, pad, threads, epilogue):
    rng = np.random.default_rng(C * 100 + M)
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    oh, ow = (H + 2 * pad - k) // s + 1, (W + 2 * pad - k) // s + 1

    def ints(*shape):
        return rng.integers(-2, 3, size=shape).astype(np.float32)

    x = g.add_param("x", tensor("f32", [N, C, H, W]))
    y = b.op("conv", x, b.const(ints(M, C, k, k), name="w"), b.const(ints(M), name="bias"), strides=[s, s],
             pads=[pad] * 4)
    feeds = {"x": ints(N, C, H, W)}
    if epilogue == "residual":
        r = g.add_param("r", tensor("f32", [N, M, oh, ow]))
        feeds["r"] = ints(N, M, oh, ow)
        y = b.op("relu", b.op("add", y, r))
    elif epilogue == "relu":
        y = b.op("relu", y)
    g.set_outputs([y], ["y"])
    return m, feeds


def _conv_kernel(m, threads) -> Kernel:
    (k,) = [k for k in model_kernels(m, threads) if k.signature["op"] == "conv"]
    return k


def _compile(m, threads, table):
    return nnc.compile(m, target="x86", quiet=True, cache=False, threads=threads, keep_llvm=True, tuning_db=table)


def _shape_id(c):
    return f"{c[1]}x{c[2]}x{c[3]}-{c[4]}-k{c[5]}s{c[6]}-t{c[8]}-{c[9]}"


# -- the schedule ---------------------------------------------------------------------------------

def test_chanvec_json_round_trip():
    s = Schedule("chanvec", mr=14, nv=2, kc=144, mc=98, tn=1, tp=2)
    assert s.to_json() == {"kind": "chanvec", "mr": 14, "nv": 2, "kc": 144, "mc": 98, "tn": 1, "tp": 2}
    assert Schedule.from_json(s.to_json()) == s
    assert s.text() == "chanvec tile 14px x 2v kc144 mc98 tasks 1ch x 2px"
    # the other kinds' JSON is unchanged (no tp): old databases read, new ones stay readable by old code
    g = Schedule("gemm", 8, 3, 192, 192, 1008, 512, "nm", 1, 2)
    assert list(g.to_json()) == ["kind", "mr", "nv", "kc", "mc", "nc", "vector_bits", "order", "tm", "tn"]
    assert Schedule("dwconv", flat=1).to_json() == {"kind": "dwconv", "flat": 1}


@pytest.mark.parametrize("change, match", [
    ({"mr": 0}, "1-16 pixels"), ({"mr": 17}, "1-16 pixels"), ({"nv": 5}, "1-4 vectors"),
    ({"mr": 8, "nv": 4, "mc": 16}, "more than 31 registers"), ({"mc": 50}, "multiple of mr"),
    ({"mc": 0}, "multiple of mr"), ({"kc": 0}, "kc must be positive"), ({"tn": 0}, "tasks per image"),
    ({"tp": -1}, "tasks per image"), ({"nc": 1024}, "no field 'nc'"), ({"mr": 7.0}, "must be an integer"),
])
def test_bad_chanvec_schedules_are_rejected(change, match):
    d = {"kind": "chanvec", "mr": 7, "nv": 2, "kc": 128, "mc": 49, "tn": 1, "tp": 1, **change}
    with pytest.raises(ScheduleError, match=match):
        Schedule.from_json(d)


def test_a_chanvec_schedule_has_every_field_and_the_others_no_tp():
    with pytest.raises(ScheduleError, match="needs tp"):
        Schedule.from_json({"kind": "chanvec", "mr": 7, "nv": 2, "kc": 128, "mc": 49, "tn": 1})
    gemm = Schedule("gemm", 8, 3, 192, 192, 1008, 512).to_json()
    with pytest.raises(InputError, match="no field 'tp'"):
        Schedule.from_json({**gemm, "tp": 1})


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", [  # (M, C, KK, OH, OW, stride): shapes of the channel-vector tests and ResNets
    (40, 64, 9, 7, 7, 1), (64, 64, 9, 7, 7, 2), (70, 32, 9, 14, 14, 1), (33, 40, 9, 14, 14, 2),
    (50, 300, 1, 12, 12, 1), (24, 30, 9, 13, 13, 1), (96, 16, 25, 28, 28, 1), (48, 24, 9, 3, 56, 1),
    (64, 3, 49, 112, 112, 2), (512, 512, 9, 7, 7, 1), (256, 256, 9, 14, 14, 1), (512, 256, 1, 7, 7, 2),
])
def test_the_default_schedule_is_the_default_plan(case, threads):
    M, C, KK, OH, OW, s = case
    plan = cv.plan(AVX512, threads, M, C * KK, KK, OH * OW, OW, (s, s))
    assert plan is not None
    sched = cv.schedule_of(plan)
    assert Schedule.from_json(sched.to_json()) == sched
    assert cv.plan_from_schedule(sched, 512, M, C * KK, OH * OW, OW, (s, s), "k") == plan


@pytest.mark.parametrize("change, vector_bits, stride, match", [
    ({"mr": 8, "mc": 192}, 512, 1, "does not divide the 14-pixel output rows"),
    ({"kc": 145}, 512, 1, "deeper than the contraction"),
    ({"mc": 210}, 512, 1, "more pixels than a task has"),
    ({"tn": 3}, 512, 1, "no channels or pixels"),        # 40 channels in 32-wide panels: two tasks at most
    ({"tp": 15, "mc": 14}, 512, 1, "no channels or pixels"),       # 196 pixels in 14-pixel tiles: 14 tasks at most
    ({}, 256, 1, "AVX-512"), ({}, 512, 3, "row stride is 3"),
])
def test_plan_from_schedule_refuses_what_the_conv_cannot_run(change, vector_bits, stride, match):
    d = {"kind": "chanvec", "mr": 14, "nv": 2, "kc": 128, "mc": 196, "tn": 1, "tp": 1, **change}
    with pytest.raises(ScheduleError, match=match):
        cv.plan_from_schedule(Schedule.from_json(d), vector_bits, 40, 144, 196, 14, (stride, stride), "kernel k")


# -- the search space -----------------------------------------------------------------------------

def test_candidates_of_a_chanvec_conv_offer_both_paths():
    m, _ = _model(*SHAPES[1])
    k = _conv_kernel(m, 2)
    assert k.default.kind == "chanvec" and k.signature["kind"] == "gemm"  # the signature of an old gemm entry
    cands = candidates(k.signature, k.default, 512)
    kinds = [c.kind for c in cands]
    assert len(set(cands)) == len(cands) and k.default not in cands and set(kinds) == {"chanvec", "gemm"}
    # every plan of the path (the space is small here: no sampling), the other GEMM's default and variants
    assert {c for c in cands if c.kind == "chanvec"} == set(chanvec_space(k.signature, k.default)) - {k.default}
    _, M, P, _ = gemm_dims(k.signature)
    assert gemm_default(blocking(512, False, M, P)) in cands
    # split over 2 threads: by channels, by pixels and both; one task per image for a batch of 2
    assert {(c.tn, c.tp) for c in cands if c.kind == "chanvec"} == {(1, 1), (2, 1), (1, 2), (2, 2), (1, 4)}
    assert {c.mr for c in cands if c.kind == "chanvec"} == {7}
    assert len({len(features(k.signature, c)) for c in cands + [k.default]}) == 1
    assert all(np.isfinite(features(k.signature, c)).all() for c in cands)


@needs_avx512
def test_a_conv_on_the_other_gemm_gets_chanvec_candidates_where_the_path_runs():
    """A 1x1 conv of K = 128 (the path's own rule leaves it to the other GEMM): its candidates hold
    every channel-vector plan (30, fewer than a third of 300), and one of them compiles to that path
    and computes the reference. A grouped conv, which the path cannot run, gets gemm candidates only."""
    m, feeds = _model(1, 128, 14, 14, 64, 1, 1, 0, 1, "bias")
    k = _conv_kernel(m, 1)
    assert k.default.kind == "gemm"
    cands = candidates(k.signature, k.default, 512)
    plans = [c for c in cands if c.kind == "chanvec"]
    assert len(cands) == 300 and len(plans) == 30 and set(plans) == set(chanvec_space(k.signature))
    pick = Schedule("chanvec", mr=14, nv=2, kc=128, mc=126, tn=1, tp=1)
    assert pick in chanvec_space(k.signature)
    cm = _compile(m, 1, ScheduleTable({k.key: TableEntry(pick)}, "one"))
    assert ".chanvec_micro" in cm.executable.compiled.llvm_ir
    assert np.array_equal(cm.run(feeds)["y"], interpret(m, feeds)["y"])
    grouped = {**k.signature, "attrs": {**k.signature["attrs"], "group": 2},
               "inputs": [k.signature["inputs"][0], ["f32", [64, 64, 1, 1], True]]}
    assert {c.kind for c in candidates(grouped, k.default, 512)} == {"gemm"}
    assert {c.kind for c in candidates(k.signature, k.default, 256)} == {"gemm"}


def test_a_large_space_is_sampled_with_both_paths():
    sig = {"op": "conv", "kind": "gemm", "threads": 2, "outputs": [["f32", [1, 256, 14, 14]]],
           "attrs": {"strides": [1, 1], "pads": [1, 1, 1, 1], "dilations": [1, 1], "group": 1},
           "inputs": [["f32", [1, 256, 14, 14], False], ["f32", [256, 256, 3, 3], True]]}
    default = cv.schedule_of(cv.plan(AVX512, 2, 256, 2304, 9, 196, 14, (1, 1)))
    cands = candidates(sig, default, 512, limit=60)
    assert len(cands) == 60 and sum(c.kind == "chanvec" for c in cands) == 40
    assert {c.mr for c in chanvec_space(sig, default)} == {7, 14}
    assert {c.nv for c in chanvec_space(sig, default) if c.mr == 7} == {1, 2, 3}  # 7 x 4 needs 33 registers


# -- compiled ---------------------------------------------------------------------------------------

def _covering(space: list[Schedule]) -> list[Schedule]:
    """Schedules of ``space`` in which every value of every knob appears at least once."""
    want = {(f, getattr(s, f)) for s in space for f in CHANVEC_FIELDS}
    out = []
    for s in space:
        mine = {(f, getattr(s, f)) for f in CHANVEC_FIELDS}
        if mine & want:
            out.append(s)
            want -= mine
    return out


def _check_candidates(case, every: bool) -> None:
    m, feeds = _model(*case)
    threads = case[8]
    want = interpret(m, feeds)["y"]
    k = _conv_kernel(m, threads)
    assert k.default.kind == "chanvec"
    space = chanvec_space(k.signature, k.default)
    assert k.default in space and len(space) > 1
    for s in space if every else _covering(space):
        cm = _compile(m, threads, ScheduleTable({k.key: TableEntry(s)}, "one"))
        (used,) = cm.report["x86"]["tuning"]["kernels"]
        assert used["source"] == "db" and used["schedule"] == s.to_json()
        assert ".chanvec_micro" in cm.executable.compiled.llvm_ir
        got = cm.run(feeds)["y"]
        assert np.array_equal(got, want), f"{s.text()}: max |diff| {np.abs(got - want).max()}"


# a compile of one candidate takes 0.2-1 s (LLVM), so the default run compiles every candidate of the
# shapes with few and, of the others, a set in which every value of every knob appears; the slow
# run compiles every candidate of every shape
# (code for 2 threads takes three times as long to compile)
SMALL = [c for c in SHAPES if c[8] == 1 and c[2] == 7]
SLOW = [c for c in SHAPES if c not in SMALL] + [(2, 256, 14, 14, 20, 1, 2, 0, 2, "residual")]


@needs_avx512
@pytest.mark.parametrize("case", SHAPES, ids=[_shape_id(c) for c in SHAPES])
def test_chanvec_candidates_compute_the_reference(case):
    _check_candidates(case, every=case in SMALL)


@needs_avx512
@pytest.mark.slow
@pytest.mark.parametrize("case", SLOW, ids=[_shape_id(c) for c in SLOW])
def test_every_chanvec_candidate_computes_the_reference(case):
    _check_candidates(case, every=True)


def _db_with(k: Kernel, sched: Schedule, path) -> str:
    h = host()
    rec = {"cpu": h.cpu, "features": h.features, "key": k.key, "signature": k.signature, "default": False,
           "schedule": sched.to_json(), "us": 1.0, "ok": True, "error": None}
    base = {**rec, "default": True, "schedule": k.default.to_json(), "us": 2.0}
    path.write_text(json.dumps(base) + "\n" + json.dumps(rec) + "\n")
    return str(path)


@needs_avx512
def test_a_chanvec_db_entry_is_used_and_reported(tmp_path):
    m, feeds = _model(*SHAPES[4])
    k = _conv_kernel(m, 1)
    tuned = Schedule("chanvec", mr=7, nv=1, kc=64, mc=63, tn=1, tp=1)
    assert tuned != k.default
    db = _db_with(k, tuned, tmp_path / "db.jsonl")
    cm = nnc.compile(m, target="x86", quiet=True, cache=False, threads=1, keep_llvm=True, tuning_db=db)
    rep = cm.report["x86"]["tuning"]
    assert rep["from_db"] == 1 and rep["kernels"][0]["schedule"] == tuned.to_json()
    assert rep["kernels"][0]["measured_gain"] == pytest.approx(2.0)
    assert "(conv, 1 call(s)): chanvec tile 7px x 1v kc64 mc63 tasks 1ch x 1px; gain alone x2.00" in tuning_text(rep)
    assert ".chanvec_micro" in cm.executable.compiled.llvm_ir
    assert np.array_equal(cm.run(feeds)["y"], interpret(m, feeds)["y"])


@needs_avx512
def test_an_old_gemm_entry_still_selects_the_other_gemm(tmp_path):
    """A database written before the channel-vector path: the conv's entry is a gemm schedule (its
    signature's kind is gemm, so its key is the conv's key); it loads and selects the other GEMM."""
    m, feeds = _model(*SHAPES[0])
    k = _conv_kernel(m, 1)
    _, M, P, _ = gemm_dims(k.signature)
    old = gemm_default(blocking(512, False, M, P))
    db = _db_with(k, old, tmp_path / "old.jsonl")
    table = TuningDB.load(db).table(host().cpu, host().features)
    assert table.entries[k.key].schedule == old
    cm = nnc.compile(m, target="x86", quiet=True, cache=False, threads=1, keep_llvm=True, tuning_db=db)
    (used,) = cm.report["x86"]["tuning"]["kernels"]
    assert used["source"] == "db" and used["schedule"]["kind"] == "gemm"
    assert ".chanvec_micro" not in cm.executable.compiled.llvm_ir
    assert np.array_equal(cm.run(feeds)["y"], interpret(m, feeds)["y"])


@needs_avx512
def test_a_chanvec_entry_that_does_not_fit_is_a_schedule_error(tmp_path):
    m, _ = _model(*SHAPES[0])
    k = _conv_kernel(m, 1)
    bad = Schedule("chanvec", mr=7, nv=2, kc=512, mc=49, tn=1, tp=1)  # K = 144
    with pytest.raises(ScheduleError, match=f"kernel {k.key}.*deeper than the contraction"):
        _compile(m, 1, ScheduleTable({k.key: TableEntry(bad)}, "one"))


def test_the_current_default_is_the_baseline_not_an_older_one():
    """A database from before the channel-vector path holds the conv's old default (a gemm schedule):
    the tuner measures today's default again rather than take that one as the baseline."""
    sig = {"op": "conv", "kind": "gemm", "threads": 1}
    now = Schedule("chanvec", mr=7, nv=2, kc=144, mc=49, tn=1, tp=1)
    k = Kernel("k", sig, now, 1)
    old = {"schedule": Schedule("gemm", 12, 1, 144, 192, 1024, 512).to_json(), "default": True}
    done = {json.dumps(old["schedule"], sort_keys=True): old}
    assert k.default_record(done) is None
    mine = {"schedule": now.to_json(), "default": True}
    done[json.dumps(now.to_json(), sort_keys=True)] = mine
    assert k.default_record(done) is mine

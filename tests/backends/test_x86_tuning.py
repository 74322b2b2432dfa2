"""Kernel schedules and ``nnc tune`` (docs/tuning.md): the default schedule generates the same code
as no tuning table; a tuning run writes, resumes and merges its database on the process pool; a
compile with the database takes its schedules (the report says so), computes what the untuned
compile computes, needs no measurement, and has its own cache entry; bad databases are typed errors.
Function only: timings on a loaded machine say nothing, so no test checks a speed-up."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from tuning_model import feeds, tuning_cnn, write_tuning_cnn

import nnc
import nnc.tune as tune_mod
from nnc.backends.x86 import generate
from nnc.backends.x86.schedule import Schedule, ScheduleTable, TableEntry
from nnc.backends.x86.target import host
from nnc.backends.x86.tuning_db import TuningDB, TuningDBError
from nnc.cli import main
from nnc.ir import InputError
from nnc.sweep import PoolExecutor
from nnc.tune import model_kernels, standalone, summary, tune
from nnc.tune_cost_model import held_out_rank, spearman

THREADS = 2


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NNC_TUNING_DB", raising=False)


def _tune(db_path, trials: int, executor=None):
    h = host()
    db = TuningDB.load(db_path, missing_ok=True)
    kernels = model_kernels(tuning_cnn(), THREADS)
    res = tune(kernels, db, executor or PoolExecutor(1), h.cpu, h.features, h.vector_bits, trials=trials, repeat=2)
    return kernels, res


@pytest.fixture(scope="module")
def tuned_db(tmp_path_factory):
    path = tmp_path_factory.mktemp("tune") / "db.jsonl"
    kernels, res = _tune(path, trials=2)
    return path, kernels, res


def _text(schedules) -> str:
    m = nnc.compile(tuning_cnn(), target="reference").module
    return generate(m, {"threads": THREADS}, schedules=schedules)[3]


def test_default_schedules_generate_the_same_code():
    """No table, an empty table, and a table holding every kernel's default schedule: one LLVM text."""
    plain = _text(None)
    assert _text(TuningDB().table(host().cpu, host().features)) == plain
    kernels = model_kernels(tuning_cnn(), THREADS)
    assert {k.signature["op"] for k in kernels} == {"conv", "matmul"} and len(kernels) == 4
    assert {k.default.kind for k in kernels} == {"gemm", "dwconv"}
    explicit = ScheduleTable({k.key: TableEntry(k.default) for k in kernels}, "defaults")
    assert _text(explicit) == plain
    # and a different schedule is different code
    k = next(k for k in kernels if k.default.kind == "gemm")
    other = Schedule("gemm", 4, 1, 128, 96, 512, k.default.vector_bits, "mn", 1, 1)
    assert _text(ScheduleTable({k.key: TableEntry(other)}, "one")) != plain


def test_tables_built_through_the_api_do_not_share_a_cache_entry():
    """A ScheduleTable made without a digest (``nnc.compile(tuning_db=ScheduleTable(...))``) gets the
    digest of its schedules: a second table must not be handed the first table's cached build."""
    kernels = model_kernels(tuning_cnn(), THREADS)
    k = next(k for k in kernels if k.default.kind == "gemm")
    other = Schedule("gemm", 4, 1, 128, 96, 512, k.default.vector_bits, "mn", 1, 1)
    built = []
    for sched in (k.default, other, k.default):
        cm = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True,
                         tuning_db=ScheduleTable({k.key: TableEntry(sched)}, "api"))
        row = next(r for r in cm.report["x86"]["tuning"]["kernels"] if r["key"] == k.key)
        built.append((row["schedule"], cm.report["x86"]["tuning"]["digest"]))
    assert built[0][0] == k.default.to_json() and built[1][0] == other.to_json()
    assert built[0][1] != built[1][1] and built[0][1] == built[2][1]


def test_schedule_json_round_trip_and_validation():
    s = Schedule("gemm", 8, 3, 192, 192, 1008, 512, "nm", 1, 2)
    assert Schedule.from_json(s.to_json()) == s
    for bad in ({"kind": "gemm", "mr": 0, "nv": 1, "kc": 1, "mc": 1, "nc": 16, "vector_bits": 512},
                {"kind": "gemm", "mr": 8, "nv": 1, "kc": 1, "mc": 12, "nc": 16, "vector_bits": 512},
                {"kind": "dwconv", "flat": 2}, {"kind": "winograd"}, {"kind": "gemm", "bogus": 1}):
        with pytest.raises(InputError):
            Schedule.from_json(bad)


def test_standalone_kernel_is_the_models_kernel():
    kernels = model_kernels(tuning_cnn(), THREADS)
    for k in kernels:
        module, fd = standalone(k.signature)
        cm = nnc.compile(module, target="x86", threads=THREADS, tuning_db=TuningDB(), quiet=True, cache=False)
        assert [r["key"] for r in cm.report["x86"]["tuning"]["kernels"]] == [k.key]
        for arr in fd.values():
            assert np.array_equal(arr, np.round(arr)) and np.abs(arr).max() <= 2


def test_tune_writes_one_line_per_measurement(tuned_db):
    path, kernels, res = tuned_db
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert len(lines) == res.measured
    h = host()
    for k in kernels:
        mine = [r for r in lines if r["key"] == k.key]
        assert all(r["cpu"] == h.cpu and r["features"] == h.features for r in mine)
        defaults = [r for r in mine if r["default"]]
        assert len(defaults) == 1 and defaults[0]["ok"] and defaults[0]["schedule"] == k.default.to_json()
        # the depthwise conv has fewer candidates than trials; the gemm kernels have many
        assert len(mine) - 1 == min(2, len(k.candidates))
        assert all(r["ok"] and r["us"] > 0 and r["checksum"] == defaults[0]["checksum"] for r in mine)
    text = summary(res)
    assert "cost model:" in text and text.count("\n") >= len(kernels) + 2


def test_tune_resumes_without_measuring_again(tuned_db, tmp_path):
    path, kernels, _ = tuned_db
    copy = tmp_path / "db.jsonl"
    copy.write_text(path.read_text())
    before = len(copy.read_text().splitlines())
    _, res = _tune(copy, trials=2)
    assert res.measured == 0 and len(copy.read_text().splitlines()) == before
    _, res = _tune(copy, trials=3)  # one more candidate for each kernel that has one left
    more = sum(1 for k in kernels if len(k.candidates) >= 3)
    assert res.measured == more and len(copy.read_text().splitlines()) == before + more


def test_merge_is_the_union(tuned_db, tmp_path):
    path, _, _ = tuned_db
    lines = path.read_text().splitlines()
    a, b, out = tmp_path / "a.jsonl", tmp_path / "b.jsonl", tmp_path / "c.jsonl"
    a.write_text("\n".join(lines[:5]) + "\n")
    b.write_text("\n".join(lines[3:]) + "\n")  # overlaps a by two lines
    assert main(["tune", "--merge", str(a), str(b), "-o", str(out)]) == 0
    assert sorted(out.read_text().splitlines()) == sorted(json.dumps(json.loads(x), sort_keys=True) for x in lines)


def test_compile_with_the_db_uses_its_schedules(tuned_db, monkeypatch):
    path, kernels, _ = tuned_db
    db = TuningDB.load(path)
    best = db.best(host().cpu, host().features)
    untuned = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True)
    assert "tuning" not in untuned.report["x86"]

    def no_measuring(task):
        raise AssertionError("a compile with a tuning db measured something")
    monkeypatch.setattr(tune_mod, "run_tune_task", no_measuring)
    tuned = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True, tuning_db=str(path))
    assert tuned.executable.cache_status != "hit"  # the schedules are in the cache key
    rep = tuned.report["x86"]["tuning"]
    assert rep["from_db"] == len(kernels) and rep["default"] == 0 and rep["db"] == str(path)
    for r in rep["kernels"]:
        assert r["source"] == "db"
        want = dict(best[r["key"]][0]["schedule"])
        if want["kind"] == "gemm" and want["tm"] == 0:  # the cost model's grid: the report gives the one used
            want.update(tm=r["schedule"]["tm"], tn=r["schedule"]["tn"])
        assert r["schedule"] == want
        assert r["measured_gain"] == pytest.approx(best[r["key"]][1]["us"] / best[r["key"]][0]["us"])
        b, d = best[r["key"]]
        assert r["predicted_gain"] == (pytest.approx(d["us"] / b["predicted_us"]) if b.get("predicted_us") else None)
    assert np.array_equal(tuned.run(feeds())["y"], untuned.run(feeds())["y"])
    # the next compile picks the same schedules (here from the cache: same key, same report)
    again = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True, tuning_db=str(path))
    assert again.executable.cache_status == "hit" and again.report["x86"]["tuning"] == rep
    # and so does $NNC_TUNING_DB, without the cache
    monkeypatch.setenv("NNC_TUNING_DB", str(path))
    env = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True, cache=False)
    assert env.report["x86"]["tuning"]["kernels"] == rep["kernels"]


def test_cli_tune_report(tuned_db, capsys):
    path, _, _ = tuned_db
    assert main(["tune", "--report", "--db", str(path)]) == 0
    out = capsys.readouterr().out
    assert "4 kernel(s)" in out and "cost model:" in out


def test_bad_databases_are_typed_errors(tmp_path):
    bad = tmp_path / "bad.jsonl"
    for text, match in (("not json\n", "not JSON"), ('{"cpu": "x"}\n', "missing field"),
                        ("[1, 2]\n", "JSON object")):
        bad.write_text(text)
        with pytest.raises(TuningDBError, match=match):
            nnc.compile(tuning_cnn(), target="x86", quiet=True, tuning_db=str(bad))
    rec = {"cpu": "c", "features": "f", "key": "k", "signature": {}, "default": True, "us": 1.0, "ok": True,
           "schedule": {"kind": "gemm", "mr": 0, "nv": 1, "kc": 1, "mc": 1, "nc": 16, "vector_bits": 512}}
    bad.write_text(json.dumps(rec) + "\n")
    with pytest.raises(TuningDBError, match=r"bad.jsonl:1: schedule: bad blocking"):
        TuningDB.load(bad)
    with pytest.raises(TuningDBError, match="no such file"):
        TuningDB.load(tmp_path / "missing.jsonl")


def test_cli_bad_db_is_one_line_error(tmp_path):
    import subprocess
    import sys

    bad = tmp_path / "bad.jsonl"
    bad.write_text("garbage\n")
    r = subprocess.run([sys.executable, "-m", "nnc", "tune", "--report", "--db", str(bad)], capture_output=True,
                       text=True)
    assert r.returncode != 0 and r.stderr.strip().count("\n") == 0 and "not JSON" in r.stderr
    r = subprocess.run([sys.executable, "-m", "nnc", "tune", "--merge", str(bad)], capture_output=True, text=True)
    assert r.returncode != 0 and "-o" in r.stderr


def test_spearman_and_held_out_rank():
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(np.corrcoef([1, 2.5, 2.5, 4], [1, 2, 3, 4])[0, 1])
    assert held_out_rank([]) == {"spearman": None, "kernels": 0}


def test_a_pool_worker_lost_mid_task_is_replaced(tmp_path, monkeypatch):
    """The sweep's crash hook: the first task to see the marker exits its process; the pool is rebuilt
    and every measurement still arrives."""
    from nnc.sweep import CRASH_ONCE_ENV

    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))
    ex = PoolExecutor(1)
    kernels, res = _tune(tmp_path / "db.jsonl", trials=1, executor=ex)
    lines = (tmp_path / "db.jsonl").read_text().splitlines()
    assert marker.exists() and ex.restarts >= 1
    assert res.measured == len(lines) == 2 * len(kernels)


def test_cli_progress_and_quiet(tmp_path, capsys):
    src = write_tuning_cnn(tmp_path)
    db = tmp_path / "db.jsonl"
    args = ["tune", str(src), "--trials", "1", "--repeat", "1", "--db", str(db), "--threads", "1"]
    assert main(args) == 0
    cap = capsys.readouterr()
    assert "8/8" in cap.err and "best" in cap.err and "cost model:" in cap.out and "in-model check" in cap.out
    assert main(args + ["--trials", "2", "-q"]) == 0  # resumes: one more candidate per kernel
    cap = capsys.readouterr()  # (the depthwise conv has two: direct loops, the padded copy)
    alone = [x for x in db.read_text().splitlines() if "in_model" not in json.loads(x)]  # not the verdicts
    assert cap.err == "" and len(alone) == 8 + 4


def test_measurement_only_on_the_target_cpu():
    """A candidate compiled for another CPU (a compile-only node may build it) is not measured here."""
    from nnc.tune import TuneTask, compile_candidate, measure_candidate

    k = next(k for k in model_kernels(tuning_cnn(), 1) if k.default.kind == "gemm")
    h = host()
    task = TuneTask(1, k.key, json.dumps(k.signature), json.dumps(k.default.to_json()), True, "haswell",
                    "+avx,+avx2,+fma,+sse4.2", repeat=1)
    compiled = compile_candidate(task)
    assert compiled["code"] is not None and compiled["record"]["error"] is None
    rec = measure_candidate(compiled)
    assert rec["us"] is None and "not measured" in rec["error"]
    here = compile_candidate(dataclasses.replace(task, cpu=h.cpu, features=h.features))
    rec = measure_candidate(here)
    assert rec["error"] is None and rec["us"] > 0 and rec["checksum"]


@pytest.mark.parametrize("argv, needle", [
    (["tune", "m.onnx", "--workers", "2", "--ray", "local"], "not both"),
    (["tune", "m.onnx", "--cpu", "haswell"], "needs --ray with nodes of that CPU"),
    (["tune", "m.onnx", "-o", "x.jsonl"], "-o is for --merge"),
    (["tune"], "give a MODEL"),
])
def test_cli_refuses_flags_that_cannot_apply(argv, needle, capsys):
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("nnc: error:") and needle in err and len(err.strip().splitlines()) == 1


def test_cli_refuses_a_time_budget_that_is_not_positive(capsys):
    with pytest.raises(SystemExit) as e:
        main(["tune", "m.onnx", "--time-budget", "0"])
    assert e.value.code == 2 and "positive number of seconds" in capsys.readouterr().err


def test_held_out_rank_of_a_learnable_cost():
    """Measurements whose time follows the tile's padding of M (a feature the model sees): a model
    trained on the other kernels ranks each held-out kernel's candidates nearly perfectly."""
    recs = []
    for m in (20, 36, 52, 70):
        sig = {"op": "matmul", "kind": "gemm", "attrs": {}, "threads": 1, "outputs": [["f32", [m, 64]]],
               "inputs": [["f32", [m, 96], False], ["f32", [96, 64], True]]}
        for i, mr in enumerate((1, 4, 6, 8, 12, 16)):
            s = Schedule("gemm", mr, 1, 256, max(mr, 192 // mr * mr), 1024, 512)
            padded = -(-m // mr) * mr / m
            recs.append({"key": f"k{m}", "signature": sig, "schedule": s.to_json(), "default": i == 0,
                         "ok": True, "us": 100.0 * padded})
    rank = held_out_rank(recs)
    assert rank["kernels"] == 4 and rank["spearman"] > 0.9

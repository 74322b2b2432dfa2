"""``nnc tune``'s check in the model (nnc/tune_verify.py, docs/tuning.md): with injected in-model
times, a candidate slower (or not faster by the margin) in the model leaves its kernel on the
default schedule, a faster one is kept with its in-model gain, drift of the machine cancels, and
the verdicts reach the database, the compile (no measuring) and its report. With the real
profiler, the call sites the report names are the profile's kernels of that op."""

from __future__ import annotations

import json

import numpy as np
import pytest
from tuning_model import feeds, tuning_cnn, write_tuning_cnn

import nnc
import nnc.tune as tune_mod
from nnc.backends.x86.schedule import tuning_text
from nnc.backends.x86.target import host
from nnc.backends.x86.tuning_db import TuningDB, TuningDBError
from nnc.sweep import PoolExecutor
from nnc.tune import model_kernels, tune
from nnc.tune_verify import ENTRY, candidates_to_check, check_model, profile_measure, standalone_vs_model_rank, verify

THREADS = 2


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv("NNC_TUNING_DB", raising=False)


@pytest.fixture(scope="module")
def searched(tmp_path_factory):
    """A standalone search (3 candidates per kernel), and the kernels with candidates to check."""
    path = tmp_path_factory.mktemp("verify") / "db.jsonl"
    h = host()
    kernels = model_kernels(tuning_cnn(), THREADS)
    tune(kernels, TuningDB.load(path, missing_ok=True), PoolExecutor(1), h.cpu, h.features, h.vector_bits,
         trials=3, repeat=2)
    return path, kernels


def _db(searched, tmp_path, fake_alone: dict[str, float] | None = None):
    """A copy of the searched database; ``fake_alone`` rewrites the kernels' times alone (key -> factor
    of the default for every candidate) so that each of those kernels has candidates to check."""
    path, kernels = searched
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    for r in lines:
        if fake_alone and r["key"] in fake_alone and not r["default"]:
            base = next(d["us"] for d in lines if d["key"] == r["key"] and d["default"])
            r["us"] = base * fake_alone[r["key"]]
    copy = tmp_path / "db.jsonl"
    copy.write_text("".join(json.dumps(r) + "\n" for r in lines))
    return TuningDB.load(copy), kernels


class FakeModel:
    """In-model times: each kernel 100 us with its default; with a candidate of the table, 100 us
    times the kernel's factor (1 for the kernels not named: the dwconv may have real candidates faster
    alone); every call drifts the machine by ``drift`` (a slower and slower machine)."""

    def __init__(self, factors: dict[str, float], drift: float = 0.0):
        self.factors = {k.key: 1.0 for k in model_kernels(tuning_cnn(), THREADS)} | factors
        self.drift, self.calls = drift, 0

    def __call__(self, table):
        scale = 1 + self.drift * self.calls
        self.calls += 1
        return {key: 100e-6 * scale * (f if key in table.entries else 1.0) for key, f in self.factors.items()}


def _gemm_keys(kernels):
    return [k.key for k in kernels if k.default.kind == "gemm"]


def test_slower_in_the_model_keeps_the_default(searched, tmp_path):
    h = host()
    db, kernels = _db(searched, tmp_path, fake_alone={k: 0.8 for k in _gemm_keys(searched[1])})
    slow, fast, flat = _gemm_keys(kernels)[:3]
    # alone every candidate looked 25% faster; in the model: slower, faster, and 1% faster (under the margin)
    fake = FakeModel({slow: 1.10, fast: 0.80, flat: 0.99}, drift=0.03)
    verdicts = {v.key: v for v in verify(kernels, db, h.cpu, h.features, fake, top=2, passes=3)}
    assert fake.calls == 3 * (2 * 2 + 1)  # D 1 D 2 D per pass: top + 1 builds, 2 top + 1 rounds
    assert verdicts[slow].default and verdicts[slow].gain == 1.0
    assert verdicts[slow].schedule == next(k.default for k in kernels if k.key == slow)
    assert verdicts[flat].default
    assert not verdicts[fast].default
    # the drift (3% per round) cancels between the default rounds around each candidate round
    assert verdicts[fast].gain == pytest.approx(1 / 0.80)
    assert all(c["ratio"] == pytest.approx(1.10) for c in verdicts[slow].candidates)
    # the fastest candidate alone is the first one checked
    check = candidates_to_check(kernels, db, h.cpu, h.features, 2)
    assert verdicts[fast].schedule.to_json() == check[fast][0]["schedule"]
    # without drift (exact ties): alone the default is slowest and the candidates tie; in the model
    # the slow kernel's ranking is reversed (Spearman -1) and the other two agree (+1)
    db, _ = _db(searched, tmp_path, fake_alone={k: 0.8 for k in _gemm_keys(kernels)})
    still = verify(kernels, db, h.cpu, h.features, FakeModel({slow: 1.10, fast: 0.80, flat: 0.99}), top=2, passes=3)
    rank = standalone_vs_model_rank(still, db, h.cpu, h.features)
    assert all(v.noise == 0 for v in still) and all(v.noise > 0.02 for v in verdicts.values())  # drift 3%/round
    assert rank["kernels"] == 3 and rank["spearman"] == pytest.approx(1 / 3)


def test_verdicts_are_recorded_and_compiled_without_measuring(searched, tmp_path, monkeypatch):
    h = host()
    db, kernels = _db(searched, tmp_path, fake_alone={k: 0.8 for k in _gemm_keys(searched[1])})
    slow, fast = _gemm_keys(kernels)[:2]
    verify(kernels, db, h.cpu, h.features, FakeModel({slow: 1.10, fast: 0.90}), top=2, passes=3)
    lines = [json.loads(x) for x in open(db.path)]
    verdict = {r["key"]: r for r in lines if "in_model" in r}
    assert set(verdict) == set(candidates_to_check(kernels, db, h.cpu, h.features, 2))
    assert verdict[fast]["in_model"]["us"] == pytest.approx(90.0)
    assert verdict[fast]["in_model"]["default_us"] == pytest.approx(100.0)
    assert verdict[fast]["in_model"]["gain"] == pytest.approx(1 / 0.9)
    assert verdict[slow]["default"] and verdict[slow]["in_model"]["gain"] == 1.0
    # the standalone views of the database do not see the verdicts
    assert all("in_model" not in r for r in db.for_target(h.cpu, h.features))

    def no_measuring(task):
        raise AssertionError("a compile with a tuning db measured something")
    monkeypatch.setattr(tune_mod, "run_tune_task", no_measuring)
    untuned = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True)
    tuned = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True, tuning_db=db.path)
    rep = {r["key"]: r for r in tuned.report["x86"]["tuning"]["kernels"]}
    plain = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True, tuning_db=TuningDB())
    assert rep[slow]["source"] == "default" and rep[slow]["kept_default"]
    assert rep[slow]["schedule"] == next(r["schedule"] for r in plain.report["x86"]["tuning"]["kernels"]
                                         if r["key"] == slow)
    assert rep[fast]["source"] == "db" and rep[fast]["model_gain"] == pytest.approx(1 / 0.9)
    want = verdict[fast]["schedule"]
    got = dict(rep[fast]["schedule"])
    if want["tm"] == 0:  # the cost model's task grid: the report gives the grid it chose
        got.update(tm=0, tn=0)
    assert got == want
    assert np.array_equal(tuned.run(feeds())["y"], untuned.run(feeds())["y"])
    text = tuning_text(tuned.report["x86"]["tuning"])
    assert "in model x1.11" in text and "kept the default schedule" in text and rep[slow]["kernel"] in text
    # the next compile (new process, here: no cache) takes the same schedules
    again = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True, tuning_db=db.path, cache=False)
    assert again.report["x86"]["tuning"]["kernels"] == tuned.report["x86"]["tuning"]["kernels"]


class FakeWholeModel(FakeModel):
    """FakeModel with the entry point's time: the sum of the kernels' plus 50 us of glue."""

    def __call__(self, table):
        times = super().__call__(table)
        return {**times, ENTRY: sum(times.values()) + 50e-6 * (1 + self.drift * (self.calls - 1))}


def test_the_model_with_every_kept_schedule(searched, tmp_path):
    h = host()
    db, kernels = _db(searched, tmp_path, fake_alone={k: 0.8 for k in _gemm_keys(searched[1])})
    slow, fast, faster = _gemm_keys(kernels)[:3]
    fake = FakeWholeModel({slow: 1.10, fast: 0.90, faster: 0.70}, drift=0.02)
    verdicts = verify(kernels, db, h.cpu, h.features, fake, top=1, passes=3)
    calls = fake.calls
    whole = check_model(verdicts, fake, passes=4)
    assert fake.calls - calls == 2 * 4 + 1  # D T D T ... D
    n = len(kernels)
    # the two kept kernels save 10 and 30 us of n * 100 + 50 us; the drift (2% per round) cancels
    assert whole.gain == pytest.approx((n * 100 + 50) / (n * 100 + 50 - 10 - 30))
    assert whole.passes == 4
    assert check_model(verdicts, FakeModel({fast: 0.9}), passes=2) is None  # no entry-point time: no check
    assert check_model([v for v in verdicts if v.default], fake) is None  # nothing kept: nothing to check


def test_a_later_verdict_wins_and_merge_keeps_verdicts(searched, tmp_path):
    h = host()
    db, kernels = _db(searched, tmp_path, fake_alone={k: 0.8 for k in _gemm_keys(searched[1])})
    key = _gemm_keys(kernels)[0]
    verify(kernels, db, h.cpu, h.features, FakeModel({key: 0.9}), top=1, passes=1)
    assert not db.table(h.cpu, h.features).entries[key].kept_default
    verify(kernels, db, h.cpu, h.features, FakeModel({key: 1.2}), top=1, passes=1)
    assert db.table(h.cpu, h.features).entries[key].kept_default
    merged = TuningDB.merge([TuningDB.load(searched[0]), TuningDB.load(db.path)])
    assert merged.table(h.cpu, h.features).entries[key].kept_default


def test_cli_report_counts_the_verdicts(searched, tmp_path, capsys):
    from nnc.cli import main

    h = host()
    db, kernels = _db(searched, tmp_path, fake_alone={k: 0.8 for k in _gemm_keys(searched[1])})
    slow, fast = _gemm_keys(kernels)[:2]
    verdicts = verify(kernels, db, h.cpu, h.features, FakeModel({slow: 1.10, fast: 0.80}), top=1, passes=1)
    assert main(["tune", "--report", "--db", db.path]) == 0
    out = capsys.readouterr().out
    won = sum(not v.default for v in verdicts)
    assert f"checked in the model: {len(verdicts)} kernel(s), {won} keep a tuned schedule" in out
    assert "x1.25 to x1.25" in out  # only the fast kernel gained (1 / 0.8)


def test_nothing_to_check_without_candidates_faster_alone(searched, tmp_path):
    h = host()
    db, kernels = _db(searched, tmp_path, fake_alone={k.key: 1.5 for k in searched[1]})
    fake = FakeModel({k.key: 0.5 for k in kernels})
    assert verify(kernels, db, h.cpu, h.features, fake) == [] and fake.calls == 0


def test_bad_in_model_field_is_a_typed_error(searched, tmp_path):
    line = json.loads(searched[0].read_text().splitlines()[0])
    line["in_model"] = {"us": 1.0, "default_us": -1.0, "gain": 1.0}
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps(line) + "\n")
    with pytest.raises(TuningDBError, match="in_model"):
        TuningDB.load(bad)


def test_profile_sites_are_the_kernels_of_that_op(searched):
    """The real timing source: each signature's call sites are profile kernels running its op."""
    _, kernels = searched
    measure = profile_measure(tuning_cnn(), THREADS, None, runs=2)
    empty = TuningDB().table(host().cpu, host().features)
    times = measure(empty)
    assert set(times) == {k.key for k in kernels} | {ENTRY} and all(t > 0 for t in times.values())
    # the entry point runs every kernel: per run its time is at least their sum, and the median of
    # two runs is their mean, so this holds for the medians too
    assert times[ENTRY] > sum(times[k.key] * 0.999 for k in kernels)
    cm = nnc.compile(tuning_cnn(), target="x86", threads=THREADS, quiet=True, profile=True, tuning_db=empty)
    prof = cm.profile(feeds(), runs=1)
    for r in cm.report["x86"]["tuning"]["kernels"]:
        assert len(r["sites"]) == r["calls"]
        assert all(r["op"] in prof.kernels[s].ops for s in r["sites"])


def test_a_gain_within_the_noise_keeps_the_default(searched, tmp_path):
    """Default rounds that alternate 100/105 us (noise ~5%): a candidate 4% faster than their mean is
    above the 2% floor but within the noise, so the kernel keeps its default; 8% faster wins."""
    h = host()
    db, kernels = _db(searched, tmp_path, fake_alone={k: 0.8 for k in _gemm_keys(searched[1])})
    noisy, clear = _gemm_keys(kernels)[:2]
    defaults = [0]

    def measure(table):
        if not table.entries:
            defaults[0] += 1
            t = 100e-6 * (1.05 if defaults[0] % 2 else 1.0)
            return {k.key: t for k in kernels}
        return {k.key: 102.5e-6 * {noisy: 0.96, clear: 0.92}.get(k.key, 1.0) for k in kernels}
    verdicts = {v.key: v for v in verify(kernels, db, h.cpu, h.features, measure, top=1, passes=5)}
    assert verdicts[noisy].noise == pytest.approx(0.05, abs=0.003)
    assert verdicts[noisy].default and not verdicts[clear].default
    assert verdicts[clear].gain == pytest.approx(1 / 0.92)


def test_cli_verify_top_0_skips_the_check(tmp_path, capsys):
    from nnc.cli import main

    src = write_tuning_cnn(tmp_path)
    db = tmp_path / "db.jsonl"
    assert main(["tune", str(src), "--trials", "1", "--repeat", "1", "--db", str(db), "--threads", "1", "-q",
                 "--verify-top", "0"]) == 0
    out = capsys.readouterr().out
    assert "cost model:" in out and "in-model check" not in out and "in model" not in out
    assert not any("in_model" in json.loads(x) for x in db.read_text().splitlines())
    with pytest.raises(SystemExit):
        main(["tune", str(src), "--verify-top", "-1"])

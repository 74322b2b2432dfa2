"""``nnc tune`` as Ray tasks on a local Ray instance this test starts (2 CPUs, no dashboard, the
custom resource naming this CPU): the measurements land in the database like the pool's, a worker
that dies mid-task is retried, and a cluster without a node of this CPU is one clear error. Skipped,
saying why, when Ray is not installed or cannot start."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'nnc[distributed]')")

from tuning_model import tuning_cnn  # noqa: E402

from nnc.backends.x86.target import host  # noqa: E402
from nnc.backends.x86.tuning_db import TuningDB  # noqa: E402
from nnc.ir import NncError  # noqa: E402
from nnc.sweep import CRASH_ONCE_ENV, RayExecutor  # noqa: E402
from nnc.tune import cpu_resource, model_kernels, tune  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    h = host()
    try:
        ray.init(num_cpus=2, resources={cpu_resource(h.cpu, h.features): 2}, include_dashboard=False,
                 log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - any failure to start means: cannot test here
        pytest.skip(f"a local Ray instance cannot start here: {str(e).splitlines()[0]}")
    yield RayExecutor("local")
    ray.shutdown()


def _run(executor, path, resource):
    h = host()
    kernels = model_kernels(tuning_cnn(), 1)
    db = TuningDB.load(path, missing_ok=True)
    res = tune(kernels, db, executor, h.cpu, h.features, h.vector_bits, trials=1, repeat=2, resource=resource)
    return kernels, res, [json.loads(x) for x in path.read_text().splitlines()]


def test_tune_on_ray_measures_on_nodes_of_this_cpu(local_ray, tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    h = host()
    kernels, res, lines = _run(local_ray, tmp_path / "db.jsonl", cpu_resource(h.cpu, h.features))
    assert res.measured == len(lines) == 2 * len(kernels)  # the default and one candidate each
    assert all(r["ok"] and r["us"] > 0 and r["cpu"] == h.cpu for r in lines)


def test_a_worker_lost_mid_task_is_retried(local_ray, tmp_path, monkeypatch):
    monkeypatch.setenv("NNC_CACHE_DIR", str(tmp_path / "cache"))
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))
    h = host()
    kernels, res, lines = _run(local_ray, tmp_path / "db.jsonl", cpu_resource(h.cpu, h.features))
    assert marker.exists()  # a task did kill its worker
    assert len(lines) == 2 * len(kernels) and all(r["ok"] for r in lines)


def test_no_node_of_this_cpu_is_a_clear_error(local_ray, tmp_path):
    with pytest.raises(NncError, match="no node of the cluster has the resource nnc_cpu_other"):
        _run(local_ray, tmp_path / "db.jsonl", "nnc_cpu_other")

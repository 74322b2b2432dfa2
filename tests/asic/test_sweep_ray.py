"""The ASIC sweep as Ray tasks on a local Ray instance this test starts (2 CPUs, no dashboard): the
same 12 configurations x 3 models as the process pool give the identical table, and a worker that
dies mid-task (the crash hook: the first task to see it exits its process) is retried by Ray and
the sweep still returns every row. Skipped, saying why, when Ray is not installed or cannot start."""

from __future__ import annotations

import os

import pytest

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install 'nnc[distributed]')")

from test_sweep import kill_when_claimed, sweep_models, twelve_configs  # noqa: E402

from nnc.ir import NncError  # noqa: E402
from nnc.sweep import CRASH_ONCE_ENV, HANG_ONCE_ENV, PoolExecutor, RayExecutor, make_tasks, run_sweep  # noqa: E402
from nnc.sweep_report import sweep_csv, sweep_json  # noqa: E402


def test_no_cluster_is_one_clear_error(monkeypatch):
    """Runs before the module's Ray instance starts: --ray auto with no 'ray start' cluster."""
    if ray.is_initialized():
        pytest.skip("a Ray instance is already running in this process")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    try:
        ray.init(address="auto", include_dashboard=False)
    except Exception:  # noqa: BLE001 - the expected case: nothing to join
        pass
    else:
        ray.shutdown()
        pytest.skip("a Ray cluster is running on this machine")
    with pytest.raises(NncError, match=r"--ray auto: cannot connect to Ray \(start a cluster with 'ray start --head'"):
        RayExecutor("auto")
    assert not ray.is_initialized()


@pytest.fixture(scope="module")
def local_ray():
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    except Exception as e:  # noqa: BLE001 - any failure to start means: cannot test here
        pytest.skip(f"a local Ray instance cannot start here: {str(e).splitlines()[0]}")
    yield
    ray.shutdown()


@pytest.fixture(scope="module")
def tasks(tmp_path_factory):
    return make_tasks(sweep_models(tmp_path_factory.mktemp("sweep_ray")), twelve_configs())


@pytest.fixture(scope="module")
def pool_rows(tasks):
    return run_sweep(tasks, PoolExecutor(2))


def test_ray_and_pool_give_identical_tables(local_ray, tasks, pool_rows):
    ex = RayExecutor("local")
    assert "ray (local), 2 CPU(s)" in ex.describe()
    arrived: list[int] = []
    rows = run_sweep(tasks, ex, on_row=lambda r: arrived.append(r["index"]))
    assert len(rows) == 36 and sorted(arrived) == list(range(36))
    assert all(r["error"] is None for r in rows)
    assert rows == pool_rows
    assert sweep_csv(rows) == sweep_csv(pool_rows) and sweep_json(rows) == sweep_json(pool_rows)


def test_ray_retries_a_task_whose_worker_died(local_ray, tasks, pool_rows, tmp_path, monkeypatch):
    marker = tmp_path / "crashed"
    monkeypatch.setenv(CRASH_ONCE_ENV, str(marker))
    rows = run_sweep(tasks[:12], RayExecutor("local", max_retries=2))
    assert marker.exists(), "no worker was killed"
    pid = int(marker.read_text())
    assert rows == pool_rows[:12]
    # the worker that ran the crashing task is gone
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_ray_retries_a_task_whose_worker_was_killed_from_outside(local_ray, tasks, pool_rows, tmp_path, monkeypatch):
    marker = tmp_path / "hung"
    monkeypatch.setenv(HANG_ONCE_ENV, str(marker))  # the first task sleeps until the thread SIGKILLs its worker
    killer = kill_when_claimed(marker)
    rows = run_sweep(tasks[24:], RayExecutor("local", max_retries=2))
    killer.join(5)
    assert marker.exists() and not killer.is_alive()
    assert rows == pool_rows[24:]

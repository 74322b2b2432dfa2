"""Checks on the test suite itself, for every pytest run from the repository root.

pytest's default import mode puts each test file's folder on ``sys.path`` (the tests are not
packages), so a folder under ``tests/`` named like a real package becomes that package for every
test collected after it: ``tests/frontends/torch/`` made ``import torch`` find the folder, and
every PyTorch import failed with "module 'torch' has no attribute 'nn'". The first check refuses
such a folder before anything is collected.

The second keeps the ``torch`` marker honest: CI runs the suite without torch, then only the tests
marked ``torch`` once torch is installed, so a test that skips for want of torch and is not marked
would never run anywhere. Such a skip is reported as a failure naming the missing marker.

This file lives at the root, not in ``tests/``, because a ``tests/conftest.py`` would put ``tests/``
itself on ``sys.path`` and make every test folder (``ir``, ``passes``, ``cli`` ...) importable.
"""

from __future__ import annotations

import importlib.util
import os
import re

import pytest

ROOT = os.path.dirname(os.path.abspath(__file__))
TESTS = os.path.join(ROOT, "tests")
OPTIONAL_PACKAGES = {"torch", "torchvision"}  # may be absent here, present on the next machine


def _outside_repo(name: str) -> bool:
    """Whether ``name`` imports as something that is not part of this repository."""
    if name in OPTIONAL_PACKAGES:
        return True
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        return False
    if spec is None:
        return False
    places = [spec.origin] if spec.origin else list(spec.submodule_search_locations or [])
    return any(p and not os.path.abspath(p).startswith(ROOT + os.sep) for p in places)


def pytest_configure(config: pytest.Config) -> None:
    shadows = []
    for folder, dirs, _ in os.walk(TESTS):
        dirs[:] = [d for d in dirs if not d.startswith((".", "__"))]
        shadows += [os.path.relpath(os.path.join(folder, d), ROOT) for d in dirs if _outside_repo(d)]
    if shadows:
        raise pytest.UsageError(f"test folder(s) {', '.join(shadows)} would shadow the importable package of the "
                                f"same name (test folders go on sys.path): rename them")


def _about_torch(reason: str) -> bool:
    return "torch" in reason.lower()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and isinstance(report.longrepr, tuple) \
            and _about_torch(str(report.longrepr[2])) and item.get_closest_marker("torch") is None:
        report.outcome = "failed"
        report.longrepr = (f"{item.nodeid} skips for want of torch ({report.longrepr[2]}) but is not marked "
                           f"@pytest.mark.torch, so CI's torch step would never run it")


@pytest.hookimpl(hookwrapper=True)
def pytest_make_collect_report(collector: pytest.Collector):
    outcome = yield
    report = outcome.get_result()
    if report.skipped and isinstance(collector, pytest.Module) and isinstance(report.longrepr, tuple) \
            and _about_torch(str(report.longrepr[2])):
        with open(collector.path, encoding="utf-8") as f:
            # a module mark: pytestmark = pytest.mark.torch, or a list holding it
            marked = re.search(r"^pytestmark\s*=[^\n]*\bpytest\.mark\.torch\b", f.read(), re.MULTILINE) is not None
        if not marked:
            report.outcome = "failed"
            report.longrepr = (f"{collector.nodeid} skips for want of torch but sets no "
                               f"`pytestmark = pytest.mark.torch` before the skip")

"""One compiled model called from many Python threads at once: every output must equal the
single-threaded result for the same input, and the process must survive (a loaded library without
a lock gave wrong results in ~15% of such calls and corrupted the heap). Runs in the default suite."""

from __future__ import annotations

import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.cli import main as cli_main

CNN = str(Path(__file__).resolve().parents[2] / "examples" / "cnn.onnx")
THREADS, CALLS = 8, 200
N_INPUTS = 32  # distinct inputs, so a call reading another thread's input or output shows


def inputs() -> list[np.ndarray]:
    rng = np.random.default_rng(0)
    return [rng.standard_normal((1, 1, 28, 28)).astype(np.float32) for _ in range(N_INPUTS)]


def hammer(model: nnc.CompiledModel) -> None:
    xs = inputs()
    (name,) = model.output_names
    want = [model.run({"image": x})[name] for x in xs]  # single-threaded, one call at a time
    assert len({w.tobytes() for w in want}) == N_INPUTS  # distinct answers: a mix-up cannot hide
    wrong: list[tuple[int, int]] = []
    errors: list[BaseException] = []
    start = threading.Barrier(THREADS)

    def worker(t: int) -> None:
        try:
            start.wait()
            for c in range(CALLS):
                k = (t * 7 + c) % N_INPUTS
                got = model.run({"image": xs[k]})[name]
                if not np.array_equal(got, want[k]):  # same code, same input: bit-identical
                    wrong.append((t, c))
        except BaseException as e:  # noqa: B036 - reported below, not swallowed
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(THREADS)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors[0]
    assert wrong == [], f"{len(wrong)} of {THREADS * CALLS} calls returned a wrong output"


@pytest.mark.skipif(shutil.which("gcc") is None, reason="AOT links with gcc")
def test_loaded_library_from_many_threads(tmp_path: Path) -> None:
    lib = tmp_path / "cnn.so"
    assert cli_main(["compile", CNN, "--target", "x86", "-o", str(lib), "-q", "--threads", "2"]) in (0, None)
    hammer(nnc.load(lib))


def test_jit_model_from_many_threads() -> None:
    hammer(nnc.compile(CNN, target="x86", threads=2, cache=False, quiet=True))

"""Memory of a long-lived process that compiles many models: what one compile leaves behind.

Each measurement runs in a fresh subprocess (nothing else allocating in it), after a few warm-up
compiles, over 100 compiles of varied small models (x86, cache off, one thread), every model run
once and dropped. Resident memory comes from /proc/self/statm.

Where the memory goes (measured with this script's helpers, llvmlite 0.50): nnc's own Python
objects are all freed (tracemalloc and gc counts are flat), the JIT libraries and the executables
are freed, and LLVM parsing and code generation keep nothing. What grows, ~180 KB per compile at
O3 (~60 KB at O1... 0.7 KB at O0), is the LLVM optimisation pipeline run through llvmlite:
``LLVMPY_CreatePassBuilder`` allocates a ``PassInstrumentationCallbacks`` that nothing frees, and
every ``ModulePassManager.run`` registers callbacks into it. Re-using one PassBuilder does not help
and is unsafe (each run leaves callbacks pointing into its own finished stack frame). So after the
first few compiles of a process, LLVM runs in a recycled worker process
(``backends/x86/llvm_worker.py``), and this process stays flat: the RSS test checks that; with
``NNC_LLVM_WORKER=never`` it would grow ~21 MB over these 100 compiles.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

SCRIPT = r"""
import gc, json, os, sys, tracemalloc
import numpy as np
import nnc
from nnc.ir import Builder, Graph, Module, tensor

ACTS = ["relu", "tanh", "sigmoid", "exp"]

def model(i):
    # matmul + bias + activation, five widths x four activations: 20 graphs, weights differ each time
    rng = np.random.default_rng(i)
    n = 8 + (i % 5) * 4
    m = Module(f"m{i}")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [2, n]))
    h = b.op("matmul", x, b.const(rng.standard_normal((n, 8)).astype(np.float32), name="w"), name="h")
    y = b.op(ACTS[i % 4], b.op("add", h, b.const(rng.standard_normal(8).astype(np.float32), name="b")), name="y")
    g.set_outputs([y], ["y"])
    return m, n

def rss_mb():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20

def compile_and_run(i, opt):
    m, n = model(i)
    cm = nnc.compile(m, target="x86", cache=False, quiet=True, threads=1, opt=opt)
    cm.run({"x": np.ones((2, n), np.float32)})

opt, trace = int(sys.argv[1]), sys.argv[2] == "trace"
for i in range(10):  # warm-up: imports, first-use caches, the allocator's arenas
    compile_and_run(i, opt)
gc.collect()
if trace:
    tracemalloc.start()
objects0, rss0 = len(gc.get_objects()), rss_mb()
py0 = tracemalloc.get_traced_memory()[0] if trace else 0
for i in range(10, 110):
    compile_and_run(i, opt)
gc.collect()
print(json.dumps({"rss_mb": rss_mb() - rss0, "objects": len(gc.get_objects()) - objects0,
                  "python_kb": (tracemalloc.get_traced_memory()[0] - py0) / 1024 if trace else 0}))
"""


def measure(opt: int, trace: bool = False, env: dict[str, str] | None = None) -> dict[str, float]:
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(opt), "trace" if trace else "rss"],
                          capture_output=True, text=True, timeout=300, env={**os.environ, **(env or {})})
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout.splitlines()[-1])


def test_compiles_leave_no_python_objects_behind() -> None:
    """nnc's share: over 100 compiles, Python memory and the number of live objects stay flat
    (no cache keyed by id, no module kept by an lru_cache, no executable kept alive)."""
    got = measure(opt=0, trace=True)
    assert got["objects"] < 500, got  # one leaked compile is thousands of IR and llvmlite objects
    assert got["python_kb"] < 256, got  # one leaked compile is tens of KB of Python objects


RSS_BOUND_MB = 5.0  # 50 KB per compile: allocator noise, not a model's worth of LLVM state


def test_rss_growth_over_100_compiles_is_bounded() -> None:
    got = measure(opt=3)
    assert got["rss_mb"] < RSS_BOUND_MB, got


def test_llvm_in_this_process_is_what_grows() -> None:
    """The control: with LLVM kept in this process the same 100 compiles grow past the bound (the
    llvmlite leak), so the test above measures the worker's effect, not a lucky run."""
    got = measure(opt=3, env={"NNC_LLVM_WORKER": "never"})
    assert got["rss_mb"] > RSS_BOUND_MB, got

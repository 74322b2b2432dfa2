"""Ahead-of-time x86 compilation: the shared library, its C header and manifest, ``nnc.load``, and
``nnc compile --emit``. The library is checked from C (a program built with gcc against the
generated header) and from Python, against the reference interpreter. Last, the harness behind
``nnc bench`` (its results, not its timings: performance is measured in bench/)."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

import nnc
from nnc.backends.x86 import aot
from nnc.backends.x86.split_compile import members
from nnc.backends.x86.target import host
from nnc.cli import main as cli_main
from nnc.ir import Builder, Graph, InputError, Module, TargetError, interpret, tensor

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="AOT links with gcc")


def two_output_model() -> Module:
    """An MLP (weights in the blob) with a second, bool output, and two inputs: the C program has to
    get the order, dtypes and sizes of everything right."""
    rng = np.random.default_rng(0)
    m = Module("two_out")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [2, 64]))
    t = g.add_param("t", tensor("f32", [1, 10]))
    h = b.op("matmul", x, b.const(rng.standard_normal((64, 32)).astype(np.float32), name="w1"), name="h")
    h = b.op("relu", b.op("add", h, b.const(rng.standard_normal(32).astype(np.float32), name="b1")), name="r")
    y = b.op("gemm", h, b.const(rng.standard_normal((10, 32)).astype(np.float32), name="w2"),
             b.const(rng.standard_normal(10).astype(np.float32), name="b2"), trans_b=1, name="y")
    g.set_outputs([y, b.op("greater", y, t, name="gt")], ["logits", "above"])
    return m


def feeds() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    return {"x": rng.standard_normal((2, 64)).astype(np.float32), "t": rng.standard_normal((1, 10)).astype(np.float32)}


def check(got: dict[str, np.ndarray], want: dict[str, np.ndarray]) -> None:
    # f32 dot products of length 64 and 32 summed in another order: a few ulps of the sums
    np.testing.assert_allclose(got["logits"], want["logits"], rtol=1e-5, atol=1e-5)
    assert got["above"].dtype == np.bool_
    # a comparison can only flip where logits is within rounding of the threshold
    close = np.abs(want["logits"] - feeds()["t"]) < 1e-4
    np.testing.assert_array_equal(got["above"][~close], want["above"][~close])


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    path = tmp_path_factory.mktemp("aot") / "model.so"
    # two threads: the library carries the thread pool (and joins it at exit), whatever the host has
    nnc.compile(two_output_model(), target="x86", threads=2, quiet=True).save(path)
    return path, json.loads(path.with_suffix(".json").read_text())


C_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include "model.h"

static void *slurp(const char *path, size_t n) {
    void *p = malloc(n);
    FILE *f = fopen(path, "rb");
    if (!p || !f || fread(p, 1, n, f) != n) exit(3);
    fclose(f);
    return p;
}

int main(int argc, char **argv) {
    static const int64_t xshape[] = MODEL_INPUT_0_SHAPE;
    if (argc != 1 + MODEL_NUM_INPUTS + MODEL_NUM_OUTPUTS || xshape[1] != 64) return 2;
    model_ctx *ctx = model_create();
    if (!ctx) return 4;
    const void *in[MODEL_NUM_INPUTS];
    void *out[MODEL_NUM_OUTPUTS];
    for (int i = 0; i < model_num_inputs(); i++) in[i] = slurp(argv[1 + i], (size_t)model_input_bytes(i));
    for (int j = 0; j < model_num_outputs(); j++) out[j] = calloc(1, (size_t)model_output_bytes(j));
    /* twice: the second run reuses the arena the first one dirtied */
    if (model_run(ctx, in, out) != 0 || model_run(ctx, in, out) != 0) return 5;
    if (model_run(NULL, in, out) != -1) return 6;
    for (int j = 0; j < model_num_outputs(); j++) {
        FILE *f = fopen(argv[1 + MODEL_NUM_INPUTS + j], "wb");
        fwrite(out[j], 1, (size_t)model_output_bytes(j), f);
        fclose(f);
    }
    printf("%s %s %s %s %d %lld\n", model_input_name(1), model_output_name(1), model_output_dtype(1),
           MODEL_INPUT_0_DTYPE, model_output_rank(0), (long long)model_output_shape(0)[1]);
    printf("%d\n", model_input_name(7) == NULL && model_input_rank(-1) == -1);
    model_destroy(ctx);
    return 0;
}
"""


def build_c_program(source: str, so: Path, folder: Path) -> Path:
    """``source`` built with gcc (warnings are errors) against the library ``so`` and its header."""
    (folder / "main.c").write_text(source)
    exe = folder / "main"
    subprocess.run(["gcc", "-O1", "-Wall", "-Wextra", "-Werror", "-o", str(exe), str(folder / "main.c"),
                    f"-I{so.parent}", str(so), f"-Wl,-rpath,{so.parent}"], check=True, capture_output=True, text=True)
    return exe


def test_c_program_against_the_header(library: tuple[Path, dict], tmp_path: Path) -> None:
    so, manifest = library
    exe = build_c_program(C_PROGRAM, so, tmp_path)
    f = feeds()
    ins = []
    for name in ("x", "t"):
        ins.append(tmp_path / f"{name}.bin")
        ins[-1].write_bytes(f[name].tobytes())
    outs = [tmp_path / "logits.bin", tmp_path / "above.bin"]
    proc = subprocess.run([str(exe)] + [str(p) for p in ins + outs], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["t", "above", "bool", "f32", "2", "10", "1"]
    got = {"logits": np.frombuffer(outs[0].read_bytes(), np.float32).reshape(2, 10),
           "above": np.frombuffer(outs[1].read_bytes(), np.bool_).reshape(2, 10)}
    check(got, interpret(two_output_model(), f))


def test_load_runs_the_library(library: tuple[Path, dict]) -> None:
    so, _ = library
    cm = nnc.load(so)
    assert cm.input_names == ["x", "t"] and cm.output_names == ["logits", "above"]
    assert str(cm.input_types["x"]) == "f32[2,64]"
    check(cm.run(feeds()), interpret(two_output_model(), feeds()))
    logits, _ = cm(feeds()["x"], feeds()["t"])
    assert logits.shape == (2, 10)
    with pytest.raises(InputError, match="expected f32\\[2,64\\]"):
        cm.run({"x": np.zeros((3, 64), np.float32), "t": feeds()["t"]})
    with pytest.raises(InputError, match="missing input 't'"):
        cm.run({"x": feeds()["x"]})


def test_manifest_and_header(library: tuple[Path, dict]) -> None:
    so, manifest = library
    on_disk = json.loads(so.with_suffix(".json").read_text())
    assert on_disk["inputs"] == manifest["inputs"] == [
        {"name": "x", "dtype": "f32", "shape": [2, 64], "nbytes": 512},
        {"name": "t", "dtype": "f32", "shape": [1, 10], "nbytes": 40}]
    assert manifest["outputs"][1] == {"name": "above", "dtype": "bool", "shape": [2, 10], "nbytes": 20}
    assert manifest["target"]["cpu"] == host().cpu and manifest["target"]["features"] == host().features
    assert manifest["nnc_version"] == nnc.__version__ and manifest["threads"] == 2
    w = manifest["weights"]
    assert w["layout"] == "embedded"
    # every weight lies inside the blob, 64-byte aligned, and the four constants are all there: raw, or
    # only pre-packed for the GEMM kernels (a raw copy that no kernel reads is not stored)
    assert {t["name"].split(".packed_")[0] for t in w["tensors"]} >= {"w1", "b1", "w2", "b2"}
    assert all(t["offset"] % 64 == 0 and t["offset"] + t["nbytes"] <= w["nbytes"] for t in w["tensors"])
    header = so.with_suffix(".h").read_text()
    assert "#define MODEL_OUTPUT_1_CTYPE uint8_t" in header and "model_ctx *model_create(void);" in header
    # the library is self-contained: it only exports the API, not the kernels or the weights symbol
    syms = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
    assert "model_run" in syms and "nnc_entry" not in syms and "nnc_weights" not in syms


def test_failed_link_writes_nothing(tmp_path: Path) -> None:
    target = tmp_path / "model.so"
    target.write_bytes(b"old")
    exe = nnc.compile(two_output_model(), target="x86", quiet=True).executable
    with pytest.raises(TargetError, match="linking model.so with false failed"):
        aot.write_library(exe, str(target), cc="false")
    assert sorted(os.listdir(tmp_path)) == ["model.so"] and target.read_bytes() == b"old"


def test_cli_compile_and_emit(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(EXAMPLES / "mlp.onnx")  # its batch dim N is symbolic: the library fixes it to 1
    so = tmp_path / "mlp.so"
    assert cli_main(["compile", model, "--target", "x86", "-o", str(so)]) == 0
    assert "N=1" in capsys.readouterr().out
    x = np.load(EXAMPLES / "mlp_input.npy")[:1]
    got = nnc.load(so)(x)
    want = nnc.compile(model, target="reference")(x)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert cli_main(["compile", model, "-t", "x86", "--emit", "llvm"]) == 0
    ir_text = capsys.readouterr().out
    assert re.search(r"define [\w ]*\bi32 @nnc_entry\(", ir_text) and "target triple" in ir_text  # returns a status
    assert cli_main(["compile", model, "-t", "x86", "--emit", "asm", "-o", str(tmp_path / "m.s")]) == 0
    assert "nnc_entry:" in (tmp_path / "m.s").read_text()
    assert cli_main(["compile", model, "-t", "x86", "--emit", "obj", "-o", str(tmp_path / "m.o")]) == 0
    # one object, or an archive of objects (one per kernel with the kernel cache, docs/x86-backend.md)
    assert all(o[:4] == b"\x7fELF" for o in members((tmp_path / "m.o").read_bytes()))
    assert cli_main(["compile", model, "-t", "x86", "--emit", "obj"]) == 1
    assert "give -o FILE" in capsys.readouterr().err


def test_bench_harness_reports_results_and_failures(tmp_path: Path) -> None:
    from nnc import bench

    model = str(EXAMPLES / "mlp.onnx")
    res = bench.benchmark(model, ["nnc", "reference"], threads=1, rounds=1, budget_s=0.0, min_runs=2, max_runs=2)
    assert res["nnc"]["status"] == "ok" and res["nnc"]["runs"] == 2 and res["nnc"]["p90_ms"] > 0
    # both engines ran the same inputs: the interpreter is the baseline here
    assert res["agreement"]["nnc"]["max_scaled_diff"] < 1e-5
    assert bench.count_flops(model) == 2 * (784 * 32 + 32 * 10)  # batch N taken as 1
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"not a model")
    res = bench.benchmark(str(bad), ["nnc"], rounds=1)
    assert res["nnc"]["status"].startswith("fails: ")

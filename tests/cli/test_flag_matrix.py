"""Every compile flag takes effect on every command that accepts it, or is an error that says why.

A table of (command, flags, check): each case runs the command in-process through ``nnc.cli.main``
and checks what the flag changes (the saved library, its manifest and report, the printed IR, the
outputs), not merely that the command exits 0. The model is MatMul -> Add -> Relu -> MatMul -> Exp
with a symbolic batch ``N`` (the fusion example of issue #11): -O3 fuses it, -O0 does not.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any, Callable

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.cli import main

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="x86 libraries link with gcc")
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _model(path: Path) -> None:
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1, n)
             for n, s in (("w1", (64, 256)), ("b1", (256,)), ("w2", (256, 8)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Add", ["h", "b1"], ["a"]),
             helper.make_node("Relu", ["a"], ["r"]), helper.make_node("MatMul", ["r", "w2"], ["m"]),
             helper.make_node("Exp", ["m"], ["y"])]
    g = helper.make_graph(nodes, "mlp_exp", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 8])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


@pytest.fixture(scope="module")
def work(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("flags")
    _model(d / "m.onnx")
    rng = np.random.default_rng(1)
    np.savez(d / "calib.npz", x=rng.standard_normal((8, 1, 64)).astype(np.float32))
    # one outlier among 12,800 values: minmax stretches its range to it, the 99.99th percentile does not
    big = rng.standard_normal((200, 1, 64)).astype(np.float32)
    big[0, 0, 0] = 40.0
    np.savez(d / "calib_outlier.npz", x=big)
    np.save(d / "x.npy", rng.standard_normal((1, 64)).astype(np.float32))
    _tuning_db(d)
    # the baseline every compile case is compared with: -O3, fp32, batch 1, host CPU
    assert main(["compile", str(d / "m.onnx"), "-t", "x86", "-o", str(d / "base.so"), "-q", "--no-cache",
                 "--report", str(d / "base.r.json")]) == 0
    return d


def _tuning_db(d: Path) -> None:
    """A tuning database giving the first matmul kernel of the batch-1 compile a non-default schedule."""
    from nnc.backends.x86.target import host
    from nnc.tune import model_kernels

    k = model_kernels(str(d / "m.onnx"), dims={"N": 1})[0]
    h = host()
    sched = {"kind": "gemm", "mr": 4, "nv": 1, "kc": 128, "mc": 96, "nc": 512, "vector_bits": h.vector_bits,
             "order": "mn", "tm": 0, "tn": 0}
    rec = {"cpu": h.cpu, "features": h.features, "key": k.key, "signature": k.signature, "schedule": sched,
           "default": False, "us": 1.0, "ok": True}
    (d / "tune.jsonl").write_text(json.dumps(rec) + "\n")
    (d / "tune.key").write_text(k.key)


def _run_cli(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    capsys.readouterr()
    status = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return status, out, err


def _manifest(path: Path) -> dict[str, Any]:
    return json.loads(path.with_suffix(".json").read_text())


def _x(work: Path, batch: int = 1) -> np.ndarray:
    return np.tile(np.load(work / "x.npy"), (batch, 1))


def _base(work: Path) -> dict[str, Any]:
    return _manifest(work / "base.so")


def _lib_out(work: Path, name: str, batch: int = 1) -> np.ndarray:
    return nnc.load(work / name)(_x(work, batch))


# each check gets (work folder, the library path, stdout) after a successful `nnc compile ... -o lib`
Check = Callable[[Path, Path, str], None]


def _kernels(lib: Path) -> int:
    return _manifest(lib)["report"]["kernels"]["count"]


def check_o0(work: Path, lib: Path, out: str) -> None:
    assert _kernels(lib) > _kernels(work / "base.so")  # unfused: more kernels in the library
    np.testing.assert_allclose(_lib_out(work, lib.name), _lib_out(work, "base.so"), rtol=1e-5)


def check_passes(work: Path, lib: Path, out: str) -> None:
    assert _manifest(lib)["report"]["pipeline"] == "freeze,fold-constants,dce"
    assert _kernels(lib) > _kernels(work / "base.so")


def check_disable(work: Path, lib: Path, out: str) -> None:
    assert "fuse" not in [p["name"] for p in _manifest(lib)["report"]["passes"]]
    assert _kernels(lib) > _kernels(work / "base.so")


def check_int8(work: Path, lib: Path, out: str) -> None:
    w, base = _manifest(lib)["weights"]["nbytes"], _base(work)["weights"]["nbytes"]
    assert w < 0.35 * base  # int8 weights: about a quarter (plus per-channel scales and i32 biases)
    ops = {k["op"] for k in _manifest(lib)["report"]["kernels"]["list"]}
    assert ops & {"qmatmul", "qconv", "quantize_linear", "requantize"}, ops
    jit = nnc.compile(work / "m.onnx", target="x86", quantize="int8", calibration=str(work / "calib.npz"),
                      dims={"N": 1}, quiet=True)
    np.testing.assert_array_equal(_lib_out(work, lib.name), jit(_x(work)))  # the INT8 model, bit for bit
    assert not np.array_equal(_lib_out(work, lib.name), _lib_out(work, "base.so"))


def check_observer(work: Path, lib: Path, out: str) -> None:
    assert _manifest(lib)["report"]["options"]["observer"] == "percentile"
    minmax = nnc.compile(work / "m.onnx", target="x86", quantize="int8", calibration=str(work / "calib_outlier.npz"),
                         dims={"N": 1}, quiet=True)
    assert not np.array_equal(_lib_out(work, lib.name), minmax(_x(work)))  # other ranges, other outputs


def _weight_stats(report: dict[str, Any]) -> dict[str, int]:
    return next(p["stats"] for p in report["passes"] if p["name"] == "quantize-weights")


def _int4_jit(work: Path, **options: Any) -> Any:
    return nnc.compile(work / "m.onnx", target="x86", quantize="int4-weights", dims={"N": 1}, quiet=True, cache=False,
                       **options)


def check_int4_weights(work: Path, lib: Path, out: str) -> None:
    w, base = _manifest(lib)["weights"]["nbytes"], _base(work)["weights"]["nbytes"]
    assert w < 0.2 * base  # 4-bit codes and an f32 scale per 32 weights: 5 bits of 32 (and the f32 bias)
    ops = {k["op"] for k in _manifest(lib)["report"]["kernels"]["list"]}
    assert "matmul_nbits" in ops and "matmul" not in ops, ops
    np.testing.assert_array_equal(_lib_out(work, lib.name), _int4_jit(work)(_x(work)))
    assert not np.array_equal(_lib_out(work, lib.name), _lib_out(work, "base.so"))


def check_quantize_group(work: Path, lib: Path, out: str) -> None:
    report = _manifest(lib)["report"]
    assert report["options"]["quantize_group"] == 128
    g32 = _int4_jit(work)
    assert _weight_stats(report)["quantized_weight_bytes"] < _weight_stats(g32.report)["quantized_weight_bytes"]
    assert not np.array_equal(_lib_out(work, lib.name), g32(_x(work)))  # other blocks, other weights


def check_quantize_asymmetric(work: Path, lib: Path, out: str) -> None:
    report = _manifest(lib)["report"]
    assert report["options"]["quantize_asymmetric"] is True
    sym = _int4_jit(work)  # the zero points add a byte per block
    assert _weight_stats(report)["quantized_weight_bytes"] > _weight_stats(sym.report)["quantized_weight_bytes"]
    assert not np.array_equal(_lib_out(work, lib.name), sym(_x(work)))


def check_print_after(work: Path, lib: Path, out: str) -> None:
    assert "IR after fuse" in out or "after fuse" in out
    assert "fused" in out  # the printed IR holds the fused kernel


def check_print_before(work: Path, lib: Path, out: str) -> None:
    assert "before fuse" in out and "matmul" in out


def check_time_passes(work: Path, lib: Path, out: str) -> None:
    assert "fuse" in out and "freeze" in out


def check_dump_dir(work: Path, lib: Path, out: str) -> None:
    files = sorted(p.name for p in (work / "dumps").iterdir())
    assert files and all(f.endswith(".nnc") for f in files) and any("fuse" in f for f in files)


def check_dim(work: Path, lib: Path, out: str) -> None:
    assert _manifest(lib)["inputs"][0]["shape"] == [4, 64] and _manifest(lib)["bound_dims"] == {"N": 4}
    np.testing.assert_allclose(_lib_out(work, lib.name, 4)[:1], _lib_out(work, "base.so"), rtol=1e-5)


def check_threads(work: Path, lib: Path, out: str) -> None:
    assert _manifest(lib)["threads"] == 2 and _manifest(lib)["report"]["options"]["threads"] == 2


def check_cpu(work: Path, lib: Path, out: str) -> None:
    man = _manifest(lib)
    assert man["target"]["cpu"] == "x86-64" and man["target"]["vector_bits"] == 128
    np.testing.assert_allclose(_lib_out(work, lib.name), _lib_out(work, "base.so"), rtol=1e-5)


def check_features(work: Path, lib: Path, out: str) -> None:
    assert _manifest(lib)["target"]["features"] == "+sse4.2,+avx2,+fma"
    assert _manifest(lib)["target"]["vector_bits"] == 256


def check_report(work: Path, lib: Path, out: str) -> None:
    r = json.loads((work / "r.json").read_text())
    assert {"arena_bytes", "lower_bound_bytes", "no_reuse_bytes"} <= set(r["memory"])
    assert r["kernels"] == _manifest(lib)["report"]["kernels"]


def check_tuning_db(work: Path, lib: Path, out: str) -> None:
    tuning = _manifest(lib)["report"]["x86"]["tuning"]
    assert tuning["from_db"] == 1 and "tuning:  1 of" in out
    mine = next(k for k in tuning["kernels"] if k["key"] == (work / "tune.key").read_text())
    assert mine["source"] == "db" and mine["schedule"]["mr"] == 4 and mine["schedule"]["order"] == "mn"
    np.testing.assert_allclose(_lib_out(work, lib.name), _lib_out(work, "base.so"), rtol=1e-5)


def check_verify_each(work: Path, lib: Path, out: str) -> None:
    assert _manifest(lib)["report"]["options"]["verify_each"] is True


def check_explain(work: Path, lib: Path, out: str) -> None:
    assert _manifest(lib)["report"]["options"]["explain_fusion"] is True and "fusion" in _manifest(lib)["report"]


def check_plugin(work: Path, lib: Path, out: str) -> None:
    assert "strength-reduce-pow" in _manifest(lib)["report"]["pipeline"]


def check_quiet(work: Path, lib: Path, out: str) -> None:
    assert out == ""  # nothing on stdout or stderr


def check_train(work: Path, lib: Path, out: str) -> None:
    assert lib.exists() and Path(str(lib)[:-3] + ".init.npz").exists()
    man = _manifest(lib)
    assert man["report"]["mode"] == "train" and man["inputs"][0]["shape"] == [4, 64]
    assert man["outputs"][0]["name"] == "loss"


COMPILE_CASES: dict[str, tuple[list[str], Check]] = {
    "-O0": (["-O0"], check_o0),
    "--passes": (["--passes", "freeze,fold-constants,dce"], check_passes),
    "--disable-pass": (["--disable-pass", "fuse"], check_disable),
    "--quantize": (["--quantize", "int8", "--calibration", "{w}/calib.npz"], check_int8),
    "--observer": (["--quantize", "int8", "--calibration", "{w}/calib_outlier.npz", "--observer", "percentile"],
                   check_observer),
    "--quantize int4-weights": (["--quantize", "int4-weights"], check_int4_weights),
    "--quantize-group": (["--quantize", "int4-weights", "--quantize-group", "128"], check_quantize_group),
    "--quantize-asymmetric": (["--quantize", "int4-weights", "--quantize-asymmetric"], check_quantize_asymmetric),
    "--print-ir-after": (["--print-ir-after", "fuse"], check_print_after),
    "--print-ir-before": (["--print-ir-before", "fuse"], check_print_before),
    "--time-passes": (["--time-passes"], check_time_passes),
    "--dump-dir": (["--dump-dir", "{w}/dumps"], check_dump_dir),
    "--dim": (["--dim", "N=4"], check_dim),
    "--threads": (["--threads", "2"], check_threads),
    "--cpu": (["--cpu", "x86-64"], check_cpu),
    "--target-features": (["--target-features", "+sse4.2,+avx2,+fma"], check_features),
    "--report": (["--report", "{w}/r.json"], check_report),
    "--tuning-db": (["--tuning-db", "{w}/tune.jsonl"], check_tuning_db),
    "--verify-each": (["--verify-each"], check_verify_each),
    "--explain-fusion": (["--explain-fusion"], check_explain),
    "--load-pass-plugin": (["--load-pass-plugin", str(EXAMPLES / "passes" / "strength_reduce_pow.py"), "--passes",
                            "freeze,strength-reduce-pow,fuse"], check_plugin),
    "-q": (["-q"], check_quiet),
    "--mode train": (["--mode", "train", "--batch-size", "4", "--loss", "mse"], check_train),
}


@pytest.mark.parametrize("case", list(COMPILE_CASES))
def test_compile_flag_changes_the_library(case: str, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags, check = COMPILE_CASES[case]
    lib = work / f"case{list(COMPILE_CASES).index(case)}.so"
    flags = [f.replace("{w}", str(work)) for f in flags]
    status, out, err = _run_cli(capsys, "compile", work / "m.onnx", "-t", "x86", "--no-cache", "-o", lib, *flags)
    assert status == 0, err
    check(work, lib, out + err)  # the IR dumps and pass timings go to stderr


# flags that cannot apply: an error naming the flag, nothing written
ERROR_CASES: dict[str, tuple[list[str], str]] = {
    "x86 flag on reference": (["compile", "{m}", "-t", "reference", "--threads", "2"], "--threads"),
    "tuning db on reference": (["compile", "{m}", "-t", "reference", "--tuning-db", "{w}/tune.jsonl"], "--tuning-db"),
    "tuning db missing": (["compile", "{m}", "-t", "x86", "--tuning-db", "{w}/none.jsonl", "-o", "{w}/e.so"],
                          "none.jsonl: no such file"),
    "asic flag on x86": (["compile", "{m}", "-t", "x86", "--asic-preset", "x1", "-o", "{w}/e.so"], "--asic-preset"),
    "calibration without quantize": (["compile", "{m}", "-t", "x86", "--calibration", "{w}/calib.npz"],
                                     "--calibration"),
    "quantize on asic": (["compile", "{m}", "-t", "asic", "--quantize", "int8"], "quantize"),
    "group without int4": (["compile", "{m}", "-t", "x86", "--quantize", "int8-weights", "--quantize-group", "64"],
                           "--quantize-group"),
    "group 48": (["compile", "{m}", "-t", "x86", "--quantize", "int4-weights", "--quantize-group", "48"],
                 "quantize_group=48"),
    "head without weight-only": (["compile", "{m}", "-t", "x86", "--quantize-head", "int8"], "--quantize-head"),
    "int4 head with int8-weights": (["compile", "{m}", "-t", "x86", "--quantize", "int8-weights", "--quantize-head",
                                     "int4"], "quantize_head='int4'"),
    "asymmetric without weight-only": (["compile", "{m}", "-t", "x86", "--quantize-asymmetric"],
                                       "--quantize-asymmetric"),
    "-O on asic": (["compile", "{m}", "-t", "asic", "-O2"], "-O"),
    "train option in infer": (["compile", "{m}", "-t", "x86", "--lr", "0.1"], "--lr"),
    "quantize in train": (["compile", "{m}", "-t", "x86", "--mode", "train", "--quantize", "int8"], "--quantize"),
    "-O with --passes": (["compile", "{m}", "-t", "x86", "-O1", "--passes", "freeze"], "--passes"),
    "unknown dim": (["compile", "{m}", "-t", "x86", "--dim", "B=2"], "B"),
    "asic cannot save": (["compile", "{m}", "-t", "asic", "--dim", "N=1", "-o", "{w}/e.so"], "cannot save"),
    "wrong suffix": (["compile", "{m}", "-t", "x86", "-o", "{w}/e.nnc"], "*.so"),
    "report over manifest": (["compile", "{m}", "-t", "x86", "-o", "{w}/e.so", "--report", "{w}/e.json"],
                             "overwrite"),
    "compile flag on a library": (["run", "{w}/base.so", "--random-inputs", "-O0"], "compiled model"),
    "bench print-ir": (["bench", "{m}", "--print-ir-after", "fuse"], "--print-ir-after"),
}


@pytest.mark.parametrize("case", list(ERROR_CASES))
def test_inapplicable_flag_is_an_error(case: str, work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv, needle = ERROR_CASES[case]
    argv = [a.replace("{m}", str(work / "m.onnx")).replace("{w}", str(work)) for a in argv]
    status, out, err = _run_cli(capsys, *argv)
    assert status == 1 and err.startswith("nnc: error:") and needle in err and len(err.strip().splitlines()) == 1
    assert not (work / "e.so").exists() and not (work / "e.json").exists()


RUN_CASES: dict[str, tuple[list[str], Callable[[Path, dict], bool]]] = {
    # each predicate compares the run's output with the plain x86 run's
    "-O0": (["-O0"], lambda w, r: "fuse" in r["base"]["pipeline"] and "fuse" not in r["report"]["pipeline"]),
    "--quantize": (["--quantize", "int8", "--calibration", "{w}/calib.npz"],
                   lambda w, r: not np.array_equal(r["y"], r["base_y"]) and
                   np.allclose(r["y"], r["base_y"], rtol=0.2, atol=0.2)),
    "--quantize int8-weights": (["--quantize", "int8-weights"],
                                lambda w, r: not np.array_equal(r["y"], r["base_y"]) and
                                np.allclose(r["y"], r["base_y"], rtol=0.05, atol=0.05)),
    "--dim": (["--dim", "N=1"], lambda w, r: r["report"]["bound_dims"] == {"N": 1}),
    "--threads": (["--threads", "2"], lambda w, r: r["report"]["options"]["threads"] == 2),
    "--passes": (["--passes", "freeze,dce"], lambda w, r: r["report"]["pipeline"] == "freeze,dce"),
}


@pytest.mark.parametrize("case", list(RUN_CASES))
def test_run_flag_changes_the_run(case: str, work: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    flags, pred = RUN_CASES[case]
    flags = [f.replace("{w}", str(work)) for f in flags]
    common = ["run", work / "m.onnx", "-t", "x86", "-i", f"x={work / 'x.npy'}", "--no-cache", "-q"]
    assert _run_cli(capsys, *common, "-o", tmp_path / "b", "--report", tmp_path / "b.json")[0] == 0
    status, _, err = _run_cli(capsys, *common, *flags, "-o", tmp_path / "c", "--report", tmp_path / "c.json")
    assert status == 0, err
    r = {"report": json.loads((tmp_path / "c.json").read_text()), "base": json.loads((tmp_path / "b.json").read_text()),
         "y": np.load(tmp_path / "c" / "y.npy"), "base_y": np.load(tmp_path / "b" / "y.npy")}
    assert pred(work, r)


@pytest.mark.parametrize("base, compare, label_a, label_b", [
    (["-O3"], "-O0", "nnc -O3", "nnc -O0"),
    (["--quantize", "int8", "--calibration", "{w}/calib.npz"], "fp32", "nnc int8", "nnc fp32"),
    (["--quantize", "int4-weights"], "fp32", "nnc int4-weights", "nnc fp32"),
    (["--mode", "train", "--batch-size", "4", "--loss", "mse"], "infer", "nnc train", "nnc infer"),
])
def test_bench_compare_prints_both_rows_and_the_ratio(base: list[str], compare: str, label_a: str, label_b: str,
                                                      work: Path, capsys: pytest.CaptureFixture[str]) -> None:
    flags = [f.replace("{w}", str(work)) for f in base]
    status, out, err = _run_cli(capsys, "bench", work / "m.onnx", *flags, "--compare", compare, "--rounds", "1",
                                "--budget", "0", "--no-ort", "--dim", "N=1")
    assert status == 0, err + out
    rows = {line.split()[0] + " " + line.split()[1]: line for line in out.splitlines()
            if line.startswith("  nnc ") and " / " not in line}
    assert label_a in rows and label_b in rows, out
    assert f"{label_a} / {label_b} median latency:" in out and f"{label_a} / {label_b} arena:" in out
    arena = {k: float(v.split()[-1]) for k, v in rows.items() if k in (label_a, label_b)}
    assert all(a > 0 for a in arena.values())
    if compare == "infer":  # a training step keeps activations and gradients: a bigger arena
        assert arena[label_a] > arena[label_b]


def test_quantize_head_changes_the_library(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """--quantize-head through `nnc compile -o` (on a model with an output layer: the matrix model's
    last product goes through Exp, so it has none): the library's head is what the flag says, and
    the library computes what the JIT does with the same option."""
    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32) * 0.1, n)
             for n, s in (("w1", (64, 128)), ("w2", (128, 256)))]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
             helper.make_node("MatMul", ["r", "w2"], ["y"])]
    g = helper.make_graph(nodes, "head", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 64])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 256])], inits)
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "h.onnx")
    x = rng.standard_normal((1, 64)).astype(np.float32)
    outs = {}
    for head in ("int8", "float"):
        lib = tmp_path / f"{head}.so"
        status, _, err = _run_cli(capsys, "compile", tmp_path / "h.onnx", "-t", "x86", "--no-cache", "-q", "-o", lib,
                                  "--quantize", "int4-weights", "--quantize-head", head)
        assert status == 0, err
        stats = _weight_stats(_manifest(lib)["report"])
        assert stats["output_layers"] == 1 and stats["output_layers_quantized"] == (head == "int8")
        outs[head] = nnc.load(lib)(x)
        jit = nnc.compile(tmp_path / "h.onnx", target="x86", quantize="int4-weights", quantize_head=head, quiet=True,
                          cache=False)
        np.testing.assert_array_equal(outs[head], jit(x))
    assert not np.array_equal(outs["int8"], outs["float"])


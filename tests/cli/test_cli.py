"""The ``nnc`` command line, run for real in a subprocess: exit codes, what it prints, the files it
writes (checked against onnxruntime), and that failures leave nothing half-written.

Bad model files and bad inputs are covered in tests/frontends/test_bad_input.py.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import nnc

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
MLP, MLP_INPUT, CNN = EXAMPLES / "mlp.onnx", EXAMPLES / "mlp_input.npy", EXAMPLES / "cnn.onnx"


def nnc_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnc", *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, timeout=60)


def nnc_cli_all(*arglists: list, cwd: Path | None = None) -> list[subprocess.CompletedProcess]:
    """Independent invocations side by side: each is a real process, the suite just waits less."""
    procs = [subprocess.Popen([sys.executable, "-m", "nnc", *map(str, a)], cwd=cwd, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for a in arglists]
    done = []
    for a, p in zip(arglists, procs):
        out, err = p.communicate(timeout=60)
        done.append(subprocess.CompletedProcess([*a], p.returncode, out, err))
    return done


def ok(r: subprocess.CompletedProcess) -> str:
    assert r.returncode == 0, (r.returncode, r.stdout, r.stderr)
    assert r.stderr == ""
    return r.stdout


def error_line(r: subprocess.CompletedProcess, status: int = 1) -> str:
    assert r.returncode == status, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("nnc: error: "), r.stderr
    return lines[0]


def ort_run(path: Path, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in s.get_outputs()], s.run(None, feeds)))


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")]


# -- top level ----------------------------------------------------------------------------------
def test_version() -> None:
    assert ok(nnc_cli("--version")).strip() == f"nnc {nnc.__version__}"


def test_help() -> None:
    commands = [[], ["compile"], ["run"], ["dump"], ["ops"], ["bench"], ["memory"], ["train"], ["asic-report"],
                ["asic-sweep"]]
    for command, r in zip(commands, nnc_cli_all(*[c + ["--help"] for c in commands])):
        out = ok(r)
        assert out.startswith("usage: nnc" + "".join(" " + c for c in command)), command
        assert "example" in out, command


def test_usage_errors_exit_2() -> None:
    cases = ([], ["frobnicate"], ["run", "m.onnx", "--input", "no-equals-sign"],
             ["compile", "m.onnx", "--mode", "sideways"])
    for args, r in zip(cases, nnc_cli_all(*cases)):
        assert r.returncode == 2, args
        assert "usage: nnc" in r.stderr and "Traceback" not in r.stderr, args


def test_console_script() -> None:
    exe = shutil.which("nnc")
    if exe is None:
        pytest.skip("the nnc script is not on PATH (package not pip-installed)")
    r = subprocess.run([exe, "--version"], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == f"nnc {nnc.__version__}"


# -- run ----------------------------------------------------------------------------------------
def test_the_readme_first_command_runs(tmp_path: Path) -> None:
    """The nnc command of the README's first line, exactly as written there (it once asked for a
    --dim the example model does not have, and failed)."""
    import shlex

    readme = (REPO / "README.md").read_text()
    first = readme.split("```bash\n", 1)[1].splitlines()[0]
    install, command = first.split(" && ", 1)
    assert install.startswith("pip install")
    argv = shlex.split(command)
    assert argv[0] == "nnc"
    out = ok(nnc_cli(*argv[1:], cwd=REPO))
    assert re.search(r"^output \w+: f32\[", out, re.M), out


def test_run_mlp_example_matches_onnxruntime(tmp_path: Path) -> None:
    x = np.load(MLP_INPUT)
    want = ort_run(MLP, {"x": x})["logits"]
    out = ok(nnc_cli("run", MLP, "--input", f"x={MLP_INPUT}", "--output-dir", tmp_path / "out"))
    got = np.load(tmp_path / "out" / "logits.npy")
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)  # f32 GEMMs summed in another order
    line = next(s for s in out.splitlines() if s.startswith("output logits"))
    assert "f32[1,10]" in line
    assert f"argmax={int(np.argmax(want))}" in line
    stats = dict(re.findall(r"\b(min|max|mean)=(\S+)", line))
    for k, v in (("min", want.min()), ("max", want.max()), ("mean", want.mean())):
        assert float(stats[k]) == pytest.approx(float(v), rel=1e-3, abs=1e-4)  # printed to 4 digits
    assert "input  x: f32[1,784]" in out


def test_run_cnn_example_matches_onnxruntime(tmp_path: Path) -> None:
    out = ok(nnc_cli("run", CNN, "--random-inputs", "--seed", "3", "--output-dir", tmp_path))
    assert "input  image: f32[1,1,28,28]  (random, seed 3)" in out
    image = np.random.default_rng(3).standard_normal((1, 1, 28, 28)).astype(np.float32)
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), ort_run(CNN, {"image": image})["logits"],
                               rtol=1e-4, atol=1e-5)  # f32 convolutions accumulate in another order


def test_run_random_inputs_with_symbolic_batch(tmp_path: Path) -> None:
    out = ok(nnc_cli("run", MLP, "--random-inputs", "--dim", "N=3", "--seed", "7", "-o", tmp_path, "-q"))
    assert out.splitlines()[0].startswith("output logits: f32[3,10]")
    x = np.random.default_rng(7).standard_normal((3, 784)).astype(np.float32)  # documented generator
    np.testing.assert_allclose(np.load(tmp_path / "logits.npy"), ort_run(MLP, {"x": x})["logits"],
                               rtol=1e-5, atol=1e-6)


def test_run_output_names_become_safe_file_names(tmp_path: Path) -> None:
    g = onnx.helper.make_graph(
        [onnx.helper.make_node("Relu", ["x"], ["out/relu:0"]), onnx.helper.make_node("Neg", ["x"], ["../neg"])],
        "g", [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [2])],
        [onnx.helper.make_tensor_value_info("out/relu:0", onnx.TensorProto.FLOAT, [2]),
         onnx.helper.make_tensor_value_info("../neg", onnx.TensorProto.FLOAT, [2])])
    onnx.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "m.onnx")
    np.save(tmp_path / "x.npy", np.array([-1.0, 2.0], np.float32))
    ok(nnc_cli("run", "m.onnx", "-i", "x=x.npy", "-o", "res", cwd=tmp_path))
    assert sorted(os.listdir(tmp_path / "res")) == ["_neg.npy", "out_relu_0.npy"]
    np.testing.assert_array_equal(np.load(tmp_path / "res" / "out_relu_0.npy"), [0.0, 2.0])
    np.testing.assert_array_equal(np.load(tmp_path / "res" / "_neg.npy"), [1.0, -2.0])


def test_run_output_dir_is_a_file(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    line = error_line(nnc_cli("run", MLP, "-i", f"x={MLP_INPUT}", "-o", tmp_path / "taken"))
    assert "taken" in line and "not a folder" in line


# -- compile ------------------------------------------------------------------------------------
def test_compile_writes_text_ir_and_weights_that_load_back(tmp_path: Path) -> None:
    out = ok(nnc_cli("compile", MLP, "--target", "reference", "--mode", "infer", "-o", tmp_path / "mlp.nnc"))
    assert "mlp.nnc" in out and "mlp.npz" in out and "mlp.json" in out
    assert sorted(os.listdir(tmp_path)) == ["mlp.json", "mlp.nnc", "mlp.npz"]  # IR, weights, manifest + report
    x = np.load(MLP_INPUT)
    want = ort_run(MLP, {"x": x})["logits"]
    np.testing.assert_allclose(nnc.compile(str(tmp_path / "mlp.nnc"))(x), want, rtol=1e-5, atol=1e-6)
    loaded = nnc.load(tmp_path / "mlp.nnc")  # the saved model with the report it was compiled with
    assert loaded.target == "reference" and loaded.report["kernels"]["count"] >= 1
    np.testing.assert_allclose(loaded(x), want, rtol=1e-5, atol=1e-6)
    # and through the CLI again
    ok(nnc_cli("run", tmp_path / "mlp.nnc", "-i", f"x={MLP_INPUT}", "-o", tmp_path / "out", "-q"))
    np.testing.assert_allclose(np.load(tmp_path / "out" / "logits.npy"), want, rtol=1e-5, atol=1e-6)


def test_compile_output_keeps_every_weight_dtype(tmp_path: Path) -> None:
    """Weights of every storage kind survive FILE.nnc + FILE.npz (bf16 has no numpy dtype of its own)."""
    import ml_dtypes

    weights = {
        "w_bf16": (onnx.TensorProto.BFLOAT16, (np.arange(12) - 5.5).astype(ml_dtypes.bfloat16)),
        "w_f16": (onnx.TensorProto.FLOAT16, (np.arange(12) / 7).astype(np.float16)),
        "w_bool": (onnx.TensorProto.BOOL, np.arange(12) % 3 == 0),
        "w/i64:0": (onnx.TensorProto.INT64, np.arange(12, dtype=np.int64) * -3),
        "file": (onnx.TensorProto.FLOAT, np.linspace(-1, 1, 12, dtype=np.float32)),  # np.savez's own kwarg
    }
    inits = [onnx.helper.make_tensor(n, t, [12], a.tobytes(), raw=True) for n, (t, a) in weights.items()]
    nodes = [onnx.helper.make_node("Identity", [n], [f"y{i}"]) for i, n in enumerate(weights)]
    outs = [onnx.helper.make_tensor_value_info(f"y{i}", t, [12]) for i, (t, _) in enumerate(weights.values())]
    g = onnx.helper.make_graph(nodes, "g", [], outs, inits)
    onnx.save(onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", 17)]), tmp_path / "w.onnx")
    ok(nnc_cli("compile", "w.onnx", "-q", "-o", "w.nnc", cwd=tmp_path))
    got = nnc.compile(str(tmp_path / "w.nnc")).run({})
    for i, (_, want) in enumerate(weights.values()):
        assert got[f"y{i}"].dtype == want.dtype
        np.testing.assert_array_equal(got[f"y{i}"], want)


def test_compile_without_output_writes_nothing(tmp_path: Path) -> None:
    out = ok(nnc_cli("compile", MLP, cwd=tmp_path))
    assert "inputs:  x: f32[N,784]" in out and "outputs: logits: f32[N,10]" in out
    assert os.listdir(tmp_path) == []


def test_compile_errors(tmp_path: Path) -> None:
    cases = {
        ("--target", "gpu"): ["unknown target 'gpu'", "available targets: reference, x86"],
        ("--target", "asic"): ["asic", "symbolic input dims", "static shapes"],
        ("--mode", "train", "--memory-budget", "0.5"): ["remat", "symbolic dims", "--batch-size"],
        ("-o", tmp_path / "mlp.so"): ["*.nnc", "mlp.so"],
        ("-o", tmp_path / "no" / "such" / "dir.nnc"): ["dir.nnc", "No such file or directory"],
    }
    for (args, needles), r in zip(cases.items(), nnc_cli_all(*[["compile", MLP, *a] for a in cases])):
        line = error_line(r)
        assert all(n in line for n in needles), (args, line)
    assert os.listdir(tmp_path) == []


def test_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    # the weights can be written, the IR cannot (a folder is in the way): neither may appear, and no
    # temporary file may be left
    (tmp_path / "mlp.nnc").mkdir()
    line = error_line(nnc_cli("compile", MLP, "-o", tmp_path / "mlp.nnc"))
    assert "mlp.nnc" in line
    assert sorted(os.listdir(tmp_path)) == ["mlp.nnc"] and leftovers(tmp_path) == []


def test_output_replaces_existing_file_atomically(tmp_path: Path) -> None:
    (tmp_path / "mlp.nnc").write_text("old")
    ok(nnc_cli("compile", MLP, "-q", "-o", tmp_path / "mlp.nnc"))
    assert (tmp_path / "mlp.nnc").read_text().startswith("module @mlp")
    assert leftovers(tmp_path) == []


# -- dump ---------------------------------------------------------------------------------------
def test_dump_prints_text_ir(tmp_path: Path) -> None:
    text = ok(nnc_cli("dump", MLP))
    assert "graph @main(%x: f32[N,784]) -> (logits: f32[N,10])" in text
    # the Gemm/Relu node names survive into the IR, and the text is the module's own print
    assert "%relu1" in text and "%logits" in text
    assert text == str(nnc.parse(text))
    ok(nnc_cli("dump", MLP, "-o", tmp_path / "mlp.txt"))
    assert (tmp_path / "mlp.txt").read_text() == text


# -- ops ----------------------------------------------------------------------------------------
def test_ops_table() -> None:
    from nnc.frontends.onnx.registry import supported

    out = ok(nnc_cli("ops"))
    table = {}
    for line in out.splitlines()[1:]:
        m = re.match(r"^(\S+)\s+([\d, ]+?)\s{2,}(\S.*)$", line)
        if m:
            table[m.group(1)] = ([int(v) for v in m.group(2).split(",")], m.group(3).split(", "))
    sup = supported()
    assert len(table) == len(sup)
    for (domain, op), since in sup.items():
        got_since, targets = table[f"{domain}.{op}" if domain else op]
        assert got_since == since and targets[0] == "reference"  # x86 coverage: tests/cli/test_cli_x86.py
        assert all(re.fullmatch(r"x86( \(\d+ of \d+ forms\))?", t) for t in targets[1:])
    assert f"{len(sup)} ONNX ops have converters" in out


def _probe_type(schema: onnx.defs.OpSchema, formal: onnx.defs.OpSchema.FormalParameter) -> int:
    allowed = {c.type_param_str: list(c.allowed_type_strs) for c in schema.type_constraints}
    choices = allowed.get(formal.type_str, [formal.type_str])
    pick = next((t for t in ("tensor(float)", "tensor(int64)") if t in choices), choices[0])
    return onnx.helper.np_dtype_to_tensor_dtype(onnx.helper.tensor_dtype_to_np_dtype(
        getattr(onnx.TensorProto, pick[len("tensor("):-1].upper())))


def test_ops_function_expansion_list_imports() -> None:
    """Every op the table says imports through its function body really does."""
    from nnc.cli import function_expanded_ops

    for op, opset in function_expanded_ops().items():
        schema = onnx.defs.get_schema(op, opset)
        ins = [onnx.helper.make_tensor_value_info(f"i{k}", _probe_type(schema, f), None)
               for k, f in enumerate(schema.inputs)]
        node = onnx.helper.make_node(op, [vi.name for vi in ins], ["y"])
        g = onnx.helper.make_graph([node], "g", ins, [onnx.helper.make_tensor_value_info("y", 1, None)])
        model = onnx.helper.make_model(g, opset_imports=[onnx.helper.make_opsetid("", opset)])
        try:
            nnc.from_onnx(model)
        except nnc.UnsupportedOpError as e:
            pytest.fail(f"{op}: listed as importing through its function body, but: {e}")


# -- examples -----------------------------------------------------------------------------------
def test_examples_rebuild_byte_for_byte(tmp_path: Path) -> None:
    r = subprocess.run([sys.executable, str(EXAMPLES / "build_examples.py"), "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    for name in ("mlp.onnx", "cnn.onnx", "mlp_input.npy"):
        assert (tmp_path / name).read_bytes() == (EXAMPLES / name).read_bytes(), name

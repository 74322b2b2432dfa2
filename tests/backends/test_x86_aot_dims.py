"""Libraries with run-time dims (backends/x86/aot_dims.py, frame_formulas.py): one ``.so`` of a model
with symbolic dims takes the input shapes at each call, up to the maxima it was built for.

The C test builds a program with gcc against the generated header and runs ONE library of a small
transformer (symbolic batch and sequence, attention reshapes computed by Shape -> Gather -> Concat)
at two batch sizes and two sequence lengths; onnxruntime on the same file is the oracle. Then the
status codes, models with a symbolic batch from Python (``nnc.load``), the refusals, and the CLI."""

from __future__ import annotations

import ctypes
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper
from test_x86_aot import build_c_program

import nnc
from nnc.cli import main as cli_main
from nnc.ir import InputError, NncError, TargetError

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="AOT links with gcc")

D, HEADS, VOCAB = 16, 2, 50
MAX = {"batch": 4, "sequence": 16}
CASES = [(1, 5), (3, 5), (1, 16), (3, 16)]  # two batch sizes x two sequence lengths


def transformer_onnx() -> onnx.ModelProto:
    """Token embedding, one self-attention layer with its head split and merge as exporters write
    them (the Reshape targets computed from Shape -> Gather -> Concat), output projection, residual."""
    rng = np.random.default_rng(0)
    hd = D // HEADS

    def w(name: str, *shape: int) -> onnx.TensorProto:
        return numpy_helper.from_array((rng.standard_normal(shape) * 0.3).astype(np.float32), name)

    def i64(name: str, values: list[int]) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(values, np.int64), name)

    inits = [w("emb", VOCAB, D), w("wq", D, D), w("wk", D, D), w("wv", D, D), w("wo", D, D), w("bo", D),
             i64("i0", [0]), i64("i1", [1]), i64("heads", [HEADS, hd]), i64("width", [D]),
             numpy_helper.from_array(np.array(1 / np.sqrt(hd), np.float32), "scale")]
    node = helper.make_node
    nodes = [node("Gather", ["emb", "ids"], ["x"]), node("Shape", ["x"], ["xs"]),
             node("Gather", ["xs", "i0"], ["b"]), node("Gather", ["xs", "i1"], ["s"]),
             node("Concat", ["b", "s", "heads"], ["split"], axis=0),
             node("Concat", ["b", "s", "width"], ["merge"], axis=0)]
    for t in "qkv":
        nodes += [node("MatMul", ["x", f"w{t}"], [f"{t}0"]), node("Reshape", [f"{t}0", "split"], [f"{t}1"]),
                  node("Transpose", [f"{t}1"], [f"{t}2"], perm=[0, 2, 3, 1] if t == "k" else [0, 2, 1, 3])]
    nodes += [node("MatMul", ["q2", "k2"], ["sc0"]), node("Mul", ["sc0", "scale"], ["sc"]),
              node("Softmax", ["sc"], ["p"], axis=-1), node("MatMul", ["p", "v2"], ["c0"]),
              node("Transpose", ["c0"], ["c1"], perm=[0, 2, 1, 3]), node("Reshape", ["c1", "merge"], ["c2"]),
              node("MatMul", ["c2", "wo"], ["o0"]), node("Add", ["o0", "bo"], ["o1"]), node("Add", ["o1", "x"], ["y"])]
    graph = helper.make_graph(nodes, "tiny_transformer",
                              [helper.make_tensor_value_info("ids", TensorProto.INT64, ["batch", "sequence"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", "sequence", D])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(model)
    return model


def ids_for(b: int, s: int) -> np.ndarray:
    return np.random.default_rng(100 * b + s).integers(0, VOCAB, (b, s)).astype(np.int64)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    folder = tmp_path_factory.mktemp("aot_dims")
    model = folder / "tiny.onnx"
    onnx.save(transformer_onnx(), model)
    cm = nnc.compile(str(model), target="x86", quiet=True, max_dims=MAX)
    files = cm.save(folder / "tiny.so")
    assert sorted(os.path.basename(f) for f in files) == ["tiny.h", "tiny.json", "tiny.so"]
    return model, folder / "tiny.so"


def oracle(model: Path, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
    import onnxruntime as ort

    return ort.InferenceSession(str(model), providers=["CPUExecutionProvider"]).run(None, feeds)


C_PROGRAM = r"""
#include <stdio.h>
#include <stdlib.h>
#include "tiny.h"

static const char *dir;

static FILE *open_at(const char *name, long long b, long long s, const char *mode) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s_%lld_%lld.bin", dir, name, b, s);
    return fopen(path, mode);
}

int main(int argc, char **argv) {
    static const int64_t declared[] = TINY_INPUT_0_SHAPE;
    if (argc != 2 || TINY_NUM_DIMS != 2 || TINY_INPUT_0_RANK != 2 || declared[0] != -1) return 2;
    dir = argv[1];
    tiny_ctx *ctx = tiny_create();
    if (!ctx) return 3;
    char path[4096];
    snprintf(path, sizeof path, "%s/cases.txt", dir);
    FILE *cases = fopen(path, "r");
    long long b, s;
    while (cases && fscanf(cases, "%lld %lld", &b, &s) == 2) {
        int64_t shape[2] = {b, s}, oshape[TINY_OUTPUT_0_RANK], dims[TINY_NUM_DIMS];
        const int64_t *shapes[1] = {shape};
        int64_t *oshapes[1] = {oshape};
        if (tiny_output_shapes(shapes, oshapes) != TINY_OK || tiny_dims(shapes, dims) != TINY_OK) return 4;
        int64_t arena = tiny_arena_bytes(shapes);
        if (arena <= 0 || arena > TINY_ARENA_BYTES) return 5;
        size_t n_in = (size_t)(b * s), n_out = (size_t)(oshape[0] * oshape[1] * oshape[2]);
        TINY_INPUT_0_CTYPE *ids = malloc(n_in * sizeof *ids);
        TINY_OUTPUT_0_CTYPE *y = malloc(n_out * sizeof *y);
        FILE *f = open_at("ids", b, s, "rb");
        if (!ids || !y || !f || fread(ids, sizeof *ids, n_in, f) != n_in) return 6;
        fclose(f);
        const void *in[1] = {ids};
        void *out[1] = {y};
        int st = tiny_run(ctx, in, shapes, out);
        if (st != TINY_OK) { fprintf(stderr, "run: %d %s\n", st, tiny_status_text(st)); return 7; }
        f = open_at("y", b, s, "wb");
        fwrite(y, sizeof *y, n_out, f);
        fclose(f);
        printf("%lld %lld -> %lld %lld %lld dims %lld %lld arena %lld\n", b, s, (long long)oshape[0],
               (long long)oshape[1], (long long)oshape[2], (long long)dims[0], (long long)dims[1], (long long)arena);
        free(ids);
        free(y);
    }
    /* refusals: each returns its status without touching anything */
    int64_t too_big[2] = {TINY_DIM_0_MAX + 1, 4}, too_long[2] = {1, TINY_DIM_1_MAX + 1}, empty[2] = {0, 4};
    const int64_t *bad[1] = {too_big}, *bad_s[1] = {too_long}, *bad_0[1] = {empty}, *missing[1] = {NULL};
    int64_t oshape[3];
    int64_t *oshapes[1] = {oshape};
    int64_t dummy[64] = {0};
    const void *in[1] = {dummy};
    void *out[1] = {dummy};
    printf("status %d %d %d %d %lld %d %d %d %d\n", tiny_run(ctx, in, bad, out), tiny_run(ctx, in, bad_s, out),
           tiny_output_shapes(bad_0, oshapes), tiny_output_shapes(missing, oshapes),
           (long long)tiny_arena_bytes(bad), tiny_run(NULL, in, bad, out), tiny_run(ctx, in, NULL, out),
           TINY_ERR_BOUNDS, TINY_ERR_NULL);
    printf("%s %lld %s\n", tiny_dim_name(1), (long long)tiny_dim_max(0), tiny_status_text(TINY_ERR_BOUNDS));
    tiny_destroy(ctx);
    return 0;
}
"""


def test_c_program_runs_one_library_at_two_batches_and_two_lengths(tiny: tuple[Path, Path], tmp_path: Path) -> None:
    model, so = tiny
    exe = build_c_program(C_PROGRAM, so, tmp_path)
    (tmp_path / "cases.txt").write_text("".join(f"{b} {s}\n" for b, s in CASES))
    for b, s in CASES:
        (tmp_path / f"ids_{b}_{s}.bin").write_bytes(ids_for(b, s).tobytes())
    proc = subprocess.run([str(exe), str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    lines = proc.stdout.splitlines()
    arenas = []
    for (b, s), line in zip(CASES, lines):
        words = line.split()
        assert words[:9] == [str(b), str(s), "->", str(b), str(s), str(D), "dims", str(b), str(s)], line
        arenas.append(int(words[-1]))
        got = np.fromfile(tmp_path / f"y_{b}_{s}.bin", np.float32).reshape(b, s, D)
        # f32 dot products of 16 terms and a softmax over <= 16, summed in another order than onnxruntime's
        np.testing.assert_allclose(got, oracle(model, {"ids": ids_for(b, s)})[0], rtol=1e-5, atol=1e-5)
    # the extent of the plan (made at the maxima) a call uses: never more at smaller dims
    assert arenas == sorted(arenas) and arenas[-1] <= json.loads(so.with_suffix(".json").read_text())["arena_bytes"]
    assert lines[len(CASES)].split() == ["status", "-3", "-3", "-3", "-1", "-3", "-1", "-1", "-3", "-1"]
    assert lines[len(CASES) + 1].startswith(f"sequence {MAX['batch']} a dim is below 1 or above its maximum")


def test_header_and_manifest_document_the_dims(tiny: tuple[Path, Path]) -> None:
    _, so = tiny
    header = so.with_suffix(".h").read_text()
    for text in ("#define TINY_DIM_0_NAME \"batch\"", "#define TINY_DIM_1_MAX 16", "#define TINY_ERR_BOUNDS (-3)",
                 "#define TINY_INPUT_0_SHAPE {-1, -1}", "/* output 0: y: f32[batch, sequence, 16] */",
                 "int tiny_run(tiny_ctx *ctx, const void *const *inputs, const int64_t *const *input_shapes, "
                 "void *const *outputs);", "int64_t tiny_arena_bytes(const int64_t *const *input_shapes);"):
        assert text in header
    man = json.loads(so.with_suffix(".json").read_text())
    assert man["format_version"] == 2 and man["dims"]["symbols"] == ["batch", "sequence"]
    assert man["dims"]["max"] == [4, 16] and man["dims"]["outputs"] == [["batch", "sequence", "16"]]
    assert {"batch": 1, "sequence": 1} in man["dims"]["checked_at"] and MAX in man["dims"]["checked_at"]
    syms = subprocess.run(["nm", "-D", "--defined-only", str(so)], capture_output=True, text=True).stdout
    assert "tiny_output_shapes" in syms and "nnc_entry" not in syms


def test_load_runs_the_library_at_many_shapes(tiny: tuple[Path, Path]) -> None:
    model, so = tiny
    cm = nnc.load(so)
    assert str(cm.input_types["ids"]) == "i64[batch,sequence]"
    for b, s in [(2, 7), (4, 16), (1, 1)]:
        got = cm.run({"ids": ids_for(b, s)})["y"]
        np.testing.assert_allclose(got, oracle(model, {"ids": ids_for(b, s)})[0], rtol=1e-5, atol=1e-5)
    assert cm.executable.output_shapes({"ids": ids_for(2, 3)}) == [(2, 3, D)]
    assert cm.executable.arena_bytes_at({"ids": ids_for(1, 2)}) <= cm.executable.arena_bytes_at({"ids": ids_for(4, 16)})
    with pytest.raises(InputError, match=r"status -3: a dim is below 1 or above its maximum"):
        cm.run({"ids": ids_for(5, 3)})
    with pytest.raises(InputError, match=r"index 77 is out of range"):  # a kernel's own check still reports
        cm.run({"ids": np.full((1, 3), 77, np.int64)})


def cnn_onnx() -> onnx.ModelProto:
    """Conv 3x3 (pad 1) -> ReLU -> 2x2 max pool -> Flatten -> Gemm, over a symbolic batch."""
    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(rng.standard_normal(s).astype(np.float32), n)
             for n, s in (("w", (4, 3, 3, 3)), ("cb", (4,)), ("fw", (10, 64)), ("fb", (10,)))]
    node = helper.make_node
    nodes = [node("Conv", ["x", "w", "cb"], ["c"], pads=[1, 1, 1, 1]), node("Relu", ["c"], ["r"]),
             node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]), node("Flatten", ["p"], ["f"]),
             node("Gemm", ["f", "fw", "fb"], ["y"], transB=1)]
    g = helper.make_graph(nodes, "cnn", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 10])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_mlp_and_cnn_with_a_symbolic_batch(tmp_path: Path) -> None:
    onnx.save(cnn_onnx(), tmp_path / "cnn.onnx")
    for name, shape in (("mlp", (784,)), ("cnn", (3, 8, 8))):
        model = str(EXAMPLES / "mlp.onnx") if name == "mlp" else str(tmp_path / "cnn.onnx")
        cm = nnc.compile(model, target="x86", quiet=True, max_dims={"N": 6})
        cm.save(tmp_path / f"{name}.so")
        lib = nnc.load(tmp_path / f"{name}.so")
        ref = nnc.compile(model, target="reference")
        for n in (1, 6, 3):
            x = np.random.default_rng(n).standard_normal((n, *shape)).astype(np.float32)
            # f32 sums of up to 784 products in other orders than the interpreter's
            np.testing.assert_allclose(lib(x), ref(x), rtol=1e-4, atol=1e-5)
    # the C API directly: a static dim that differs, a null shape
    c = lib.executable._lib
    shape = (ctypes.c_int64 * 4)(2, 3, 8, 7)
    shapes = (ctypes.c_void_p * 1)(ctypes.addressof(shape))
    out = (ctypes.c_int64 * 2)()
    outs = (ctypes.c_void_p * 1)(ctypes.addressof(out))
    assert c.cnn_output_shapes(shapes, outs) == -2
    shape[3] = 8
    assert c.cnn_output_shapes(shapes, outs) == 0 and list(out) == [2, 10]
    assert c.cnn_output_shapes(None, outs) == -1


def reshape_model() -> onnx.ModelProto:
    """x[N, L] -> [N, L/4, 4] (-1 inferred): runs only where 4 divides L."""
    nodes = [helper.make_node("Reshape", ["x", "target"], ["r"]), helper.make_node("Relu", ["r"], ["y"])]
    g = helper.make_graph(nodes, "split4", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None, 4])],
                          [numpy_helper.from_array(np.array([0, -1, 4], np.int64), "target")])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_the_model_constraints_are_checked_at_run_time(tmp_path: Path) -> None:
    path = tmp_path / "split4.onnx"
    onnx.save(reshape_model(), path)
    nnc.compile(str(path), target="x86", quiet=True, max_dims={"N": 3, "L": 64}).save(tmp_path / "split4.so")
    lib = nnc.load(tmp_path / "split4.so")
    x = np.random.default_rng(0).standard_normal((2, 12)).astype(np.float32)
    np.testing.assert_array_equal(lib(x), np.maximum(x.reshape(2, 3, 4), 0))
    with pytest.raises(InputError, match=r"status -4: the model refuses these dims"):
        lib(x[:, :10])


def shrinking_model() -> onnx.ModelProto:
    """x[N, L][:, :L-N], twice side by side: an intermediate that shrinks as N grows."""
    node = helper.make_node
    nodes = [node("Shape", ["x"], ["xs"]), node("Gather", ["xs", "zero"], ["n"]), node("Gather", ["xs", "one"], ["l"]),
             node("Sub", ["l", "n"], ["end"]), node("Slice", ["x", "zero", "end", "one"], ["s"]),
             node("Concat", ["s", "s"], ["y"], axis=1)]
    inits = [numpy_helper.from_array(np.array([0], np.int64), "zero"),
             numpy_helper.from_array(np.array([1], np.int64), "one")]
    g = helper.make_graph(nodes, "shrink", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", "L"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", None])], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_refusals_name_the_cause_and_write_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    mlp = str(EXAMPLES / "mlp.onnx")
    with pytest.raises(TargetError, match=r"give max_dims=\{...\} \(CLI: --max-dim N=SIZE\)"):
        nnc.compile(mlp, target="x86", quiet=True).save(out / "m.so")
    with pytest.raises(TargetError, match=r"max_dims names batch, which no input dim is"):
        nnc.compile(mlp, target="x86", quiet=True, max_dims={"batch": 4})
    with pytest.raises(NncError, match=r"N=0 is not a maximum"):
        nnc.compile(mlp, target="x86", quiet=True, max_dims={"N": 0})
    path = tmp_path / "shrink.onnx"
    onnx.save(shrinking_model(), path)
    cm = nnc.compile(str(path), target="x86", quiet=True, max_dims={"N": 4, "L": 32})
    with pytest.raises(TargetError, match=r"size of %s is not monotone in the input dims \(\(\(N\*4\)\*\(L\+\(N\*-1"):
        cm.save(out / "shrink.so")
    # a shape decided by an input's value; an op with no shape-generic kernel
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 8])
    t = helper.make_tensor_value_info("t", TensorProto.INT64, [2])
    node = helper.make_node
    for name, op, inputs, dtype in (("value", node("Reshape", ["x", "t"], ["y"]), [x, t], TensorProto.FLOAT),
                                    ("nonzero", node("NonZero", ["x"], ["y"]), [x], TensorProto.INT64)):
        y = helper.make_tensor_value_info("y", dtype, None)
        onnx.save(helper.make_model(helper.make_graph([op], name, inputs, [y]),
                                    opset_imports=[helper.make_opsetid("", 17)]), tmp_path / f"{name}.onnx")
    cm = nnc.compile(str(tmp_path / "value.onnx"), target="x86", quiet=True, max_dims={"N": 4})
    with pytest.raises(TargetError, match=r"the values of input\(s\) t decide shapes"):
        cm.save(out / "value.so")
    with pytest.raises(TargetError, match=r"max_dims \(--max-dim\) bounds the dims of one shape-generic entry "
                                          r"point, but this model runs as segments.*nonzero"):
        nnc.compile(str(tmp_path / "nonzero.onnx"), target="x86", quiet=True, max_dims={"N": 4})
    assert os.listdir(out) == []


def test_max_dims_bound_the_python_runs_too() -> None:
    cm = nnc.compile(str(EXAMPLES / "mlp.onnx"), target="x86", quiet=True, max_dims={"N": 2})
    assert cm(np.zeros((2, 784), np.float32)).shape == (2, 10)
    with pytest.raises(InputError, match=r"N=3 is above its maximum 2"):
        cm(np.zeros((3, 784), np.float32))


def test_cli_compile_with_max_dim(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    model = str(EXAMPLES / "mlp.onnx")
    so = tmp_path / "mlp.so"
    assert cli_main(["compile", model, "-t", "x86", "--max-dim", "N=8", "-o", str(so)]) == 0
    text = capsys.readouterr().out
    assert "symbolic dims fixed" not in text and "N in [1, 8]" in text
    lib = nnc.load(so)
    assert lib(np.zeros((8, 784), np.float32)).shape == (8, 10) and lib(np.zeros((1, 784), np.float32)).shape == (1, 10)
    assert cli_main(["run", str(so), "--random-inputs", "--dim", "N=5"]) == 0  # --dim sizes the random inputs
    assert "output logits: f32[5,10]" in " ".join(capsys.readouterr().out.split())
    assert cli_main(["run", str(so), "--random-inputs", "--dim", "N=9"]) == 1
    assert "status -3: a dim is below 1 or above its maximum" in capsys.readouterr().err
    # without bounds the library is specialised to N=1, and the CLI says what gives run-time dims
    assert cli_main(["compile", model, "-t", "x86", "-o", str(tmp_path / "one.so")]) == 0
    assert "--max-dim N=SIZE" in capsys.readouterr().out
    assert cli_main(["run", str(tmp_path / "one.so"), "--random-inputs", "--dim", "N=5"]) == 1
    assert "with fixed shapes; --dim does not apply" in capsys.readouterr().err
    assert cli_main(["compile", model, "-t", "x86", "--max-dim", "batch=8", "-o", str(tmp_path / "x.so")]) == 1
    err = capsys.readouterr().err
    assert "--max-dim names batch, which no input dim of" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.so").exists()
    assert cli_main(["compile", model, "-t", "reference", "--max-dim", "N=8"]) == 1
    assert "--max-dim applies to --target x86 only" in capsys.readouterr().err


@pytest.mark.torch
def test_transformers_bert_exported_to_onnx(tmp_path: Path) -> None:
    torch = pytest.importorskip("torch", reason="needs torch")
    tf = pytest.importorskip("transformers", reason="needs transformers")
    torch.manual_seed(0)
    bert = tf.BertModel(tf.BertConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                      intermediate_size=128, vocab_size=1000, attn_implementation="eager")).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids, mask):  # type: ignore[no-untyped-def]
            return self.bert(input_ids=ids, attention_mask=mask).last_hidden_state

    names = ["input_ids", "attention_mask"]
    path = tmp_path / "bert.onnx"
    args = (torch.randint(0, 1000, (2, 8)), torch.ones(2, 8, dtype=torch.long))
    torch.onnx.export(Hidden(), args, str(path), dynamo=False, opset_version=17, input_names=names,
                      output_names=["hidden"], dynamic_axes={n: {0: "batch", 1: "sequence"} for n in names})
    nnc.compile(str(path), target="x86", quiet=True, max_dims={"batch": 4, "sequence": 32}).save(tmp_path / "bert.so")
    lib = nnc.load(tmp_path / "bert.so")
    for b, s in [(1, 5), (4, 5), (1, 32), (4, 32)]:
        rng = np.random.default_rng(b * s)
        feeds = {"input_ids": rng.integers(0, 1000, (b, s)), "attention_mask": np.ones((b, s), np.int64)}
        feeds["attention_mask"][0, s - s // 4:] = 0
        got, want = lib.run(feeds)["hidden"], oracle(path, feeds)[0]
        # as the transformers tests: 1e-4 of the largest magnitude (f32 sums over 64-128 terms)
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4 * float(np.abs(want).max()))

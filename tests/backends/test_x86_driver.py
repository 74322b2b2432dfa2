"""The x86 driver: specialisation of dynamic models, the compilation cache (hit, miss, corruption),
progress on stderr, the ONNX backend class and the per-op x86 coverage table.

Every numeric check compares against the reference interpreter. The models are tiny, so compiles
take a fraction of a second; each test gets its own cache directory.
"""

from __future__ import annotations

import io
import os

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import nnc
from nnc import api, onnx_backend
from nnc.backends import x86
from nnc.backends.x86 import cache as x86cache
from nnc.backends.x86.executable import X86Executable, load_object
from nnc.backends.x86.generic import GenericExecutable
from nnc.backends.x86.target import resolve
from nnc.ir import Builder, Graph, InputError, Module, TargetError, interpret, tensor


@pytest.fixture(autouse=True)
def cache_dir(tmp_path, monkeypatch):
    d = tmp_path / "cache"
    monkeypatch.setenv("NNC_CACHE_DIR", str(d))
    return d / "x86"


def mlp(batch="N") -> Module:
    rng = np.random.default_rng(0)
    m = Module("mlp")
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", [batch, 16]))
    h = b.op("matmul", x, b.const(rng.standard_normal((16, 8)).astype(np.float32), name="w"), name="h")
    y = b.op("relu", b.op("add", h, b.const(rng.standard_normal(8).astype(np.float32), name="b")), name="y")
    g.set_outputs([y], ["y"])
    return m


def reshape_model() -> onnx.ModelProto:
    """Reshape whose target shape is a run-time input: a shape input in the ONNX test suite's sense."""
    node = helper.make_node("Reshape", ["x", "shape"], ["y"])
    g = helper.make_graph([node], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 3, 4]),
                                         helper.make_tensor_value_info("shape", TensorProto.INT64, [2])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["a", "b"])])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def feeds(n: int) -> dict[str, np.ndarray]:
    return {"x": np.random.default_rng(n).standard_normal((n, 16)).astype(np.float32)}


# f32 dot products of length 16 in another summation order: a few ulps
TOL = {"rtol": 1e-5, "atol": 1e-5}


# -- specialisation -----------------------------------------------------------------------------
def test_static_model_compiles_eagerly():
    cm = nnc.compile(mlp(batch=3), target="x86")
    assert isinstance(cm.executable, X86Executable)
    np.testing.assert_allclose(cm.run(feeds(3))["y"], interpret(mlp(3), feeds(3))["y"], **TOL)


def test_symbolic_batch_compiles_once_for_every_shape():
    m = mlp()
    cm = nnc.compile(m, target="x86")
    assert isinstance(cm.executable, GenericExecutable)  # shape-generic code (docs/dynamic-shapes.md)
    assert cm.input_types["x"].shape == ("N", 16)  # the API still shows the model's own types
    for n in (2, 5, 2):
        np.testing.assert_allclose(cm(feeds(n)["x"]), interpret(m, feeds(n))["y"], **TOL)
    assert cm.executable.plans_made == 2  # one memory plan per input signature, no compile
    with pytest.raises(InputError, match="x"):  # the interpreter's checks still apply
        cm.run({"x": np.zeros((2, 15), np.float32)})


def test_shape_input_compiles_once_and_plans_per_value():
    # reshape is shape-generic: one compile; its target's value decides the result's dims, so the
    # host makes a frame per distinct value
    model = reshape_model()
    cm = nnc.compile(model, target="x86")
    assert cm.report["shapes"]["generic"] is True
    assert cm.executable.value_inputs == ["shape"]
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    for shape in ([4, 6], [-1, 2], [4, 6]):
        f = {"x": x, "shape": np.array(shape, np.int64)}
        got = cm.run(f)["y"]
        want = interpret(cm.module, f)["y"]
        assert got.shape == want.shape
        np.testing.assert_array_equal(got, want)
    assert cm.executable.plans_made == 2


def test_shape_of_a_data_input_is_not_a_shape_input():
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    x = g.add_param("x", tensor("f32", ["N", 4]))
    like = g.add_param("like", tensor("f32", [2, "M"]))
    y = b.op("reshape", x, b.op("shape", like, name="s"), name="y")
    g.set_outputs([y], ["y"])
    assert api.shape_inputs(m) == []  # only like's shape matters, not its values
    f = {"x": np.arange(8, dtype=np.float32).reshape(2, 4), "like": np.zeros((2, 4), np.float32)}
    np.testing.assert_array_equal(nnc.compile(m, target="x86").run(f)["y"], interpret(m, f)["y"])


# -- compilation cache --------------------------------------------------------------------------
def test_cache_miss_then_hit_without_codegen(cache_dir, monkeypatch):
    m = mlp(batch=2)
    first = x86.compile(m)
    assert first.cache_status == "miss" and sorted(os.listdir(cache_dir)) == [os.path.basename(only_entry(cache_dir)),
                                                                             "kernels", "secret.key"]

    def no_codegen(*a, **k):
        raise AssertionError("a cache hit must not generate code")

    monkeypatch.setattr(x86, "generate", no_codegen)
    again = x86.compile(m)
    assert again.cache_status == "hit" and again.module is None
    np.testing.assert_array_equal(again.run(feeds(2))["y"], first.run(feeds(2))["y"])
    np.testing.assert_allclose(again.run(feeds(2))["y"], interpret(m, feeds(2))["y"], **TOL)


def test_cache_key_covers_weights_target_and_options():
    m, info = mlp(batch=2), resolve()
    key = x86cache.cache_key(m, info, {"threads": 1})
    assert key == x86cache.cache_key(mlp(batch=2), info, {"threads": 1, "quiet": True, "cache": True})
    assert key != x86cache.cache_key(m, info, {"threads": 2})
    assert key != x86cache.cache_key(m, resolve("x86-64"), {"threads": 1})
    changed = mlp(batch=2)
    changed.constants["w"] = changed.constants["w"] + np.float32(1)
    assert key != x86cache.cache_key(changed, info, {"threads": 1})


def test_cache_key_changes_with_any_byte_of_a_big_weight():
    """The weights are hashed in chunks on several threads (cache.content_digest): a flipped byte in
    any chunk, including the last partial one, still changes the key."""
    info = resolve()
    big = np.random.default_rng(3).standard_normal(x86cache.CHUNK + 1000).astype(np.float32)  # > 4 chunks

    def key(flip: int | None) -> str:
        m = mlp(batch=2)
        arr = big.copy()
        if flip is not None:
            arr.view(np.uint8)[flip] ^= 1
        m.constants["big"] = arr
        return x86cache.cache_key(m, info, {"threads": 1})

    base = key(None)
    assert key(None) == base
    nbytes = big.nbytes
    flipped = {key(i) for i in (0, x86cache.CHUNK - 1, x86cache.CHUNK, 3 * x86cache.CHUNK + 7, nbytes - 1)}
    assert base not in flipped and len(flipped) == 5


def test_hit_reads_the_weights_in_place_from_the_mapped_entry(cache_dir):
    m = mlp(batch=2)
    first = x86.compile(m)
    again = x86.compile(m)
    assert again.cache_status == "hit"
    buf = again._weights_buf
    assert not buf.flags.writeable and buf.ctypes.data % 64 == 0  # a view of the read-only mapping
    np.testing.assert_array_equal(again.run(feeds(2))["y"], first.run(feeds(2))["y"])


def test_entry_file_writable_by_others_is_not_loaded(cache_dir):
    m = mlp(batch=2)
    x86.compile(m)
    os.chmod(only_entry(cache_dir), 0o666)
    exe = x86.compile(m)
    assert exe.cache_status.startswith("corrupt: entry file not private")
    np.testing.assert_allclose(exe.run(feeds(2))["y"], interpret(m, feeds(2))["y"], **TOL)
    assert x86.compile(m).cache_status == "hit"


def test_cache_off_writes_nothing(cache_dir):
    exe = x86.compile(mlp(batch=2), {"cache": False})
    assert exe.cache_status == "off" and not cache_dir.exists()


def only_entry(d) -> str:
    (name,) = [n for n in os.listdir(d) if n.endswith(".nncx")]
    return os.path.join(d, name)


@pytest.mark.parametrize("damage", ["truncate", "flip_object_byte", "garbage", "empty"])
def test_corrupt_entry_is_discarded_and_rebuilt(cache_dir, damage):
    m = mlp(batch=2)
    x86.compile(m)
    path = only_entry(cache_dir)
    data = bytearray(open(path, "rb").read())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip_object_byte":
        data[-len(data) // 3] ^= 0xFF  # inside the sections, past the header
    elif damage == "garbage":
        data = bytearray(os.urandom(len(data)))
    else:
        data = bytearray()
    open(path, "wb").write(bytes(data))
    exe = x86.compile(m)
    assert exe.cache_status.startswith("corrupt")
    np.testing.assert_allclose(exe.run(feeds(2))["y"], interpret(m, feeds(2))["y"], **TOL)
    assert x86.compile(m).cache_status == "hit"  # the rebuilt entry is whole again


def test_decode_checks_the_checksum():
    entry = x86cache.Entry(b"object", b"weights", {"k": 1})
    secret = bytes(range(32))
    data = bytearray(x86cache.encode("key", entry, secret))
    assert x86cache.decode("key", bytes(data), secret).weights == b"weights"
    with pytest.raises(x86cache.CorruptEntry, match="another key"):
        x86cache.decode("other", bytes(data), secret)
    with pytest.raises(x86cache.CorruptEntry, match="bad signature"):
        x86cache.decode("key", bytes(data), bytes(32))
    data[-12] ^= 1
    with pytest.raises(x86cache.CorruptEntry, match="checksum"):
        x86cache.decode("key", bytes(data), secret)


def test_unresolved_symbol_is_a_target_error_not_a_crash():
    import llvmlite.binding as llvm

    from nnc.backends.x86.target import target_machine

    info = resolve()
    mod = llvm.parse_assembly('declare void @nnc_test_no_such_fn()\n'
                              'define void @nnc_entry() {\n  call void @nnc_test_no_such_fn()\n  ret void\n}\n')
    obj = target_machine(info).emit_object(mod)
    with pytest.raises(TargetError, match="nnc_test_no_such_fn"):
        load_object(obj)


# -- progress -----------------------------------------------------------------------------------
def test_progress_reports_kernels_unless_quiet(monkeypatch):
    monkeypatch.setattr(x86.Progress, "delay", 0.0)
    monkeypatch.setattr(x86.Progress, "log_delay", 0.0)
    err = io.StringIO()
    monkeypatch.setattr("sys.stderr", err)
    x86.compile(mlp(batch=2), {"cache": False})
    text = err.getvalue()
    assert "kernels 3/3" in text and "compiled 3 kernels" in text
    err.truncate(0)
    err.seek(0)
    x86.compile(mlp(batch=2), {"cache": False, "quiet": True})
    assert err.getvalue() == ""


# -- ONNX backend and the coverage table -----------------------------------------------------------
def test_onnx_backend_runs_on_x86():
    assert onnx_backend.Backend.supports_device("CPU") and not onnx_backend.Backend.supports_device("CUDA")
    rep = onnx_backend.Backend.prepare(reshape_model(), "CPU", cache=False)
    x = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    (y,) = rep.run([x, np.array([3, 8], np.int64)])
    np.testing.assert_array_equal(y, x.reshape(3, 8))


class _Case:
    def __init__(self, name: str, model: onnx.ModelProto):
        self.name, self.model = name, model


def test_x86_op_coverage_checks_ir_ops_against_lowerings(monkeypatch):
    relu = helper.make_model(helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])], "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [2])]), opset_imports=[helper.make_opsetid("", 17)])
    cases = [_Case("test_relu", relu), _Case("test_reshape", reshape_model()),
             _Case("test_relu_expanded", reshape_model())]  # expansions test other ops: skipped
    from nnc.backends.x86.kernels import registry

    assert onnx_backend.x86_op_coverage(cases) == {"Relu": (1, 1), "Reshape": (1, 1)}
    monkeypatch.setattr(registry, "lowered_ops", lambda: {"relu"})
    assert onnx_backend.x86_op_coverage(cases) == {"Relu": (1, 1), "Reshape": (0, 1)}

"""Run-time robustness of the x86 backend and the reference interpreter (issue 14).

Zero-size dims (a batch of 0) run and give empty outputs of the shapes onnxruntime gives; index ops
reject an out-of-range index with an ``InputError`` naming the op, on the interpreter, the JIT and
a library built through the CLI; valid negative indices keep working.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.ir import Builder, DType, Graph, InputError, Module, TargetError, interpret, memory_limits, tensor

ort = pytest.importorskip("onnxruntime")
RNG = np.random.default_rng(14)
F = TensorProto.FLOAT


def model(nodes, inputs, outputs, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, initializer=[numpy_helper.from_array(a, n) for n, a in inits])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def vi(name: str, shape, dtype=F):
    return helper.make_tensor_value_info(name, dtype, shape)


def onnxruntime_run(m: onnx.ModelProto, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return dict(zip([o.name for o in sess.get_outputs()], sess.run(None, feeds)))


# -- zero-size dims -------------------------------------------------------------------------------

W = RNG.standard_normal((4, 3, 3, 3)).astype(np.float32)
FC = RNG.standard_normal((12, 5)).astype(np.float32)


def _zero_batch_cases():
    x4 = vi("x", [0, 3, 6, 6])
    yield "conv", model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1])], [x4],
                        [vi("y", [0, 4, 6, 6])], [("w", W)]), {"x": (0, 3, 6, 6)}
    yield "maxpool", model([helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], [x4],
                           [vi("y", [0, 3, 3, 3])]), {"x": (0, 3, 6, 6)}
    yield "avgpool", model([helper.make_node("AveragePool", ["x"], ["y"], kernel_shape=[3, 3], pads=[1, 1, 1, 1])],
                           [x4], [vi("y", [0, 3, 6, 6])]), {"x": (0, 3, 6, 6)}
    yield "globalpool", model([helper.make_node("GlobalAveragePool", ["x"], ["y"])], [x4], [vi("y", [0, 3, 1, 1])]), \
        {"x": (0, 3, 6, 6)}
    yield "gemm", model([helper.make_node("Gemm", ["x", "w"], ["y"])], [vi("x", [0, 12])], [vi("y", [0, 5])],
                        [("w", FC)]), {"x": (0, 12)}
    yield "matmul", model([helper.make_node("MatMul", ["x", "w"], ["y"])], [vi("x", [0, 7, 12])],
                          [vi("y", [0, 7, 5])], [("w", FC)]), {"x": (0, 7, 12)}
    yield "matmul_dyn", model([helper.make_node("MatMul", ["x", "z"], ["y"])], [vi("x", [0, 12]), vi("z", [12, 5])],
                              [vi("y", [0, 5])]), {"x": (0, 12), "z": (12, 5)}
    # an empty contraction: the product is all zeros, not empty
    yield "matmul_k0", model([helper.make_node("MatMul", ["x", "z"], ["y"])], [vi("x", [3, 0]), vi("z", [0, 5])],
                             [vi("y", [3, 5])]), {"x": (3, 0), "z": (0, 5)}
    yield "gemm_k0", model([helper.make_node("Gemm", ["x", "w", "c"], ["y"])], [vi("x", [3, 0])], [vi("y", [3, 5])],
                           [("w", np.zeros((0, 5), np.float32)), ("c", np.arange(5, dtype=np.float32))]), {"x": (3, 0)}
    yield "reduce_sum_empty_axis", model([helper.make_node("ReduceSum", ["x", "a"], ["y"], keepdims=0)],
                                         [vi("x", [3, 0])], [vi("y", [3])], [("a", np.array([1], np.int64))]), \
        {"x": (3, 0)}
    yield "softmax", model([helper.make_node("Softmax", ["x"], ["y"], axis=-1)], [vi("x", [0, 10])],
                           [vi("y", [0, 10])]), {"x": (0, 10)}
    yield "reduce", model([helper.make_node("ReduceMean", ["x"], ["y"], axes=[1], keepdims=0),
                           helper.make_node("ReduceMax", ["x"], ["z"], axes=[2], keepdims=1)],
                          [vi("x", [0, 4, 5])], [vi("y", [0, 5]), vi("z", [0, 4, 1])]), {"x": (0, 4, 5)}
    yield "concat", model([helper.make_node("Concat", ["x", "z"], ["y"], axis=1)],
                          [vi("x", [0, 2]), vi("z", [0, 3])], [vi("y", [0, 5])]), {"x": (0, 2), "z": (0, 3)}
    yield "concat_empty_part", model([helper.make_node("Concat", ["x", "z"], ["y"], axis=0)],
                                     [vi("x", [0, 3]), vi("z", [2, 3])], [vi("y", [2, 3])]), {"x": (0, 3), "z": (2, 3)}
    ind = np.array([2, -1], dtype=np.int64)
    yield "gather", model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], [vi("x", [0, 4])],
                          [vi("y", [0, 2])], [("i", ind)]), {"x": (0, 4)}
    yield "gather_no_indices", model([helper.make_node("Gather", ["x", "i"], ["y"], axis=0)],
                                     [vi("x", [4, 3]), vi("i", [0], TensorProto.INT64)], [vi("y", [0, 3])]), \
        {"x": (4, 3), "i": (0,)}
    yield "elementwise", model([helper.make_node("Add", ["x", "b"], ["s"]), helper.make_node("Relu", ["s"], ["r"]),
                                helper.make_node("Mul", ["r", "r"], ["y"])],
                               [vi("x", [0, 3, 4])], [vi("y", [0, 3, 4])],
                               [("b", RNG.standard_normal((3, 4)).astype(np.float32))]), {"x": (0, 3, 4)}
    yield "layernorm", model([helper.make_node("LayerNormalization", ["x", "g", "b"], ["y"], axis=-1)],
                             [vi("x", [0, 5, 8])], [vi("y", [0, 5, 8])],
                             [("g", FC[:8, 0].copy()), ("b", FC[:8, 1].copy())]), \
        {"x": (0, 5, 8)}
    yield "instancenorm", model([helper.make_node("InstanceNormalization", ["x", "s", "b"], ["y"])], [x4],
                                [vi("y", [0, 3, 6, 6])], [("s", FC[:3, 0].copy()), ("b", FC[:3, 1].copy())]), \
        {"x": (0, 3, 6, 6)}
    yield "pad_reflect", model([helper.make_node("Pad", ["x", "p"], ["y"], mode="reflect")], [x4],
                               [vi("y", [0, 3, 8, 8])], [("p", np.array([0, 0, 1, 1, 0, 0, 1, 1], np.int64))]), \
        {"x": (0, 3, 6, 6)}
    yield "resize", model([helper.make_node("Resize", ["x", "", "s"], ["y"], mode="linear")], [x4],
                          [vi("y", [0, 3, 12, 12])], [("s", np.array([1, 1, 2, 2], np.float32))]), {"x": (0, 3, 6, 6)}
    yield "conv_transpose", model([helper.make_node("ConvTranspose", ["x", "w"], ["y"], strides=[2, 2])], [x4],
                                  [vi("y", [0, 4, 13, 13])], [("w", W.transpose(1, 0, 2, 3).copy())]), \
        {"x": (0, 3, 6, 6)}
    yield "topk", model([helper.make_node("TopK", ["x", "k"], ["v", "i"])], [vi("x", [0, 8])],
                        [vi("v", [0, 3]), vi("i", [0, 3], TensorProto.INT64)], [("k", np.array([3], np.int64))]), \
        {"x": (0, 8)}
    yield "cnn", model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
                        helper.make_node("Relu", ["c"], ["r"]),
                        helper.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                        helper.make_node("Flatten", ["p"], ["f"]),
                        helper.make_node("Gemm", ["f", "fc"], ["l"]),
                        helper.make_node("Softmax", ["l"], ["y"])],
                       [x4], [vi("y", [0, 5])], [("w", W), ("fc", RNG.standard_normal((36, 5)).astype(np.float32))]), \
        {"x": (0, 3, 6, 6)}


ZERO_CASES = {name: (m, shapes) for name, m, shapes in _zero_batch_cases()}


def _feeds(m: onnx.ModelProto, shapes: dict[str, tuple[int, ...]]) -> dict[str, np.ndarray]:
    types = {i.name: i.type.tensor_type.elem_type for i in m.graph.input}
    return {n: (np.arange(int(np.prod(s))) % 4).reshape(s).astype(np.int64) if types[n] == TensorProto.INT64
            else RNG.standard_normal(s).astype(np.float32) for n, s in shapes.items()}


@pytest.mark.parametrize("name", sorted(ZERO_CASES))
@pytest.mark.parametrize("target", ["reference", "x86"])
def test_zero_size_dims_match_onnxruntime(name, target):
    m, shapes = ZERO_CASES[name]
    feeds = _feeds(m, shapes)
    want = onnxruntime_run(m, feeds)
    got = nnc.compile(m, target=target).run(feeds)
    assert set(got) == set(want)
    for key, w in want.items():
        assert got[key].shape == w.shape and got[key].dtype == w.dtype, key
        np.testing.assert_allclose(got[key], w, rtol=1e-5, atol=1e-5)


def test_zero_batch_lstm_matches_the_interpreter():
    """onnxruntime 1.32 aborts the process on an LSTM with a batch of 0; the interpreter is the oracle."""
    m = model([helper.make_node("LSTM", ["x", "W", "R"], ["y", "h"], hidden_size=4)], [vi("x", [5, 0, 8])],
              [vi("y", [5, 1, 0, 4]), vi("h", [1, 0, 4])],
              [("W", RNG.standard_normal((1, 16, 8)).astype(np.float32)),
               ("R", RNG.standard_normal((1, 16, 4)).astype(np.float32))])
    feeds = {"x": np.zeros((5, 0, 8), np.float32)}
    want = nnc.compile(m, target="reference").run(feeds)
    got = nnc.compile(m, target="x86").run(feeds)
    assert {k: v.shape for k, v in want.items()} == {k: v.shape for k, v in got.items()} == \
        {"y": (5, 1, 0, 4), "h": (1, 0, 4)}


# -- index checks ---------------------------------------------------------------------------------

I64 = TensorProto.INT64
DATA = np.arange(12, dtype=np.float32).reshape(4, 3)  # the indexed axis has 4 entries


def _index_case(name: str) -> tuple[onnx.ModelProto, dict[str, np.ndarray]]:
    """A one-node model indexing axis 0 of DATA; its ``i`` input holds valid indices (to be spoilt)."""
    upd = {"u": RNG.standard_normal((2, 3)).astype(np.float32)}
    if name == "gather":
        node, ishape, oshape, extra = helper.make_node("Gather", ["x", "i"], ["y"], axis=0, name="G0"), [2], [2, 3], {}
    elif name == "gather_elements":
        node, ishape, oshape, extra = (helper.make_node("GatherElements", ["x", "i"], ["y"], axis=0, name="G0"),
                                       [2, 3], [2, 3], {})
    elif name == "gather_nd":
        node, ishape, oshape, extra = helper.make_node("GatherND", ["x", "i"], ["y"], name="G0"), [2, 1], [2, 3], {}
    elif name == "scatter_nd":
        node, ishape, oshape, extra = (helper.make_node("ScatterND", ["x", "i", "u"], ["y"], name="G0"), [2, 1],
                                       [4, 3], upd)
    else:
        node, ishape, oshape, extra = (helper.make_node("ScatterElements", ["x", "i", "u"], ["y"], axis=0, name="G0"),
                                       [2, 3], [4, 3], upd)
    inputs = [vi("x", [4, 3]), vi("i", ishape, I64)] + [vi(n, list(a.shape)) for n, a in extra.items()]
    idx = (np.arange(int(np.prod(ishape))) % 3 + 1).reshape(ishape).astype(np.int64)  # distinct rows 1..3
    return model([node], inputs, [vi("y", oshape)]), {"x": DATA, "i": idx, **extra}


INDEX_OPS = ["gather", "gather_elements", "gather_nd", "scatter_nd", "scatter_elements"]
BAD = [4, 1000, -5, -2**40]


def _spoil(feeds: dict[str, np.ndarray], bad: int) -> dict[str, np.ndarray]:
    idx = feeds["i"].copy()
    idx.reshape(-1)[1] = bad
    return {**feeds, "i": idx}


def _assert_names_op(err: pytest.ExceptionInfo, opname: str, bad: int) -> None:
    msg = str(err.value)
    assert opname in msg and "'G0'" in msg, msg  # the IR op and the ONNX node
    assert f"index {bad} " in msg, msg


@pytest.mark.parametrize("name", INDEX_OPS)
def test_out_of_range_index_raises_on_every_target(name):
    m, feeds = _index_case(name)
    reference, jit = nnc.compile(m, target="reference"), nnc.compile(m, target="x86")
    for bad in BAD:
        spoilt = _spoil(feeds, bad)
        with pytest.raises(Exception):  # noqa: B017 - onnxruntime's own exception types
            onnxruntime_run(m, spoilt)
        for cm in (reference, jit):
            with pytest.raises(InputError) as err:
                cm.run(spoilt)
            _assert_names_op(err, name, bad)


def test_asic_host_ops_check_indices_too():
    """The simulated ASIC runs a gather as a host op, on the interpreter: the same error."""
    m, feeds = _index_case("gather")
    cm = nnc.compile(m, target="asic", calibration=[feeds])
    np.testing.assert_array_equal(cm.run(feeds)["y"], DATA[feeds["i"]])
    with pytest.raises(InputError) as err:
        cm.run(_spoil(feeds, -5))
    _assert_names_op(err, "gather", -5)


@pytest.mark.parametrize("name", INDEX_OPS)
def test_valid_negative_indices_match_onnxruntime(name):
    m, feeds = _index_case(name)
    feeds = {**feeds, "i": feeds["i"] - 4}  # -3..-1: the same rows counted from the end
    want = onnxruntime_run(m, feeds)["y"]
    for target in ("reference", "x86"):
        np.testing.assert_array_equal(nnc.compile(m, target=target).run(feeds)["y"], want)
    edge = {**feeds, "i": np.full_like(feeds["i"], -4)}  # the lowest valid index
    if name.startswith("gather"):
        np.testing.assert_array_equal(nnc.compile(m, target="x86").run(edge)["y"], onnxruntime_run(m, edge)["y"])


def test_cache_hit_reports_the_same_error(tmp_path):
    m, feeds = _index_case("gather")
    spoilt = _spoil(feeds, 1000)
    messages = []
    for status in ("miss", "hit"):
        cm = nnc.compile(m, target="x86", cache_dir=str(tmp_path))
        assert cm.executable.cache_status == status
        with pytest.raises(InputError) as err:
            cm.run(spoilt)
        messages.append(str(err.value))
        np.testing.assert_array_equal(cm.run(feeds)["y"], DATA[feeds["i"]])  # the arena is still usable
    assert messages[0] == messages[1]
    _assert_names_op(err, "gather", 1000)


def _library(m: onnx.ModelProto, tmp_path) -> nnc.CompiledModel:
    from nnc.cli import main

    src, lib = tmp_path / "m.onnx", tmp_path / "m.so"
    onnx.save(m, str(src))
    assert main(["compile", str(src), "--target", "x86", "-o", str(lib), "-q"]) in (0, None)
    return nnc.load(str(lib))


def test_library_refuses_out_of_range_index(tmp_path):
    m, feeds = _index_case("gather_elements")
    lib = _library(m, tmp_path)
    np.testing.assert_array_equal(lib.run(feeds)["y"], onnxruntime_run(m, feeds)["y"])
    for bad in BAD:
        with pytest.raises(InputError):
            lib.run(_spoil(feeds, bad))
    np.testing.assert_array_equal(lib.run(feeds)["y"], onnxruntime_run(m, feeds)["y"])


def test_library_error_names_the_op(tmp_path):
    m, feeds = _index_case("gather")
    with pytest.raises(InputError) as err:
        _library(m, tmp_path).run(_spoil(feeds, 4))
    _assert_names_op(err, "gather", 4)


def test_one_hot_out_of_range_is_all_off_as_in_onnx():
    """ONNX OneHot is not an error for an index outside [-depth, depth-1]: that row is all off_value."""
    m = model([helper.make_node("OneHot", ["i", "d", "v"], ["y"], axis=-1, name="O0")], [vi("i", [6], I64)],
              [vi("y", [6, 4])], [("d", np.array(4, np.int64)), ("v", np.array([0.5, 2.0], np.float32))])
    feeds = {"i": np.array([0, 3, -1, -4, 4, -5], np.int64)}
    want = onnxruntime_run(m, feeds)["y"]
    assert (want[4:] == 0.5).all()
    for target in ("reference", "x86"):
        np.testing.assert_array_equal(nnc.compile(m, target=target).run(feeds)["y"], want)


def test_c_api_run_returns_the_failing_kernels_status(tmp_path):
    """Through the C API (ctypes on the library): 0 on success, else 1 + the failing kernel's position."""
    import ctypes

    m = model([helper.make_node("Relu", ["x"], ["r"]), helper.make_node("Gather", ["r", "i"], ["y"], axis=0)],
              [vi("x", [4, 3]), vi("i", [2], I64)], [vi("y", [2, 3])])
    _library(m, tmp_path)
    lib = ctypes.CDLL(str(tmp_path / "m.so"))
    lib.m_create.restype = ctypes.c_void_p
    lib.m_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p]
    lib.m_destroy.argtypes = [ctypes.c_void_p]
    ctx = lib.m_create()
    out = np.zeros((2, 3), np.float32)
    outs = (ctypes.c_void_p * 1)(out.ctypes.data)
    try:
        for idx, status in (([3, -4], 0), ([0, 4], 2), ([-5, 0], 2), ([1, 2], 0)):
            ind = np.array(idx, np.int64)
            ins = (ctypes.c_void_p * 2)(DATA.ctypes.data, ind.ctypes.data)
            assert lib.m_run(ctx, ins, outs) == status, idx  # kernel 1 is relu, kernel 2 the gather
            if status == 0:
                np.testing.assert_array_equal(out, DATA[ind])
    finally:
        lib.m_destroy(ctx)


@pytest.mark.parametrize("threads", [1, 2])
def test_large_gather_checks_every_index_in_parallel_tasks(threads):
    """An embedding lookup big enough to be split over the workers: a bad index in any chunk stops it."""
    table = RNG.standard_normal((50, 64)).astype(np.float32)
    m = model([helper.make_node("Gather", ["w", "i"], ["y"], axis=0, name="embed")], [vi("i", [64, 128], I64)],
              [vi("y", [64, 128, 64])], [("w", table)])
    cm = nnc.compile(m, target="x86", threads=threads)
    ids = RNG.integers(-50, 50, (64, 128))
    np.testing.assert_array_equal(cm.run({"i": ids})["y"], table[ids])
    for pos, bad in (((63, 127), 50), ((0, 0), -51), ((40, 3), 2**40)):
        spoilt = ids.copy()
        spoilt[pos] = bad
        with pytest.raises(InputError, match=rf"gather .*'embed'.*index {bad} is out of range for a dim of 50"):
            cm.run({"i": spoilt})
    np.testing.assert_array_equal(cm.run({"i": ids})["y"], table[ids])


# -- the other ops that take indices as data --------------------------------------------------------

def _ir_model(opname: str, params: dict[str, np.ndarray], **attrs) -> Module:
    m = Module()
    g = m.add_graph(Graph())
    b = Builder(m, g)
    vals = [g.add_param(n, tensor(str(DType.from_numpy(a.dtype)), list(a.shape))) for n, a in params.items()]
    g.set_outputs([b.op(opname, *vals, **attrs)], ["y"])
    return m


def _other_index_cases():
    """(op, feeds, name of the index input, size of the indexed dim, attrs)."""
    yield ("rotary_embedding", {"x": RNG.standard_normal((1, 2, 3, 4)).astype(np.float32),
                                "cos": RNG.standard_normal((5, 2)).astype(np.float32),
                                "sin": RNG.standard_normal((5, 2)).astype(np.float32),
                                "pos": np.array([[1, 4, -2]], np.int64)}, "pos", 5, {})
    yield ("roi_align", {"x": RNG.standard_normal((2, 1, 4, 4)).astype(np.float32),
                         "rois": np.array([[0, 0, 3, 3], [1, 1, 2, 3]], np.float32),
                         "bi": np.array([1, -2], np.int64)}, "bi", 2,
           {"mode": "avg", "output_height": 2, "output_width": 2, "sampling_ratio": 1, "spatial_scale": 1.0,
            "coordinate_transformation_mode": "half_pixel"})
    yield ("max_unpool", {"x": RNG.standard_normal((1, 1, 2, 2)).astype(np.float32),
                          "ind": np.array([0, 3, -7, 15], np.int64).reshape(1, 1, 2, 2)}, "ind", 16,
           {"kernel_shape": [2, 2], "strides": [2, 2]})


@pytest.mark.parametrize("case", list(_other_index_cases()), ids=lambda c: c[0])
def test_other_index_operands_are_checked(case):
    opname, feeds, key, n, attrs = case
    m = _ir_model(opname, feeds, **attrs)
    want = interpret(m, feeds)["y"]  # valid indices, negative ones among them
    jit = nnc.compile(m, target="x86")
    np.testing.assert_allclose(jit.run(feeds)["y"], want, rtol=1e-6, atol=1e-6)
    for bad in (n, 1000, -n - 1, -2**40):
        spoilt = feeds[key].copy()
        spoilt.reshape(-1)[-1] = bad
        for run in (lambda f: interpret(m, f), jit.run):
            with pytest.raises(InputError, match=rf"{opname} .*index {bad} .*out of range for a dim of {n}\b"):
                run({**feeds, key: spoilt})


# -- size guards ----------------------------------------------------------------------------------

def _outer_then_matmul(n: int, m: int) -> Module:
    """x[1,n,1] + y[1,m] -> s[1,n,m] (f32) -> s @ w[m,1]: the intermediate s lives in the arena."""
    mod = Module()
    g = mod.add_graph(Graph())
    b = Builder(mod, g)
    x = g.add_param("x", tensor("f32", [1, n, 1]))
    y = g.add_param("y", tensor("f32", [1, m]))
    w = g.add_param("w", tensor("f32", [m, 1]))
    s = b.op("add", x, y)
    g.set_outputs([b.op("matmul", s, w)], ["z"])
    return mod


def test_x86_refuses_a_3_6_tib_intermediate_at_compile():
    n = m = 994_873  # 4 * n * m bytes = 3.6 TiB
    with pytest.raises(TargetError) as err:
        nnc.compile(_outer_then_matmul(n, m), target="x86", cache=False)
    msg = str(err.value)
    assert "add -> %" in msg and "f32[1,994873,994873]" in msg and "3.6 TiB" in msg, msg


def test_x86_executable_checks_its_arena_before_allocating(tmp_path, monkeypatch):
    """A cache hit skips compilation (and its checks): loading under a smaller bound is refused too."""
    mod = _outer_then_matmul(64, 64)  # a 16 KiB intermediate
    feeds = {"x": np.ones((1, 64, 1), np.float32), "y": np.ones((1, 64), np.float32),
             "w": np.ones((64, 1), np.float32)}
    cm = nnc.compile(mod, target="x86", cache_dir=str(tmp_path))
    np.testing.assert_array_equal(cm.run(feeds)["z"], np.full((1, 64, 1), 128.0, np.float32))
    monkeypatch.setenv(memory_limits.ENV, "8K")
    with pytest.raises(TargetError, match=r"x86: the arena needs .*more than this machine can give .*NNC_MEMORY_LIM"):
        nnc.compile(mod, target="x86", cache_dir=str(tmp_path))  # a hit: the executable's own check
    with pytest.raises(TargetError, match=r"x86: add -> %.* \(f32\[1,64,64\]\) needs 16\.0 KiB"):
        nnc.compile(mod, target="x86", cache=False)  # a fresh compile: the storage map's check


def test_interface_json_carries_the_kernel_table():
    from nnc.backends.x86.executable import Interface

    m, _ = _index_case("gather")
    iface = nnc.compile(m, target="x86", cache=False).executable.interface
    assert len(iface.kernels) == 1 and iface.kernels[0].startswith("gather -> %") and "'G0'" in iface.kernels[0]
    assert iface.error_offset is not None and iface.arena_bytes >= iface.error_offset + 24
    assert Interface.from_json(iface.to_json()) == iface
    old = {k: v for k, v in iface.to_json().items() if k not in ("kernels", "error_offset")}
    with pytest.raises(KeyError):  # a cache entry written before status codes: rebuilt, never run
        Interface.from_json(old)
    assert iface.error_message(1) == f"{iface.kernels[0]}: an index is out of range"
    assert iface.error_message(7).startswith("kernel #6")


def test_i32_indices_are_checked_after_sign_extension():
    feeds = {"x": DATA, "i": np.array([[0, -4], [3, -1]], np.int32)}
    m = _ir_model("gather_elements", {"x": DATA, "i": np.zeros((2, 3), np.int32)}, axis=0)
    m1 = _ir_model("gather", feeds, axis=0)
    jit = nnc.compile(m1, target="x86")
    np.testing.assert_array_equal(jit.run(feeds)["y"], DATA[[[0, 0], [3, 3]]])
    jit_e = nnc.compile(m, target="x86")
    for bad in (4, -5, 2**31 - 1, -2**31):
        spoilt = {**feeds, "i": np.array([[0, bad], [3, -1]], np.int32)}
        for run in (lambda f: interpret(m1, f), jit.run):
            with pytest.raises(InputError, match=rf"gather .*index {bad} .*out of range for a dim of 4"):
                run(spoilt)
        ind = np.zeros((2, 3), np.int32)
        ind[1, 2] = bad
        with pytest.raises(InputError, match=rf"gather_elements .*index {bad} "):
            jit_e.run({"x": DATA, "i": ind})

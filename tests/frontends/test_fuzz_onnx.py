"""Fuzzing the ONNX importer: hypothesis mutates three small valid models at the protobuf level
(dims, dtypes, attribute values and types, op types, edges and names, node inputs, initializer shapes
and data, opset and IR versions) and every mutant must end in one of two ways:

- a typed ``nnc.NncError`` (at import, compile or run time), or
- outputs on which the reference interpreter and the x86 backend agree.

A ModelError that the importer's safety net made out of a converter crash (it chains the original
AttributeError/IndexError/...) is only allowed for a node the ONNX checker accepts: a node that breaks
its schema must be stopped by the generic schema check before it reaches a converter.

The examples are derandomized (a fixed sequence, the same on every run) and counted, so the test also
shows how the mutants ended; ``pytest -s`` prints the tally.
"""

from __future__ import annotations

import collections
import re

import numpy as np
import onnx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper, numpy_helper

import nnc

EXAMPLES_PER_MODEL = 150  # three models: 450 mutants, each with one to three mutations
SYMBOL_SIZE = 2  # what a symbolic input dim is bound to at run time
_UNTYPED = (AttributeError, IndexError, KeyError, TypeError, ValueError, ZeroDivisionError)


# -- the three valid models --------------------------------------------------------------------------
def _f32(shape, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


def _finish(nodes, inputs, outputs, inits, opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "fuzz", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], producer_name="fuzz")
    m.ir_version = 8
    onnx.checker.check_model(m, full_check=True)
    return m


def mlp() -> onnx.ModelProto:
    """x[N,6] -> MatMul -> Add -> Relu -> Gemm -> Softmax -> y[N,3]."""
    inits = [numpy_helper.from_array(_f32((6, 5), 1), "w1"), numpy_helper.from_array(_f32(5, 2), "b1"),
             numpy_helper.from_array(_f32((5, 3), 3), "w2"), numpy_helper.from_array(_f32(3, 4), "b2")]
    nodes = [helper.make_node("MatMul", ["x", "w1"], ["h"], name="fc1"),
             helper.make_node("Add", ["h", "b1"], ["h1"], name="bias1"),
             helper.make_node("Relu", ["h1"], ["h2"], name="relu1"),
             helper.make_node("Gemm", ["h2", "w2", "b2"], ["z"], name="fc2", alpha=1.0, beta=1.0, transB=0),
             helper.make_node("Softmax", ["z"], ["y"], name="softmax", axis=1)]
    return _finish(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 3])], inits)


def cnn() -> onnx.ModelProto:
    """x[1,2,6,6] -> Conv -> BatchNormalization -> Relu -> MaxPool -> AveragePool -> Flatten -> y[1,12]."""
    inits = [numpy_helper.from_array(_f32((3, 2, 3, 3), 5), "cw"), numpy_helper.from_array(_f32(3, 6), "cb"),
             numpy_helper.from_array(np.array([1.0, 0.5, 2.0], np.float32), "scale"),
             numpy_helper.from_array(_f32(3, 7), "shift"), numpy_helper.from_array(_f32(3, 8), "mean"),
             numpy_helper.from_array(np.array([1.0, 2.0, 0.5], np.float32), "var")]
    nodes = [helper.make_node("Conv", ["x", "cw", "cb"], ["c"], name="conv", pads=[1, 1, 1, 1],
                              strides=[1, 1], kernel_shape=[3, 3]),
             helper.make_node("BatchNormalization", ["c", "scale", "shift", "mean", "var"], ["n"], name="bn",
                              epsilon=1e-5),
             helper.make_node("Relu", ["n"], ["r"], name="relu"),
             helper.make_node("MaxPool", ["r"], ["p"], name="maxpool", kernel_shape=[2, 2], strides=[2, 2]),
             helper.make_node("AveragePool", ["p"], ["a"], name="avgpool", kernel_shape=[2, 2], strides=[1, 1],
                              pads=[0, 0, 1, 1], count_include_pad=0),
             helper.make_node("Flatten", ["a"], ["y"], name="flatten", axis=1)]
    return _finish(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 6, 6])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 27])], inits)


def shapes() -> onnx.ModelProto:
    """x[B,3,4]: Shape -> Gather -> Unsqueeze -> Concat -> Reshape, then Slice and ReduceMean."""
    i64 = lambda a, n: numpy_helper.from_array(np.array(a, np.int64), n)  # noqa: E731
    inits = [i64(0, "zero"), i64([0], "axes0"), i64([-1, 4], "tail"), i64([1], "starts"), i64([3], "ends"),
             i64([1], "axes1")]
    nodes = [helper.make_node("Shape", ["x"], ["s"], name="shape"),
             helper.make_node("Gather", ["s", "zero"], ["b"], name="gather", axis=0),
             helper.make_node("Unsqueeze", ["b", "axes0"], ["b1"], name="unsqueeze"),
             helper.make_node("Concat", ["b1", "tail"], ["target"], name="concat", axis=0),
             helper.make_node("Reshape", ["x", "target"], ["r"], name="reshape"),
             helper.make_node("Slice", ["r", "starts", "ends", "axes1"], ["sl"], name="slice"),
             helper.make_node("ReduceMean", ["sl"], ["y"], name="mean", axes=[1], keepdims=0)]
    return _finish(nodes, [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["B", 3, 4])],
                   [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["B", 4])], inits)


MODELS = {"mlp": mlp, "cnn": cnn, "shapes": shapes}


# -- mutations ---------------------------------------------------------------------------------------
DTYPES = [TensorProto.FLOAT, TensorProto.DOUBLE, TensorProto.FLOAT16, TensorProto.INT64, TensorProto.INT32,
          TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL, TensorProto.STRING, TensorProto.UNDEFINED, 77]
OP_TYPES = ["Relu", "Add", "MatMul", "Gemm", "Conv", "MaxPool", "AveragePool", "BatchNormalization", "Flatten",
            "Reshape", "Gather", "Concat", "Slice", "ReduceMean", "Shape", "Unsqueeze", "Softmax", "Transpose",
            "Identity", "Sigmoid", "Mul", "Cast", "Squeeze", "TopK", "Frobnicate"]
ATTR_NAMES = ["axis", "axes", "kernel_shape", "pads", "strides", "keepdims", "perm", "to", "epsilon", "alpha",
              "auto_pad", "bogus"]
STRINGS = ["NOTSET", "SAME_UPPER", "SAME_LOWER", "VALID", "bogus", ""]
small_int = st.integers(-3, 7)
small_ints = st.lists(small_int, max_size=5)
small_float = st.sampled_from([0.0, -1.0, 0.5, 2.0, 1e-5, float("nan"), float("inf")])


def _values(g: onnx.GraphProto) -> list[str]:
    return [vi.name for vi in g.input] + [t.name for t in g.initializer] + [o for n in g.node for o in n.output]


def _new_attribute(data, name: str) -> onnx.AttributeProto:
    kind = data.draw(st.sampled_from(["int", "ints", "float", "floats", "string"]), label="attr kind")
    value = {"int": small_int, "ints": small_ints, "float": small_float,
             "floats": st.lists(small_float, max_size=3), "string": st.sampled_from(STRINGS)}[kind]
    return helper.make_attribute(name, data.draw(value, label=f"{name} value"),
                                 attr_type=getattr(onnx.AttributeProto, kind.upper()))


def mutate_dim(m, data):
    vis = list(m.graph.input) + list(m.graph.output)
    vi = data.draw(st.sampled_from(vis), label="value info")
    shape = vi.type.tensor_type.shape
    what = data.draw(st.sampled_from(["set", "symbol", "add", "drop", "unranked"]), label="dim change")
    if what == "unranked":
        vi.type.tensor_type.ClearField("shape")
    elif what == "add":
        shape.dim.add().dim_value = data.draw(st.integers(1, 4), label="new dim")
    elif shape.dim:
        i = data.draw(st.integers(0, len(shape.dim) - 1), label="dim index")
        if what == "drop":
            del shape.dim[i]
        elif what == "symbol":
            shape.dim[i].dim_param = data.draw(st.sampled_from(["N", "B", "K"]), label="symbol")
        else:
            # 0 included: a zero-size dim runs on every target and gives empty outputs
            shape.dim[i].dim_value = data.draw(st.integers(0, 7), label="dim value")


def mutate_value_dtype(m, data):
    vi = data.draw(st.sampled_from(list(m.graph.input) + list(m.graph.output)), label="value info")
    vi.type.tensor_type.elem_type = data.draw(st.sampled_from(DTYPES), label="dtype")


def mutate_initializer_dtype(m, data):
    t = data.draw(st.sampled_from(list(m.graph.initializer)), label="initializer")
    t.data_type = data.draw(st.sampled_from(DTYPES), label="dtype")


def mutate_initializer_shape(m, data):
    t = data.draw(st.sampled_from(list(m.graph.initializer)), label="initializer")
    dims = data.draw(st.lists(st.integers(1, 6), max_size=4), label="dims")
    if data.draw(st.booleans(), label="regenerate data"):  # a consistent tensor of another shape
        try:
            arr = numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - an earlier mutation broke it: keep the data, change the dims
            t.dims[:] = dims
            return
        fresh = np.resize(arr, dims) if arr.size else np.zeros(dims, arr.dtype)
        t.CopyFrom(numpy_helper.from_array(fresh.astype(arr.dtype), t.name))
    else:
        t.dims[:] = dims


def mutate_initializer_data(m, data):
    t = data.draw(st.sampled_from(list(m.graph.initializer)), label="initializer")
    raw = t.raw_data
    cut = data.draw(st.integers(-len(raw), 9), label="bytes cut/added")
    t.raw_data = raw[:cut] if cut < 0 else raw + bytes(range(cut))


def mutate_attribute_value(m, data):
    nodes = [n for n in m.graph.node if n.attribute]
    node = data.draw(st.sampled_from(nodes), label="node")
    a = data.draw(st.sampled_from(list(node.attribute)), label="attribute")
    if a.type == onnx.AttributeProto.INT:
        a.i = data.draw(small_int, label="int")
    elif a.type == onnx.AttributeProto.INTS:
        a.ints[:] = data.draw(small_ints, label="ints")
    elif a.type == onnx.AttributeProto.FLOAT:
        a.f = data.draw(small_float, label="float")
    elif a.type == onnx.AttributeProto.STRING:
        a.s = data.draw(st.sampled_from(STRINGS), label="string").encode()


def mutate_attribute_type(m, data):
    nodes = [n for n in m.graph.node if n.attribute]
    node = data.draw(st.sampled_from(nodes), label="node")
    i = data.draw(st.integers(0, len(node.attribute) - 1), label="attribute")
    node.attribute[i].CopyFrom(_new_attribute(data, node.attribute[i].name))


def mutate_attribute_set(m, data):
    node = data.draw(st.sampled_from(list(m.graph.node)), label="node")
    if node.attribute and data.draw(st.booleans(), label="remove"):
        del node.attribute[data.draw(st.integers(0, len(node.attribute) - 1), label="attribute")]
    else:
        name = data.draw(st.sampled_from(ATTR_NAMES), label="attribute name")
        kept = [a for a in node.attribute if a.name != name]
        del node.attribute[:]
        node.attribute.extend(kept + [_new_attribute(data, name)])


def mutate_op_type(m, data):
    node = data.draw(st.sampled_from(list(m.graph.node)), label="node")
    node.op_type = data.draw(st.sampled_from(OP_TYPES), label="op type")


def mutate_edge(m, data):
    node = data.draw(st.sampled_from([n for n in m.graph.node if n.input]), label="node")
    i = data.draw(st.integers(0, len(node.input) - 1), label="input index")
    node.input[i] = data.draw(st.sampled_from(_values(m.graph) + ["", "nowhere"]), label="new input")


def mutate_inputs(m, data):
    node = data.draw(st.sampled_from(list(m.graph.node)), label="node")
    if node.input and data.draw(st.booleans(), label="remove"):
        del node.input[data.draw(st.integers(0, len(node.input) - 1), label="input index")]
    else:
        node.input.append(data.draw(st.sampled_from(_values(m.graph) + [""]), label="extra input"))


def mutate_output_name(m, data):
    node = data.draw(st.sampled_from(list(m.graph.node)), label="node")
    i = data.draw(st.integers(0, len(node.output)), label="output index")
    name = data.draw(st.sampled_from(_values(m.graph) + ["", "fresh"]), label="new name")
    if i == len(node.output):
        node.output.append(name)
    else:
        node.output[i] = name


def mutate_graph_output(m, data):
    vi = data.draw(st.sampled_from(list(m.graph.output)), label="graph output")
    vi.name = data.draw(st.sampled_from(_values(m.graph) + ["nowhere"]), label="new name")


def mutate_rename(m, data):
    """Rename one value everywhere it appears (so the model stays connected) to an awkward name."""
    old = data.draw(st.sampled_from(_values(m.graph)), label="value")
    new = data.draw(st.sampled_from(["", " ", "a b", "%w", "@w", "1", "a.b", "main", "?", "é", "x", "y", "w" * 200]),
                    label="new name")
    for vi in list(m.graph.input) + list(m.graph.output):
        vi.name = new if vi.name == old else vi.name
    for t in m.graph.initializer:
        t.name = new if t.name == old else t.name
    for n in m.graph.node:
        n.input[:] = [new if v == old else v for v in n.input]
        n.output[:] = [new if v == old else v for v in n.output]


def mutate_duplicate_node(m, data):
    node = data.draw(st.sampled_from(list(m.graph.node)), label="node")
    m.graph.node.insert(data.draw(st.integers(0, len(m.graph.node)), label="at"), node)


def mutate_node_order(m, data):
    nodes = list(m.graph.node)
    i = data.draw(st.integers(0, len(nodes) - 1), label="node")
    if data.draw(st.booleans(), label="delete"):
        del m.graph.node[i]
        return
    j = data.draw(st.integers(0, len(nodes) - 1), label="swap with")
    nodes[i], nodes[j] = nodes[j], nodes[i]
    del m.graph.node[:]
    m.graph.node.extend(nodes)


def mutate_versions(m, data):
    if data.draw(st.booleans(), label="opset"):
        m.opset_import[0].version = data.draw(st.sampled_from([1, 6, 9, 11, 13, 17, 18, 21, 28, 29, 99]),
                                              label="opset")
    else:
        m.ir_version = data.draw(st.sampled_from([1, 3, 4, 7, 8, 10, 14, 15, 999]), label="IR version")


MUTATIONS = [mutate_dim, mutate_value_dtype, mutate_initializer_dtype, mutate_initializer_shape,
             mutate_initializer_data, mutate_attribute_value, mutate_attribute_type, mutate_attribute_set,
             mutate_op_type, mutate_edge, mutate_inputs, mutate_output_name, mutate_graph_output, mutate_rename,
             mutate_duplicate_node, mutate_node_order, mutate_versions]


# -- running a mutant --------------------------------------------------------------------------------
def _feeds(cm: nnc.CompiledModel) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for name, t in cm.input_types.items():
        shape = tuple(d if isinstance(d, int) else SYMBOL_SIZE for d in (t.shape or ()))
        dt = t.dtype.numpy
        if np.issubdtype(dt, np.floating):
            a = rng.standard_normal(shape)
        elif dt == np.bool_:
            a = rng.integers(0, 2, shape)
        else:  # small non-negative integers: valid as indices and shapes more often than not
            a = rng.integers(0, 3, shape)
        feeds[name] = np.asarray(a).astype(dt)
    return feeds


def _tolerance(dt: np.dtype) -> tuple[float, float]:
    """(rtol, atol) for comparing x86 with the interpreter: a few ulps of accumulated rounding for these
    tiny models (sums of at most 18 products) in floats, exact otherwise."""
    if dt == np.float16:
        return 4e-3, 4e-3
    if dt == np.float32:
        return 1e-5, 1e-6
    if dt == np.float64:
        return 1e-12, 1e-14
    return 0.0, 0.0


def _checker_objection(model: onnx.ModelProto, node: onnx.NodeProto) -> str | None:
    """What the ONNX checker says against one node on its own (schema rules only), or None."""
    ctx = onnx.checker.C.CheckerContext()
    ctx.ir_version = onnx.IR_VERSION
    ctx.opset_imports = {("" if o.domain == "ai.onnx" else o.domain): o.version for o in model.opset_import}
    try:
        onnx.checker.check_node(node, ctx)
    except onnx.checker.ValidationError as e:
        return str(e).splitlines()[0]
    return None


def _check_safety_net(e: nnc.NncError, model: onnx.ModelProto) -> bool:
    """True when ``e`` came from the importer's safety net; fail if the crashing node breaks its schema."""
    if not isinstance(e.__cause__, _UNTYPED) or "malformed" not in str(e):
        return False  # a typed error of its own, or a pass failure (the pass manager chains those too)
    m = re.search(r"(\S+) node '([^']*)' \(opset \d+\): malformed node \(", str(e))
    assert m, f"the importer's safety net fired outside any node: {e}"
    node = next(n for n in model.graph.node if n.name == m.group(2) or (not n.name and m.group(2) in n.output))
    objection = _checker_objection(model, node)
    assert objection is None, (f"the schema check missed a node the ONNX checker rejects ({objection}); the "
                               f"converter crashed instead: {e}")
    return True


def run_mutant(model: onnx.ModelProto) -> str:
    """How the mutant ended: a typed error from import and the reference pipeline ('rejected'; 'safety-net'
    when the importer's safety net made it), from the interpreter's run ('run') or from the x86 compile
    ('x86'); or 'agree'."""
    try:
        ref = nnc.compile(model)
    except nnc.NncError as e:
        return "safety-net" if _check_safety_net(e, model) else "rejected"
    for node in model.graph.node:  # nothing the ONNX checker refuses gets through
        objection = _checker_objection(model, node)
        assert objection is None, f"imported although the ONNX checker rejects {node.name!r}: {objection}"
    feeds = _feeds(ref)
    try:
        expected = ref.run(feeds)
    except nnc.NncError:
        return "run"  # the x86 code is not run on inputs the interpreter refuses
    try:
        cm = nnc.compile(model, target="x86", cache=False, quiet=True)
    except nnc.NncError:
        return "x86"
    got = cm.run(feeds)
    assert list(got) == list(expected)
    for name, want in expected.items():
        have = got[name]
        assert have.dtype == want.dtype and have.shape == want.shape, (name, have.dtype, have.shape, want.dtype,
                                                                       want.shape)
        rtol, atol = _tolerance(want.dtype)
        np.testing.assert_allclose(have, want, rtol=rtol, atol=atol, equal_nan=True, err_msg=name)
    return "agree"


TALLY: dict[str, collections.Counter] = {}


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy on mutated weights (a negative variance...)
@pytest.mark.parametrize("name", list(MODELS))
def test_mutants_end_typed_or_agree(name: str) -> None:
    base = MODELS[name]()
    tally = TALLY.setdefault(name, collections.Counter())
    run_mutant(base)  # the unmutated model runs and agrees

    @settings(max_examples=EXAMPLES_PER_MODEL, derandomize=True, deadline=None, database=None,
              suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def mutants(data) -> None:
        m = onnx.ModelProto()
        m.CopyFrom(base)
        n = data.draw(st.integers(1, 3), label="mutations")
        for _ in range(n):
            data.draw(st.sampled_from(MUTATIONS), label="mutation")(m, data)
        tally["mutations"] += n
        tally[run_mutant(m)] += 1

    mutants()
    print(f"\n{name}: {dict(tally)}")
    # the generated space is wide enough that mutants end both ways
    assert tally["mutations"] >= EXAMPLES_PER_MODEL
    assert tally["rejected"] >= EXAMPLES_PER_MODEL // 4
    assert tally["agree"] >= 5

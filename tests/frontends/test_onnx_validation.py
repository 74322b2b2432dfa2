"""The ONNX importer checks a model against the ONNX specification before converting it.

One test per crash class of issue 14: nodes that used to reach their converter malformed and die
there with AttributeError/IndexError/ValueError now stop at the generic schema check with a
ModelError naming the node, its op type and opset; future opsets and IR versions, values produced
twice and graph outputs declared with the wrong element type are refused too. (Broken external data
is tested with the other external-data cases in test_bad_input.py.)
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

import nnc
from nnc.frontends.onnx import registry

OPSET = 17


def _model(nodes, inputs=None, outputs=None, inits=(), opset: int = OPSET, ir: int = 8,
           extra_opsets=()) -> onnx.ModelProto:
    inputs = inputs if inputs is not None else [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 2, 4, 4])]
    outputs = outputs if outputs is not None else [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)]
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    opsets = [helper.make_opsetid("", opset)] + [helper.make_opsetid(d, v) for d, v in extra_opsets]
    m = helper.make_model(g, opset_imports=opsets)
    m.ir_version = ir
    return m


def _node(op: str, inputs: list[str], outputs: list[str] | None = None, **attrs) -> onnx.NodeProto:
    return helper.make_node(op, inputs, outputs or ["y"], name=f"{op.lower()}_7", **attrs)


def _import_error(model: onnx.ModelProto, kind: type = nnc.ModelError) -> str:
    with pytest.raises(kind) as e:
        nnc.from_onnx(model)
    # raised by a check, not converted from a crash (the safety net chains the original exception)
    assert e.value.__cause__ is None, repr(e.value.__cause__)
    return str(e.value)


# The converter crashes listed in issue 14 (file:line of the crash), each a node with too few inputs.
CONVERTER_CRASHES = {
    "conv.py:49 (no weight)": (_node("Conv", ["x"]), "has 1 input, the schema wants 2 to 3"),
    "elementwise.py:31 (unary, no input)": (_node("Relu", []), "has 0 inputs, the schema wants exactly 1"),
    "elementwise.py:36 (binary, one input)": (_node("Add", ["x"]), "has 1 input, the schema wants exactly 2"),
    "linalg.py:17 (matmul, one input)": (_node("MatMul", ["x"]), "has 1 input, the schema wants exactly 2"),
    "normalization.py:124 (batchnorm, 3 inputs)": (_node("BatchNormalization", ["x", "x", "x"]),
                                                   "has 3 inputs, the schema wants exactly 5"),
    "pool.py:27 (maxpool, no input)": (_node("MaxPool", [], kernel_shape=[2, 2]),
                                       "has 0 inputs, the schema wants exactly 1"),
    "reduce.py:118 (topk, no k)": (_node("TopK", ["x"], ["y", "i"]), "has 1 input, the schema wants exactly 2"),
    "shape.py:73 (reshape, no shape)": (_node("Reshape", ["x"]), "has 1 input, the schema wants exactly 2"),
}


@pytest.mark.parametrize("case", list(CONVERTER_CRASHES))
def test_converter_crash_is_a_schema_error(case: str) -> None:
    node, why = CONVERTER_CRASHES[case]
    msg = _import_error(_model([node]))
    assert f"{node.op_type} node {node.name!r} (opset {OPSET}): {why}" in msg


SCHEMA_CASES = {
    "attribute of the wrong type": (_node("MaxPool", ["x"], kernel_shape=2),
                                    "attribute 'kernel_shape' is INT, the schema wants INTS"),
    "unknown attribute": (_node("Relu", ["x"], alpha=0.5), "unknown attribute 'alpha'"),
    "missing required attribute": (_node("MaxPool", ["x"]), "required attribute 'kernel_shape' is missing"),
    "required input left empty": (_node("Add", ["x", ""]), "input 1 (B) is required but not given"),
    "too many outputs": (_node("Relu", ["x"], ["y", "z"]), "has 2 outputs, the schema wants exactly 1"),
    "element type not allowed": (_node("Sqrt", ["i"]), "input 0 (X, 'i') has element type int64, the schema "
                                                       "allows bfloat16, double, float, float16"),
    "mixed element types under one constraint": (_node("Add", ["x", "i"]),
                                                 "inputs 0 ('x') and 1 ('i') share type T but have element "
                                                 "types float and int64"),
    # a rule onnx.defs does not expose (BatchNormalization allows 1 or 3 outputs, not 2): the checker's
    "output count outside an allowed set": (_node("BatchNormalization", ["x", "s", "s", "s", "s"], ["y", "m"]),
                                            "has output size 2 not in allowed output sizes"),
    "op used before its opset": (_node("LayerNormalization", ["x", "s"]),
                                 "LayerNormalization does not exist in opset 13 of domain 'ai.onnx'; it was "
                                 "introduced in opset 17"),
}


@pytest.mark.parametrize("case", list(SCHEMA_CASES))
def test_schema_violation(case: str) -> None:
    node, why = SCHEMA_CASES[case]
    opset = 13 if case == "op used before its opset" else OPSET
    inits = [numpy_helper.from_array(np.ones(4, np.int64), "i"), numpy_helper.from_array(np.ones(2, np.float32), "s")]
    msg = _import_error(_model([node], inits=inits, opset=opset))
    assert f"{node.op_type} node {node.name!r} (opset {opset}): {why}" in msg


def test_deprecated_op_form_still_imports() -> None:
    # GroupNormalization-18 (one scale per group) is deprecated in later onnx releases, still valid at opset 18
    p = [numpy_helper.from_array(np.array([2.0, 2.0], np.float32), "scale"),
         numpy_helper.from_array(np.array([3.0, 3.0], np.float32), "bias")]
    node = helper.make_node("GroupNormalization", ["x", "scale", "bias"], ["y"], num_groups=2, epsilon=0.0)
    x = np.arange(32, dtype=np.float32).reshape(1, 2, 4, 4)
    y = nnc.compile(_model([node], inits=p, opset=18))(x)
    z = (x - x.mean(axis=(2, 3), keepdims=True)) / x.std(axis=(2, 3), keepdims=True)  # one channel per group
    np.testing.assert_allclose(y, z * 2 + 3, rtol=1e-5, atol=1e-5)


def test_valid_control_flow_is_not_called_malformed() -> None:
    # the If body reads the outer 'x'; a checker run on the node alone would call that unsorted
    out4 = helper.make_tensor_value_info("o", TensorProto.FLOAT, [4])
    body = helper.make_graph([helper.make_node("Relu", ["x"], ["o"])], "body", [], [out4])
    node = helper.make_node("If", ["c"], ["y"], name="branch", then_branch=body, else_branch=body)
    m = _model([node], inputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, [4]),
                               helper.make_tensor_value_info("c", TensorProto.BOOL, [])],
               outputs=[helper.make_tensor_value_info("y", TensorProto.FLOAT, [4])])
    onnx.checker.check_model(m, full_check=True)
    cm = nnc.compile(m)  # imports (the body's read of 'x' becomes an operand of the if) and runs
    x = np.array([-1, 2, -3, 4], np.float32)
    np.testing.assert_array_equal(cm(x, np.array(True)), np.maximum(x, 0))


def test_unknown_op_stays_unsupported() -> None:
    # no schema anywhere: not malformed, just an op nnc (and onnx) does not know
    msg = _import_error(_model([_node("Frobnicate", ["x"])]), nnc.UnsupportedOpError)
    assert "Frobnicate node 'frobnicate_7'" in msg


def test_valid_model_still_imports() -> None:
    w = numpy_helper.from_array(np.full((3, 2, 3, 3), 0.5, np.float32), "w")
    nodes = [_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]), helper.make_node("Relu", ["c"], ["y"])]
    out = [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 4, 4])]
    cm = nnc.compile(_model(nodes, outputs=out, inits=[w]))
    x = np.ones((1, 2, 4, 4), np.float32)
    y = cm(x)
    # the centre pixels see all 2*3*3 ones of the window, each weighted 0.5
    assert y.shape == (1, 3, 4, 4) and y[0, 0, 1, 1] == 9.0 and y[0, 0, 0, 0] == 4.0


# -- the model header -----------------------------------------------------------------------------
def test_future_opset() -> None:
    msg = _import_error(_model([_node("Relu", ["x"])], opset=99))
    newest = onnx.defs.onnx_opset_version()
    assert f"opset 99 of domain 'ai.onnx' is newer than the newest supported opset {newest}" in msg


def test_future_opset_of_another_known_domain() -> None:
    msg = _import_error(_model([_node("Relu", ["x"])], extra_opsets=[("ai.onnx.ml", 77)]))
    assert "opset 77 of domain 'ai.onnx.ml' is newer" in msg


def test_future_ir_version() -> None:
    msg = _import_error(_model([_node("Relu", ["x"])], ir=999))
    assert f"IR version 999 is newer than the newest supported IR version {onnx.IR_VERSION}" in msg


def test_custom_domain_opsets_are_not_limited() -> None:
    # onnx knows nothing of com.acme: any version is the model's business (its ops are refused later)
    m = _model([_node("Relu", ["x"])], extra_opsets=[("com.acme", 99)])
    assert nnc.from_onnx(m).main.outputs[0].dtype == nnc.ir.DType.f32


# -- one producer per value -----------------------------------------------------------------------
def test_two_nodes_write_one_value() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["y"], name="first"),
             helper.make_node("Sigmoid", ["x"], ["y"], name="second")]
    msg = _import_error(_model(nodes))
    assert "value 'y' is produced twice: by Relu node 'first' (output 0) and by Sigmoid node 'second' (output 0)" in msg


def test_node_overwrites_an_input() -> None:
    nodes = [helper.make_node("Relu", ["x"], ["x"], name="again")]
    msg = _import_error(_model(nodes, outputs=[helper.make_tensor_value_info("x", TensorProto.FLOAT, None)]))
    assert "value 'x' is produced twice: by graph input 'x' and by Relu node 'again' (output 0)" in msg


def test_node_overwrites_an_initializer() -> None:
    w = numpy_helper.from_array(np.ones(4, np.float32), "w")
    nodes = [helper.make_node("Relu", ["x"], ["w"], name="clobber"), helper.make_node("Add", ["x", "w"], ["y"])]
    msg = _import_error(_model(nodes, inits=[w]))
    assert "value 'w' is produced twice: by initializer 'w' and by Relu node 'clobber' (output 0)" in msg


def test_initializer_listed_as_input_is_one_value() -> None:
    # IR < 4 declared weights as inputs too: the same name twice, one value
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [4])
    w_in = helper.make_tensor_value_info("w", TensorProto.FLOAT, [4])
    m = _model([helper.make_node("Add", ["x", "w"], ["y"])], inputs=[x, w_in], inits=[w], ir=3)
    np.testing.assert_array_equal(nnc.compile(m)(np.ones(4, np.float32)), np.arange(4, dtype=np.float32) + 1)


# -- declared output types ------------------------------------------------------------------------
def test_declared_output_dtype_contradicts_the_graph() -> None:
    out = [helper.make_tensor_value_info("y", TensorProto.INT64, [1, 2, 4, 4])]
    msg = _import_error(_model([_node("Relu", ["x"])], outputs=out))
    assert "graph output 'y' is declared INT64 but the graph computes f32" in msg


def test_output_without_declared_dtype_is_accepted() -> None:
    out = [helper.make_tensor_value_info("y", TensorProto.UNDEFINED, None)]
    assert nnc.from_onnx(_model([_node("Relu", ["x"])], outputs=out)).main.outputs[0].dtype == nnc.ir.DType.f32


# -- the safety net -------------------------------------------------------------------------------
def test_a_converter_crash_becomes_a_model_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash the schema cannot foresee (here a converter that indexes past its inputs) is reported as
    a ModelError naming the node, with the original exception chained for debugging."""
    def crashing(ctx, node):
        return node.inputs[5]

    registry.lookup("", "Relu", OPSET)  # load the table before patching it
    monkeypatch.setitem(registry._TABLE, ("com.acme", "Crash"), [(1, crashing)])
    m = _model([helper.make_node("Crash", ["x"], ["y"], name="boom", domain="com.acme")],
               extra_opsets=[("com.acme", 1)])
    with pytest.raises(nnc.ModelError) as e:
        nnc.from_onnx(m)
    assert "com.acme.Crash node 'boom' (opset 1): malformed node (IndexError: " in str(e.value)
    assert isinstance(e.value.__cause__, IndexError)

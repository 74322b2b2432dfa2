"""Bad input gets one clear, typed error: from the API as an ``NncError`` subclass, and from the CLI
as one ``nnc: error: ...`` line with exit status 1 and no traceback.

Each case is a small model or file built here with onnx.helper; the expected messages are the
facts a user needs (the file, the node name, the domain, the opset, the input and what was wanted).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, external_data_helper, helper, numpy_helper

import nnc

OPSET = 17


def _model(nodes, inputs, outputs, inits=(), opsets=(("", OPSET),)) -> onnx.ModelProto:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid(d, v) for d, v in opsets])
    m.ir_version = 8
    return m


def _add_relu() -> onnx.ModelProto:
    """y = relu(x + w), x: f32[N,4], with a 4-element initializer (so truncation hits real data)."""
    w = numpy_helper.from_array(np.arange(4, dtype=np.float32) - 1.5, "w")
    return _model([helper.make_node("Add", ["x", "w"], ["a"], name="add0"),
                   helper.make_node("Relu", ["a"], ["y"], name="relu0")],
                  [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 4])],
                  [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 4])], [w])


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "nnc", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60)


def _assert_cli_error(r: subprocess.CompletedProcess, *needles: str) -> None:
    assert r.returncode == 1, (r.returncode, r.stdout, r.stderr)
    assert "Traceback" not in r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    assert lines[0].startswith("nnc: error: "), r.stderr
    for n in needles:
        assert n in lines[0], (n, lines[0])


# -- broken files -------------------------------------------------------------------------------
def _truncated(tmp: Path) -> Path:
    data = _add_relu().SerializeToString()
    p = tmp / "truncated.onnx"
    p.write_bytes(data[: len(data) * 2 // 3])
    return p


def _cut_before_opset(tmp: Path) -> Path:
    # a cut that still parses as a protobuf: everything up to (not including) opset_import
    m = _add_relu()
    full = m.SerializeToString()
    del m.opset_import[:]
    head = m.SerializeToString()
    assert full.startswith(head)
    p = tmp / "cut.onnx"
    p.write_bytes(head)
    return p


def _random_bytes(tmp: Path) -> Path:
    p = tmp / "random.onnx"
    p.write_bytes(np.random.default_rng(0).bytes(4096))
    return p


def _empty(tmp: Path) -> Path:
    p = tmp / "empty.onnx"
    p.write_bytes(b"")
    return p


BROKEN_FILES = {
    "missing": (lambda tmp: tmp / "nope.onnx", ["nope.onnx", "no such file"]),
    "empty": (_empty, ["empty.onnx", "empty file"]),
    "truncated": (_truncated, ["truncated.onnx", "not a valid ONNX model", "truncated"]),
    "cut-before-opset": (_cut_before_opset, ["cut.onnx", "opset_import", "truncated"]),
    "random-bytes": (_random_bytes, ["random.onnx", "not a valid ONNX model"]),
    "directory": (lambda tmp: tmp, ["is a directory"]),
    "missing-nnc": (lambda tmp: tmp / "nope.nnc", ["nope.nnc", "no such file"]),
}


@pytest.mark.parametrize("case", list(BROKEN_FILES))
def test_broken_model_file(case: str, tmp_path: Path) -> None:
    make, needles = BROKEN_FILES[case]
    path = make(tmp_path)
    with pytest.raises(nnc.ModelError) as e:
        nnc.compile(str(path))
    for n in needles:
        assert n in str(e.value)
    _assert_cli_error(_cli("run", str(path), "--random-inputs", cwd=tmp_path), *needles)


def test_text_ir_parse_error_names_the_file(tmp_path: Path) -> None:
    p = tmp_path / "bad.nnc"
    p.write_text("graph @main(%x: f32[4]) -> (y: f32[4]) {\n  %y = relu(%undefined) : f32[4]\n  return %y\n}\n")
    with pytest.raises(nnc.ParseError, match=r"bad\.nnc: line 2"):
        nnc.load_module(str(p))
    _assert_cli_error(_cli("dump", str(p), cwd=tmp_path), "bad.nnc", "line 2", "undefined")


def test_text_ir_without_its_weights(tmp_path: Path) -> None:
    p = tmp_path / "m.nnc"
    p.write_text("graph @main(%x: f32[16]) -> (y: f32[16]) {\n  %w = const @w : f32[16]\n"
                 "  %y = add(%x, %w) : f32[16]\n  return %y\n}\n")
    assert "@w" in str(nnc.load_module(str(p)))  # printing needs no weights
    with pytest.raises(nnc.ModelError, match=r"m\.nnc: no data for weight\(s\) @w \(expected in .*m\.npz"):
        nnc.compile(str(p))
    _assert_cli_error(_cli("run", "m.nnc", "--random-inputs", cwd=tmp_path), "m.nnc", "@w", "m.npz")


# -- unsupported ops ----------------------------------------------------------------------------
def _io(n: int = 4) -> tuple[list, list]:
    return ([helper.make_tensor_value_info("x", TensorProto.FLOAT, [n])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, [n])])


UNSUPPORTED = {
    # a custom-domain op the model declares: named with domain, node name and that domain's opset
    "custom-domain": (_model([helper.make_node("FancyOp", ["x"], ["y"], name="fancy_1", domain="com.acme")], *_io(),
                             opsets=(("", OPSET), ("com.acme", 3))),
                      ["com.acme.FancyOp", "fancy_1", "opset 3", "not supported"]),
    # a made-up op type in the default domain
    "made-up-op": (_model([helper.make_node("Frobnicate", ["x"], ["y"], name="frob")], *_io()),
                   ["Frobnicate", "frob", f"opset {OPSET}", "not supported"]),
    # a node of a domain the model never imports
    "undeclared-domain": (_model([helper.make_node("FancyOp", ["x"], ["y"], name="fancy_2", domain="com.acme")],
                                 *_io()),
                          ["com.acme.FancyOp", "fancy_2", "com.acme", "not imported"]),
}


@pytest.mark.parametrize("case", list(UNSUPPORTED))
def test_unsupported_op(case: str, tmp_path: Path) -> None:
    model, needles = UNSUPPORTED[case]
    with pytest.raises(nnc.UnsupportedOpError) as e:
        nnc.from_onnx(model)
    for n in needles:
        assert n in str(e.value)
    path = tmp_path / "m.onnx"
    onnx.save(model, path)
    _assert_cli_error(_cli("compile", str(path), cwd=tmp_path), *needles)


@pytest.mark.parametrize("model, needles", [
    (_model([helper.make_node("Relu", ["x"], ["y"])], *_io(), opsets=(("", 99),)),
     ["opset 99 of domain 'ai.onnx' is newer than the newest supported opset"]),
    (_model([helper.make_node("Add", ["x"], ["y"], name="add_1")], *_io()),
     ["Add node 'add_1' (opset 17)", "has 1 input, the schema wants exactly 2"]),
])
def test_invalid_model_is_one_cli_line(model: onnx.ModelProto, needles: list[str], tmp_path: Path) -> None:
    onnx.save(model, tmp_path / "m.onnx")
    _assert_cli_error(_cli("compile", "m.onnx", cwd=tmp_path), *needles)


def test_unsupported_dtype(tmp_path: Path) -> None:
    x = helper.make_tensor_value_info("x", TensorProto.STRING, [2])
    model = _model([helper.make_node("Identity", ["x"], ["y"])], [x],
                   [helper.make_tensor_value_info("y", TensorProto.STRING, [2])])
    with pytest.raises(nnc.UnsupportedOpError, match="input 'x'.*STRING.*not supported"):
        nnc.from_onnx(model)


# -- external data ------------------------------------------------------------------------------
def _external_model(folder: Path, location: str) -> Path:
    """An Add model whose weight lives in external data, then re-pointed at ``location``."""
    w = numpy_helper.from_array(np.arange(1024, dtype=np.float32), "w")
    model = _model([helper.make_node("Add", ["x", "w"], ["y"], name="add0")], *_io(1024), inits=[w])
    external_data_helper.convert_model_to_external_data(model, all_tensors_to_one_file=True,
                                                        location="weights.bin", size_threshold=0)
    path = folder / "model.onnx"
    onnx.save(model, path)
    m = onnx.load(path, load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = location
    onnx.save(m, path)
    return path


def test_external_data_inside_folder_loads(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin")
    x = np.ones(1024, np.float32)
    y = nnc.compile(str(path))(x)
    np.testing.assert_array_equal(y, x + np.arange(1024, dtype=np.float32))


@pytest.mark.parametrize("location", ["../x.bin", "sub/../../x.bin", "ABSOLUTE"])
def test_external_data_outside_folder_is_refused(location: str, tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = _external_model(folder, "weights.bin")
    # the escaping target exists with the right bytes: refusing it must not depend on it missing
    os.replace(folder / "weights.bin", tmp_path / "x.bin")
    location = str(tmp_path / "x.bin") if location == "ABSOLUTE" else location
    _external_model(folder, location)
    with pytest.raises(nnc.ModelError, match="escapes the model folder") as e:
        nnc.from_onnx(str(path))
    assert "'w'" in str(e.value) and location in str(e.value)
    if location == "../x.bin":  # the CLI only relays the message; once is enough
        _assert_cli_error(_cli("compile", str(path), cwd=tmp_path), "'w'", location,
                          "escapes the model folder")


def test_external_data_symlink_out_of_folder_is_refused(tmp_path: Path) -> None:
    folder = tmp_path / "model"
    folder.mkdir()
    path = _external_model(folder, "link.bin")
    os.replace(folder / "weights.bin", tmp_path / "x.bin")
    os.symlink(tmp_path / "x.bin", folder / "link.bin")
    with pytest.raises(nnc.ModelError, match="'link.bin' escapes the model folder"):
        nnc.from_onnx(str(path))


def test_external_data_missing_file(tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin")
    (tmp_path / "weights.bin").unlink()
    with pytest.raises(nnc.ModelError, match="'weights.bin' not found"):
        nnc.from_onnx(str(path))


def _set_extent(path: Path, **fields: str | None) -> None:
    """Rewrite the weight's external-data entries (offset, length; None removes one) in the saved model."""
    m = onnx.load(path, load_external_data=False)
    (t,) = m.graph.initializer
    info = {e.key: e.value for e in t.external_data}
    info.update(fields)
    info = {k: v for k, v in info.items() if v is not None}
    del t.external_data[:]
    for k, v in info.items():
        t.external_data.add(key=k, value=v)
    onnx.save(m, path)


# the weight is 1024 f32 = 4096 bytes, the whole of weights.bin
@pytest.mark.parametrize("fields, why", [
    ({"offset": "0", "length": "8192"}, "reaches past the end of the file (offset 0, byte 8192; the file has 4096"),
    ({"offset": "4000", "length": "4096"}, "reaches past the end of the file (offset 4000, byte 8096"),
    ({"offset": "5000", "length": None}, "reaches past the end of the file (offset 5000, the end; the file has 4096"),
    ({"offset": "-8"}, "has a negative offset (-8)"),
    ({"offset": "0", "length": "-4096"}, "has a negative length (-4096)"),
    ({"offset": "zero"}, "has a non-integer offset 'zero'"),
])
def test_external_data_extent_outside_the_file(fields: dict, why: str, tmp_path: Path) -> None:
    path = _external_model(tmp_path, "weights.bin")
    assert (tmp_path / "weights.bin").stat().st_size == 4096
    _set_extent(path, **fields)
    with pytest.raises(nnc.ModelError) as e:
        nnc.from_onnx(str(path))
    assert f"initializer 'w': external data 'weights.bin' {why}" in str(e.value)


def test_external_data_extent_inside_the_file_loads(tmp_path: Path) -> None:
    # the last 2048 bytes: the weight's second half, declared as a 512-element tensor
    path = _external_model(tmp_path, "weights.bin")
    m = onnx.load(path, load_external_data=False)
    m.graph.initializer[0].dims[:] = [512]
    m.graph.input[0].type.tensor_type.shape.dim[0].dim_value = 512
    m.graph.output[0].type.tensor_type.shape.dim[0].dim_value = 512
    onnx.save(m, path)
    _set_extent(path, offset="2048", length="2048")
    y = nnc.compile(str(path))(np.zeros(512, np.float32))
    np.testing.assert_array_equal(y, np.arange(512, 1024, dtype=np.float32))


# -- run-time inputs ----------------------------------------------------------------------------
INPUT_CASES = {
    # name: (feeds, API message pieces, CLI args beyond the model, CLI message pieces)
    "missing": ({}, ["missing input 'x'", "f32[N,4]"], [], ["missing input", "x: f32[N,4]", "--input"]),
    "wrong-shape": ({"x": np.ones((2, 5), np.float32)}, ["input 'x'", "[2, 5]", "f32[N,4]"],
                    ["x=wrong_shape.npy"], ["input 'x' (wrong_shape.npy)", "[2, 5]", "f32[N,4]"]),
    "wrong-rank": ({"x": np.ones(4, np.float32)}, ["input 'x'", "rank 2"],
                   ["x=wrong_rank.npy"], ["input 'x'", "rank 2"]),
    "wrong-dtype": ({"x": np.ones((2, 4), np.float64)}, ["input 'x'", "f64", "f32"],
                    ["x=wrong_dtype.npy"], ["input 'x'", "wrong_dtype.npy", "f64", "f32[N,4]", "astype"]),
    "unknown-name": ({"x": np.ones((2, 4), np.float32), "z": np.ones(1)}, ["unexpected input", "'z'"],
                     ["z=wrong_dtype.npy"], ["no input 'z'", "x: f32[N,4]"]),
}


@pytest.mark.parametrize("case", list(INPUT_CASES))
def test_bad_run_inputs(case: str, tmp_path: Path) -> None:
    feeds, api_needles, cli_inputs, cli_needles = INPUT_CASES[case]
    cm = nnc.compile(_add_relu())
    with pytest.raises(nnc.InputError) as e:
        cm.run(feeds)
    for n in api_needles:
        assert n in str(e.value)
    onnx.save(_add_relu(), tmp_path / "m.onnx")
    np.save(tmp_path / "wrong_shape.npy", np.ones((2, 5), np.float32))
    np.save(tmp_path / "wrong_rank.npy", np.ones(4, np.float32))
    np.save(tmp_path / "wrong_dtype.npy", np.ones((2, 4), np.float64))
    args = [a for spec in cli_inputs for a in ("--input", spec)]
    _assert_cli_error(_cli("run", "m.onnx", *args, cwd=tmp_path), *cli_needles)


@pytest.mark.parametrize("args, needles", [
    (["--input", "x=absent.npy"], ["input 'x'", "absent.npy", "no such file"]),
    (["--input", "x=junk.npy"], ["input 'x'", "junk.npy", "not a readable .npy file"]),
    (["--input", "x=m.onnx.d"], ["input 'x'", "m.onnx.d", "is a directory"]),
    (["--random-inputs"], ["'N'", "--dim N=SIZE"]),
])
def test_bad_input_file(args: list[str], needles: list[str], tmp_path: Path) -> None:
    onnx.save(_add_relu(), tmp_path / "m.onnx")
    (tmp_path / "junk.npy").write_bytes(b"not numpy")
    (tmp_path / "m.onnx.d").mkdir()
    _assert_cli_error(_cli("run", "m.onnx", *args, cwd=tmp_path), *needles)

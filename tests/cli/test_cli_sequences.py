"""``nnc run`` with sequence inputs and outputs: a sequence comes from an .npy array whose first axis
enumerates the elements, random ones have two elements, and sequence outputs are written one file
per element."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto as T
from onnx import helper as h
from test_cli import error_line, nnc_cli, ok


def _model(path: Path) -> Path:
    """s: seq<f32[2]> -> (n = its length, parts = Relu of each element)."""
    body = h.make_graph([h.make_node("Relu", ["e"], ["r"])], "body", [h.make_tensor_value_info("e", T.FLOAT, [2])],
                        [h.make_tensor_value_info("r", T.FLOAT, [2])])
    g = h.make_graph([h.make_node("SequenceLength", ["s"], ["n"]),
                      h.make_node("SequenceMap", ["s"], ["parts"], body=body)], "g",
                     [h.make_tensor_sequence_value_info("s", T.FLOAT, [2])],
                     [h.make_tensor_value_info("n", T.INT64, []),
                      h.make_tensor_sequence_value_info("parts", T.FLOAT, [2])])
    onnx.save(h.make_model(g, opset_imports=[h.make_opsetid("", 17)]), path)
    return path


def test_run_takes_and_writes_sequences(tmp_path: Path) -> None:
    model = _model(tmp_path / "seq.onnx")
    x = np.array([[1, -2], [-3, 4], [5, 6]], np.float32)
    np.save(tmp_path / "s.npy", x)
    out = ok(nnc_cli("run", model, "--target", "x86", "--input", f"s={tmp_path / 's.npy'}", "-o", tmp_path / "out"))
    assert "output parts: sequence of 3 (f32[2])" in out
    assert np.load(tmp_path / "out" / "n.npy") == 3
    for k in range(3):
        np.testing.assert_array_equal(np.load(tmp_path / "out" / f"parts.{k}.npy"), np.maximum(x[k], 0))
    assert "sequence of 2" in ok(nnc_cli("run", model, "--random-inputs"))


def test_a_0d_array_is_not_a_sequence(tmp_path: Path) -> None:
    model = _model(tmp_path / "seq.onnx")
    np.save(tmp_path / "s.npy", np.float32(1))
    r = nnc_cli("run", model, "--input", f"s={tmp_path / 's.npy'}")
    assert "first axis enumerates the elements" in error_line(r)

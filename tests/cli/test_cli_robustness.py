"""The CLI under hostile use: a reader that closes the pipe early, absurd sizes for random inputs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import onnx
from onnx import TensorProto, helper

from nnc.cli import main

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def test_a_closed_pipe_is_not_a_failure() -> None:
    """`nnc ops | head -1`: the reader got what it wanted; nnc exits 0 without a traceback."""
    proc = subprocess.Popen([sys.executable, "-m", "nnc", "ops", "--no-functions"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    first = proc.stdout.readline()
    proc.stdout.close()  # what `head -1` does after its line
    _, err = proc.communicate(timeout=300)
    assert first.startswith(b"ONNX op") and proc.returncode == 0, err.decode()
    assert b"Traceback" not in err


def test_random_inputs_refuse_an_absurd_size(tmp_path: Path, capsys) -> None:
    g = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1000000])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["N", 1000000])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), tmp_path / "big.onnx")
    status = main(["run", str(tmp_path / "big.onnx"), "--random-inputs", "--dim", "N=1000000"])
    err = capsys.readouterr().err
    assert status == 1 and err.startswith("nnc: error: input 'x'") and "1,000,000,000,000 elements" in err
    assert len(err.strip().splitlines()) == 1

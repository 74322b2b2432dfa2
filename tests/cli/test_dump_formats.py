"""nnc dump --format onnx (the optimised graph as ONNX) and --format svg (a picture without Graphviz)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from test_cli import CNN, error_line, nnc_cli, ok

import nnc
from nnc.ir import interpret
from nnc.ir.specialize import specialize


def test_dump_onnx_after_fuse_reimports_with_the_same_outputs(tmp_path: Path) -> None:
    out = tmp_path / "fused.onnx"
    ok(nnc_cli("dump", CNN, "--format", "onnx", "--after", "fuse", "--dim", "N=1", "-o", out))
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert len(proto.functions) >= 2 and all(f.domain == "ai.nnc.fused" for f in proto.functions)
    original = specialize(nnc.from_onnx(str(CNN)), {"image": (1, 1, 28, 28)})
    back = nnc.from_onnx(str(out))
    feeds = {"image": np.random.default_rng(3).standard_normal((1, 1, 28, 28)).astype(np.float32)}
    want, got = interpret(original, feeds), interpret(back, feeds)
    assert list(got) == list(want)
    for k in want:  # fold-batchnorm reassociates f32: a few ulps of the logits' magnitude
        np.testing.assert_allclose(got[k], want[k], rtol=1e-5, atol=1e-5 * float(np.abs(want[k]).max()))


def test_dump_onnx_needs_an_output_file() -> None:
    assert "-o FILE.onnx" in error_line(nnc_cli("dump", CNN, "--format", "onnx"))

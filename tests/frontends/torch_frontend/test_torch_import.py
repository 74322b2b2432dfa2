"""PyTorch frontend: names, weights="param", training-form import, dynamic shapes, errors, saved
programs (.pt2) through the API and the CLI, and torch staying optional."""

from __future__ import annotations

import subprocess
import sys
import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.torch  # before the skip, so that -m torch selects the module
torch = pytest.importorskip("torch", reason="the PyTorch frontend tests need torch (pip install 'nnc[torch]')")

from torch import nn  # noqa: E402
from torch_cases import assert_close, eager  # noqa: E402

import nnc  # noqa: E402


class Block(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(4)

    def forward(self, x):
        return torch.relu(self.bn1(self.conv1(x)))


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = nn.Sequential(Block(), Block.__new__(Block))
        self.layer1[1].__init__()
        self.layer1[1].conv1 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4, 3)

    def forward(self, image, scale):
        y = self.layer1(image).mean((2, 3))
        return self.fc(y) * scale


def _net():
    torch.manual_seed(0)
    return Net().eval(), (torch.randn(2, 3, 6, 6), torch.tensor(0.5))


def test_names_are_torch_names() -> None:
    m, args = _net()
    mod = nnc.from_torch(m, args)
    g = mod.main
    assert [p.name for p in g.params] == ["image", "scale"]  # forward's parameter names
    assert {"layer1.0.conv1.weight", "layer1.1.bn1.running_var", "fc.bias"} <= set(mod.constants)
    np.testing.assert_array_equal(mod.constants["layer1.0.conv1.weight"], m.layer1[0].conv1.weight.detach().numpy())
    text = str(mod)
    assert "%layer1.0.conv1/convolution = conv(" in text  # results named by module path
    assert mod.metadata["source"] == "torch"


def test_weights_param_binds_parameters() -> None:
    m, args = _net()
    mod = nnc.from_torch(m, args, weights="param")
    bound = {p.name: p.binding for p in mod.main.params if p.binding is not None}
    for name, p in m.named_parameters():
        assert bound[name] == name
        np.testing.assert_array_equal(mod.constants[name], p.detach().numpy())
    # running statistics of batch norm are bound (the training step updates them); the counter is not
    assert "layer1.0.bn1.running_mean" in bound and "layer1.0.bn1.num_batches_tracked" not in bound
    cm = nnc.compile(mod)
    assert cm.input_names == ["image", "scale"]
    assert_close(cm(*[a.numpy() for a in args]), eager(m, args))


def test_train_mode_graph_imports_batch_statistics() -> None:
    torch.manual_seed(1)
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Dropout(0.3)).train()
    x = torch.randn(4, 3, 6, 6)
    mod = nnc.from_torch(m, (x,), weights="param")
    ops = {op.opname for op in mod.main.ops}
    assert {"batch_norm_train", "dropout"} <= ops
    # with dropout off the train-mode result is exactly torch's (batch statistics)
    m[3].p = 0.0
    mod = nnc.from_torch(m, (x,))
    want = m(x).detach().numpy()
    assert_close(nnc.compile(mod)(x.numpy()), [want])


def test_dynamic_shapes_become_symbols() -> None:
    from torch.export import Dim

    torch.manual_seed(2)
    m = nn.Sequential(nn.Linear(8, 4), nn.LayerNorm(4)).eval()
    mod = nnc.from_torch(m, (torch.randn(2, 3, 8),), dynamic_shapes=({0: Dim("batch"), 1: Dim("seq")},))
    assert str(mod.main.params[0].type) == "f32[batch,seq,8]"
    cm = nnc.compile(mod)
    for shape in ((2, 3, 8), (5, 7, 8)):
        x = torch.randn(*shape)
        assert_close(cm(x.numpy()), eager(m, (x,)))


class Reshaper(nn.Module):
    def forward(self, x):
        b, t, c = x.shape
        return x.reshape(b, t * c) * 2


def test_dynamic_reshape_on_x86() -> None:
    from torch.export import Dim

    x = torch.randn(2, 3, 4)
    cm = nnc.compile(Reshaper(), example_args=(x,), dynamic_shapes=({0: Dim("n"), 1: Dim("t")},), target="x86",
                     quiet=True)
    for shape in ((2, 3, 4), (3, 5, 4)):
        x = torch.randn(*shape)
        assert_close(cm(x.numpy()), eager(Reshaper(), (x,)))


class Unsupported(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Sequential(nn.Linear(4, 4), nn.Softmin(-1))

    def forward(self, x):
        return torch.fft.rfft(self.head(x)).real


def test_unsupported_op_names_op_and_module() -> None:
    with pytest.raises(nnc.UnsupportedOpError) as e:
        nnc.from_torch(Unsupported(), (torch.randn(2, 4),))
    msg = str(e.value)
    assert "aten._fft_r2c.default" in msg and "is not supported" in msg
    assert "\n" not in msg


def test_unsupported_op_in_submodule_names_path() -> None:
    class Inner(nn.Module):
        def forward(self, x):
            return torch.special.i0(x)

    outer = nn.Sequential(nn.Linear(3, 3), nn.Sequential(nn.ReLU(), Inner()))
    with pytest.raises(nnc.UnsupportedOpError, match=r"aten\.i0\.default .*in module '1\.1'"):
        nnc.from_torch(outer, (torch.randn(2, 3),))


def test_nn_module_needs_example_args() -> None:
    with pytest.raises(nnc.InputError, match="example_args"):
        nnc.compile(nn.Linear(2, 2))


def test_exported_program_and_pt2(tmp_path) -> None:
    m, args = _net()
    ep = torch.export.export(m, args)
    want = eager(m, args)
    assert_close(nnc.compile(ep)(*[a.numpy() for a in args]), want)
    path = tmp_path / "net.pt2"
    torch.export.save(ep, str(path))
    cm = nnc.compile(str(path))
    assert cm.input_names == ["image", "scale"]
    assert_close(cm.run({"image": args[0].numpy(), "scale": args[1].numpy()})["output"], want)


def test_cli_compile_run_dump_pt2(tmp_path, capsys) -> None:
    from nnc.cli import main

    torch.manual_seed(3)
    m = nn.Sequential(nn.Linear(4, 3), nn.ReLU()).eval()
    x = torch.randn(2, 4)
    path = tmp_path / "mlp.pt2"
    torch.export.save(torch.export.export(m, (x,)), str(path))
    np.save(tmp_path / "x.npy", x.numpy())
    assert main(["compile", str(path), "-q"]) == 0
    capsys.readouterr()
    assert main(["dump", str(path)]) == 0
    dump = capsys.readouterr().out
    assert "%0.weight = const @0.weight" in dump and "gemm(" in dump
    outdir = tmp_path / "out"
    assert main(["run", str(path), "--input", f"input={tmp_path / 'x.npy'}", "--output-dir", str(outdir), "-q"]) == 0
    got = np.load(next(outdir.glob("*.npy")))
    assert_close(got, eager(m, (x,)))
    bad = tmp_path / "bad.pt2"
    bad.write_bytes(b"not a zip")
    capsys.readouterr()
    assert main(["dump", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "not a program saved with torch.export.save" in err and "Traceback" not in err


def test_importing_nnc_does_not_import_torch() -> None:
    code = ("import sys, nnc, numpy as np; from nnc.api import load_module; "
            "load_module('examples/mlp.onnx'); assert 'torch' not in sys.modules, 'torch imported'")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=__file__.rsplit("/tests/", 1)[0])
    assert out.returncode == 0, out.stderr


def test_frontend_without_torch_says_how_to_install(monkeypatch) -> None:
    from nnc.frontends.torch import importer

    monkeypatch.setitem(sys.modules, "torch", None)  # import torch now raises ImportError
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(nnc.ModelError, match=r"needs torch \(pip install 'nnc\[torch\]'\)"):
            importer.require_torch()

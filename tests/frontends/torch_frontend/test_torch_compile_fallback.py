"""No silent eager in ``torch.compile(model, backend="nnc")``: a graph nnc cannot compile is named
in one warning and counted in ``stats()``; strict mode (option or ``$NNC_STRICT``) makes it a typed
nnc error at the first run; graph breaks give subgraphs that are compiled and counted one by one."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

pytestmark = pytest.mark.torch  # before the skip, so that -m torch selects the module
torch = pytest.importorskip("torch", reason="the PyTorch frontend tests need torch (pip install 'nnc[torch]')")

from torch import nn  # noqa: E402

import nnc.torch_backend as backend  # noqa: E402
from nnc.ir import NncError, TargetError, UnsupportedOpError  # noqa: E402

FFT = "aten._fft_r2c.default"


@pytest.fixture(autouse=True)
def fresh(monkeypatch):
    monkeypatch.delenv("NNC_STRICT", raising=False)
    monkeypatch.delenv("NNC_TORCH_TARGET", raising=False)
    torch._dynamo.reset()
    backend.reset_stats()
    yield
    torch._dynamo.reset()


def run_recording(fn, *args):
    """``fn(*args)`` under no_grad; (result, messages of the NncFallbackWarnings raised)."""
    with torch.no_grad(), warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        out = fn(*args)
    return out, [str(w.message) for w in rec if issubclass(w.category, backend.NncFallbackWarning)]


def max_abs_diff(a, b) -> float:
    return float(np.max(np.abs(a.detach().numpy() - b.detach().numpy())))


class Mlp(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(8, 16), nn.Linear(16, 4)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))


class WithFft(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(8, 8)

    def forward(self, x):
        return torch.fft.rfft(self.fc(x)).abs()


class FftAndBessel(nn.Module):
    """Two ops without a converter (FFT twice, Bessel i0 once) in one graph."""

    def forward(self, x):
        return torch.fft.rfft(x).abs() + torch.fft.rfft(x * 2.0).abs(), torch.special.i0(x)


class BranchOnItem(nn.Module):
    """``.item()`` feeding Python control flow: dynamo breaks the graph there."""

    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(8, 8), nn.Linear(8, 4)

    def forward(self, x):
        y = torch.relu(self.a(x))
        y = y * 2.0 if y.sum().item() > 0 else y - 1.0
        return self.b(y)


class FftAfterBreak(nn.Module):
    """A supported piece, a graph break, then a piece using FFT."""

    def __init__(self):
        super().__init__()
        self.a = nn.Linear(8, 8)

    def forward(self, x):
        y = torch.tanh(self.a(x))
        if y.sum().item() > -1e9:  # always true; only there to break the graph
            y = y + 1.0
        return torch.fft.rfft(y).abs()


def test_supported_model_compiles_and_counts() -> None:
    torch.manual_seed(0)
    m = Mlp().eval()
    x = torch.randn(3, 8)
    y, msgs = run_recording(torch.compile(m, backend="nnc"), x)
    s = backend.stats()
    assert s.compiled >= 1 and s.fallen_back == 0 and s.errors == 0 and s.ops_missing == {}
    assert not msgs
    with torch.no_grad():
        assert max_abs_diff(y, m(x)) <= 1e-5


def test_unsupported_op_is_named_once_and_counted() -> None:
    torch.manual_seed(0)
    m = WithFft().eval()
    compiled = torch.compile(m, backend="nnc")
    x = torch.randn(2, 8)
    y, msgs = run_recording(compiled, x)
    y2, msgs2 = run_recording(compiled, x)  # the same graph again: no second warning, no second count
    assert len(msgs) == 1 and not msgs2
    assert f"op {FFT}, node '_fft_r2c'" in msgs[0] and "not supported" in msgs[0] and "eagerly" in msgs[0]
    s = backend.stats()
    assert (s.compiled, s.fallen_back, s.errors) == (0, 1, 0)
    assert s.ops_missing == {FFT: 1}
    with torch.no_grad():
        expected = m(x)
    assert max_abs_diff(y, expected) == 0.0 and max_abs_diff(y2, expected) == 0.0  # eager is eager


def test_every_op_without_a_converter_is_named_and_counted_once_per_graph() -> None:
    m = FftAndBessel().eval()
    x = torch.randn(2, 8)
    (y, z), msgs = run_recording(torch.compile(m, backend="nnc"), x)
    assert len(msgs) == 1 and FFT in msgs[0] and "aten.i0.default (node 'i0')" in msgs[0]
    assert backend.stats().ops_missing == {FFT: 1, "aten.i0.default": 1}
    with torch.no_grad():
        ey, ez = m(x)
    assert max_abs_diff(y, ey) == 0.0 and max_abs_diff(z, ez) == 0.0


def test_strict_option_raises_the_nnc_error_naming_the_op() -> None:
    compiled = torch.compile(WithFft().eval(), backend="nnc", options={"strict": True})
    with torch.no_grad(), pytest.raises(UnsupportedOpError, match=r"aten\._fft_r2c\.default") as info:
        compiled(torch.randn(2, 8))
    assert "strict mode" in str(info.value) and "node '_fft_r2c'" in str(info.value)
    s = backend.stats()
    assert (s.compiled, s.fallen_back, s.errors) == (0, 0, 1) and s.ops_missing == {FFT: 1}
    with torch.no_grad(), pytest.raises(UnsupportedOpError):  # and every later run: never eager
        compiled(torch.randn(2, 8))


def test_strict_environment_variable(monkeypatch) -> None:
    monkeypatch.setenv("NNC_STRICT", "1")
    with torch.no_grad(), pytest.raises(UnsupportedOpError, match=r"aten\._fft_r2c\.default"):
        torch.compile(WithFft().eval(), backend="nnc")(torch.randn(2, 8))
    assert backend.stats().errors == 1


def test_strict_option_false_overrides_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("NNC_STRICT", "1")
    _, msgs = run_recording(torch.compile(WithFft().eval(), backend="nnc", options={"strict": False}),
                            torch.randn(2, 8))
    assert len(msgs) == 1 and backend.stats().fallen_back == 1


def test_strict_supported_model_still_runs(monkeypatch) -> None:
    monkeypatch.setenv("NNC_STRICT", "1")
    torch.manual_seed(0)
    m = Mlp().eval()
    x = torch.randn(3, 8)
    y, _ = run_recording(torch.compile(m, backend="nnc"), x)
    with torch.no_grad():
        assert max_abs_diff(y, m(x)) <= 1e-5
    assert backend.stats().errors == 0


def test_gradients_needed_is_counted_once_per_graph() -> None:
    m = nn.Linear(4, 2)
    compiled = torch.compile(m, backend="nnc")
    x = torch.randn(3, 4)
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        compiled(x).sum().backward()
        compiled(x).sum().backward()
    msgs = [str(w.message) for w in rec if issubclass(w.category, backend.NncFallbackWarning)]
    assert len(msgs) == 1 and "gradients are needed" in msgs[0]
    s = backend.stats()
    assert (s.compiled, s.fallen_back, s.errors) == (1, 1, 0)
    assert s.ops_missing == {backend.GRADIENTS_NEEDED: 1}
    assert m.weight.grad is not None  # autograd worked: those calls ran eagerly


def test_gradients_needed_in_strict_mode_raises() -> None:
    compiled = torch.compile(nn.Linear(4, 2), backend="nnc", options={"strict": True})
    with pytest.raises(TargetError, match="gradients are needed"):
        compiled(torch.randn(3, 4))
    s = backend.stats()
    assert (s.compiled, s.errors) == (1, 1) and s.ops_missing == {backend.GRADIENTS_NEEDED: 1}


def test_graph_break_compiles_each_subgraph() -> None:
    torch.manual_seed(0)
    m = BranchOnItem().eval()
    x = torch.randn(3, 8)
    y, msgs = run_recording(torch.compile(m, backend="nnc"), x)
    s = backend.stats()
    assert (s.compiled, s.fallen_back, s.errors) == (2, 0, 0) and not msgs
    with torch.no_grad():
        assert max_abs_diff(y, m(x)) <= 1e-5


def test_graph_break_counts_compile_and_fallback_per_subgraph() -> None:
    torch.manual_seed(0)
    m = FftAfterBreak().eval()
    x = torch.randn(3, 8)
    y, msgs = run_recording(torch.compile(m, backend="nnc"), x)
    s = backend.stats()
    assert (s.compiled, s.fallen_back) == (1, 1) and s.ops_missing == {FFT: 1}
    assert len(msgs) == 1 and FFT in msgs[0]
    with torch.no_grad():
        assert max_abs_diff(y, m(x)) <= 1e-5


def test_non_strict_bool_option_is_an_error() -> None:
    with pytest.raises(NncError, match="strict='yes'"):
        backend.nnc_backend(None, [], options={"strict": "yes"})


def test_blame_reads_the_frontend_error() -> None:
    e = UnsupportedOpError(f"{FFT} node '_fft_r2c' in module 'spec' (Spectrum): ATen op {FFT} is not supported")
    b = backend.blame(e)
    assert (b.op, b.node, b.key) == (FFT, "_fft_r2c", FFT)
    assert b.describe() == f"op {FFT}, node '_fft_r2c' in module 'spec' (Spectrum): ATen op {FFT} is not supported"
    other = backend.blame(TargetError("no kernel for this"))
    assert other.op is None and other.key == "eager: TargetError"


def test_a_wrong_compile_option_is_an_error_not_a_fallback() -> None:
    with pytest.raises(NncError, match="unknown compile option"):
        backend.nnc_backend(None, [], options={"opt_levle": 2})
    assert backend.stats() == backend.TorchBackendStats()


@pytest.mark.parametrize("value", ["1", "true", "YES", "on"])
def test_strict_environment_values(monkeypatch, value) -> None:
    monkeypatch.setenv("NNC_STRICT", value)
    assert backend._strict({}) is True


def test_strict_environment_off_values(monkeypatch) -> None:
    for value in ("0", "", "false"):
        monkeypatch.setenv("NNC_STRICT", value)
        assert backend._strict({}) is False


def test_strict_failure_that_is_not_an_nnc_error_is_a_chained_target_error(monkeypatch) -> None:
    def broken(*args):
        raise KeyError("internal")

    monkeypatch.setattr(backend, "_compile", broken)
    run = backend.nnc_backend(None, [], options={"strict": True})
    with pytest.raises(TargetError, match="KeyError") as info:
        run()
    assert isinstance(info.value.__cause__, KeyError)
    assert backend.stats().ops_missing == {"eager: KeyError": 1}


@pytest.mark.parametrize("target", ["reference", "x86"])
def test_a_second_input_shape_compiles_one_shape_generic_graph(monkeypatch, target: str) -> None:
    # dynamo recompiles with a symbolic batch dim and passes its size as a SymInt input: the backend
    # reads it off the tensor it sizes and compiles the graph once for every batch
    import nnc

    reports = []
    real_compile = nnc.compile

    def recording(*args, **kwargs):
        cm = real_compile(*args, **kwargs)
        reports.append(cm.report)
        return cm

    monkeypatch.setattr(nnc, "compile", recording)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    compiled = torch.compile(m, backend="nnc", options={"target": target, "strict": True})
    for n in (2, 3, 5, 9, 1):
        x = torch.randn(n, 8)
        y, msgs = run_recording(compiled, x)
        with torch.no_grad():
            assert max_abs_diff(y, m(x)) <= 1e-5
        assert not msgs
        if n == 9:  # batch 2 static, then one dynamic graph for 3, 5 and 9
            assert backend.stats().compiled == 2 and len(reports) == 2 and "shapes" not in reports[0]
            if target == "x86":
                assert reports[1]["shapes"]["generic"] is True and len(reports[1]["shapes"]["symbols"]) == 1
    s = backend.stats()
    # dynamo specialises sizes 0 and 1 (its guards never let a symbolic dim be 1): batch 1 is a static graph
    assert (s.compiled, s.fallen_back, s.errors) == (3, 0, 0)


def test_a_gpt2_called_at_new_lengths_compiles_once_more(monkeypatch) -> None:
    tf = pytest.importorskip("transformers")
    torch.manual_seed(0)
    model = tf.GPT2Model(tf.GPT2Config(n_layer=2, n_embd=64, n_head=4, vocab_size=100, n_positions=64,
                                       attn_implementation="eager")).eval()

    def hidden(ids):
        return model(input_ids=ids).last_hidden_state

    compiled = torch.compile(hidden, backend="nnc", options={"target": "x86", "strict": True})
    for seq in (5, 9, 17, 3):
        ids = torch.randint(0, 100, (2, seq))
        y, msgs = run_recording(compiled, ids)
        with torch.no_grad():
            assert max_abs_diff(y, hidden(ids)) <= 1e-4
        assert not msgs
    s = backend.stats()
    assert (s.compiled, s.fallen_back, s.errors) == (2, 0, 0)


def test_dynamic_false_compiles_each_input_shape_with_nnc() -> None:
    torch.manual_seed(0)
    m = nn.Sequential(nn.Linear(8, 8), nn.ReLU()).eval()
    compiled = torch.compile(m, backend="nnc", dynamic=False)
    for n in (2, 3, 4):
        x = torch.randn(n, 8)
        y, msgs = run_recording(compiled, x)
        with torch.no_grad():
            assert max_abs_diff(y, m(x)) <= 1e-5
        assert not msgs
    s = backend.stats()
    assert (s.compiled, s.fallen_back) == (3, 0)


def test_a_non_tensor_input_that_sizes_no_tensor_falls_back_visibly() -> None:
    gm = torch.fx.symbolic_trace(lambda x, scale: x * scale)
    with pytest.warns(backend.NncFallbackWarning, match="non-tensor graph inputs \\(float\\)"):
        run = backend.nnc_backend(gm, [torch.ones(2, 3), 2.5])
    assert torch.equal(run(torch.ones(2, 3), 2.5), torch.full((2, 3), 2.5))  # eager
    s = backend.stats()
    assert (s.compiled, s.fallen_back) == (0, 1) and s.ops_missing == {"eager: non-tensor inputs": 1}

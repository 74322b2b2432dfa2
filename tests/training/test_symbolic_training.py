"""Training steps with symbolic dims: one compile, steps at several batch sizes (and sequence
lengths) with the loss, gradients and updated weights of the static compile at each shape, of
torch, and of the reference interpreter.

The models: a CNN in training form (batch-norm batch statistics, a 3x3/2 max pool, a strided conv,
a flatten), a BERT-like encoder (token and position embeddings, multi-head self-attention, layer
norm, GELU feed-forward, a token-level cross-entropy head) with a symbolic batch *and* sequence,
and (slow) the ResNet-18 of bench/models.py. Each is exported to ONNX with dynamic axes, so nnc,
the static compiles and torch start from the same weights.
"""

from __future__ import annotations

import numpy as np
import pytest

import nnc
from nnc.ir import GradientError, Module, TensorType
from nnc.ir.builder import Builder
from nnc.ir.dtypes import DType
from nnc.ir.graph import Graph
from nnc.passes.registry import PassError

pytestmark = pytest.mark.torch  # before the skip, so that -m torch selects the module
torch = pytest.importorskip("torch", reason="torch exports the models and is the gradient oracle")
nn = torch.nn
F = torch.nn.functional
from test_model_gradients import Encoder  # noqa: E402  (the attention encoder layer of those tests)


class SmallCNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8)
        self.c2, self.b2 = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16)
        self.fc = nn.Linear(16 * 2 * 2, 5)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.b1(self.c1(x))), 3, 2, 1)
        return self.fc(torch.flatten(F.relu(self.b2(self.c2(h))), 1))


class TinyBert(nn.Module):
    """bench/models.py's BertSmall, smaller, with positions ``arange(seq)`` of the input's length
    (so the sequence length is free) and a token-level head ``[batch, vocab, seq]``."""

    def __init__(self, vocab: int = 61, d: int = 32, layers: int = 2, heads: int = 4, ffn: int = 64,
                 max_seq: int = 32):
        super().__init__()
        self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(max_seq, d)
        self.ln = nn.LayerNorm(d)
        self.layers = nn.Sequential(*[Encoder(d, heads, ffn) for _ in range(layers)])
        self.head = nn.Linear(d, vocab)

    def forward(self, ids):
        h = self.ln(self.tok(ids) + self.pos(torch.arange(ids.shape[1])))
        return self.head(self.layers(h)).transpose(1, 2)


def _distinct(net: nn.Module) -> None:
    """No two parameters equal (the TorchScript exporter merges equal initializers into one)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)


def _export(net: nn.Module, example, path, axes: dict, training: bool) -> str:
    mode = torch.onnx.TrainingMode.TRAINING if training else torch.onnx.TrainingMode.EVAL
    name = "ids" if example.dtype == torch.int64 else "x"
    torch.onnx.export(net, (example,), str(path), dynamo=False, input_names=[name], dynamic_axes={name: axes},
                      do_constant_folding=False, training=mode)
    return name


def _exported(tmp_path_factory, net: nn.Module, example, axes: dict, training: bool):
    _distinct(net)
    net.train(training)
    path = tmp_path_factory.mktemp("model") / "model.onnx"
    return net, str(path), _export(net, example, path, axes, training)


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    torch.manual_seed(0)
    return _exported(tmp_path_factory, SmallCNN(), torch.randn(2, 3, 8, 8), {0: "N"}, training=True)


@pytest.fixture(scope="module")
def bert(tmp_path_factory):
    torch.manual_seed(0)
    return _exported(tmp_path_factory, TinyBert(), torch.randint(0, 61, (2, 8)), {0: "batch", 1: "seq"},
                     training=False)


def _batch(kind: str, shape: tuple, seed: int):
    g = torch.Generator().manual_seed(seed)
    if kind == "cnn":
        return torch.randn((shape[0], 3, 8, 8), generator=g), torch.randint(0, 5, (shape[0],), generator=g)
    return torch.randint(0, 61, shape, generator=g), torch.randint(0, 61, shape, generator=g)


def _torch_step(net: nn.Module, params: dict, x, y, lr: float):
    """torch's loss, gradients and SGD-updated parameters from ``params`` on one batch."""
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.copy_(torch.tensor(params[n]))
    net.zero_grad()
    loss = F.cross_entropy(net(x), y)
    loss.backward()
    grads = {n: p.grad.numpy().copy() for n, p in net.named_parameters()}
    return loss.item(), grads, {n: params[n] - lr * grads[n] for n in grads}


def _close(got: dict, want: dict, rtol: float) -> None:
    for n in want:
        scale = float(np.abs(want[n]).max()) or 1.0
        np.testing.assert_allclose(got[n], want[n], rtol=rtol, atol=rtol * scale, err_msg=n)


def _against_static(sym, make_static, feeds: dict, ckpt: str, rtol: float):
    """One step of the symbolic session and of a static compile (``make_static()``) started from
    the same weights (a checkpoint of the symbolic one): the same loss (``rtol``), gradients
    (10 x rtol: sums over the batch reassociate) and updated weights. Returns (loss, static)."""
    sym.save(ckpt)
    loss = sym.step(feeds)
    static = make_static()
    static.restore(ckpt)
    assert loss == pytest.approx(static.step(feeds), rel=rtol)
    _close(sym.gradients(), static.gradients(), 10 * rtol)
    _close(sym.parameters(), static.parameters(), rtol)
    return loss, static


def _compile(path: str, target: str, **kw):
    return nnc.compile(path, target=target, mode="train", loss="cross_entropy", optimizer="sgd", lr=0.1, quiet=True,
                       cache=False, **kw)


# (batch,) for the CNN, (batch, seq) for the encoder
SHAPES = {"cnn": [(2,), (3,), (8,)], "bert": [(2, 8), (3, 5), (8, 12)]}


@pytest.mark.parametrize("kind", ["cnn", "bert"])
def test_one_symbolic_step_matches_static_steps_and_torch_on_the_reference(kind, cnn, bert, tmp_path):
    net, path, name = cnn if kind == "cnn" else bert
    sym = _compile(path, "reference")
    assert sym.report["shapes"]["generic"] and sym.input_types[name].shape[0] in ("N", "batch")
    start = sym.parameters()
    for i, shape in enumerate(SHAPES[kind]):
        x, y = _batch(kind, shape, seed=i)
        feeds = {name: x.numpy(), "labels": y.numpy()}
        before = sym.parameters()
        # the same graph at fixed dims: the same arithmetic, so equal up to float reassociation
        fixed = {name: tuple(x.shape)}
        loss, static = _against_static(sym, lambda fixed=fixed: _compile(path, "reference", input_shapes=fixed),
                                       feeds, str(tmp_path / f"{i}.npz"), 1e-6)
        assert static.input_types[name].is_static
        t_loss, t_grads, t_params = _torch_step(net, before, x, y, 0.1)
        assert loss == pytest.approx(t_loss, rel=1e-4)
        _close(sym.gradients(), t_grads, 1e-4)
        _close(sym.parameters(), t_params, 1e-4)
    assert any(not np.array_equal(start[n], sym.parameters()[n]) for n in start)


def test_a_torch_module_with_a_dynamic_batch_trains_shape_generic():
    """Straight from PyTorch (torch.export with a ``Dim``), no ONNX: the same one-compile step."""
    torch.manual_seed(0)
    net = SmallCNN()
    _distinct(net)
    net.train()
    batch = torch.export.Dim("batch", min=2, max=64)
    sess = nnc.compile(net, example_args=(torch.randn(2, 3, 8, 8),), dynamic_shapes={"x": {0: batch}},
                       target="reference", mode="train", loss="cross_entropy", optimizer="sgd", lr=0.1)
    assert sess.report["shapes"] == {"generic": True, "symbols": ["batch"]}
    for i, shape in enumerate(SHAPES["cnn"]):
        x, y = _batch("cnn", shape, seed=30 + i)
        before = sess.parameters()
        loss = sess.step({"x": x.numpy(), "labels": y.numpy()})
        t_loss, t_grads, t_params = _torch_step(net, before, x, y, 0.1)
        assert loss == pytest.approx(t_loss, rel=1e-4)
        _close(sess.gradients(), t_grads, 1e-4)
        _close(sess.parameters(), t_params, 1e-4)


@pytest.mark.parametrize("kind", ["cnn", pytest.param("bert", marks=pytest.mark.slow)])  # bert: ~30 s to compile
def test_x86_compiles_the_step_once_for_every_shape(kind, cnn, bert):
    """One shape-generic x86 compile runs every batch (and sequence length) with the reference's
    loss, gradients and weights; the executable shows one entry point serving each signature."""
    from nnc.backends.x86.generic import GenericExecutable

    net, path, name = cnn if kind == "cnn" else bert
    x86, ref = _compile(path, "x86"), _compile(path, "reference")
    assert x86.report["shapes"] == {"generic": True, "symbols": ["N"] if kind == "cnn" else ["batch", "seq"]}
    assert isinstance(x86.executable, GenericExecutable)  # one compiled entry point, not one per shape
    for i, shape in enumerate(SHAPES[kind]):
        x, y = _batch(kind, shape, seed=10 + i)
        feeds = {name: x.numpy(), "labels": y.numpy()}
        assert x86.step(feeds) == pytest.approx(ref.step(feeds), rel=1e-5)
        _close(x86.gradients(), ref.gradients(), 1e-4)
        _close(x86.parameters(), ref.parameters(), 1e-5)
    seen = x86.executable.shapes_seen()
    assert len(seen) == len(SHAPES[kind])  # three input signatures, all on the same code


def test_a_batch_that_disagrees_with_its_labels_is_an_input_error(cnn):
    _, path, name = cnn
    sess = _compile(path, "reference")
    with pytest.raises(nnc.ir.InputError, match="symbol N is already bound to 3"):
        sess.step({name: np.zeros((3, 3, 8, 8), np.float32), "labels": np.zeros(4, np.int64)})


def test_an_op_whose_rule_needs_static_shapes_is_named():
    """cumsum's gradient rule is written for static shapes: a typed error names it and says why."""
    m = Module("m")
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", TensorType(DType.f32, ("N", 4)))
    w = g.add_param("w", TensorType(DType.f32, (4, 4)), binding=m.add_constant("w", np.eye(4, dtype=np.float32)))
    b = Builder(m, g)
    y = b.op("cumsum", b.op("matmul", x, w, name="h"), axis=1, name="c")
    g.set_outputs([y], ["y"])
    with pytest.raises(GradientError, match=r"cumsum.*symbolic dims.*needs static shapes.*batch_size"):
        nnc.compile(m, target="reference", mode="train", loss="mse")
    sess = nnc.compile(m, target="reference", mode="train", loss="mse", batch_size=2)  # fixed: it trains
    assert sess.input_types["x"].shape == (2, 4)


def test_remat_refuses_a_symbolic_step(cnn):
    _, path, _ = cnn
    with pytest.raises(PassError, match="remat: the step has symbolic dims"):
        _compile(path, "reference", memory_budget="0.5")
    _compile(path, "reference", memory_budget="0.5", batch_size=4)  # at a fixed batch it plans


def _within_f32_of(got: dict, exact: dict, f32: dict, name: str) -> None:
    """``got`` is as close to the float64 gradients ``exact`` as torch's own float32 ones ``f32``
    are (twice their error, plus 1e-5 of the largest entry): a deep random network amplifies
    float32 rounding, so a different (and equally right) order of summation moves its gradients by
    as much as torch's float32 differs from float64 (measured up to ~0.5% in early layers at batch 8)."""
    for n, want in exact.items():
        scale = float(np.abs(want).max()) or 1.0
        allowed = 2 * float(np.abs(f32[n] - want).max()) + 1e-5 * scale
        assert float(np.abs(got[n] - want).max()) <= allowed, (name, n)


@pytest.mark.slow
def test_resnet18_symbolic_batch_on_x86_matches_static_compiles_and_torch(tmp_path):
    """The ResNet-18 of bench/models.py in training form (batch statistics; residual branches
    scaled as bench's realistic models are), 64x64 images: one shape-generic x86 compile steps at
    batch 2, 3 and 8 like a static x86 compile at each batch, and like torch (float64 the oracle)."""
    import copy

    from bench.models import RESIDUAL_SCALE, calibrated_torch_module

    net, _ = calibrated_torch_module("resnet18", residual_scale=RESIDUAL_SCALE)
    torch.manual_seed(1)
    net.train()
    path = tmp_path / "r18.onnx"
    _export(net, torch.randn(2, 3, 64, 64), path, {0: "batch"}, training=True)
    sym = _compile(str(path), "x86")
    assert sym.report["shapes"] == {"generic": True, "symbols": ["batch"]}
    for i, n in enumerate((2, 3, 8)):
        g = torch.Generator().manual_seed(20 + i)
        x, y = torch.randn((n, 3, 64, 64), generator=g), torch.randint(0, 1000, (n,), generator=g)
        before, ckpt = sym.parameters(), str(tmp_path / f"{n}.npz")
        sym.save(ckpt)
        loss = sym.step({"x": x.numpy(), "labels": y.numpy()})
        static = _compile(str(path), "x86", batch_size=n)
        static.restore(ckpt)
        assert loss == pytest.approx(static.step({"x": x.numpy(), "labels": y.numpy()}), rel=1e-5)
        t_loss, t_grads, _ = _torch_step(net, before, x, y, 0.1)
        exact = _torch_step(copy.deepcopy(net).double(), before, x.double(), y, 0.1)[1]
        assert loss == pytest.approx(t_loss, rel=1e-4)
        _within_f32_of(sym.gradients(), exact, t_grads, f"symbolic, batch {n}")
        _within_f32_of(static.gradients(), exact, t_grads, f"static, batch {n}")
        want = {k: before[k] - 0.1 * sym.gradients()[k] for k in before}  # SGD, as the step applies it
        _close(sym.parameters(), want, 1e-6)
    assert len(sym.executable.shapes_seen()) == 3

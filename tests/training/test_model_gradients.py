"""Gradients of whole models exported from PyTorch match ``torch.autograd`` (float32, rtol 1e-4), and
after one SGD step the parameters match PyTorch's by name — on the reference interpreter and x86.

The models are the issue's four shapes: an MLP, a CNN with batch norm (eval form: batch norm with
running statistics, and training form in test_training.py), a ResNet-style block (conv-bn-relu x2
with a residual add), and a small attention encoder (multi-head self-attention, layer norm, GELU
feed-forward, residuals). Each is exported to ONNX with the TorchScript exporter so nnc and torch
start from the same weights.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

import nnc

pytestmark = pytest.mark.torch  # before the skip, so that -m torch selects the module
torch = pytest.importorskip("torch", reason="torch is the oracle for gradients")
nn = torch.nn
F = torch.nn.functional


class MLP(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(20, 32), nn.Linear(32, 6)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x)))


class CNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(8 * 2 * 2, 5)

    def forward(self, x):
        h = F.max_pool2d(F.relu(self.bn1(self.conv1(x))), 2)
        h = F.avg_pool2d(F.relu(self.conv2(h)), 2)
        return self.fc(h.flatten(1))


class ResBlock(nn.Module):
    def __init__(self, c: int = 8):
        super().__init__()
        self.stem = nn.Conv2d(3, c, 3, padding=1, bias=False)
        self.conv1, self.bn1 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.conv2, self.bn2 = nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c)
        self.fc = nn.Linear(c, 4)

    def forward(self, x):
        x = F.relu(self.stem(x))
        h = F.relu(self.bn1(self.conv1(x)))
        h = F.relu(self.bn2(self.conv2(h)) + x)
        return self.fc(h.mean(dim=(2, 3)))


class Encoder(nn.Module):
    def __init__(self, d: int = 16, heads: int = 2, ffn: int = 32):
        super().__init__()
        self.h, self.dk = heads, d // heads
        self.qkv, self.out = nn.Linear(d, 3 * d), nn.Linear(d, d)
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.ff1, self.ff2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).reshape(b, s, 3, self.h, self.dk).permute(2, 0, 3, 1, 4)
        att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dk), dim=-1)
        y = (att @ v).transpose(1, 2).reshape(b, s, d)
        x = self.ln1(x + self.out(y))
        return self.ln2(x + self.ff2(F.gelu(self.ff1(x))))


def _case(name: str):
    torch.manual_seed(7)
    if name == "mlp":
        return MLP(), torch.randn(8, 20), "cross_entropy", torch.randint(0, 6, (8,))
    if name == "cnn_bn":
        net = CNN()
        return net, torch.randn(4, 3, 16, 16), "cross_entropy", torch.randint(0, 5, (4,))
    if name == "resnet_block":
        return ResBlock(), torch.randn(2, 3, 8, 8), "cross_entropy", torch.randint(0, 4, (2,))
    return Encoder(), torch.randn(2, 6, 16), "mse", torch.randn(2, 6, 16)


def _randomize_bn(net: nn.Module) -> None:
    """Non-trivial running statistics, so the eval-form batch norm is not an identity, and no two
    parameters equal (the TorchScript exporter merges equal initializers, e.g. two LayerNorms'
    all-ones weights, into one ONNX initializer, which would then train as one tied tensor)."""
    g = torch.Generator().manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.05)
    for m in net.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)


@pytest.mark.parametrize("target", ["reference", "x86"])
@pytest.mark.parametrize("name", ["mlp", "cnn_bn", "resnet_block", "encoder"])
def test_gradients_and_one_sgd_step_match_torch(name, target, tmp_path):
    net, x, loss, y = _case(name)
    _randomize_bn(net)
    net.eval()
    path = str(tmp_path / f"{name}.onnx")
    torch.onnx.export(net, (x,), path, dynamo=False, input_names=["x"], do_constant_folding=False,
                      training=torch.onnx.TrainingMode.EVAL)
    sess = nnc.compile(path, target=target, mode="train", loss=loss, optimizer="sgd", lr=0.1, quiet=True,
                       cache=False)
    got_loss = sess.step({"x": x.numpy(), "labels": y.numpy()})

    loss_fn = F.cross_entropy if loss == "cross_entropy" else F.mse_loss
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.SGD(net.parameters(), lr=0.1)
    opt.zero_grad()
    want_loss = loss_fn(net(x), y)
    want_loss.backward()
    opt.step()

    assert got_loss == pytest.approx(want_loss.item(), rel=1e-4)
    grads, params = sess.gradients(), sess.parameters()
    names = [n for n, _ in net.named_parameters()]
    assert sorted(grads) == sorted(names)  # every torch parameter trains, by its own name
    for n, p in net.named_parameters():
        scale = float(np.abs(p.grad.numpy()).max()) or 1.0
        np.testing.assert_allclose(grads[n], p.grad.numpy(), rtol=1e-4, atol=1e-5 * scale, err_msg=n)
        np.testing.assert_allclose(params[n], p.detach().numpy(), rtol=1e-4, atol=1e-6, err_msg=n)
        assert not np.array_equal(params[n], before[n].numpy()) or not p.grad.abs().sum()


@pytest.mark.parametrize("name", ["cnn_bn", "encoder"])
def test_training_straight_from_pytorch_matches_torch(name):
    """The same step from an ``nn.Module`` through torch.export (no ONNX): gradients by torch name."""
    net, x, loss, y = _case(name)
    _randomize_bn(net)
    net.eval()
    sess = nnc.compile(net, example_args=(x,), target="x86", mode="train", loss=loss, optimizer="sgd", lr=0.1,
                       quiet=True, cache=False)
    got_loss = sess.step({"x": x.numpy(), "labels": y.numpy()})
    loss_fn = F.cross_entropy if loss == "cross_entropy" else F.mse_loss
    want = loss_fn(net(x), y)
    want.backward()
    assert got_loss == pytest.approx(want.item(), rel=1e-4)
    grads = sess.gradients()
    for n, p in net.named_parameters():
        scale = float(np.abs(p.grad.numpy()).max()) or 1.0
        np.testing.assert_allclose(grads[n], p.grad.numpy(), rtol=1e-4, atol=1e-5 * scale, err_msg=n)


def test_training_form_pytorch_module_uses_batch_statistics():
    """``module.train()`` exports batch norm in training form: batch statistics, running stats updated."""
    net, x, loss, y = _case("resnet_block")
    _randomize_bn(net)
    net.train()
    sess = nnc.compile(net, example_args=(x,), target="reference", mode="train", loss=loss, optimizer="sgd",
                       lr=0.1)
    got_loss = sess.step({"x": x.numpy(), "labels": y.numpy()})
    want = F.cross_entropy(net(x), y)
    assert got_loss == pytest.approx(want.item(), rel=1e-4)
    np.testing.assert_allclose(sess.buffers()["bn1.running_mean"], net.bn1.running_mean.numpy(), rtol=1e-5,
                               atol=1e-6)


class DropNet(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1, self.drop, self.fc2 = nn.Linear(12, 64), nn.Dropout(0.3), nn.Linear(64, 4)

    def forward(self, x):
        return self.fc2(self.drop(F.relu(self.fc1(x))))


def test_training_dropout_is_keyed_by_step_and_x86_matches_the_reference():
    """Train-mode dropout becomes keyed_dropout (a counter generator keyed by the step count): x86
    draws the reference's masks bit for bit, masks change between steps, inference drops it."""
    torch.manual_seed(0)
    net = DropNet().train()
    x, y = torch.randn(16, 12), torch.randint(0, 4, (16,))
    sessions = [nnc.compile(net, example_args=(x,), target=t, mode="train", loss="cross_entropy", optimizer="sgd",
                            lr=0.1, quiet=True, cache=False) for t in ("reference", "x86")]
    assert any(op.opname == "keyed_dropout" for op in sessions[0].step_module.main.ops)
    losses = [[s.step({"x": x.numpy(), "labels": y.numpy()}) for _ in range(3)] for s in sessions]
    np.testing.assert_allclose(losses[1], losses[0], rtol=1e-5)
    grads = [s.gradients()["fc1.weight"] for s in sessions]
    np.testing.assert_allclose(grads[1], grads[0], rtol=1e-4, atol=1e-6)
    inf = sessions[1].export_inference().module
    assert not any(op.opname in ("dropout", "keyed_dropout") for op in inf.main.ops)
    net.eval()
    with torch.no_grad():
        for n, p in net.named_parameters():
            p.copy_(torch.tensor(sessions[1].parameters()[n]))
        want = net(x).numpy()
    got = nnc.compile(inf, target="x86", quiet=True, cache=False).run({"x": x.numpy()})
    np.testing.assert_allclose(list(got.values())[0], want, rtol=1e-4, atol=1e-5)


def test_keyed_dropout_drops_the_stated_fraction():
    from nnc.ir.ops.random import keep_threshold, keyed_uniform_bits

    bits = keyed_uniform_bits(7, 3, 200_000)
    kept = (bits >= keep_threshold(0.3)).mean()
    assert abs(kept - 0.7) < 0.005  # binomial std at n=2e5 is 0.001
    assert not np.array_equal(bits[:100], keyed_uniform_bits(7, 4, 100))

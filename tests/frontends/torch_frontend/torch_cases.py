"""Module-level cases for the PyTorch frontend tests: (name, module factory, example-args factory).

Each case is a small ``nn.Module`` exercising one family of ATen ops; eager PyTorch is the oracle.
Weights come from a fixed seed; BatchNorm statistics are randomised so that the normalisation is
not the identity.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


def _bn(c: int, dim: int = 2) -> nn.Module:
    bn = {1: nn.BatchNorm1d, 2: nn.BatchNorm2d}[dim](c)
    with torch.no_grad():
        bn.running_mean.uniform_(-0.5, 0.5)
        bn.running_var.uniform_(0.5, 2.0)
        bn.weight.uniform_(0.5, 1.5)
        bn.bias.uniform_(-0.5, 0.5)
    return bn


class Fn(nn.Module):
    """A module whose forward is a function of its inputs (and optional submodules)."""

    def __init__(self, fn: Callable[..., Any], **mods: nn.Module):
        super().__init__()
        self.fn = fn
        for k, m in mods.items():
            self.add_module(k, m)

    def forward(self, *xs):
        return self.fn(self, *xs)


def r(*shape: int) -> torch.Tensor:
    return torch.randn(*shape)


class Attention(nn.Module):
    def __init__(self, causal: bool):
        super().__init__()
        self.causal = causal

    def forward(self, q, k, v, mask):
        if self.causal:
            return F.scaled_dot_product_attention(q, k, v, is_causal=True)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)


class Views(nn.Module):
    def forward(self, x):
        a = x.view(2, 3, 4).permute(0, 2, 1).transpose(1, 2).reshape(6, 4)
        b = torch.cat([a, a * 2], 0)
        c = torch.stack([a, a + 1], 1)
        d = torch.split(b, 5)[1]
        e = torch.chunk(b, 2, 1)[1]
        f = b[1:9:2, 1:]
        g = b.select(0, 2) + b[-1]
        h = c.unsqueeze(0).squeeze(0).flatten(1)
        i = torch.flip(a, [0, 1])
        j = a[None].expand(3, 6, 4)
        return b, c, d, e, f, g, h, i, j


class Reductions(nn.Module):
    def forward(self, x):
        return (x.sum(), x.sum((0, 2), keepdim=True), x.mean(1), x.amax(-1), x.amin(0), x.argmax(1),
                x.argmin(-1, keepdim=True), x.var(1), x.std(2, unbiased=False), x.max(1)[0], x.min(2).indices,
                torch.cumsum(x, 1), torch.logsumexp(x, -1), x.prod(2))


class Arithmetic(nn.Module):
    def forward(self, x, y):
        return (x + y * 2 - 1, x / (y.abs() + 1), x ** 2 + torch.pow(x.abs(), 1.5), torch.maximum(x, y),
                torch.minimum(x, y) - torch.exp(x).sqrt().rsqrt(), torch.remainder(x, 0.7), 3.0 - x,
                x.clamp(-0.5, 0.5), x.clamp(min=0.1), torch.floor(x) + torch.ceil(y) + torch.round(x),
                torch.sin(x) * torch.cos(y) + torch.tanh(x) + torch.erf(y) + torch.log1p(y.abs()),
                torch.floor_divide(x, 0.3), torch.sign(x), torch.reciprocal(y.abs() + 1))


class Compare(nn.Module):
    def forward(self, x, y):
        m = (x > y) & (x >= 0) | ~(y < 0.5)
        return (torch.where(m, x, y), torch.where(x != y, x, 0.0), (x == x).float(), (x <= 0.2).to(torch.int64),
                torch.masked_fill(x, y > 0, -1.0), torch.logical_xor(x > 0, y > 0))


class Creation(nn.Module):
    def forward(self, x):
        n = x.shape[1]
        return (x + torch.arange(n, dtype=torch.float32), x * torch.full((n,), 0.5) + torch.zeros(n) + torch.ones(1, n),
                torch.zeros_like(x) + 2, torch.ones_like(x) * x, torch.arange(0, 2 * n, 2) + 1,
                torch.full_like(x, 3.0) - x, x.new_zeros((2, 2)) + 1)


class Embed(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(20, 8, padding_idx=0)

    def forward(self, ids):
        return self.emb(ids)


def _ids(*shape: int) -> torch.Tensor:
    return torch.randint(0, 20, shape)


def _mask(*shape: int) -> torch.Tensor:
    m = torch.rand(*shape) > 0.3
    m[..., 0] = True  # every query sees at least one key (a fully masked row is NaN in torch)
    return m


# name -> (module factory, args factory)
CASES: dict[str, tuple[Callable[[], nn.Module], Callable[[], tuple]]] = {
    "linear": (lambda: nn.Linear(16, 8), lambda: (r(4, 16),)),
    "linear_3d": (lambda: nn.Linear(16, 8), lambda: (r(2, 5, 16),)),
    "linear_nobias": (lambda: nn.Linear(16, 8, bias=False), lambda: (r(4, 16),)),
    "mm_bmm_matmul": (lambda: Fn(lambda s, a, b: (a[0] @ b[0], torch.bmm(a, b), torch.matmul(a, b[0]),
                                                  torch.addmm(b[0, 0], a[0], b[0], beta=0.5, alpha=2.0))),
                      lambda: (r(3, 4, 5), r(3, 5, 5))),
    "conv1d": (lambda: nn.Conv1d(4, 6, 3, stride=2, padding=2, dilation=2, groups=2), lambda: (r(2, 4, 17),)),
    "conv2d": (lambda: nn.Conv2d(3, 8, 3, stride=2, padding=1), lambda: (r(2, 3, 11, 11),)),
    "conv2d_groups_dilation": (lambda: nn.Conv2d(8, 8, 3, padding=2, dilation=2, groups=4), lambda: (r(1, 8, 9, 9),)),
    "conv2d_depthwise_nobias": (lambda: nn.Conv2d(6, 6, 5, padding=2, groups=6, bias=False), lambda: (r(1, 6, 8, 8),)),
    "conv2d_same": (lambda: nn.Conv2d(3, 4, (3, 5), padding="same"), lambda: (r(1, 3, 8, 9),)),
    "conv2d_reflect": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="reflect"), lambda: (r(1, 3, 7, 7),)),
    "conv2d_circular": (lambda: nn.Conv2d(3, 4, 3, padding=1, padding_mode="circular"), lambda: (r(1, 3, 7, 7),)),
    "conv2d_replicate": (lambda: nn.Conv2d(3, 4, 3, padding=2, padding_mode="replicate"), lambda: (r(1, 3, 6, 6),)),
    "conv_transpose2d": (lambda: nn.ConvTranspose2d(4, 3, 3, stride=2, padding=1, output_padding=1),
                         lambda: (r(1, 4, 5, 5),)),
    "conv_transpose2d_groups": (lambda: nn.ConvTranspose2d(4, 6, 4, stride=2, groups=2, dilation=1),
                                lambda: (r(2, 4, 3, 3),)),
    "batch_norm2d": (lambda: nn.Sequential(nn.Conv2d(3, 4, 1), _bn(4)), lambda: (r(2, 3, 5, 5),)),
    "batch_norm1d": (lambda: _bn(6, 1), lambda: (r(4, 6),)),
    "layer_norm": (lambda: nn.LayerNorm([5, 8]), lambda: (r(2, 5, 8),)),
    "layer_norm_noaffine": (lambda: nn.LayerNorm(8, elementwise_affine=False), lambda: (r(3, 8),)),
    "group_norm": (lambda: nn.GroupNorm(2, 6), lambda: (r(2, 6, 4, 4),)),
    "instance_norm_as_group": (lambda: nn.GroupNorm(6, 6, affine=False), lambda: (r(2, 6, 4, 4),)),
    "embedding": (Embed, lambda: (_ids(2, 7),)),
    "max_pool": (lambda: nn.MaxPool2d(3, 2, 1), lambda: (r(1, 3, 9, 9),)),
    "max_pool_ceil": (lambda: nn.MaxPool2d(2, 2, ceil_mode=True), lambda: (r(1, 2, 7, 7),)),
    "max_pool1d": (lambda: nn.MaxPool1d(3, 2), lambda: (r(2, 3, 10),)),
    "avg_pool": (lambda: nn.AvgPool2d(3, 2, 1), lambda: (r(1, 3, 9, 9),)),
    "avg_pool_exclude_pad": (lambda: nn.AvgPool2d(3, 2, 1, count_include_pad=False), lambda: (r(1, 3, 8, 8),)),
    "adaptive_avg_pool": (lambda: nn.AdaptiveAvgPool2d((2, 3)), lambda: (r(1, 3, 8, 9),)),
    "adaptive_avg_pool_uneven": (lambda: nn.AdaptiveAvgPool2d((3, 4)), lambda: (r(1, 2, 7, 10),)),
    "adaptive_max_pool": (lambda: nn.AdaptiveMaxPool2d(1), lambda: (r(2, 3, 5, 5),)),
    "activations": (lambda: Fn(lambda s, x: (F.relu(x), F.gelu(x), F.gelu(x, approximate="tanh"), F.silu(x),
                                              F.hardswish(x), torch.sigmoid(x), torch.tanh(x), F.relu6(x),
                                              F.leaky_relu(x, 0.2), F.elu(x), F.hardsigmoid(x), F.softplus(x),
                                              F.mish(x), F.hardtanh(x, -0.5, 0.5))),
                    lambda: (r(3, 10) * 3,)),
    "softmax": (lambda: Fn(lambda s, x: (torch.softmax(x, -1), torch.log_softmax(x, 1), F.softmax(x, 0))),
                lambda: (r(4, 6, 5),)),
    "sdpa_causal": (lambda: Attention(True), lambda: (r(2, 3, 6, 8), r(2, 3, 6, 8), r(2, 3, 6, 8), None)),
    "sdpa_bool_mask": (lambda: Attention(False), lambda: (r(2, 3, 6, 8), r(2, 3, 5, 8), r(2, 3, 5, 8), _mask(6, 5))),
    "sdpa_float_mask": (lambda: Attention(False), lambda: (r(1, 2, 4, 8), r(1, 2, 4, 8), r(1, 2, 4, 8), r(4, 4))),
    "views": (Views, lambda: (r(24),)),
    "reductions": (Reductions, lambda: (r(3, 4, 5),)),
    "arithmetic": (Arithmetic, lambda: (r(3, 4), r(3, 4))),
    "compare_where": (Compare, lambda: (r(3, 4), r(3, 4))),
    "creation": (Creation, lambda: (r(2, 5),)),
    "dropout_eval": (lambda: nn.Sequential(nn.Linear(6, 6), nn.Dropout(0.5), nn.ReLU()), lambda: (r(2, 6),)),
    "pad_modes": (lambda: Fn(lambda s, x: (F.pad(x, (1, 2, 0, 1)), F.pad(x, (2, 1, 1, 2), mode="reflect"),
                                            F.pad(x, (1, 1, 2, 0), mode="replicate"), F.pad(x, (-1, 1), value=2.0))),
                  lambda: (r(1, 2, 5, 6),)),
    "mlp_block": (lambda: nn.Sequential(nn.Flatten(), nn.Linear(48, 32), nn.GELU(), nn.LayerNorm(32), nn.Linear(32, 5),
                                        nn.LogSoftmax(-1)), lambda: (r(3, 3, 4, 4),)),
    "transformer_layer": (lambda: nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True),
                          lambda: (r(2, 6, 16),)),
    "index_ops": (lambda: Fn(lambda s, x, i: (x[i], x[:, i], torch.index_select(x, 1, i),
                                              torch.gather(x, 1, i[None].expand(4, 3)), x.repeat(2, 1),
                                              torch.tril(x), torch.triu(x, 1), x.t())),
                  lambda: (r(4, 4), torch.tensor([3, 0, 2]))),
}


def make(name: str) -> tuple[nn.Module, tuple]:
    torch.manual_seed(hash(name) % 1000)
    mod_fn, args_fn = CASES[name]
    m = mod_fn().eval()
    args = args_fn()
    if name.startswith("sdpa_causal"):
        args = args[:3] + (torch.zeros(1),)
    return m, args


def eager(m: nn.Module, args: tuple) -> list[np.ndarray]:
    with torch.no_grad():
        out = m(*args)
    out = out if isinstance(out, (tuple, list)) else (out,)
    return [o.numpy() for o in out]


def assert_close(got: Any, want: list[np.ndarray], rtol: float = 1e-4) -> None:
    """f32 results within rtol 1e-4; the absolute floor is 1e-5 of the output's magnitude, the error
    f32 accumulation leaves on values that are near zero by cancellation."""
    got = list(got) if isinstance(got, tuple) else [got]
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.shape == w.shape, (g.shape, w.shape)
        if w.dtype.kind in "biu":
            np.testing.assert_array_equal(g, w)
            continue
        scale = float(np.max(np.abs(w))) if w.size else 1.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=1e-5 * max(scale, 1.0) + 1e-7)



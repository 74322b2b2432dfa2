"""DenseNet-121 and ConvNeXt-T as torchvision defines them, written out here (torchvision is not a
dependency): eval mode, random weights seeded by the caller, batch 1 at 224x224.

- DenseNet-121: dense blocks of (6, 12, 24, 16) layers, growth 32, bottleneck 4x; every layer is
  batch norm, ReLU, 1x1 conv, batch norm, ReLU, 3x3 conv, and its output is concatenated to the
  block's running tensor; transitions halve the channels (1x1 conv) and the resolution (2x2 average
  pool). Pre-activation batch norms do not fold into a conv: they stay scale-and-shift ops.
- ConvNeXt-T: a 4x4/4 patchify stem, stages of (3, 3, 9, 3) blocks at 96-768 channels with 2x2/2
  downsampling convs between them; a block is a 7x7 depthwise conv, a layer norm over channels (in
  channels-last order), a 4x inverted MLP with GELU, a per-channel layer scale and the residual.
"""

from __future__ import annotations

from typing import Callable

TORCHVISION = ["densenet121_torch", "convnext_tiny"]


def defs(image: tuple) -> dict[str, Callable[[], tuple]]:
    import torch
    from torch import nn

    class DenseLayer(nn.Module):
        def __init__(self, cin: int, growth: int, bn_size: int):
            super().__init__()
            self.body = nn.Sequential(nn.BatchNorm2d(cin), nn.ReLU(), nn.Conv2d(cin, bn_size * growth, 1, bias=False),
                                      nn.BatchNorm2d(bn_size * growth), nn.ReLU(),
                                      nn.Conv2d(bn_size * growth, growth, 3, padding=1, bias=False))

        def forward(self, x):
            return torch.cat([x, self.body(x)], 1)

    class DenseNet121(nn.Module):
        def __init__(self, growth: int = 32, blocks: tuple = (6, 12, 24, 16), init: int = 64, bn_size: int = 4,
                     classes: int = 1000):
            super().__init__()
            layers = [nn.Conv2d(3, init, 7, 2, 3, bias=False), nn.BatchNorm2d(init), nn.ReLU(), nn.MaxPool2d(3, 2, 1)]
            ch = init
            for i, n in enumerate(blocks):
                for _ in range(n):
                    layers.append(DenseLayer(ch, growth, bn_size))
                    ch += growth
                if i != len(blocks) - 1:
                    layers += [nn.BatchNorm2d(ch), nn.ReLU(), nn.Conv2d(ch, ch // 2, 1, bias=False), nn.AvgPool2d(2, 2)]
                    ch //= 2
            layers += [nn.BatchNorm2d(ch), nn.ReLU()]
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Linear(ch, classes)

        def forward(self, x):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    class LayerNorm2d(nn.LayerNorm):  # torchvision's: a layer norm over the channels of NCHW
        def forward(self, x):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)

    class CNBlock(nn.Module):
        def __init__(self, dim: int):
            super().__init__()
            self.dw = nn.Conv2d(dim, dim, 7, padding=3, groups=dim)
            self.norm = nn.LayerNorm(dim, eps=1e-6)
            self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
            # torchvision initialises the layer scale to 1e-6; random values keep the branch visible
            self.scale = nn.Parameter(torch.rand(dim, 1, 1) * 0.5)

        def forward(self, x):
            y = self.mlp(self.norm(self.dw(x).permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
            return x + self.scale * y

    class ConvNeXtTiny(nn.Module):
        def __init__(self, depths: tuple = (3, 3, 9, 3), dims: tuple = (96, 192, 384, 768), classes: int = 1000):
            super().__init__()
            layers: list[nn.Module] = [nn.Conv2d(3, dims[0], 4, 4), LayerNorm2d(dims[0], eps=1e-6)]
            for i, (n, d) in enumerate(zip(depths, dims)):
                if i:
                    layers += [LayerNorm2d(dims[i - 1], eps=1e-6), nn.Conv2d(dims[i - 1], d, 2, 2)]
                layers += [CNBlock(d) for _ in range(n)]
            self.features = nn.Sequential(*layers)
            self.norm = LayerNorm2d(dims[-1], eps=1e-6)
            self.classifier = nn.Linear(dims[-1], classes)

        def forward(self, x):
            x = self.norm(nn.functional.adaptive_avg_pool2d(self.features(x), 1))
            return self.classifier(torch.flatten(x, 1))

    return {"densenet121_torch": lambda: (DenseNet121(), image), "convnext_tiny": lambda: (ConvNeXtTiny(), image)}

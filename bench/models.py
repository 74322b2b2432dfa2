"""The benchmark models: five defined here in PyTorch and exported to ONNX, plus the "light" real
models that ship with the onnx package.

torchvision is not available, so ResNet-18 and MobileNetV2 are written out in ``torch.nn`` (the
standard architectures: BasicBlock ResNet-18, inverted-residual MobileNetV2 at width 1.0, both at
224x224). The BERT encoder is small (4 layers, hidden 256, 4 heads, FFN 1024, sequence 128) and
written with plain Linear/matmul/softmax so it exports with the TorchScript exporter (``dynamo=False``;
the torch.export one needs onnxscript). Every model is batch 1, static shapes, weights from a fixed
seed, eval mode. Exports go to a cache folder (``$NNC_BENCH_CACHE``, default ``~/.cache/nnc/bench``),
never into the repository; a model is exported again only when its file is missing.

The onnx "light" models have the full architectures with weights produced by ConstantOfShape, which
nnc's constant folding (and onnxruntime's) turns back into ordinary initializers.
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

EXPORT_VERSION = 1  # bump to re-export every cached model after changing a definition
LIGHT = ["resnet50", "squeezenet", "densenet121", "inception_v1", "inception_v2", "shufflenet", "vgg19"]
TORCH = ["mlp", "cnn_small", "resnet18", "mobilenet_v2", "bert_small"]


def cache_dir() -> Path:
    d = Path(os.environ.get("NNC_BENCH_CACHE") or Path.home() / ".cache" / "nnc" / "bench")
    d.mkdir(parents=True, exist_ok=True)
    return d


def light_model(name: str) -> Path:
    import onnx

    return Path(onnx.__file__).parent / "backend" / "test" / "data" / "light" / f"light_{name}.onnx"


# -- PyTorch definitions ------------------------------------------------------------------------
def _defs() -> dict[str, Callable[[], tuple]]:
    import torch
    from torch import nn

    def conv_bn(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: type | None = nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, *([act()] if act else []))

    class BasicBlock(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.a = conv_bn(cin, cout, 3, stride)
            self.b = conv_bn(cout, cout, 3, 1, act=None)
            self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.b(self.a(x)) + self.down(x))

    class ResNet18(nn.Module):
        def __init__(self, classes: int = 1000):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
                blocks += [BasicBlock(cin, cout, stride), BasicBlock(cout, cout, 1)]
                cin = cout
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(512, classes)

        def forward(self, x):
            x = self.blocks(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    class InvertedResidual(nn.Module):
        def __init__(self, cin: int, cout: int, stride: int, expand: int):
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, groups=hidden, act=nn.ReLU6),
                       conv_bn(hidden, cout, 1, act=None)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV2(nn.Module):
        def __init__(self, classes: int = 1000):
            super().__init__()
            layers, cin = [conv_bn(3, 32, 3, 2, act=nn.ReLU6)], 32
            for t, c, n, s in ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                               (6, 160, 3, 2), (6, 320, 1, 1)):
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers.append(conv_bn(cin, 1280, 1, act=nn.ReLU6))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Linear(1280, classes)

        def forward(self, x):
            return self.classifier(torch.flatten(nn.functional.adaptive_avg_pool2d(self.features(x), 1), 1))

    class EncoderLayer(nn.Module):
        def __init__(self, d: int, heads: int, ffn: int):
            super().__init__()
            self.heads, self.dh = heads, d // heads
            self.qkv = nn.Linear(d, 3 * d)
            self.proj = nn.Linear(d, d)
            self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
            self.ff1, self.ff2 = nn.Linear(d, ffn), nn.Linear(ffn, d)

        def forward(self, x):
            b, s, d = x.shape
            q, k, v = self.qkv(x).reshape(b, s, 3, self.heads, self.dh).permute(2, 0, 3, 1, 4)
            att = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(self.dh), dim=-1)
            y = (att @ v).transpose(1, 2).reshape(b, s, d)
            x = self.ln1(x + self.proj(y))
            return self.ln2(x + self.ff2(nn.functional.gelu(self.ff1(x))))

    class BertSmall(nn.Module):
        def __init__(self, vocab: int = 30522, d: int = 256, layers: int = 4, heads: int = 4, ffn: int = 1024,
                     seq: int = 128):
            super().__init__()
            self.tok, self.pos = nn.Embedding(vocab, d), nn.Embedding(seq, d)
            self.ln = nn.LayerNorm(d)
            self.layers = nn.Sequential(*[EncoderLayer(d, heads, ffn) for _ in range(layers)])
            self.register_buffer("positions", torch.arange(seq).unsqueeze(0))

        def forward(self, ids):
            return self.layers(self.ln(self.tok(ids) + self.pos(self.positions)))

    image = (torch.randn(1, 3, 224, 224),)
    return {
        "mlp": lambda: (nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                      nn.Linear(512, 10)), (torch.randn(1, 784),)),
        "cnn_small": lambda: (nn.Sequential(conv_bn(3, 16, 3), nn.MaxPool2d(2), conv_bn(16, 32, 3), nn.MaxPool2d(2),
                                            conv_bn(32, 64, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                            nn.Linear(64, 10)), (torch.randn(1, 3, 32, 32),)),
        "resnet18": lambda: (ResNet18(), image),
        "mobilenet_v2": lambda: (MobileNetV2(), image),
        "bert_small": lambda: (BertSmall(), (torch.randint(0, 30522, (1, 128)),)),
    }


def torch_module(name: str) -> tuple:
    """(eval-mode ``nn.Module``, example args) of a PyTorch-defined bench model: the same
    definition and seeded weights as its ONNX export (``torch_model``)."""
    import torch

    if name not in TORCH:
        raise KeyError(f"{name!r} is not a PyTorch bench model (choose from {', '.join(TORCH)})")
    torch.manual_seed(0)
    model, args = _defs()[name]()
    return model.eval(), args


def torch_model(name: str) -> Path:
    """The cached ONNX export of a PyTorch-defined model (exported on first use)."""
    path = cache_dir() / f"{name}.v{EXPORT_VERSION}.onnx"
    if path.exists():
        return path
    import warnings

    import torch

    torch.manual_seed(0)
    model, args = _defs()[name]()
    model.eval()
    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(tmp), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"], do_constant_folding=True)
    os.replace(tmp, path)
    return path


def all_models() -> dict[str, Callable[[], Path]]:
    """name -> a function giving the model's ONNX path (torch exports are built lazily)."""
    out: dict[str, Callable[[], Path]] = {n: (lambda n=n: torch_model(n)) for n in TORCH}
    out.update({n: (lambda n=n: light_model(n)) for n in LIGHT})
    return out

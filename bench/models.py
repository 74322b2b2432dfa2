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

For accuracy measurements (int8 vs fp32) those weights are degenerate, so ``realistic_model`` gives
ResNet-50/ResNet-18/MobileNetV2 variants whose activations keep their spread to the logits (seeded
He-normal weights, BatchNorm statistics from one batch; see the section at the end).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Callable

try:  # imported as bench.models (tests) or as models with bench/ on sys.path (the bench scripts)
    from . import models_torchvision
except ImportError:
    import models_torchvision

TORCHVISION = models_torchvision.TORCHVISION

EXPORT_VERSION = 1  # bump to re-export every cached model after changing a definition
LIGHT = ["resnet50", "squeezenet", "densenet121", "inception_v1", "inception_v2", "shufflenet", "vgg19"]
TORCH = ["mlp", "cnn_small", "resnet18", "mobilenet_v2", "bert_small"]
# squeeze-excite CNNs for the ASIC host-partition measurements (bench/asic.py); not in the x86 suite
SQUEEZE_EXCITE = ["mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0"]
# full-size models for the compile-time measurements (bench/compile_time.py)
LARGE = ["resnet50_torch", "bert_base"]
# the architectures users run, as torchvision / transformers define them: `bench/suite.py --set
# torchvision` (SQUEEZE_EXCITE and LARGE above, and DenseNet-121 / ConvNeXt-T of models_torchvision.py)
TORCHVISION_SET = ["resnet50_torch", "efficientnet_b0", "mobilenet_v3_small", "mobilenet_v3_large", *TORCHVISION,
                   "bert_base"]


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

    class Bottleneck(nn.Module):
        def __init__(self, cin: int, width: int, stride: int):
            super().__init__()
            cout = 4 * width
            self.body = nn.Sequential(conv_bn(cin, width, 1), conv_bn(width, width, 3, stride),
                                      conv_bn(width, cout, 1, act=None))
            self.down = conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else nn.Identity()

        def forward(self, x):
            return torch.relu(self.body(x) + self.down(x))

    class ResNet50(nn.Module):  # torchvision's resnet50 (stride on the 3x3 conv, as v1.5)
        def __init__(self, classes: int = 1000):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 64, 7, 2), nn.MaxPool2d(3, 2, 1))
            blocks, cin = [], 64
            for width, n, stride in ((64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)):
                for i in range(n):
                    blocks.append(Bottleneck(cin, width, stride if i == 0 else 1))
                    cin = 4 * width
            self.blocks = nn.Sequential(*blocks)
            self.fc = nn.Linear(cin, classes)

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
    return {**_squeeze_excite_defs(conv_bn, image), **models_torchvision.defs(image),
        "mlp": lambda: (nn.Sequential(nn.Linear(784, 512), nn.ReLU(), nn.Linear(512, 512), nn.ReLU(),
                                      nn.Linear(512, 10)), (torch.randn(1, 784),)),
        "cnn_small": lambda: (nn.Sequential(conv_bn(3, 16, 3), nn.MaxPool2d(2), conv_bn(16, 32, 3), nn.MaxPool2d(2),
                                            conv_bn(32, 64, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                            nn.Linear(64, 10)), (torch.randn(1, 3, 32, 32),)),
        "resnet18": lambda: (ResNet18(), image),
        "mobilenet_v2": lambda: (MobileNetV2(), image),
        "bert_small": lambda: (BertSmall(), (torch.randint(0, 30522, (1, 128)),)),
        "resnet50_torch": lambda: (ResNet50(), image),
        # BERT-base sized: 12 layers, hidden 768, 12 heads, FFN 3072, sequence 128
        "bert_base": lambda: (BertSmall(d=768, layers=12, heads=12, ffn=3072), (torch.randint(0, 30522, (1, 128)),)),
    }


def _squeeze_excite_defs(conv_bn: Callable, image: tuple) -> dict[str, Callable[[], tuple]]:
    """MobileNetV3-small/-large and EfficientNet-B0 as torchvision defines them (eval mode: dropout and
    stochastic depth are identities): inverted residuals with squeeze-excite blocks and hard-swish /
    SiLU activations, the ops the ASIC leaves to the host."""
    from torch import nn

    def divisible(v: float, d: int = 8) -> int:  # torchvision's _make_divisible
        n = max(d, int(v + d / 2) // d * d)
        return n + d if n < 0.9 * v else n

    class SqueezeExcite(nn.Module):
        def __init__(self, ch: int, squeeze: int, act: type, gate: type):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(ch, squeeze, 1), nn.Conv2d(squeeze, ch, 1)
            self.act, self.gate = act(), gate()

        def forward(self, x):
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * self.gate(self.fc2(self.act(self.fc1(s))))

    class Bneck(nn.Module):  # MobileNetV3 block and EfficientNet MBConv: expand, depthwise, SE, project
        def __init__(self, cin: int, k: int, hidden: int, cout: int, se: SqueezeExcite | None, act: type,
                     stride: int):
            super().__init__()
            layers = [conv_bn(cin, hidden, 1, act=act)] if hidden != cin else []
            layers += [conv_bn(hidden, hidden, k, stride, groups=hidden, act=act), *([se] if se else []),
                       conv_bn(hidden, cout, 1, act=None)]
            self.body = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.body(x) if self.residual else self.body(x)

    class MobileNetV3(nn.Module):
        """torchvision's MobileNetV3: ``blocks`` of (kernel, expanded, out, squeeze-excite, hard-swish,
        stride), then a 1x1 conv to ``last`` channels and the classifier through ``hidden``."""

        def __init__(self, blocks: tuple, last: int, hidden: int, classes: int = 1000):
            super().__init__()
            layers, cin = [conv_bn(3, 16, 3, 2, act=nn.Hardswish)], 16
            for k, exp, cout, use_se, hs, s in blocks:
                se = SqueezeExcite(exp, divisible(exp // 4), nn.ReLU, nn.Hardsigmoid) if use_se else None
                layers.append(Bneck(cin, k, exp, cout, se, nn.Hardswish if hs else nn.ReLU, s))
                cin = cout
            layers.append(conv_bn(cin, last, 1, act=nn.Hardswish))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Linear(last, hidden), nn.Hardswish(), nn.Dropout(0.2),
                                            nn.Linear(hidden, classes))

        def forward(self, x):
            return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))

    small = ((3, 16, 16, True, False, 2), (3, 72, 24, False, False, 2), (3, 88, 24, False, False, 1),
             (5, 96, 40, True, True, 2), (5, 240, 40, True, True, 1), (5, 240, 40, True, True, 1),
             (5, 120, 48, True, True, 1), (5, 144, 48, True, True, 1), (5, 288, 96, True, True, 2),
             (5, 576, 96, True, True, 1), (5, 576, 96, True, True, 1))
    large = ((3, 16, 16, False, False, 1), (3, 64, 24, False, False, 2), (3, 72, 24, False, False, 1),
             (5, 72, 40, True, False, 2), (5, 120, 40, True, False, 1), (5, 120, 40, True, False, 1),
             (3, 240, 80, False, True, 2), (3, 200, 80, False, True, 1), (3, 184, 80, False, True, 1),
             (3, 184, 80, False, True, 1), (3, 480, 112, True, True, 1), (3, 672, 112, True, True, 1),
             (5, 672, 160, True, True, 2), (5, 960, 160, True, True, 1), (5, 960, 160, True, True, 1))

    class EfficientNetB0(nn.Module):
        def __init__(self, classes: int = 1000):
            super().__init__()
            layers, cin = [conv_bn(3, 32, 3, 2, act=nn.SiLU)], 32
            for e, k, s, cout, n in ((1, 3, 1, 16, 1), (6, 3, 2, 24, 2), (6, 5, 2, 40, 2), (6, 3, 2, 80, 3),
                                     (6, 5, 1, 112, 3), (6, 5, 2, 192, 4), (6, 3, 1, 320, 1)):
                for i in range(n):
                    se = SqueezeExcite(cin * e, max(1, cin // 4), nn.SiLU, nn.Sigmoid)
                    layers.append(Bneck(cin, k, cin * e, cout, se, nn.SiLU, s if i == 0 else 1))
                    cin = cout
            layers.append(conv_bn(cin, 1280, 1, act=nn.SiLU))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, classes))

        def forward(self, x):
            return self.classifier(nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1))

    return {"mobilenet_v3_small": lambda: (MobileNetV3(small, 576, 1024), image),
            "mobilenet_v3_large": lambda: (MobileNetV3(large, 960, 1280), image),
            "efficientnet_b0": lambda: (EfficientNetB0(), image)}


def torch_module(name: str) -> tuple:
    """(eval-mode ``nn.Module``, example args) of a PyTorch-defined bench model: the same
    definition and seeded weights as its ONNX export (``torch_model``)."""
    import torch

    if name not in TORCH + SQUEEZE_EXCITE + LARGE + TORCHVISION:
        choices = ", ".join(TORCH + SQUEEZE_EXCITE + LARGE + TORCHVISION)
        raise KeyError(f"{name!r} is not a PyTorch bench model (choose from {choices})")
    torch.manual_seed(0)
    model, args = _defs()[name]()
    return model.eval(), args


def torch_model(name: str) -> Path:
    """The cached ONNX export of a PyTorch-defined model (exported on first use)."""
    path = cache_dir() / f"{name}.v{EXPORT_VERSION}.onnx"
    if path.exists():
        return path
    model, args = torch_module(name)
    _export(model, args, path)
    return path


def _export(model, args: tuple, path: Path) -> None:
    """Export an eval-mode module to ``path`` atomically (TorchScript exporter, opset 17)."""
    import warnings

    import torch

    tmp = path.with_suffix(".tmp.onnx")
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, args, str(tmp), dynamo=False, opset_version=17, input_names=["input"],
                          output_names=["output"], do_constant_folding=True)
    os.replace(tmp, path)


def all_models(torchvision: bool = False) -> dict[str, Callable[[], Path]]:
    """name -> a function giving the model's ONNX path (torch exports are built lazily): the core set
    (TORCH and LIGHT), with ``torchvision`` also TORCHVISION_SET."""
    out: dict[str, Callable[[], Path]] = {n: (lambda n=n: torch_model(n)) for n in TORCH}
    out.update({n: (lambda n=n: light_model(n)) for n in LIGHT})
    if torchvision:
        out.update({n: (lambda n=n: torch_model(n)) for n in TORCHVISION_SET})
    return out


# -- Realistic weights for the quantization / ASIC accuracy measurements -----------------------
# The plain models above are fine for timing, but their numbers are degenerate for accuracy work:
# ResNet-50-light's ConstantOfShape weights are all 0.02 (every logit is the same number) and it ends
# in a Softmax; MobileNetV2's default-initialised activations shrink to ~1e-8, so its logits are its
# classifier bias. The variants below carry signal through every layer.
REALISTIC_VERSION = 2  # bump to rebuild every cached realistic model after changing the recipe
# The last batch norm of every residual branch is scaled by this (scale and bias), as residual-branch
# down-scaling initialisations do (Fixup, SkipInit, torchvision's zero_init_residual at 0) and as
# trained ResNets look: with plain He initialisation these deep random networks are chaotic (40 dB
# of input noise leaves 17-18 dB at the logits in fp32), which no real network is.
RESIDUAL_SCALE = 0.1
REALISTIC = ["resnet50", "resnet18", "mobilenet_v2", *SQUEEZE_EXCITE]


def calibrated_torch_module(name: str, batch: int = 4, residual_scale: float = 1.0) -> tuple:
    """(eval-mode module, example args) of ``torch_module(name)`` whose BatchNorm running statistics
    are the statistics of one training-mode forward pass over ``batch`` standard-normal inputs (fixed
    seed), so every BatchNorm output has per-channel mean ~0 and variance ~1 and activations keep
    their spread to the logits (as tests/frontends/torch_frontend/test_torch_models.py does)."""
    import torch
    from torch import nn

    model, args = torch_module(name)
    if residual_scale != 1.0:
        with torch.no_grad():
            for m in model.modules():  # the last batch norm of each residual branch
                bn = (m.body[-1][1] if getattr(m, "residual", False)  # MobileNetV2's inverted residual
                      else m.b[1] if hasattr(m, "down") else None)  # ResNet's basic block
                if bn is not None:
                    bn.weight.mul_(residual_scale)
                    bn.bias.mul_(residual_scale)
    bns = [b for b in model.modules() if isinstance(b, nn.modules.batchnorm._BatchNorm)]
    if bns:
        for b in bns:
            b.momentum = 1.0  # running statistics := this batch's statistics
        gen = torch.Generator().manual_seed(12345)
        model.train()
        with torch.no_grad():
            model(torch.randn(batch, *args[0].shape[1:], generator=gen))
        model.eval()
    return model, args


def _realistic_torch(name: str, path: Path, residual_scale: float = 1.0) -> None:
    _export(*calibrated_torch_module(name, residual_scale=residual_scale), path)


def _np_forward_bn_stats(model, inits: dict, x) -> None:
    """Run the light ResNet-50 graph in numpy on the batch ``x`` (N, 3, 224, 224), setting every
    BatchNormalization's mean/var initializers in ``inits`` to the batch statistics of its input
    before applying it (what a training-mode forward with momentum 1 does). Covers exactly the ops
    that graph uses; stops at Softmax."""
    import numpy as np

    env = {model.graph.input[0].name: x}

    def attr(node, name, default):
        from onnx import helper

        for a in node.attribute:
            if a.name == name:
                return helper.get_attribute_value(a)
        return default

    def val(name):
        return env[name] if name in env else inits[name]

    def pad(x, p, fill):
        return np.pad(x, ((0, 0), (0, 0), (p[0], p[2]), (p[1], p[3])), constant_values=fill)

    def windows(x, k, s):
        return np.lib.stride_tricks.sliding_window_view(x, k, axis=(2, 3))[:, :, ::s[0], ::s[1]]

    for node in model.graph.node:
        if node.op_type == "ConstantOfShape":
            continue  # replaced by initializers
        op, ins = node.op_type, [val(i) for i in node.input]
        if op == "Conv":
            if attr(node, "group", 1) != 1 or any(d != 1 for d in attr(node, "dilations", [1, 1])):
                raise NotImplementedError("grouped or dilated Conv")
            w = ins[1]
            win = windows(pad(ins[0], attr(node, "pads", [0] * 4), 0.0), w.shape[2:], attr(node, "strides", [1, 1]))
            y = np.tensordot(win, w, axes=([1, 4, 5], [1, 2, 3])).transpose(0, 3, 1, 2)
            y = y + ins[2].reshape(1, -1, 1, 1) if len(ins) > 2 else y
        elif op == "BatchNormalization":
            xin = ins[0].astype(np.float64)
            mean, var = xin.mean(axis=(0, 2, 3)), xin.var(axis=(0, 2, 3))
            inits[node.input[3]], inits[node.input[4]] = mean.astype(np.float32), var.astype(np.float32)
            eps = attr(node, "epsilon", 1e-5)
            y = ((xin - mean[:, None, None]) / np.sqrt(var[:, None, None] + eps) * ins[1][:, None, None]
                 + ins[2][:, None, None])
        elif op == "Relu":
            y = np.maximum(ins[0], 0)
        elif op == "Sum":
            y = sum(ins[1:], ins[0])
        elif op == "MaxPool":
            y = windows(pad(ins[0], attr(node, "pads", [0] * 4), -np.inf), attr(node, "kernel_shape", None),
                        attr(node, "strides", [1, 1])).max(axis=(4, 5))
        elif op == "AveragePool":
            if any(attr(node, "pads", [0] * 4)):
                raise NotImplementedError("padded AveragePool")
            y = windows(ins[0], attr(node, "kernel_shape", None), attr(node, "strides", [1, 1])).mean(axis=(4, 5))
        elif op == "Reshape":
            y = ins[0].reshape(ins[0].shape[0], -1)  # [1, 2048] in the file; keep the batch axis
        elif op == "Gemm":
            if attr(node, "transA", 0) or attr(node, "alpha", 1.0) != 1 or attr(node, "beta", 1.0) != 1:
                raise NotImplementedError("Gemm form")
            y = ins[0] @ (ins[1].T if attr(node, "transB", 0) else ins[1]) + ins[2]
        elif op == "Softmax":
            return
        else:
            raise NotImplementedError(f"{op} in the light ResNet-50")
        env[node.output[0]] = y.astype(np.float32)


def _realistic_resnet50(path: Path, batch: int = 4, residual_scale: float = 1.0) -> None:
    import numpy as np
    import onnx
    from onnx import helper, numpy_helper

    model = onnx.load(str(light_model("resnet50")))
    g = model.graph
    inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    rng = np.random.default_rng(2024)
    keep = []
    for node in g.node:
        if node.op_type != "ConstantOfShape":
            keep.append(node)
            continue
        name, shape = node.output[0], [int(d) for d in inits.pop(node.input[0])]
        if name.endswith("_w_0") and len(shape) == 4:  # conv weight: He (Kaiming normal, fan-in)
            a = rng.standard_normal(shape) * math.sqrt(2.0 / (shape[1] * shape[2] * shape[3]))
        elif name.endswith("_w_0"):  # the classifier [1000, 2048]: variance-preserving
            a = rng.standard_normal(shape) * math.sqrt(1.0 / shape[1])
        elif name.endswith("_bn_s_0"):
            a = 1 + 0.1 * rng.standard_normal(shape)
        elif name.endswith(("_bn_b_0", "_b_0")):
            a = 0.1 * rng.standard_normal(shape)
        elif name.endswith("_bn_rm_0"):
            a = np.zeros(shape)  # overwritten by the batch statistics below
        elif name.endswith("_bn_riv_0"):
            a = np.ones(shape)
        else:
            raise ValueError(f"unexpected ConstantOfShape output {name}")
        inits[name] = a.astype(np.float32)
    for name in inits:
        if "branch2c_bn_" in name and name.endswith(("_s_0", "_b_0")):
            inits[name] = (inits[name] * residual_scale).astype(np.float32)
    # Cut before the final Softmax: the logits are what int8 must track.
    softmax = keep[-1]
    assert softmax.op_type == "Softmax"
    logits = softmax.input[0]
    del keep[-1]
    x = np.random.default_rng(12345).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    _np_forward_bn_stats(model, inits, x)
    data = g.input[0]
    used = {i for n in keep for i in n.input}
    inits = {k: v for k, v in inits.items() if k in used}  # drops a stray unused blob
    graph = helper.make_graph(keep, "resnet50_realistic", [data],
                              [helper.make_tensor_value_info(logits, onnx.TensorProto.FLOAT, [1, 1000])],
                              [numpy_helper.from_array(v, k) for k, v in inits.items()])
    # IR 4: initializers need not be graph inputs, so they are constants, not overridable inputs.
    out = helper.make_model(graph, opset_imports=list(model.opset_import), ir_version=4)
    onnx.checker.check_model(out)
    tmp = path.with_suffix(".tmp.onnx")
    onnx.save(out, str(tmp))
    os.replace(tmp, path)


def realistic_model(name: str) -> Path:
    """The cached ONNX file of a model with realistic weights for accuracy measurements (built on
    first use). ``resnet50``: the onnx package's light ResNet-50 with every ConstantOfShape tensor
    replaced by a seeded random initializer (He-normal conv weights, BN scale ~1, bias ~0), every
    BatchNorm's mean/var set to the statistics of its input on one batch of 4 standard-normal images,
    and the graph cut before its final Softmax (output = logits). ``resnet18`` / ``mobilenet_v2``:
    ``calibrated_torch_module(name)`` exported like ``torch_model``. In all three the last batch norm
    of every residual branch is scaled by ``RESIDUAL_SCALE``. Seeds differ from the ones the
    tests and benches draw their calibration and evaluation inputs from."""
    if name not in REALISTIC:
        raise KeyError(f"{name!r} has no realistic variant (choose from {', '.join(REALISTIC)})")
    path = cache_dir() / f"{name}.realistic.v{REALISTIC_VERSION}.onnx"
    if not path.exists():
        if name == "resnet50":
            _realistic_resnet50(path, residual_scale=RESIDUAL_SCALE)
        else:
            _realistic_torch(name, path, residual_scale=RESIDUAL_SCALE)
    return path

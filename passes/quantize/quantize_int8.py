"""``quantize-int8``: the post-training INT8 quantization of ``quantize_module`` as a pipeline pass.

Options: ``calibration`` (an .npz path; empty = random standard-normal inputs), ``observer``
(minmax, percentile, entropy), ``per-channel`` (weights per output channel, default true),
``symmetric`` (activations with zero point 0, default true). ``quantize-qdq``: an imported QDQ model
(quantize/dequantize pairs) into the same integer ops with the model's own scales (qdq.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from nnc.ir import Module

from ..registry import Pass, register_pass
from . import import_qdq, quantize_module


@register_pass("quantize-int8")
@dataclass
class QuantizeInt8(Pass):
    calibration: str = ""
    observer: str = "minmax"
    per_channel: bool = True
    symmetric: bool = True

    def run(self, module: Module) -> bool:
        stats: dict[str, int] = {}
        q = quantize_module(module, self.calibration or None, self.observer, self.per_channel, self.symmetric,
                            stats=stats)
        module.graphs, module.constants, module.constant_types = q.graphs, q.constants, q.constant_types
        module.annotations.clear()
        self.stats = dict(stats)
        return True


@register_pass("quantize-qdq")
@dataclass
class QuantizeQDQ(Pass):
    def run(self, module: Module) -> bool:
        stats: dict[str, int] = {}
        q = import_qdq(module, stats)
        module.graphs, module.constants, module.constant_types = q.graphs, q.constants, q.constant_types
        module.annotations.clear()
        self.stats = dict(stats)
        return True

"""INT8 post-training quantization: calibration observers, per-channel weight quantization and
integer-only requantization, shared by the x86 and ASIC backends.

``quantize_module(module, calibration, observer=...)`` returns a copy of a float inference module in
which every op with an integer form is int8 (``qconv``/``qmatmul``/``requantize``/``qadd`` and
int8 pooling/data movement, see ir/ops/quant.py); the pass ``quantize-int8`` does the same inside a
pipeline. ``import_qdq`` turns an imported QDQ/QLinear ONNX model into the same integer ops.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Iterable, Mapping, Union

from nnc.ir import Module, verify_module
from nnc.passes.registry import PassError

from .calibrate import calibrate, load_calibration, synthetic_calibration
from .observers import OBSERVERS
from .rewrite import QuantizeRewriter

Calibration = Union[str, Path, Mapping[str, Any], Iterable[Mapping[str, Any]]]

__all__ = ["quantize_module", "import_qdq", "calibrate", "load_calibration", "OBSERVERS", "prepare",
           "quantized_pipeline"]

# freeze + fold + batch-norm folding: the float graph the rewrite expects (the -O2 inference preset)
PREPARE = "freeze,fold-constants,fold-dynamic,simplify,dce,cse,fold-batchnorm,simplify,dce"


def prepare(module: Module) -> Module:
    """Freeze and fold ``module`` in place (weights become constants, BatchNorm folds into conv)."""
    from nnc.passes.manager import PassManager

    PassManager(PREPARE).run(module)
    return module


def quantize_module(module: Module, calibration: Calibration | None = None,
                    observer: str = "minmax", per_channel: bool = True, symmetric: bool = True,
                    progress: bool = False, stats: dict[str, int] | None = None,
                    int8_activations: bool = False) -> Module:
    """A quantized copy of ``module``. ``calibration``: feed dicts, one dict, or an ``.npz`` path; None
    calibrates on random standard-normal inputs (only good for smoke tests). ``stats``, if given,
    receives counts of the ops rewritten to int8 and of those left in f32. ``int8_activations``:
    hard-swish, hard-sigmoid, sigmoid and SiLU between int8 values become ``qlut`` table lookups and
    products of two int8 activations ``qmul`` (what an accelerator's vector unit runs; see rewrite.py)."""
    if observer not in OBSERVERS:
        raise PassError(f"unknown observer {observer!r}; choose one of {', '.join(OBSERVERS)}")
    m = prepare(module.clone())
    feeds = synthetic_calibration(m) if calibration is None else load_calibration(calibration, m)
    ranges = calibrate(m, feeds, observer, progress)
    rw = QuantizeRewriter(m, ranges, per_channel, symmetric, int8_activations=int8_activations)
    rw.run()
    from nnc.passes.dce import DeadCodeElimination

    DeadCodeElimination().run(m)
    verify_module(m)
    if stats is not None:
        stats.update(rw.stats)
    return m


def import_qdq(module: Module, stats: dict[str, int] | None = None) -> Module:
    """An imported QDQ model (quantize/dequantize pairs around float ops) as integer ops, with the
    model's own scales and zero points (qdq.py)."""
    from .qdq import strip_qdq

    m = module.clone()
    fixed = strip_qdq(m)
    prepare(m)
    rw = QuantizeRewriter(m, {}, fixed=fixed)
    rw.run()
    from nnc.passes.dce import DeadCodeElimination

    DeadCodeElimination().run(m)
    verify_module(m)
    if stats is not None:
        stats.update(rw.stats)
    return m


def quantized_pipeline(text: str, scheme: str, calibration: Any = None, observer: str = "minmax",
                       group: int | None = None, asymmetric: bool = False, head: str | None = None) -> list[Any]:
    """The passes of pipeline ``text`` up to (not including) fusion, then ``quantize-int8`` with this
    calibration (any form ``quantize_module`` takes, so not only a path) and a final ``dce``: the
    driver's form of ``nnc.compile(..., quantize="int8")``. Fusion is left out because its groups
    are float-only. The weight-only schemes (``int8-weights``, ``int4-weights``: ``group``,
    ``asymmetric``, ``head``: the output layer's int8 (default), int4 or float) keep the whole
    pipeline and run ``quantize-weights`` just before fusion."""
    from nnc.passes.pipeline import parse_pipeline
    from nnc.passes.registry import make_pass

    if scheme in ("int8-weights", "int4-weights"):
        return _weight_only_pipeline(text, int(scheme[3]), group or 32, not asymmetric, head or "int8")
    if scheme not in ("int8", "qdq"):
        raise PassError(f"unknown quantization {scheme!r}; supported: int8 (calibrate), qdq (an imported "
                        "QDQ model's own scales), int8-weights, int4-weights (weight-only)")
    if observer not in OBSERVERS:
        raise PassError(f"unknown observer {observer!r}; choose one of {', '.join(OBSERVERS)}")
    passes = []
    for name, opts in parse_pipeline(text):
        if name == "fuse":
            break
        if name == "batchnorm-affine":  # a rewrite for fusion's sake: the quantizer handles batch_norm itself
            continue
        passes.append(make_pass(name, opts))
    if scheme == "qdq":
        return passes + [quantize_int8.QuantizeQDQ(), make_pass("dce")]
    q = quantize_int8.QuantizeInt8(observer=observer)
    q.calibration = calibration if calibration is not None else ""
    return passes + [q, make_pass("dce")]


def _weight_only_pipeline(text: str, bits: int, group: int, symmetric: bool, head: str) -> list[Any]:
    from nnc.passes.pipeline import parse_pipeline
    from nnc.passes.registry import make_pass

    items = [make_pass(name, opts) for name, opts in parse_pipeline(text)]
    at = next((i for i, p in enumerate(items) if p.name == "fuse"), len(items))
    q = weights.QuantizeWeights(bits=bits, group=group, symmetric=symmetric, head=head)
    return items[:at] + [q, make_pass("dce")] + items[at:]  # dce: the float weights go


# registers quantize-int8 (it needs quantize_module above) and quantize-weights
from . import quantize_int8, weights  # noqa: E402,F401

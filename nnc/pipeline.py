"""Running the optimisation pipeline for ``nnc.compile``: options in, optimised module and report out.

Pipeline options (all optional; ``CompileOptions.pipeline_options()`` gives them as a dict):
``opt_level`` (0..3, default 3), ``passes`` (a pipeline string; replaces the preset),
``disable_passes``, ``verify_each``, ``print_ir_before``, ``print_ir_after`` (pass names or "all"),
``print_ir_after_change``, ``time_passes``, ``dump_dir``, ``explain_fusion``, ``pass_plugins``
(files that register passes), ``quantize`` ("int8", "qdq", "int8-weights", "int4-weights"; the
weight-only modes read ``quantize_group`` and ``quantize_asymmetric``), ``calibration`` (feed dicts or an .npz path) and
``observer`` (minmax, percentile, entropy); for ``mode="train"``, ``memory_budget`` (bytes, "64MB" or
a fraction of the step's arena) appends ``remat{budget=...}`` (passes/training/remat.py).
"""

from __future__ import annotations

from typing import Any, Iterable

from nnc.ir import Module
from nnc.passes import PassManager, PassRecord
from nnc.passes.pipeline import format_pipeline, parse_pipeline
from nnc.passes.plugins import load_pass_plugin
from nnc.passes.presets import DEFAULT_LEVEL, preset


def _names(v: str | Iterable[str] | None) -> list[str]:
    if v is None:
        return []
    if isinstance(v, str):
        return [s.strip() for s in v.split(",") if s.strip()]
    return list(v)


def pipeline_string(mode: str, opts: dict[str, Any]) -> str:
    for path in _names(opts.get("pass_plugins")):
        load_pass_plugin(path)
    text = opts.get("passes")
    budget = mode == "train" and opts.get("memory_budget") not in (None, "")
    if text is None:
        text = preset(mode, int(opts.get("opt_level", DEFAULT_LEVEL)))
        if budget:  # remat picks and reports single recomputed ops, which fusing them would hide
            items = [(n, o) for n, o in parse_pipeline(text) if n != "fuse"]
            text = format_pipeline([it for i, it in enumerate(items) if i == 0 or it != items[i - 1]])
    if budget:
        text = ",".join(t for t in (text, f"remat{{budget={opts['memory_budget']}}}") if t)
    if opts.get("explain_fusion"):
        items = parse_pipeline(text)
        text = format_pipeline([(n, {**o, "explain": "true"} if n == "fuse" else o) for n, o in items])
    return text


def optimize(module: Module, mode: str, opts: dict[str, Any]) -> tuple[Module, list[PassRecord], str]:
    """Run the pipeline on a copy of ``module``; return (optimised copy, records, pipeline)."""
    text = pipeline_string(mode, opts)
    m = module.clone()
    passes: Any = text
    if opts.get("quantize"):  # post-training quantization replaces fusion (passes/quantize)
        from nnc.passes.quantize import quantized_pipeline

        passes = quantized_pipeline(text, opts["quantize"], opts.get("calibration"), opts.get("observer") or "minmax",
                                    opts.get("quantize_group"), bool(opts.get("quantize_asymmetric")),
                                    opts.get("quantize_head"))
    pm = PassManager(passes, verify_each=bool(opts.get("verify_each")),
                     print_ir_before=_names(opts.get("print_ir_before")),
                     print_ir_after=_names(opts.get("print_ir_after")),
                     print_after_change=bool(opts.get("print_ir_after_change")),
                     time_passes=bool(opts.get("time_passes")), dump_dir=opts.get("dump_dir"),
                     disable=_names(opts.get("disable_passes")))
    records = pm.run(m)
    return m, records, pm.pipeline if text else ""

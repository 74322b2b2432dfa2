"""The compile report: what each pass did, the kernels, and the memory plan.

Schema (documented in docs/compile-report.md):

    {"target": str, "mode": str, "pipeline": str,
     "passes": [{"name", "seconds", "changed", "ops_before", "ops_after", "stats"?}],
     "kernels": {"count": int, "list": [{"name", "op", "kind"?, "ops"?}]},
     "memory": {"planned": bool, "arena_bytes", "lower_bound_bytes", "no_reuse_bytes",
                "weights_bytes", "in_place", "buffers", "strategy"} | {"planned": false, "reason"},
     "fusion": {"groups", "ops_fused", "rejected": [str]}?}
"""

from __future__ import annotations

from typing import Any

from nnc.ir import Module
from nnc.passes import PassRecord
from nnc.passes.liveness import DynamicShapeError
from nnc.passes.plan_memory import plan_graph


def kernel_list(module: Module) -> list[dict[str, Any]]:
    out = []
    for op in module.main.ops:
        if op.opname == "const":
            continue
        entry: dict[str, Any] = {"name": op.results[0].name if op.results else op.opname, "op": op.opname}
        if op.opname == "fused":
            entry["kind"] = op.attrs["kind"]
            entry["ops"] = [r.opname for r in op.regions[0].ops]
        out.append(entry)
    return out


def memory_summary(module: Module) -> dict[str, Any]:
    weights = module.weights_bytes()
    plan = module.annotations.get("memory_plan")
    try:
        if plan is None:
            plan = plan_graph(module.main)
    except DynamicShapeError as e:
        return {"planned": False, "reason": str(e), "weights_bytes": weights}
    return {"planned": True, **plan.summary(), "weights_bytes": weights}  # type: ignore[union-attr]


def build_report(module: Module, records: list[PassRecord], target: str, mode: str, pipeline: str) -> dict[str, Any]:
    kernels = kernel_list(module)
    report: dict[str, Any] = {
        "target": target, "mode": mode, "pipeline": pipeline,
        "passes": [r.as_dict() for r in records],
        "kernels": {"count": len(kernels), "list": kernels},
        "memory": memory_summary(module),
    }
    fuse = [r for r in records if r.name == "fuse"]
    if fuse:
        s = fuse[-1].stats
        report["fusion"] = {"groups": s.get("groups", 0), "ops_fused": s.get("ops_fused", 0),
                            "rejected": list(s.get("rejected", []))}
    return report

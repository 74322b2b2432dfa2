"""``nnc ops``: which ONNX ops import (converter forms by opset), which run on x86, and which import
through their ONNX function body."""

from __future__ import annotations

import argparse
from typing import Any

from .common import Formatter


def converter_table() -> list[tuple[str, list[int], list[str]]]:
    """(ONNX op, opsets where a converter form starts, targets) for every op with a converter."""
    from nnc.frontends.onnx.registry import supported
    from nnc.onnx_backend import x86_op_coverage

    x86 = x86_op_coverage(quiet=False)  # op -> (node tests whose IR ops all lower on x86, node tests)

    def targets(op: str) -> list[str]:  # every imported op runs on the interpreter
        ok, n = x86.get(op, (0, 0))
        return ["reference"] + (["x86"] if n and ok == n else [f"x86 ({ok} of {n} forms)"] if ok else [])
    rows = [(f"{d}.{t}" if d else t, since) for (d, t), since in supported().items()]
    return [(op, since, targets(op)) for op, since in rows]


def function_expanded_ops() -> dict[str, int]:
    """ONNX ops without a converter whose ONNX function body uses only ops nnc imports.

    Maps op -> the first opset with such a body. It is computed from the schemas' bodies for a
    float input, so an op whose body depends on other input types may still fail for those types.
    """
    import onnx
    from onnx import defs

    from nnc.frontends.onnx.registry import supported

    have = {t for (d, t) in supported() if d == ""}
    schemas = {s.name: s for s in defs.get_all_schemas() if s.domain in ("", "ai.onnx")}
    memo: dict[str, int | None] = {}

    def bodies(s: Any) -> list[tuple[int, onnx.FunctionProto]]:
        out = []
        for v in s.function_opset_versions if s.has_function else []:
            f = onnx.FunctionProto()
            f.ParseFromString(s.get_function_with_opset_version(v))
            out.append((v, f))
        if s.has_context_dependent_function:
            node = onnx.helper.make_node(s.name, [f"i{k}" for k in range(len(s.inputs))], ["o"])
            tp = onnx.TypeProto()
            tp.tensor_type.elem_type = onnx.TensorProto.FLOAT
            types = [tp.SerializeToString()] * len(s.inputs)
            for v in s.context_dependent_function_opset_versions:
                try:
                    fb = s.get_context_dependent_function_with_opset_version(v, node.SerializeToString(), types)
                except Exception:  # noqa: BLE001 - onnx refuses to build a body for these input types
                    continue
                if fb:
                    f = onnx.FunctionProto()
                    f.ParseFromString(fb)
                    out.append((v, f))
        return sorted(out, key=lambda e: e[0])

    def expands(name: str, depth: int = 0) -> int | None:
        if name in memo:
            return memo[name]
        memo[name] = None  # a cycle or a too-deep chain counts as "no"
        s = schemas.get(name)
        if s is None or depth > 4:
            return None
        for v, body in bodies(s):
            if all(n.domain in ("", "ai.onnx") and (n.op_type in have or expands(n.op_type, depth + 1) is not None)
                   for n in body.node):
                memo[name] = v
                break
        return memo[name]

    return {n: v for n in sorted(schemas) if n not in have and (v := expands(n)) is not None}


def cmd_ops(args: argparse.Namespace) -> int:
    rows = converter_table()
    w = max([len(r[0]) for r in rows] + [len("ONNX op")])
    print(f"{'ONNX op':<{w}}  {'since opset':<12}  targets")
    for op, since, targets in rows:
        print(f"{op:<{w}}  {', '.join(map(str, since)):<12}  {', '.join(targets)}")
    full = sum("x86" in t for _, _, t in rows)
    some = sum(any(x.startswith("x86 (") for x in t) for _, _, t in rows)
    more = f" ({some} more in some forms)" if some else ""
    print(f"\n{len(rows)} ONNX ops have converters; {full} run on x86{more}: "
          f"every IR op their import emits in the op's official node tests has an x86 lowering.")
    if not args.no_functions:
        fx = function_expanded_ops()
        if fx:
            print(f"{len(fx)} more import through their ONNX function body (opset where the body starts):")
            print("  " + ", ".join(f"{n} ({v})" for n, v in fx.items()))
    return 0


def add_ops_command(sub: Any) -> None:
    o = sub.add_parser("ops", formatter_class=Formatter, help="list the ONNX ops nnc supports",
                       description="The ONNX op coverage table: each op with a converter, the opset versions "
                                   "where its converter forms start, and the targets that run it; then the "
                                   "ops that import by expanding their ONNX function body.",
                       epilog="example:\n  nnc ops")
    o.add_argument("--no-functions", action="store_true", help="skip the function-expansion list")
    o.set_defaults(fn=cmd_ops)

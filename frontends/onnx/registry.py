"""The table of ONNX op converters, keyed by (domain, op type) and opset version.

    @converter("Relu")                      # all opsets
    @converter("Slice", since=10)           # a later form replaces the earlier one from opset 10
    def convert(ctx: ConvertContext, node: Node) -> Value | list[Value | None]: ...

A converter returns the node's outputs in order (None for an optional output it does not produce).
"""

from __future__ import annotations

from typing import Callable

_TABLE: dict[tuple[str, str], list[tuple[int, Callable]]] = {}


def _norm_domain(domain: str) -> str:
    return "" if domain in ("", "ai.onnx") else domain


def converter(*op_types: str, since: int = 1, domain: str = ""):
    def register(fn: Callable) -> Callable:
        for op_type in op_types:
            entries = _TABLE.setdefault((_norm_domain(domain), op_type), [])
            if any(s == since for s, _ in entries):
                raise ValueError(f"converter for {op_type} since opset {since} registered twice")
            entries.append((since, fn))
            entries.sort(key=lambda e: e[0])
        return fn
    return register


def lookup(domain: str, op_type: str, opset: int) -> Callable | None:
    _ensure_loaded()
    if domain == "ai.nnc":  # nnc's own ops, as its ONNX exporter writes them
        from .converters.nnc_domain import lookup_nnc

        return lookup_nnc(op_type)
    entries = _TABLE.get((_norm_domain(domain), op_type))
    if not entries:
        return None
    chosen = None
    for since, fn in entries:
        if since <= opset:
            chosen = fn
    return chosen


def supported() -> dict[tuple[str, str], list[int]]:
    """(domain, op type) -> the opset versions at which a converter form starts."""
    _ensure_loaded()
    return {k: [s for s, _ in v] for k, v in sorted(_TABLE.items())}


_loaded = False


def _ensure_loaded() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        from . import converters  # noqa: F401

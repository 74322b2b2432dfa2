"""Pipeline strings: ``"freeze,fold-constants,fuse{max-ops=16,explain=true},plan-memory"``."""

from __future__ import annotations

import re

from .registry import PassError

_ITEM = re.compile(r"\s*([a-z][a-z0-9-]*)\s*(\{([^{}]*)\})?\s*(,|$)")


def parse_pipeline(text: str) -> list[tuple[str, dict[str, str]]]:
    """Split a pipeline string into (pass name, {option: value text}) pairs."""
    out: list[tuple[str, dict[str, str]]] = []
    pos = 0
    text = text.strip()
    while pos < len(text):
        m = _ITEM.match(text, pos)
        if not m or m.end() == pos:
            raise PassError(f"bad pipeline {text!r} at character {pos + 1}: expected 'pass' or 'pass{{k=v,...}}'")
        opts: dict[str, str] = {}
        if m.group(3):
            for part in m.group(3).split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise PassError(f"bad option {part.strip()!r} for pass {m.group(1)!r}: expected key=value")
                k, v = part.split("=", 1)
                opts[k.strip()] = v.strip()
        out.append((m.group(1), opts))
        pos = m.end()
    return out


def format_pipeline(items: list[tuple[str, dict[str, str]]]) -> str:
    parts = []
    for name, opts in items:
        if opts:
            parts.append(name + "{" + ",".join(f"{k}={v}" for k, v in opts.items()) + "}")
        else:
            parts.append(name)
    return ",".join(parts)

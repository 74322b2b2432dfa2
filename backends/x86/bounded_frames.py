"""Frames from formulas: with maxima for its dims, a shape-generic model plans nothing per shape.

Without bounds, a new input signature costs a shape evaluation and a memory plan in Python
(milliseconds: 2.5 ms for a 2-layer BERT, 25-90 ms for BERT-base or GPT-2-small), fine for a few
batch sizes, too slow for per-token decoding or a server meeting every sequence length. Given
``max_dims`` the x86 backend derives the frame once, as a library does (``frame_formulas.derive``:
every dim slot a formula of the input dims, checked at the corners of the bounds; the arena planned
at the bounds, whose offsets hold below them because every buffer is monotone in the dims), and
compiles those formulas into one Python function. A new signature then costs that function: the
dims, the model's constraints (a reshape keeps its element count), the output shapes and the bytes
used, in microseconds, with the arena allocated once at the bounds.

The same formulas give the compile report its arena formula: the bytes used at given dims are
``max(offset + size)`` over the planned buffers; ``used_formula`` keeps the terms no other term
dominates (coefficient by coefficient, all dims being at least 1).
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np

from nnc.ir import InputError, TensorType
from nnc.ir.sym_dims import Expr, polynomial
from nnc.passes.liveness import aligned

from .frame import FrameLayout, ShapePlan
from .frame_formulas import FrameFormulas

_PY = {"add": "+", "mul": "*", "floordiv": "//", "mod": "%"}


def py_expr(e: Expr, index: Mapping[str, int]) -> str:
    """``e`` as a Python expression over the tuple ``d`` of input dims."""
    if e[0] == "sym":
        return f"d[{index[e[1]]}]"
    if e[0] == "const":
        return str(int(e[1]))
    a, b = py_expr(e[1], index), py_expr(e[2], index)
    if e[0] in ("max", "min"):
        return f"{e[0]}({a}, {b})"
    return f"({a} {_PY[e[0]]} {b})"


class BoundedFrames:
    """Per-signature frames of a shape-generic model from its formulas (module docstring)."""

    def __init__(self, layout: FrameLayout, ff: FrameFormulas):
        self.layout = layout
        self.ff = ff
        index = {s: i for i, s in enumerate(ff.symbols)}
        slots = sorted(ff.slots.items())
        py = lambda e: py_expr(e, index)  # noqa: E731
        src = "\n".join([
            "def fill(d):",
            f"    slots = ({''.join(py(e) + ', ' for _, e in slots)})",
            f"    checks = ({''.join(f'{py(a)} == {py(b)}, ' for _, a, b in ff.constraints)})",
            f"    outs = ({''.join('(' + ''.join(py(x) + ', ' for x in o) + '), ' for o in ff.outputs)})",
            f"    used = max((0, {''.join(f'{off} + {py(size)}, ' for _, off, size, _ in ff.buffers)}))",
            "    return slots, checks, outs, used",
        ])
        scope: dict[str, Any] = {}
        exec(compile(src, "<nnc frame formulas>", "exec"), scope)  # formulas of our own IR, ints only
        self._fill = scope["fill"]
        self._slot_index = np.array([s for s, _ in slots], dtype=np.int64)
        self._copy_dst = np.array([a for a, _ in ff.copies], dtype=np.int64)
        self._copy_src = np.array([b for _, b in ff.copies], dtype=np.int64)
        self._template = np.array(ff.template, dtype=np.int64)
        self._out_dtypes = [v.type.dtype for v in layout.graph.outputs]

    @property
    def arena_bytes(self) -> int:
        return self.ff.arena_bytes

    @property
    def maxima(self) -> dict[str, int]:
        return dict(zip(self.ff.symbols, self.ff.maxima))

    def plan(self, env: Mapping[str, int]) -> ShapePlan:
        """The frame at the input dims ``env`` (``bound_symbols`` of the inputs, which the caller has
        already checked against the maxima)."""
        d = tuple(env[s] for s in self.ff.symbols)
        slots, checks, outs, used = self._fill(d)
        for (where, _, _), ok in zip(self.ff.constraints, checks):
            if not ok:
                dims = ", ".join(f"{s}={n}" for s, n in env.items())
                raise InputError(f"x86: {where}: the model does not hold at these dims ({dims})")
        frame = self._template.copy()
        if len(self._slot_index):
            frame[self._slot_index] = slots
        frame[self.layout.error_slot] = aligned(used)
        for dst, src in zip(self._copy_dst, self._copy_src):  # in order, as the library's C does
            frame[dst] = frame[src]
        outputs = [TensorType(dt, tuple(int(x) for x in o)) for dt, o in zip(self._out_dtypes, outs)]
        return ShapePlan(frame, self.ff.arena_bytes, outputs, None, dict(env))

    def used_formula(self) -> str:
        """The arena bytes used at given dims, as ``max`` of the terms no other term dominates."""
        polys = []
        for _, off, size, _ in self.ff.buffers:
            p = dict(polynomial(size))
            p[()] = p.get((), 0) + off
            polys.append({m: c for m, c in p.items() if c})
        keep: list[dict[tuple[str, ...], int]] = []
        for i, p in enumerate(polys):
            dominated = any(j != i and dominates(q, p) and (q != p or j < i) for j, q in enumerate(polys))
            if not dominated:
                keep.append(p)
        terms = sorted({poly_text(p) for p in keep})
        return terms[0] if len(terms) == 1 else f"max({', '.join(terms)})" if terms else "0"


def dominates(q: Mapping[tuple[str, ...], int], p: Mapping[tuple[str, ...], int]) -> bool:
    """q >= p for every dims >= 1 (and factors >= 0), judged coefficient by coefficient."""
    return all(q.get(m, 0) >= c for m, c in p.items()) and all(c >= 0 for m, c in q.items() if m not in p)


def poly_text(p: Mapping[tuple[str, ...], int]) -> str:
    parts = []
    for m in sorted(p, key=lambda m: (-len(m), m)):
        c = p[m]
        factors = "*".join(m)
        parts.append(str(c) if not m else factors if c == 1 else f"{c}*{factors}")
    return " + ".join(parts).replace("+ -", "- ") or "0"

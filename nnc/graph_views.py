"""Pictures of a module: the dataflow graph as Graphviz DOT (fused groups as clusters) and the
memory plan as an SVG of buffers (boxes over time x arena offset)."""

from __future__ import annotations

import html
import json

from nnc.ir import Graph, Module, Op
from nnc.passes.plan_memory import MemoryPlan


def _q(s: str) -> str:
    return json.dumps(s)


def _label(*parts: str) -> str:
    return json.dumps("\n".join(parts))


def to_dot(module: Module, show_constants: bool = False) -> str:
    g = module.main
    lines = [f"digraph {_q(module.name)} {{", "  rankdir=TB;",
             '  node [shape=box, style="rounded,filled", fillcolor="#eef3fb", fontname="Helvetica", fontsize=10];',
             '  edge [color="#667085", arrowsize=0.6];']
    node_of: dict[int, str] = {}
    counter = [0]

    def new_id() -> str:
        counter[0] += 1
        return f"n{counter[0]}"

    for p in g.params:
        nid = new_id()
        node_of[id(p)] = nid
        lines.append(f'  {nid} [shape=ellipse, fillcolor="#e3f5e1", label={_label(p.name, str(p.type))}];')
    cluster = 0

    def op_node(op: Op, indent: str) -> str:
        nid = new_id()
        res = ", ".join(f"%{r.name}" for r in op.results)
        types = ", ".join(str(r.type) for r in op.results)
        lines.append(f"{indent}{nid} [label={_label(op.opname, res, types)}];")
        return nid

    for op in g.ops:
        if op.opname == "const":
            if show_constants:
                nid = new_id()
                node_of[id(op.results[0])] = nid
                label = _label("@" + op.attrs["ref"], str(op.results[0].type))
                lines.append(f'  {nid} [shape=note, fillcolor="#fff6d6", label={label}];')
            continue
        if op.opname == "fused":
            cluster += 1
            body: Graph = op.regions[0]
            lines.append(f"  subgraph cluster_{cluster} {{")
            title = _q(f"fused {op.attrs['kind']}: %{op.results[0].name}")
            lines.append(f'    label={title}; style="rounded,dashed"; color="#98a2b3"; fontname="Helvetica";')
            inner: dict[int, str] = {}
            outer = {id(p): v for p, v in zip(body.params, op.operands)}
            for rop in body.ops:
                nid = op_node(rop, "    ")
                for r in rop.results:
                    inner[id(r)] = nid
                for v in rop.operands:
                    src = inner.get(id(v)) or node_of.get(id(outer.get(id(v))))
                    if src:
                        lines.append(f"    {src} -> {nid};")
            lines.append("  }")
            for r, o in zip(op.results, body.outputs):
                node_of[id(r)] = inner[id(o)]
            continue
        nid = op_node(op, "  ")
        for v in op.operands:
            if id(v) in node_of:
                lines.append(f"  {node_of[id(v)]} -> {nid};")
        for r in op.results:
            node_of[id(r)] = nid
    for name, v in zip(g.output_names, g.outputs):
        nid = new_id()
        lines.append(f'  {nid} [shape=ellipse, fillcolor="#fde7e7", label={_label(name, str(v.type))}];')
        if id(v) in node_of:
            lines.append(f"  {node_of[id(v)]} -> {nid};")
    lines.append("}")
    return "\n".join(lines) + "\n"


_PALETTE = ["#7aa6d6", "#e6a05c", "#7cc08a", "#d67a9b", "#a18fd1", "#d6c35c", "#5cbfc0", "#c28a6b"]


def memory_svg(plan: MemoryPlan, title: str, width: int = 960, height: int = 540) -> str:
    """Buffers as boxes: x = program points (op index) they are live over, y = arena offset."""
    lv = plan.liveness
    points = max(lv.n_points, 1)
    arena = max(plan.arena_bytes, 1)
    left, top, right, bottom = 70, 40, 20, 40
    w, h = width - left - right, height - top - bottom
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="Helvetica,Arial,sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="22" font-size="14">{html.escape(title)}: arena {plan.arena_bytes:,} B, '
           f'lower bound {plan.lower_bound_bytes:,} B, no reuse {plan.no_reuse_bytes:,} B</text>',
           f'<rect x="{left}" y="{top}" width="{w}" height="{h}" fill="#f8f9fb" stroke="#98a2b3"/>']
    for b in lv.buffers:
        if not b.size:
            continue
        x0 = left + w * b.start / points
        x1 = left + w * (b.end + 1) / points
        y0 = top + h * plan.offsets[b.id] / arena
        bh = max(h * b.size / arena, 0.5)
        names = ", ".join(v.name for v in b.values[:3]) + (" ..." if len(b.values) > 3 else "")
        out.append(f'<rect x="{x0:.2f}" y="{y0:.2f}" width="{max(x1 - x0, 0.5):.2f}" height="{bh:.2f}" '
                   f'fill="{_PALETTE[b.id % len(_PALETTE)]}" fill-opacity="0.85" stroke="#344054" stroke-width="0.3">'
                   f'<title>buffer {b.id}: {html.escape(names)}; {b.size:,} B at offset {plan.offsets[b.id]:,}; '
                   f'live ops {b.start}..{b.end}</title></rect>')
    out.append(f'<text x="{left + w / 2:.0f}" y="{height - 12}" text-anchor="middle">program point (op index)</text>')
    out.append(f'<text x="16" y="{top + h / 2:.0f}" transform="rotate(-90 16 {top + h / 2:.0f})" '
               f'text-anchor="middle">arena offset (bytes)</text>')
    out.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">0</text>')
    out.append(f'<text x="{left - 6}" y="{top + h}" text-anchor="end">{arena:,}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"

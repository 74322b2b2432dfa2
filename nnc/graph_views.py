"""Pictures of a module's dataflow graph: Graphviz DOT text, and an SVG drawn from a layout nnc computes
itself with networkx (no system tools). Fused groups are clusters in both. Given kernel times (a
profile, ``nnc run --profile trace.json``), the SVG adds each kernel's time and share to its node,
shades it by time, and carries the time as ``data-kernel-us`` on the node's group. The memory plan's
picture is in ``memory_picture.py``."""

from __future__ import annotations

import html
import json
from dataclasses import dataclass, field

import networkx as nx

from nnc.ir import Graph, Module, Op


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


# -- SVG from nnc's own layout --------------------------------------------------------------------
@dataclass
class Node:
    id: int
    kind: str  # "input", "op", "fused", "output", "const"
    lines: list[str]  # text lines: op name, result, type
    inner: list[list[str]] = field(default_factory=list)  # a fused group's ops, in body order
    result: str = ""  # an op's first result name: how a kernel's profile time finds its node
    seconds: float | None = None  # the kernel's time, when a profile is given
    layer: int = 0
    x: float = 0.0
    y: float = 0.0
    w: float = 0.0
    h: float = 0.0


@dataclass
class GraphLayout:
    nodes: list[Node]
    edges: list[tuple[int, int]]  # (source node id, target node id), one per data dependence
    width: float
    height: float


_CHAR_W, _LINE_H, _PAD, _GAP_X, _GAP_Y = 6.2, 13.0, 6.0, 24.0, 34.0


def _nodes_and_edges(module: Module, show_constants: bool) -> tuple[list[Node], list[tuple[int, int]]]:
    g = module.main
    nodes: list[Node] = []
    node_of: dict[int, int] = {}
    edges: list[tuple[int, int]] = []

    def add(kind: str, lines: list[str], inner: list[list[str]] | None = None) -> Node:
        n = Node(len(nodes), kind, lines, inner or [])
        nodes.append(n)
        return n

    for p in g.params:
        node_of[id(p)] = add("input", [p.name, str(p.type)]).id
    for op in g.ops:
        if op.opname == "const" and not show_constants:
            continue
        if op.opname == "const":
            n = add("const", ["@" + op.attrs["ref"], str(op.results[0].type)])
        elif op.opname == "fused":
            body: Graph = op.regions[0]
            n = add("fused", [f"fused {op.attrs.get('kind', '')}".strip(), f"%{op.results[0].name}",
                              ", ".join(str(r.type) for r in op.results)],
                    [[rop.opname, f"%{rop.results[0].name}"] for rop in body.ops])
        else:
            n = add("op", [op.opname, ", ".join(f"%{r.name}" for r in op.results),
                           ", ".join(str(r.type) for r in op.results)])
        if op.results and n.kind in ("op", "fused"):
            n.result = op.results[0].name
        for v in dict.fromkeys(op.operands):  # one edge per distinct operand
            if id(v) in node_of:
                edges.append((node_of[id(v)], n.id))
        for r in op.results:
            node_of[id(r)] = n.id
    for name, v in zip(g.output_names, g.outputs):
        n = add("output", [name, str(v.type)])
        if id(v) in node_of:
            edges.append((node_of[id(v)], n.id))
    return nodes, edges


def _short(text: str, limit: int = 34) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def layout_graph(module: Module, show_constants: bool = False,
                 kernel_times: dict[str, float] | None = None) -> GraphLayout:
    """Layered top-down layout: a node's layer is its longest path from the inputs (networkx over the
    DAG); within a layer nodes are ordered by the mean position of their sources (one barycentre sweep).
    ``kernel_times``: result name -> kernel seconds, added as a text line to the nodes they name."""
    nodes, edges = _nodes_and_edges(module, show_constants)
    if kernel_times:
        total = sum(kernel_times.values()) or 1.0
        for n in nodes:
            if n.result in kernel_times:
                n.seconds = kernel_times[n.result]
                n.lines.append(f"{n.seconds * 1e6:.1f} us ({n.seconds / total * 100:.1f}%)")
    dag = nx.DiGraph()
    dag.add_nodes_from(n.id for n in nodes)
    dag.add_edges_from(edges)
    for nid in nx.topological_sort(dag):
        preds = list(dag.predecessors(nid))
        nodes[nid].layer = 1 + max(nodes[p].layer for p in preds) if preds else 0
    last = max((n.layer for n in nodes), default=0)
    for n in nodes:  # outputs at the bottom
        if n.kind == "output":
            n.layer = last if any(m.kind != "output" for m in nodes if m.layer == last) else n.layer
    for n in nodes:
        lines = [_short(t) for t in n.lines]
        inner = [_short(" ".join(t), 30) for t in n.inner]
        n.w = _CHAR_W * max(len(t) for t in lines + inner) + 2 * _PAD + (2 * _PAD if inner else 0)
        n.h = _LINE_H * len(lines) + 2 * _PAD + (len(inner) * (_LINE_H + 6) + _PAD if inner else 0)
    layers: dict[int, list[Node]] = {}
    for n in nodes:
        layers.setdefault(n.layer, []).append(n)
    order: dict[int, float] = {}
    y, width = 20.0, 0.0
    rows: list[tuple[list[Node], float]] = []
    for k in sorted(layers):
        row = layers[k]
        row.sort(key=lambda n: (sum(order[p] for p in dag.predecessors(n.id)) / max(dag.in_degree(n.id), 1)
                                if dag.in_degree(n.id) else 0.0, n.id))
        x = 20.0
        for i, n in enumerate(row):
            order[n.id] = i
            n.x, n.y = x, y
            x += n.w + _GAP_X
        width = max(width, x)
        rows.append((row, x))
        y += max(n.h for n in row) + _GAP_Y
    for row, x in rows:  # centre each layer
        shift = (width - x) / 2
        for n in row:
            n.x += shift
    return GraphLayout(nodes, edges, width + 20 + 3 * _GAP_X, y)  # room for edges bowing right


_FILL = {"input": "#e3f5e1", "op": "#eef3fb", "fused": "#ffffff", "output": "#fde7e7", "const": "#fff6d6"}


def _heat(fill: str, seconds: float | None, slowest: float) -> str:
    """``fill`` blended towards red by the kernel's time relative to the slowest kernel's."""
    if seconds is None or slowest <= 0:
        return fill
    a = min(seconds / slowest, 1.0) * 0.75
    base = [int(fill[i:i + 2], 16) for i in (1, 3, 5)]
    red = (0xF0, 0x44, 0x38)
    return "#" + "".join(f"{round(c + (r - c) * a):02x}" for c, r in zip(base, red))


def graph_svg(module: Module, show_constants: bool = False, kernel_times: dict[str, float] | None = None) -> str:
    lay = layout_graph(module, show_constants, kernel_times)
    slowest = max((n.seconds for n in lay.nodes if n.seconds is not None), default=0.0)
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{lay.width:.0f}" height="{lay.height:.0f}" '
           f'font-family="Helvetica,Arial,sans-serif" font-size="10">',
           '<defs><marker id="arrow" viewBox="0 0 6 6" refX="6" refY="3" markerWidth="6" markerHeight="6" '
           'orient="auto"><path d="M0,0 L6,3 L0,6 z" fill="#667085"/></marker></defs>',
           f'<rect width="{lay.width:.0f}" height="{lay.height:.0f}" fill="white"/>']
    for s, t in lay.edges:
        a, b = lay.nodes[s], lay.nodes[t]
        x0, y0, x1, y1 = a.x + a.w / 2, a.y + a.h, b.x + b.w / 2, b.y
        if b.layer - a.layer > 1:  # skips layers (a residual): bow out to the right, clear of the nodes between
            side = max(a.x + a.w, b.x + b.w) + 3 * _GAP_X
            d = (f"M{a.x + a.w:.1f},{a.y + a.h / 2:.1f} C{side:.1f},{y0:.1f} {side:.1f},{y1:.1f} "
                 f"{x1 + b.w / 4:.1f},{y1:.1f}")
        else:
            mid = (y0 + y1) / 2
            d = f"M{x0:.1f},{y0:.1f} C{x0:.1f},{mid:.1f} {x1:.1f},{mid:.1f} {x1:.1f},{y1:.1f}"
        out.append(f'<path class="edge" d="{d}" fill="none" stroke="#667085" stroke-width="0.8" '
                   f'marker-end="url(#arrow)"/>')
    for n in lay.nodes:
        rx = 14 if n.kind in ("input", "output") else 4
        title = html.escape(" ".join(n.lines))
        data = f' data-kernel-us="{n.seconds * 1e6:.3f}"' if n.seconds is not None else ""
        if n.kind == "fused":
            out.append(f'<g class="cluster"{data}><title>{title}</title>')
            out.append(f'<rect x="{n.x:.1f}" y="{n.y:.1f}" width="{n.w:.1f}" height="{n.h:.1f}" rx="6" '
                       f'fill="{_heat("#fafbfc", n.seconds, slowest)}" stroke="#98a2b3" stroke-dasharray="4,3"/>')
        else:
            out.append(f'<g class="node {n.kind}"{data}><title>{title}</title>')
            out.append(f'<rect x="{n.x:.1f}" y="{n.y:.1f}" width="{n.w:.1f}" height="{n.h:.1f}" rx="{rx}" '
                       f'fill="{_heat(_FILL[n.kind], n.seconds, slowest)}" stroke="#475467" stroke-width="0.6"/>')
        for i, line in enumerate(n.lines):
            weight = ' font-weight="bold"' if i == 0 else ""
            out.append(f'<text x="{n.x + n.w / 2:.1f}" y="{n.y + _PAD + _LINE_H * (i + 0.8):.1f}" '
                       f'text-anchor="middle"{weight}>{html.escape(_short(line))}</text>')
        iy = n.y + _PAD + _LINE_H * len(n.lines) + _PAD
        for parts in n.inner:
            out.append(f'<g class="node inner"><rect x="{n.x + _PAD:.1f}" y="{iy:.1f}" width="{n.w - 2 * _PAD:.1f}" '
                       f'height="{_LINE_H + 2:.1f}" rx="3" fill="#eef3fb" stroke="#475467" stroke-width="0.5"/>'
                       f'<text x="{n.x + n.w / 2:.1f}" y="{iy + _LINE_H - 1:.1f}" text-anchor="middle">'
                       f'{html.escape(_short(" ".join(parts), 30))}</text></g>')
            iy += _LINE_H + 6
        out.append("</g>")
    out.append("</svg>")
    return "\n".join(out) + "\n"

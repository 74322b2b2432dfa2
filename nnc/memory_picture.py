"""The memory plan as a picture that explains itself: the data behind it (``memory_picture``) and
a hand-written SVG of it (``memory_svg``).

Only ops that run are plotted: constants own no buffer (they live in the weights), so a const op
can neither start nor end a buffer, and the bytes live at a const op are a subset of those live at
the next op that runs. Dropping them therefore changes no maximum. Each plotted point keeps its
graph op index for the axis labels. The picture carries the live-bytes curve (whose maximum is the
plan's lower bound), the arena and lower bound as lines, the peak and the values live there, and
for a training step the forward/backward boundary and the ops remat recomputed.
"""

from __future__ import annotations

import html
from dataclasses import dataclass, field

from nnc.ir import Graph, Op
from nnc.passes.plan_memory import MemoryPlan


@dataclass
class Box:
    buffer: int
    x0: int  # first plotted point the buffer is live at
    x1: int  # last plotted point (inclusive)
    offset: int
    size: int
    names: list[str]


@dataclass
class MemoryPicture:
    title: str
    op_index: list[int]  # graph op index of each plotted point
    op_label: list[str]  # what runs at each point (``conv``, ``fused conv``)
    live_bytes: list[int]  # bytes live at each plotted point
    arena_bytes: int
    lower_bound_bytes: int
    no_reuse_bytes: int
    boxes: list[Box]
    peak: int  # plotted point of the maximum of live_bytes
    peak_values: list[tuple[str, int]]  # (value names, bytes) of the buffers live at the peak, largest first
    backward_start: int | None = None  # first plotted point of the backward pass (training steps)
    recomputed: list[int] = field(default_factory=list)  # plotted points of ops remat recomputed

    @property
    def ticks(self) -> list[int]:
        """About ten evenly spaced plotted points to label, always including the peak."""
        n = len(self.op_index)
        step = max(1, n // 10)
        near_peak = {k for k in range(0, n, step) if k and 0 < abs(k - self.peak) < max(step // 2, 1)}
        return sorted((set(range(0, n, step)) - near_peak) | {self.peak})


def _op_label(op: Op) -> str:
    if op.opname == "fused":
        return f"fused {op.attrs.get('kind') or op.regions[0].ops[0].opname}"
    return op.opname


def memory_picture(plan: MemoryPlan, graph: Graph, title: str) -> MemoryPicture:
    lv = plan.liveness
    running = [i for i, op in enumerate(graph.ops) if op.opname != "const"]
    position = {i: k for k, i in enumerate(running)}
    live_all = lv.live_bytes_at()
    live = [live_all[i] for i in running] or [0]
    boxes = [Box(b.id, position[b.start], position[b.end], plan.offsets[b.id], b.size,
                 ["%" + v.name for v in b.values]) for b in lv.buffers if b.size]
    peak = max(range(len(live)), key=lambda k: live[k])
    at_peak = sorted((bx for bx in boxes if bx.x0 <= peak <= bx.x1), key=lambda bx: -bx.size)
    back = None
    recomputed = []
    for k, i in enumerate(running):
        loc = graph.ops[i].loc or ""
        if back is None and loc.startswith("grad"):
            back = k
        if loc.startswith("grad:remat"):
            recomputed.append(k)
    return MemoryPicture(title, running, [_op_label(graph.ops[i]) for i in running], live, plan.arena_bytes,
                         plan.lower_bound_bytes, plan.no_reuse_bytes, boxes, peak,
                         [(", ".join(bx.names), bx.size) for bx in at_peak], back, recomputed)


_PALETTE = ["#7aa6d6", "#e6a05c", "#7cc08a", "#d67a9b", "#a18fd1", "#d6c35c", "#5cbfc0", "#c28a6b"]


def _kb(n: int) -> str:
    return f"{n / 1024:,.0f} KiB" if n >= 10 * 1024 else f"{n:,} B"


def memory_svg(pic: MemoryPicture, width: int = 1000, height: int = 590) -> str:
    """Top: buffers as boxes over (plotted op, arena offset). Bottom: the live-bytes curve with the
    lower bound and the arena as lines. Shared x axis of op indices, a few labelled with op names."""
    n = max(len(pic.op_index), 1)
    arena = max(pic.arena_bytes, 1)
    left, right, top = 80, 230, 46
    w = width - left - right
    h1, gap, h2 = 260, 36, 150
    top2 = top + h1 + gap

    def x(k: float) -> float:
        return left + w * k / n

    def y2(b: float) -> float:
        return top2 + h2 - h2 * b / arena

    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'font-family="Helvetica,Arial,sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{left}" y="20" font-size="14">{html.escape(pic.title)}: arena {_kb(pic.arena_bytes)}, '
           f'lower bound {_kb(pic.lower_bound_bytes)}, no reuse {_kb(pic.no_reuse_bytes)}</text>',
           f'<text x="{left}" y="36" fill="#475467">{len(pic.op_index)} ops that run (constants not drawn); '
           f'boxes are buffers at their arena offset while live</text>',
           f'<rect x="{left}" y="{top}" width="{w}" height="{h1}" fill="#f8f9fb" stroke="#98a2b3"/>',
           f'<rect x="{left}" y="{top2}" width="{w}" height="{h2}" fill="#f8f9fb" stroke="#98a2b3"/>']
    if pic.backward_start is not None:
        bx = x(pic.backward_start)
        out.append(f'<rect class="backward" x="{bx:.2f}" y="{top}" width="{left + w - bx:.2f}" '
                   f'height="{top2 + h2 - top}" fill="#fdf2e9" fill-opacity="0.6"/>')
        out.append(f'<line x1="{bx:.2f}" x2="{bx:.2f}" y1="{top}" y2="{top2 + h2}" stroke="#b54708" '
                   f'stroke-dasharray="5,3"/>')
        out.append(f'<text x="{bx + 4:.2f}" y="{top + 12}" fill="#b54708">backward</text>')
        out.append(f'<text x="{bx - 4:.2f}" y="{top + 12}" fill="#b54708" text-anchor="end">forward</text>')
    for k in pic.recomputed:
        out.append(f'<rect class="remat" x="{x(k):.2f}" y="{top2 + h2}" width="{max(w / n, 1):.2f}" height="5" '
                   f'fill="#b54708"><title>recomputed: {html.escape(pic.op_label[k])} '
                   f'(op {pic.op_index[k]})</title></rect>')
    for bx_ in pic.boxes:
        y0 = top + h1 * bx_.offset / arena
        bh = max(h1 * bx_.size / arena, 0.5)
        names = ", ".join(bx_.names[:3]) + (" ..." if len(bx_.names) > 3 else "")
        out.append(f'<rect x="{x(bx_.x0):.2f}" y="{y0:.2f}" width="{max(x(bx_.x1 + 1) - x(bx_.x0), 0.5):.2f}" '
                   f'height="{bh:.2f}" fill="{_PALETTE[bx_.buffer % len(_PALETTE)]}" fill-opacity="0.85" '
                   f'stroke="#344054" stroke-width="0.3"><title>buffer {bx_.buffer}: {html.escape(names)}; '
                   f'{bx_.size:,} B at offset {bx_.offset:,}; live ops {pic.op_index[bx_.x0]}..'
                   f'{pic.op_index[bx_.x1]}</title></rect>')
    # live-bytes curve as a step line, one step per plotted op
    pts = []
    for k, b in enumerate(pic.live_bytes):
        pts += [f"{x(k):.2f},{y2(b):.2f}", f"{x(k + 1):.2f},{y2(b):.2f}"]
    out.append(f'<polyline class="live" points="{" ".join(pts)}" fill="none" stroke="#1849a9" stroke-width="1.2"/>')
    for value, cls, color, dash in ((pic.arena_bytes, "arena", "#344054", ""),
                                    (pic.lower_bound_bytes, "lower-bound", "#d92d20", ' stroke-dasharray="6,3"')):
        out.append(f'<line class="{cls}" x1="{left}" x2="{left + w}" y1="{y2(value):.2f}" y2="{y2(value):.2f}" '
                   f'stroke="{color}"{dash}/>')
    out.append(f'<text x="{left + w + 4}" y="{y2(pic.arena_bytes) - 2:.2f}">arena {_kb(pic.arena_bytes)}</text>')
    out.append(f'<text x="{left + w + 4}" y="{y2(pic.lower_bound_bytes) + 11:.2f}" fill="#d92d20">lower bound '
               f'{_kb(pic.lower_bound_bytes)}</text>')
    px = x(pic.peak + 0.5)
    out.append(f'<circle class="peak" cx="{px:.2f}" cy="{y2(pic.live_bytes[pic.peak]):.2f}" r="3.5" fill="#d92d20"/>')
    out.append(f'<line x1="{px:.2f}" x2="{px:.2f}" y1="{top}" y2="{top2 + h2}" stroke="#d92d20" stroke-width="0.6"/>')
    # what is live at the peak, in the right margin
    out.append(f'<text x="{left + w + 10}" y="{top + 12}" font-weight="bold">peak at op {pic.op_index[pic.peak]} '
               f'({html.escape(pic.op_label[pic.peak])})</text>')
    for j, (names, size) in enumerate(pic.peak_values[:12]):
        short = names if len(names) <= 26 else names[:25] + "…"
        out.append(f'<text class="peak-value" x="{left + w + 10}" y="{top + 28 + 14 * j}">{_kb(size)}  '
                   f'{html.escape(short)}<title>{html.escape(names)}</title></text>')
    if len(pic.peak_values) > 12:
        out.append(f'<text x="{left + w + 10}" y="{top + 28 + 14 * 12}">... {len(pic.peak_values) - 12} more</text>')
    # shared x axis: op indices, a few with op names
    for k in pic.ticks:
        tx = x(k + 0.5)
        out.append(f'<line x1="{tx:.2f}" x2="{tx:.2f}" y1="{top2 + h2}" y2="{top2 + h2 + 4}" stroke="#344054"/>')
        out.append(f'<text class="tick" x="{tx:.2f}" y="{top2 + h2 + 16}" text-anchor="end" '
                   f'transform="rotate(-35 {tx:.2f} {top2 + h2 + 16})">{pic.op_index[k]} '
                   f'{html.escape(pic.op_label[k])}</text>')
    out.append(f'<text x="{left + w / 2:.0f}" y="{height - 8}" text-anchor="middle">op index (graph order) '
               f'and op</text>')
    for yy, label in ((top + h1 / 2, "arena offset"), (top2 + h2 / 2, "live bytes")):
        out.append(f'<text x="16" y="{yy:.0f}" transform="rotate(-90 16 {yy:.0f})" text-anchor="middle">'
                   f'{label}</text>')
    out.append(f'<text x="{left - 6}" y="{top + 4}" text-anchor="end">0</text>')
    out.append(f'<text x="{left - 6}" y="{top + h1}" text-anchor="end">{_kb(arena)}</text>')
    out.append(f'<text x="{left - 6}" y="{top2 + h2}" text-anchor="end">0</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def memory_table(pic: MemoryPicture) -> str:
    """The live-bytes curve as text, the fallback when no picture can be drawn."""
    lines = [f"{'op':>5}  {'runs':<24} {'live bytes':>14}"]
    for k in range(len(pic.op_index)):
        mark = "  <- peak" if k == pic.peak else ("  <- backward starts" if k == pic.backward_start else "")
        lines.append(f"{pic.op_index[k]:>5}  {pic.op_label[k][:24]:<24} {pic.live_bytes[k]:>14,}{mark}")
    return "\n".join(lines) + "\n"


PLOT_HINT = "pip install 'nnc[plot]'"


def memory_png(pic: MemoryPicture, path: str) -> None:
    """The same picture drawn with matplotlib (the optional ``nnc[plot]`` extra); ImportError without it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(11, 6.5), sharex=True, height_ratios=(1.6, 1))
    for bx in pic.boxes:
        top.broken_barh([(bx.x0, bx.x1 + 1 - bx.x0)], (bx.offset, bx.size),
                        facecolors=_PALETTE[bx.buffer % len(_PALETTE)], edgecolors="#344054", linewidth=0.3)
    top.set_ylim(pic.arena_bytes, 0)
    top.set_ylabel("arena offset (bytes)")
    top.set_title(f"{pic.title}: arena {_kb(pic.arena_bytes)}, lower bound {_kb(pic.lower_bound_bytes)}, "
                  f"no reuse {_kb(pic.no_reuse_bytes)}", fontsize=10)
    xs = list(range(len(pic.live_bytes) + 1))
    bottom.stairs(pic.live_bytes, xs, color="#1849a9", label="live bytes")
    bottom.axhline(pic.arena_bytes, color="#344054", label=f"arena {_kb(pic.arena_bytes)}")
    bottom.axhline(pic.lower_bound_bytes, color="#d92d20", linestyle="--",
                   label=f"lower bound {_kb(pic.lower_bound_bytes)}")
    bottom.plot([pic.peak + 0.5], [pic.live_bytes[pic.peak]], "o", color="#d92d20")
    live_there = "\n".join(f"{_kb(s)} {n[:30]}" for n, s in pic.peak_values[:6])
    bottom.annotate(f"peak at op {pic.op_index[pic.peak]}\n{live_there}", (pic.peak + 0.5, pic.live_bytes[pic.peak]),
                    xytext=(1.01, 1.0), textcoords="axes fraction", fontsize=7, va="top")
    for ax in (top, bottom):
        if pic.backward_start is not None:
            ax.axvline(pic.backward_start, color="#b54708", linestyle=":", label="backward starts")
        for k in pic.recomputed:
            ax.axvspan(k, k + 1, color="#b54708", alpha=0.15, linewidth=0)
    bottom.set_ylim(0, pic.arena_bytes * 1.08 or 1)
    bottom.set_ylabel("live bytes")
    bottom.legend(fontsize=7, loc="upper left")
    bottom.set_xticks([k + 0.5 for k in pic.ticks],
                      [f"{pic.op_index[k]} {pic.op_label[k]}" for k in pic.ticks], rotation=35, ha="right", fontsize=7)
    bottom.set_xlabel("op index (graph order) and op; constants not drawn")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)

"""The ``nms_bounded`` kernel: greedy non-max suppression per batch and class, as the reference.

Per batch, the box edges and areas are computed once (corner or center-point boxes, corners in
either order). Per class, the candidates (scores above ``score_threshold``, when given) are ordered
best first by a stable merge sort (equal scores: the lower box index first), then each is kept
unless it overlaps a kept box of the class with IoU above ``iou_threshold``, until
``max_output_boxes_per_class`` are kept. Selected ``[batch, class, box]`` rows go to the bounded
result in that order; ``count`` says how many. Arithmetic runs in the boxes' float type (f32 for
f16/bf16), as the reference's does. The three parameters come from operands read at run time when
given, else from the attributes.
"""

from __future__ import annotations

from llvmlite import ir

from nnc.ir import DType, Op

from ..llvm_types import F32, F64, I1, I64, const_int, for_range
from . import dims as dm
from .bounded import load_i64, store_i64, zero_fill
from .loopkit import Loops, operand
from .registry import lowering
from .sorting import merge_sort


@lowering("nms_bounded", generic=True)
def lower_nms(k, op: Op) -> None:
    boxes, scores = op.operands[0], op.operands[1]
    dt = boxes.dtype
    ct = F64 if dt is DType.f64 else F32
    b = k.b
    L = Loops(k, ct)
    nb, n, _ = k.shape(boxes)
    _, nc, _ = k.shape(scores)
    nv = dm.val(n)
    zero_fill(k, k.out(0), dm.mul(b, k.shape(op.results[0])[0], 3), op.results[0])
    limit, iou_t, score_t = _params(k, L, op, ct)
    cnt = L.var(const_int(0))
    if not (isinstance(n, int) and n == 0):
        edges = [L.buffer(n, ct) for _ in range(5)]  # x_lo, x_hi, y_lo, y_hi, area
        cand, scratch, keep = (L.buffer(n, I64) for _ in range(3))
        with for_range(b, dm.val(nb), "b") as bi:
            _box_edges(L, k.arg(0), dt, bi, nv, edges, bool(op.attrs["center_point_box"]))
            with for_range(b, dm.val(nc), "c") as ci:
                row = b.mul(b.add(b.mul(bi, dm.val(nc)), ci), nv)  # scores[bi, ci, :]

                def score(i: ir.Value) -> ir.Value:
                    return L.ld(k.arg(1), b.add(row, i), scores.dtype)

                m = L.var(const_int(0))
                with for_range(b, nv, "i") as i:
                    ok = ir.Constant(I1, 1) if score_t is None else b.fcmp_ordered(">", score(i), score_t)
                    mv = L.get(m)
                    store_i64(b, cand, mv, i)  # written always, counted only when a candidate
                    L.set(m, b.select(ok, b.add(mv, const_int(1)), mv))
                order = merge_sort(L, cand, scratch, L.get(m), lambda p, q: b.fcmp_ordered(">", score(p), score(q)))
                kept = L.var(const_int(0))
                with for_range(b, L.get(m), "t") as t:
                    i = load_i64(b, order, t)
                    hit = L.var(ir.Constant(I1, 0))
                    with for_range(b, L.get(kept), "q") as q:
                        L.set(hit, b.or_(L.get(hit), _suppresses(L, edges, i, load_i64(b, keep, q), iou_t)))
                    kv = L.get(kept)
                    take = b.and_(b.not_(L.get(hit)), b.icmp_signed("<", kv, limit))
                    fn = b.function
                    yes, done = fn.append_basic_block("nms.keep"), fn.append_basic_block("nms.next")
                    b.cbranch(take, yes, done)
                    b.position_at_end(yes)
                    store_i64(b, keep, kv, i)
                    L.set(kept, b.add(kv, const_int(1)))
                    c = L.get(cnt)
                    for col, v in enumerate((bi, ci, i)):
                        store_i64(b, k.out(0), b.add(b.mul(c, const_int(3)), const_int(col)), v)
                    L.set(cnt, b.add(c, const_int(1)))
                    b.branch(done)
                    b.position_at_end(done)
    store_i64(b, k.out(1), 0, L.get(cnt))
    L.done()


def _params(k, L: Loops, op: Op, ct: ir.Type) -> tuple[ir.Value, ir.Value, ir.Value | None]:
    """max_output_boxes_per_class (i64, at least 0), iou_threshold and score_threshold (None: no
    threshold) from the operands when given, else the attributes."""
    lim = operand(op, 2)
    if lim is not None:
        limit = L.imax(L.ld_int(k.arg(2), 0, lim.dtype), const_int(0))
    else:
        limit = const_int(max(int(op.attrs["max_output_boxes_per_class"] or 0), 0))
    iou = operand(op, 3)
    iou_t = L.ld(k.arg(3), 0, iou.dtype) if iou is not None else L.f(op.attrs["iou_threshold"] or 0.0)
    st = operand(op, 4)
    if st is not None:
        score_t = L.ld(k.arg(4), 0, st.dtype)
    else:
        score_t = None if op.attrs["score_threshold"] is None else L.f(op.attrs["score_threshold"])
    return limit, iou_t, score_t


def _box_edges(L: Loops, boxes: ir.Value, dt: DType, bi: ir.Value, n: ir.Value, edges: list[ir.Value],
               center: bool) -> None:
    """x_lo, x_hi, y_lo, y_hi and the area of every box of batch ``bi``."""
    b = L.b
    with for_range(b, n, "e") as i:
        base = b.mul(b.add(b.mul(bi, n), i), const_int(4))
        v = [L.ld(boxes, b.add(base, const_int(j)), dt) for j in range(4)]
        if center:
            hw, hh = b.fdiv(v[2], L.f(2.0)), b.fdiv(v[3], L.f(2.0))
            xl, xh, yl, yh = b.fsub(v[0], hw), b.fadd(v[0], hw), b.fsub(v[1], hh), b.fadd(v[1], hh)
        else:
            xl, xh, yl, yh = L.fmin(v[1], v[3]), L.fmax(v[1], v[3]), L.fmin(v[0], v[2]), L.fmax(v[0], v[2])
        area = b.fmul(b.fsub(xh, xl), b.fsub(yh, yl))
        for buf, x in zip(edges, (xl, xh, yl, yh, area)):
            b.store(x, b.gep(buf, [i], source_etype=L.ct, inbounds=True))


def _suppresses(L: Loops, edges: list[ir.Value], i: ir.Value, q: ir.Value, iou_t: ir.Value) -> ir.Value:
    """Box q (kept) suppresses box i: both have area, they overlap, and IoU > iou_t."""
    b = L.b

    def get(buf: ir.Value, j: ir.Value) -> ir.Value:
        return b.load(b.gep(buf, [j], source_etype=L.ct, inbounds=True), typ=L.ct)
    xl, xh, yl, yh, area = ((get(e, i), get(e, q)) for e in edges)
    iw = b.fsub(L.fmin(xh[0], xh[1]), L.fmax(xl[0], xl[1]))
    ih = b.fsub(L.fmin(yh[0], yh[1]), L.fmax(yl[0], yl[1]))
    inter = b.fmul(iw, ih)
    union = b.fsub(b.fadd(area[0], area[1]), inter)
    zero = L.f(0.0)
    ok = b.and_(b.and_(b.fcmp_ordered(">", iw, zero), b.fcmp_ordered(">", ih, zero)),
                b.and_(b.fcmp_ordered(">", inter, zero), b.fcmp_ordered(">", union, zero)))
    ok = b.and_(ok, b.and_(b.fcmp_ordered(">", area[0], zero), b.fcmp_ordered(">", area[1], zero)))
    iou = b.fdiv(inter, b.select(b.fcmp_ordered(">", union, zero), union, L.f(1.0)))
    return b.and_(ok, b.fcmp_ordered(">", iou, iou_t))

"""x86 lowerings of the sampling image ops: ``grid_sample``, ``affine_grid``, ``roi_align``; ``nms``
is refused (its output length depends on the data). ``resize`` lives in resize.py.

grid_sample runs one task per (batch, output position): the per-axis source coordinate (computed
in the grid's precision, then widened as the reference does), the border/reflection adjustment,
the taps of the interpolation kernel per axis, and then, per channel, the sum over every
combination of taps (2^n linear, 4^n cubic, unrolled at compile time). roi_align runs one task per
region with the sampling-grid loops in f64.
"""

from __future__ import annotations

import itertools
import math

from llvmlite import ir

from nnc.ir import DType, Op, TargetError

from ..llvm_types import F64, I64
from .loopkit import Loops, compute_type
from .registry import lowering


def _reflect(L: Loops, x: ir.Value, lo: float, hi: float) -> ir.Value:
    """Reflect ``x`` at the borders [lo, hi] until it falls inside (f64)."""
    b = L.b
    rng = hi - lo
    if rng <= 0:
        return L.f(lo, F64)
    flo, fhi = L.f(lo, F64), L.f(hi, F64)
    below, above = b.fcmp_ordered("<", x, flo), b.fcmp_ordered(">", x, fhi)
    dx = b.select(below, b.fsub(flo, x), b.select(above, b.fsub(x, fhi), L.f(0.0, F64)))
    n = L.intr("llvm.trunc", b.fdiv(dx, L.f(rng, F64)))
    r = b.fsub(dx, b.fmul(n, L.f(rng, F64)))
    half = L.intr("llvm.floor", b.fmul(n, L.f(0.5, F64)))  # n is whole: even iff n == 2 floor(n/2)
    even = b.fcmp_ordered("==", n, b.fmul(half, L.f(2.0, F64)))
    lo_r, hi_r = b.fadd(flo, r), b.fsub(fhi, r)
    return b.select(below, b.select(even, lo_r, hi_r), b.select(above, b.select(even, hi_r, lo_r), x))


def _cubic(L: Loops, t: ir.Value, a: float = -0.75) -> ir.Value:
    b = L.b
    t = L.intr("llvm.fabs", t)
    c = lambda v: L.f(v, F64)  # noqa: E731
    inner = b.fadd(b.fmul(b.fmul(b.fsub(b.fmul(c(a + 2), t), c(a + 3)), t), t), c(1.0))
    outer = b.fsub(b.fmul(b.fadd(b.fmul(b.fsub(b.fmul(c(a), t), c(5 * a)), t), c(8 * a)), t), c(4 * a))
    return b.select(b.fcmp_ordered("<=", t, c(1.0)), inner,
                    b.select(b.fcmp_ordered("<", t, c(2.0)), outer, c(0.0)))


@lowering("grid_sample")
def lower_grid_sample(k, op: Op) -> None:
    x, grid = op.operands
    a = op.attrs
    mode, pad, align = a["mode"], a["padding_mode"], a["align_corners"]
    n_b, n_c, *dims = x.shape
    out_sp = tuple(grid.shape[1:-1])
    nd = len(dims)
    n_out = math.prod(out_sp)
    n_in = math.prod(dims)
    gt = compute_type(grid.dtype)

    def position(kb, t) -> None:
        L = Loops(kb, F64)
        b = L.b
        bi = b.sdiv(t, L.i(n_out))
        taps_per_axis = []
        for i, d in enumerate(dims):
            # the grid lists coordinates innermost-axis first; computed in the grid's precision
            gv = L.ld(kb.arg(1), L.lin((t, nd), nd - 1 - i), grid.dtype, gt)
            one = ir.Constant(gt, 1.0)
            s = b.fadd(gv, one)
            if align:
                c = b.fmul(b.fdiv(s, ir.Constant(gt, 2.0)), ir.Constant(gt, float(d - 1)))
            else:
                c = b.fdiv(b.fsub(b.fmul(s, ir.Constant(gt, float(d))), one), ir.Constant(gt, 2.0))
            c = L.fcast(L.round_to(c, DType.f32) if gt == F64 else c, F64)  # stored as float32
            lo, hi = (0.0, d - 1.0) if align else (-0.5, d - 0.5)
            if mode != "cubic":
                if mode == "nearest":
                    c = L.intr("llvm.roundeven", c)
                out = b.or_(b.fcmp_ordered("<", c, L.f(lo)), b.fcmp_ordered(">", c, L.f(hi)))
                if pad == "border":
                    c = b.select(out, L.clamp(c, L.f(0.0), L.f(d - 1.0)), c)
                elif pad == "reflection":
                    c = b.select(out, _reflect(L, c, lo, hi), c)
            if mode == "nearest":
                taps = [(b.fptosi(L.intr("llvm.trunc", c), I64), L.f(1.0))]
            else:
                f = L.intr("llvm.floor", c)
                fr = b.fsub(c, f)
                fi = b.fptosi(f, I64)
                if mode == "linear":
                    taps = [(fi, b.fsub(L.f(1.0), fr)), (b.add(fi, L.i(1)), fr)]
                else:
                    taps = [(b.add(fi, L.i(o)), _cubic(L, b.fsub(fr, L.f(float(o))))) for o in (-1, 0, 1, 2)]
            fixed = []
            for idx, w in taps:  # padding of the tap index itself
                if pad == "zeros":
                    ok = b.and_(b.icmp_signed(">=", idx, L.i(0)), b.icmp_signed("<", idx, L.i(d)))
                    w = b.select(ok, w, L.f(0.0))
                    idx = L.imin(L.imax(idx, L.i(0)), L.i(d - 1))
                elif pad == "border":
                    idx = L.imin(L.imax(idx, L.i(0)), L.i(d - 1))
                else:
                    r = _reflect(L, b.sitofp(idx, F64), lo, hi)
                    idx = L.imin(L.imax(b.fptosi(L.intr("llvm.trunc", r), I64), L.i(0)), L.i(d - 1))
                fixed.append((idx, w))
            taps_per_axis.append(fixed)
        combos = []
        for combo in itertools.product(*taps_per_axis):
            flat, w = None, None
            stride = n_in
            for axis, (idx, wt) in enumerate(combo):
                stride //= dims[axis]
                term = b.mul(idx, L.i(stride))
                flat = term if flat is None else b.add(flat, term)
                w = wt if w is None else b.fmul(w, wt)
            combos.append((flat, w))
        pos = b.srem(t, L.i(n_out))
        with L.loop(n_c, "c") as ch:
            base = L.lin((bi, n_c * n_in), (ch, n_in))
            acc = L.f(0.0)
            for flat, w in combos:
                acc = b.fadd(acc, b.fmul(L.ld(kb.arg(0), b.add(base, flat), x.dtype, F64), w))
            L.st(acc, kb.out(0), L.lin((bi, n_c * n_out), (ch, n_out), pos), x.dtype)

    k.parallel_for(n_b * n_out, position, "pos")


@lowering("affine_grid")
def lower_affine_grid(k, op: Op) -> None:
    theta = op.operands[0]
    size = op.attrs["size"]
    align = op.attrs["align_corners"]
    spatial = tuple(size[2:])
    nd = len(spatial)
    n_pos = math.prod(spatial)
    L = Loops(k, F64)
    b = L.b
    with L.loop(theta.shape[0] * n_pos, "p") as t:
        n, pos = b.sdiv(t, L.i(n_pos)), b.srem(t, L.i(n_pos))
        base = []
        rem = pos
        for d in reversed(spatial):  # innermost spatial axis first: (x, y[, z], 1)
            idx = b.sitofp(b.srem(rem, L.i(d)), F64)
            rem = b.sdiv(rem, L.i(d))
            if align:
                v = b.fadd(L.f(-1.0), b.fmul(idx, L.f(2.0 / (d - 1)))) if d > 1 else L.f(-1.0)
            else:
                v = b.fsub(b.fdiv(b.fadd(b.fmul(L.f(2.0), idx), L.f(1.0)), L.f(float(d))), L.f(1.0))
            base.append(v)
        base.append(L.f(1.0))
        for i in range(nd):
            acc = L.f(0.0)
            for kk in range(nd + 1):
                th = L.ld(k.arg(0), L.lin((n, nd * (nd + 1)), i * (nd + 1) + kk), theta.dtype)
                acc = b.fadd(acc, b.fmul(base[kk], th))
            L.st(acc, k.out(0), L.lin((t, nd), i), theta.dtype)


@lowering("roi_align")
def lower_roi_align(k, op: Op) -> None:
    x, rois, bidx = op.operands
    a = op.attrs
    _, n_c, h, w = x.shape
    ph, pw = a["output_height"], a["output_width"]
    half = a["coordinate_transformation_mode"] == "half_pixel"
    ratio = a["sampling_ratio"]
    is_max = a["mode"] == "max"
    n_rois = rois.shape[0]

    def region(kb, r) -> None:
        L = Loops(kb, F64)
        b = L.b
        c = [b.fsub(b.fmul(L.ld(kb.arg(1), L.lin((r, 4), i), rois.dtype), L.f(a["spatial_scale"])),
                    L.f(0.5 if half else 0.0)) for i in range(4)]
        x0, y0, x1, y1 = c
        rw, rh = b.fsub(x1, x0), b.fsub(y1, y0)
        if not half:
            rw, rh = L.fmax(rw, L.f(1.0)), L.fmax(rh, L.f(1.0))
        bh, bw = b.fdiv(rh, L.f(float(ph))), b.fdiv(rw, L.f(float(pw)))
        if ratio > 0:
            gh = gw = L.i(ratio)
        else:
            gh = b.fptosi(L.intr("llvm.ceil", b.fdiv(rh, L.f(float(ph)))), I64)
            gw = b.fptosi(L.intr("llvm.ceil", b.fdiv(rw, L.f(float(pw)))), I64)
        count = b.mul(gh, gw)
        fcount = b.sitofp(count, F64)
        img = L.lin((kb.checked_index(L.ld_int(kb.arg(2), r, bidx.dtype), x.shape[0]), n_c * h * w))

        def axis_taps(cv, size: int):
            skip = b.or_(b.fcmp_ordered("<", cv, L.f(-1.0)), b.fcmp_ordered(">", cv, L.f(float(size))))
            cv = L.fmax(cv, L.f(0.0))
            low = b.fptosi(L.intr("llvm.trunc", cv), I64)
            at_end = b.icmp_signed(">=", low, L.i(size - 1))
            low = b.select(at_end, L.i(size - 1), low)
            high = b.select(at_end, L.i(size - 1), b.add(low, L.i(1)))
            cv = b.select(at_end, b.sitofp(low, F64), cv)
            frac = b.fsub(cv, b.sitofp(low, F64))
            return low, high, b.fsub(L.f(1.0), frac), frac, skip

        with L.loop(n_c * ph * pw, "o") as o:
            ch = b.sdiv(o, L.i(ph * pw))
            py = b.srem(b.sdiv(o, L.i(pw)), L.i(ph))
            px = b.srem(o, L.i(pw))
            acc = L.var(L.f(-math.inf if is_max else 0.0))
            with L.loop(gh, "iy") as iy:
                yy = b.fadd(b.fadd(y0, b.fmul(b.sitofp(py, F64), bh)),
                            b.fdiv(b.fmul(b.fadd(b.sitofp(iy, F64), L.f(0.5)), bh), b.sitofp(gh, F64)))
                yl, yh, hy, ly, sy = axis_taps(yy, h)
                with L.loop(gw, "ix") as ix:
                    xx = b.fadd(b.fadd(x0, b.fmul(b.sitofp(px, F64), bw)),
                                b.fdiv(b.fmul(b.fadd(b.sitofp(ix, F64), L.f(0.5)), bw), b.sitofp(gw, F64)))
                    xl, xh, hx, lx, sx = axis_taps(xx, w)
                    ok = b.uitofp(b.not_(b.or_(sy, sx)), F64)
                    plane = L.lin(img, (ch, h * w))
                    vals = []
                    for yi, xi, wt in ((yl, xl, b.fmul(hy, hx)), (yl, xh, b.fmul(hy, lx)),
                                       (yh, xl, b.fmul(ly, hx)), (yh, xh, b.fmul(ly, lx))):
                        v = L.ld(kb.arg(0), L.lin(plane, (yi, w), xi), x.dtype)
                        vals.append(b.fmul(v, b.fmul(wt, ok)))
                    if is_max:
                        m = L.fmax(L.fmax(vals[0], vals[1]), L.fmax(vals[2], vals[3]))
                        L.set(acc, L.fmax(L.get(acc), m))
                    else:
                        L.set(acc, b.fadd(L.get(acc), b.fadd(b.fadd(vals[0], vals[1]), b.fadd(vals[2], vals[3]))))
            res = L.get(acc) if is_max else b.fdiv(L.get(acc), fcount)
            res = b.select(b.icmp_signed("==", count, L.i(0)), L.f(0.0), res)
            L.st(res, kb.out(0), L.lin((r, n_c * ph * pw), o), x.dtype)

    k.parallel_for(n_rois, region, "roi")


@lowering("nms")
def lower_nms(k, op: Op) -> None:
    raise TargetError(f"x86: nms ({op.where()}) has a data-dependent output shape (the number of selected "
                      "boxes): it runs as a host step of segmented execution (nms_bounded, kernels/nms.py), "
                      "never inside a compiled segment")


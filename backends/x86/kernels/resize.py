"""Resize (nearest, linear, cubic; every coordinate mode, antialias, exclude_outside, extrapolation).

Shapes are static, so everything the reference computes per axis (source coordinates, tap indices,
tap weights, the tf_crop_and_resize out-of-range mask) is computed at compile time by the
reference's own helpers (``ir/ops/image.py`` is the spec) and stored as tables. Nearest mode is then
a pure gather: the copy engine of ``data_movement.py`` moves the bytes (exact for every dtype).
Linear and cubic evaluate, for each output element, the tensor product of the per-axis taps in
float64 (the reference's separable passes, reassociated: the same result to a few float64 ulps) and
round once to the result dtype, saturating integers as the reference does. Leading axes that are
not resized are flattened into one loop split over the worker threads.
"""

from __future__ import annotations

import math

import numpy as np
from llvmlite import ir

from nnc.ir import DType, Op, TargetError
from nnc.ir.ops.image import _resize_axes, _source_coords, _taps, resize_axis_plans, saturate

from ..llvm_types import F64, I8, const_int, for_range, ll_type
from .data_movement import FILL, const_table, emit_copy, fill_bits, load_table, row_major
from .indexing import chunked
from .pool import slot
from .registry import lowering


class _AxisTaps:
    """One axis of the resize: per output position, K source indices and weights (and a mask)."""

    def __init__(self, idx: np.ndarray, w: np.ndarray, extrap: np.ndarray | None, plain: bool):
        self.idx, self.w, self.extrap, self.plain = idx, w, extrap, plain

    @property
    def taps(self) -> int:
        return self.idx.shape[1]


def _plan(x_shape: tuple[int, ...], out_shape: tuple[int, ...], a: dict) -> list[_AxisTaps]:
    by_axis = {p.axis: p for p in resize_axis_plans(x_shape, a)}
    plan = []
    for d in range(len(x_shape)):
        n_in, n_out = x_shape[d], out_shape[d]
        p = by_axis.get(d)
        if p is None or p.identity:
            plan.append(_AxisTaps(np.arange(n_in, dtype=np.int64)[:, None], np.ones((n_in, 1)), None, True))
            continue
        # the lines of the reference's _resize_axis that decide taps and weights
        y = np.arange(n_out, dtype=np.float64)
        xs, extrap = _source_coords(a["coordinate_transformation_mode"], y, p.scale, n_in, n_out, p.roi)
        idx, w = _taps(xs, p.scale, n_in, a["mode"], a["nearest_mode"], a["cubic_coeff_a"], bool(a["antialias"]))
        if a["exclude_outside"] and a["mode"] != "nearest":
            w = np.where((idx < 0) | (idx >= n_in), 0.0, w)
            total = w.sum(axis=1, keepdims=True)
            w = w / np.where(total == 0, 1.0, total)
        idx = np.clip(idx, 0, max(n_in - 1, 0))
        plan.append(_AxisTaps(idx, w, extrap if extrap is not None and extrap.any() else None, False))
    return plan


@lowering("resize")
def lower_resize(k, op: Op) -> None:
    x, out = op.operands[0], op.results[0]
    if len(op.operands) > 1:
        raise TargetError(f"x86: resize with run-time roi/scales/sizes ({op.where()})")
    if not out.type.numel or not x.type.numel:
        return
    a = op.attrs
    plan = _plan(tuple(x.shape), tuple(out.shape), a)
    st = row_major(x.shape)
    if all(p.taps == 1 for p in plan):  # nearest: a gather of whole elements
        offs = []
        for p, s in zip(plan, st):
            o = p.idx[:, 0] * s
            offs.append(np.where(p.extrap, FILL, o) if p.extrap is not None else o)
        ev = saturate(np.asarray(a["extrapolation_value"], dtype=np.float64), x.dtype.numpy)
        emit_copy(k, lambda kb: kb.out(0), lambda kb: kb.arg(0), offs, x.dtype, fill=fill_bits(x.dtype, ev))
        return
    _interpolate(k, op, plan, st)


def _store_type(op: Op, dt: DType) -> ir.Type:
    try:
        return ll_type(dt)
    except NotImplementedError:
        raise TargetError(f"x86: resize on {dt} ({op.where()})") from None


def _to_dtype(b: ir.IRBuilder, y: ir.Value, dt: DType, t: ir.Type) -> ir.Value:
    """The reference's ``saturate``: floats round once; integers round half to even and clamp."""
    if dt.is_float:
        if t == F64:
            return y
        if isinstance(t, ir.HalfType):  # f64 -> f16 directly is a libcall the JIT lacks
            y = b.fptrunc(y, ir.FloatType())
        return b.fptrunc(y, t)
    info = np.iinfo(dt.numpy)
    y = b.call(b.module.declare_intrinsic("llvm.roundeven", [F64]), [y])
    lo, hi = ir.Constant(F64, float(info.min)), ir.Constant(F64, float(info.max))
    y = b.select(b.fcmp_ordered("<", y, lo), lo, y)
    y = b.select(b.fcmp_ordered(">", y, hi), hi, y)
    if dt is DType.u64 or dt is DType.i64:  # float(max) rounds up past the range: saturate by hand
        big = b.fcmp_ordered(">=", y, hi)
        v = b.fptoui(y, t) if dt is DType.u64 else b.fptosi(y, t)
        return b.select(big, ir.Constant(t, int(info.max)), v)
    return b.fptoui(y, t) if not dt.is_signed else b.fptosi(y, t)


def _interpolate(k, op: Op, plan: list[_AxisTaps], st: list[int]) -> None:
    x, out = op.operands[0], op.results[0]
    dt = x.dtype
    t = _store_type(op, dt)
    r = len(plan)
    n_lead = 0
    while n_lead < r - 1 and plan[n_lead].plain:
        n_lead += 1
    lead = math.prod(out.shape[:n_lead])
    in_block, out_block = math.prod(x.shape[n_lead:]), math.prod(out.shape[n_lead:])
    rest = list(range(n_lead, r))
    # the reference resamples one axis at a time in ``axes`` order; evaluating the taps nested in
    # that order (first axis innermost) repeats its float64 arithmetic exactly, so integer results
    # round the same way
    order = [d for d in _resize_axes(r, op.attrs["axes"]) if not plan[d].plain]
    ost = row_major(out.shape)
    idx_t = {d: const_table(k, (plan[d].idx * st[d]).reshape(-1), name=f"idx{d}") for d in order}
    w_t = {d: const_table(k, plan[d].w.reshape(-1), ty=F64, name=f"w{d}") for d in order}
    ex_t = {d: const_table(k, plan[d].extrap.astype(np.int8), ty=I8, name=f"ex{d}")
            for d in order if plan[d].extrap is not None}
    ev = ir.Constant(F64, float(op.attrs["extrapolation_value"]))

    def block(kb, f):
        b = kb.b
        accs = [slot(b, F64) for _ in order]
        in_base = b.mul(f, const_int(in_block))

        def level(i, out_off, pos):
            if i == len(rest):
                emit_point(kb, out_off, pos)
                return
            d = rest[i]
            with for_range(b, out.shape[d], f"o{d}") as o:
                level(i + 1, b.add(out_off, b.mul(o, const_int(ost[d]))), {**pos, d: o})

        def value(i, off, pos):
            if i < 0:
                v = b.load(b.gep(kb.arg(0), [off], source_etype=t, inbounds=True), typ=t)
                if dt.is_float:
                    return v if t == F64 else b.fpext(v, F64)
                return b.sitofp(v, F64) if dt.is_signed else b.uitofp(v, F64)
            d, acc = order[i], accs[i]
            kd = plan[d].taps
            b.store(ir.Constant(F64, 0.0), acc)
            with for_range(b, kd, f"k{d}") as tp:
                j = b.add(b.mul(pos[d], const_int(kd)), tp)
                v = value(i - 1, b.add(off, load_table(b, idx_t[d], j)), pos)
                b.store(b.fadd(b.load(acc, typ=F64), b.fmul(v, load_table(b, w_t[d], j, F64))), acc)
            y = b.load(acc, typ=F64)
            if d in ex_t:
                outside = b.icmp_unsigned("!=", load_table(b, ex_t[d], pos[d], I8), ir.Constant(I8, 0))
                y = b.select(outside, ev, y)
            return y

        def emit_point(kb, out_off, pos):
            off = in_base
            for d in rest:
                if plan[d].plain:
                    off = b.add(off, b.mul(pos[d], const_int(st[d])))
            y = value(len(order) - 1, off, pos)
            dst = b.add(b.mul(f, const_int(out_block)), out_off)
            b.store(_to_dtype(b, y, dt, t), b.gep(kb.out(0), [dst], source_etype=t, inbounds=True))
        level(0, const_int(0), {})
    chunked(k, lead, out_block * 8 * 4, block, name="resize")

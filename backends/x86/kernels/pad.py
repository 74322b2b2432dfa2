"""Pad: constant, edge, reflect and wrap padding, with negative pads cropping.

Static shapes: one ``data_movement.emit_copy`` whose per-axis tables give each result position its
source offset (``FILL`` for a constant). Shape-generic code (dims read at run time) pads with a
constant only: the whole result takes the fill value, then the part of ``x`` that is kept is
copied into place by ``strided_copy``; the other modes index through run-time clamps and wraps that
the strided engine does not express, so they compile per shape (``_pad_generic`` says why).
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from nnc.ir import Op, TargetError

from ..llvm_types import for_range
from . import dims as dm
from .data_movement import FILL, emit_copy, fill_bits, itype, row_major, static_dims
from .registry import lowering
from .strided_copy import Axis, emit_strided_copy, smax


def _result(kb) -> ir.Value:
    return kb.out(0)


def _x(kb) -> ir.Value:
    return kb.arg(0)


def pad_index(n_out: int, begin: int, n_in: int, mode: str) -> np.ndarray:
    """Source index of each padded position along one axis (FILL for constant padding)."""
    i = np.arange(n_out, dtype=np.int64) - begin
    if mode == "constant":
        return np.where((i >= 0) & (i < n_in), i, FILL)
    if mode == "edge":
        return np.clip(i, 0, n_in - 1)
    if mode == "wrap":
        return np.mod(i, n_in)
    if n_in == 1:  # reflect
        return np.zeros_like(i)
    period = 2 * (n_in - 1)
    m = np.mod(i, period)
    return np.where(m >= n_in, period - m, m)


def _pad_generic(op: Op) -> str | None:
    if len(op.operands) > 1:
        return "pad with run-time pads or value"
    if op.attrs["mode"] != "constant" and not op.operands[0].type.is_static:
        return f"{op.attrs['mode']} padding of run-time dims"
    return None


@lowering("pad", generic=_pad_generic)
def lower_pad(k, op: Op) -> None:
    x, out = op.operands[0], op.results[0]
    if len(op.operands) > 1:
        raise TargetError(f"x86: pad with run-time pads or value is not supported ({op.where()})")
    pads, mode, r = op.attrs["pads"], op.attrs["mode"], len(x.shape)
    if not static_dims(k, x, out):
        _pad_constant(k, op)
        return
    st = row_major(x.shape)
    offs = []
    for d in range(r):
        crop_b, crop_e = max(0, -pads[d]), max(0, -pads[d + r])
        n_in = x.shape[d] - crop_b - crop_e
        if n_in <= 0 and mode != "constant" and out.shape[d] > 0:
            raise TargetError(f"x86: {mode} padding of an empty axis ({op.where()})")
        idx = pad_index(out.shape[d], max(0, pads[d]), n_in, mode)
        offs.append(np.where(idx == FILL, FILL, (idx + crop_b) * st[d]))
    emit_copy(k, _result, _x, offs, x.dtype, fill=fill_bits(x.dtype, op.attrs["value"] if mode == "constant" else 0))


def _pad_constant(k, op: Op) -> None:
    """Constant padding over run-time dims: fill everything, then copy the kept part of ``x``."""
    x, out = op.operands[0], op.results[0]
    pads, r = op.attrs["pads"], len(x.shape)
    b, t = k.b, itype(x.dtype)
    fill = ir.Constant(t, fill_bits(x.dtype, op.attrs["value"]))
    with for_range(b, dm.val(dm.prod(b, k.shape(out))), "fill") as i:
        b.store(fill, b.gep(k.out(0), [i], source_etype=t, inbounds=True))

    def layout(kb):
        b = kb.b
        d, o = kb.shape(x), kb.shape(out)
        # an axis padded by nothing has x's dim in the result: the same value, so neighbours merge
        whole = [n if pads[a] == 0 and pads[a + r] == 0 else o[a] for a, n in enumerate(d)]
        st, ost = dm.row_major_strides(b, d), dm.row_major_strides(b, whole)
        axes, sb, db = [], 0, 0
        for a in range(r):
            crop = max(0, -pads[a]) + max(0, -pads[a + r])
            n = d[a] if crop == 0 else smax(b, dm.sub(b, d[a], crop), 0)
            axes.append(Axis(n, st[a], ost[a]))
            sb = dm.add(b, sb, dm.mul(b, max(0, -pads[a]), st[a]))
            db = dm.add(b, db, dm.mul(b, max(0, pads[a]), ost[a]))
        return axes, sb, db
    emit_strided_copy(k, _result, _x, layout, x.dtype)

"""Gradient rules: ``dft`` and ``stft``.

Both are linear in the signal. The DFT along one axis is a fixed real matrix acting on the
(real, imaginary) pairs of that axis, built at compile time by running the reference on a basis
(so forward/inverse, onesided and a dft_length that pads or truncates are all covered); the
cotangent is one ``matmul`` with its transpose. That is O(n^2) per transform instead of an FFT's
O(n log n), but it runs on the fast GEMM kernel and signal lengths in models are short.

stft is framing (a gather at constant indices), windowing (a product) and a DFT of each frame, so
its cotangent is the transposed DFT, the window product, and the gather's scatter-add. The window
gets the cotangent ``sum(dframes * frames)`` over batch, frames and components.
"""

from __future__ import annotations

import numpy as np

from ..ops.signal import _dft
from . import register_vjp
from .indexing import gather_adjoint, static_attr
from .util import reshape, shape_of


def dft_matrix(n_in: int, c_in: int, inverse: int, onesided: int, length: int | None) -> np.ndarray:
    """[n_in * c_in, n_out * c_out]: row k is the flattened transform of the k-th basis signal."""
    basis = np.eye(n_in * c_in).reshape(n_in * c_in, n_in, c_in)
    out = _dft(basis, inverse=inverse, onesided=onesided, axis=1, dft_length=length)
    return out.reshape(n_in * c_in, -1)


@register_vjp("dft")
def _dft_rule(b, op, cts):
    x, g = op.operands[0], cts[0]
    xs, gs = shape_of(x), shape_of(g)
    r = len(xs)
    axis = static_attr(b, op, "axis", 1)
    axis = (-2 if axis is None else int(axis)) % r
    length = static_attr(b, op, "dft_length", 2)
    m = dft_matrix(xs[axis], xs[-1], op.attrs["inverse"], op.attrs["onesided"],
                   None if length is None else int(length))
    # the transformed axis next to the complex axis, so the pair flattens into one row
    perm = [i for i in range(r - 1) if i != axis] + [axis, r - 1]
    moved = perm != list(range(r))
    gt = b.op("transpose", g, perm=perm) if moved else g
    lead = [gs[i] for i in perm[:-2]]
    rows = int(np.prod(lead, dtype=np.int64))
    mt = b.const(np.ascontiguousarray(m.T).astype(x.dtype.numpy), name="dft_t")
    dx = b.op("matmul", reshape(b, gt, (rows, m.shape[1])), mt)
    dx = reshape(b, dx, lead + [xs[axis], xs[-1]])
    if moved:
        dx = b.op("transpose", dx, perm=[int(i) for i in np.argsort(perm)])
    return [dx] + [None] * (len(op.operands) - 1)


@register_vjp("stft")
def _stft_rule(b, op, cts):
    sig, win = op.operands[0], op.operands[1]
    g = cts[0]
    bsz, length, c = shape_of(sig)
    wl = shape_of(win)[0]
    step = int(static_attr(b, op, "frame_step", 2))
    fl = static_attr(b, op, "frame_length", 3)
    fl = int(fl) if fl is not None else (wl if wl else length)
    taps = wl if wl else fl  # an empty window is a rectangular one of frame_length
    _, frames, bins, _ = shape_of(g)
    idx = np.arange(frames)[:, None] * step + np.arange(taps)[None, :]
    inside = idx < length  # taps past the end of the signal read zeros
    idx_c = b.const(np.minimum(idx, length - 1).astype(np.int64), name="frames")
    m = dft_matrix(taps, c, 0, op.attrs["onesided"], fl)  # [taps * c, bins * 2]
    mt = b.const(np.ascontiguousarray(m.T).astype(sig.dtype.numpy), name="dft_t")
    dw = b.op("matmul", reshape(b, g, (bsz * frames, bins * 2)), mt)
    dw = reshape(b, dw, (bsz, frames, taps, c))  # cotangent of the windowed frames
    weight = b.const(inside.reshape(frames, taps, 1).astype(sig.dtype.numpy), name="inside")
    if wl:
        weight = b.op("mul", weight, reshape(b, b.op("cast", win, to=sig.dtype), (1, taps, 1)))
    dsig = gather_adjoint(b, b.op("mul", dw, weight), sig, idx_c, 1)
    dwin = None
    if wl and win.dtype.is_float:
        framed = b.op("mul", b.op("gather", sig, idx_c, axis=1),
                      b.const(inside.reshape(frames, taps, 1).astype(sig.dtype.numpy), name="inside"))
        dwin = b.op("cast", b.op("reduce_sum", b.op("mul", dw, framed), axes=[0, 1, 3], keepdims=0), to=win.dtype)
    return [dsig, dwin] + [None] * (len(op.operands) - 2)

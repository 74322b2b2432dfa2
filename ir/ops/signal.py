"""Signal-processing ops: ``dft`` (complex, real-to-complex and complex-to-real, forward and inverse),
``stft``, the ``window`` functions (Hann, Hamming, Blackman), ``mel_weight_matrix`` and ``det``.

Complex tensors follow ONNX: a trailing axis of 2 holds (real, imaginary); a trailing axis of 1 is a
real signal. Lengths and axes that ONNX passes as tensors are dynamic attributes, so a window or mel
matrix whose parameters are constants folds to a constant at import.
"""

from __future__ import annotations

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import check_dtype, norm_axis
from ..types import UNKNOWN, Dim, TensorType


def _complex(x: np.ndarray) -> np.ndarray:
    """[..., 1] real or [..., 2] (re, im) -> a complex array without the trailing axis.

    f64 signals transform in complex128, narrower ones in complex64: single-precision FFTs are what
    an f32 kernel computes, and the ONNX test data carries their rounding (exact zeros come out as
    ~1e-7, which a float64 transform would miss under the tests' atol of 1e-7)."""
    ct = np.complex128 if x.dtype == np.float64 else np.complex64
    x = x.astype(np.float64 if ct is np.complex128 else np.float32, copy=False)
    z = np.empty(x.shape[:-1], ct)
    z.real = x[..., 0]
    z.imag = x[..., 1] if x.shape[-1] == 2 else 0
    return z


def _split(z: np.ndarray) -> np.ndarray:
    return np.stack([z.real, z.imag], axis=-1)


# -- dft ------------------------------------------------------------------------------------------

def _dft_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    x = ctx.types[0]
    a = ctx.attrs
    inverse, onesided = a["inverse"], a["onesided"]
    if x.shape is None:
        return [x]
    r = len(x.shape)
    if isinstance(x.shape[-1], int) and x.shape[-1] not in (1, 2):
        raise ctx.fail("the last axis holds (real) or (real, imaginary): size 1 or 2")
    if onesided and not inverse and x.shape[-1] == 2:
        raise ctx.fail("a one-sided forward DFT needs a real input")
    last: Dim = 1 if inverse and onesided else 2
    axis_unknown = a["axis"] is None and len(ctx.types) > 1
    n = a["dft_length"]
    if axis_unknown:
        keep = n is None and not onesided
        return [TensorType(x.dtype, tuple(x.shape[:-1] if keep else (UNKNOWN,) * (r - 1)) + (last,))]
    axis = norm_axis(-2 if a["axis"] is None else a["axis"], r)
    if axis == r - 1:
        raise ctx.fail("the DFT axis cannot be the last (complex) axis")
    d = x.shape[axis]
    if n is None and len(ctx.types) > 2:
        out: Dim = UNKNOWN  # a run-time length
    else:
        if n is None:
            n = (2 * (d - 1) if isinstance(d, int) else UNKNOWN) if inverse and onesided else d
        out = n // 2 + 1 if onesided and not inverse and isinstance(n, int) else (
            UNKNOWN if onesided and not inverse else n)
    shape = list(x.shape[:-1])
    shape[axis] = out
    return [TensorType(x.dtype, tuple(shape) + (last,))]


def _dft(x: np.ndarray, inverse: int, onesided: int, axis: int | None, dft_length: int | None) -> np.ndarray:
    axis = (-2 if axis is None else axis) % x.ndim
    n = dft_length
    if n is None:
        n = 2 * (x.shape[axis] - 1) if inverse and onesided else x.shape[axis]
    z = _complex(x)
    if inverse:
        if onesided:
            return np.fft.irfft(z, n=n, axis=axis)[..., None].astype(x.dtype)
        out = np.fft.ifft(z, n=n, axis=axis)
    else:
        out = np.fft.fft(z, n=n, axis=axis)
        if onesided:
            out = np.take(out, np.arange(n // 2 + 1), axis=axis)
    return _split(out).astype(x.dtype)


defop("dft", operands=("x", "axis?", "dft_length?"), infer=_dft_infer, reference=_dft,
      attrs={"inverse": AttrSpec(AttrKind.INT, 0), "onesided": AttrSpec(AttrKind.INT, 0),
             "axis": AttrSpec(AttrKind.INT, None), "dft_length": AttrSpec(AttrKind.INT, None)},
      dynamic={"axis": "axis", "dft_length": "dft_length"},
      doc="Discrete Fourier transform along ``axis`` (default -2) of a [..., 1|2] signal; ``onesided`` keeps "
          "the n//2+1 non-redundant bins (forward) or reads them for a real result (inverse).")


# -- stft -----------------------------------------------------------------------------------------

def _stft_infer(ctx: InferContext) -> list[TensorType]:
    x = ctx.types[0]
    check_dtype(ctx, 0, FLOAT_TYPES)
    a = ctx.attrs
    if x.shape is not None and len(x.shape) != 3:
        raise ctx.fail("the signal is [batch, length, 1|2]")
    ws = ctx.types[1].shape
    win = ws[0] if ws is not None and len(ws) == 1 else UNKNOWN
    n_len = x.shape[1] if x.shape is not None else UNKNOWN
    fl = a["frame_length"]
    if fl is None and len(ctx.types) <= 3:
        fl = win if win != 0 else n_len
    step = a["frame_step"]
    frames: Dim = UNKNOWN
    if isinstance(fl, int) and isinstance(step, int) and isinstance(n_len, int):
        frames = 1 + (n_len - fl) // step
    bins: Dim = (fl // 2 + 1 if a["onesided"] else fl) if isinstance(fl, int) else UNKNOWN
    batch = x.shape[0] if x.shape is not None else UNKNOWN
    return [TensorType(x.dtype, (batch, frames, bins, 2))]


def _stft(signal: np.ndarray, window: np.ndarray, onesided: int, frame_step: int,
          frame_length: int | None) -> np.ndarray:
    z = _complex(signal)  # [batch, length]
    length = z.shape[1]
    fl = frame_length if frame_length is not None else (window.shape[0] if window.size else length)
    win = window.astype(np.float64) if window.size else np.ones(fl)
    n_frames = 1 + (length - fl) // frame_step
    idx = np.arange(n_frames)[:, None] * frame_step + np.arange(len(win))[None, :]
    inside = idx < length  # a window longer than the rest of the signal reads zeros
    frames = np.where(inside, z[:, np.minimum(idx, length - 1)], 0) * win
    spec = np.fft.fft(frames, n=fl, axis=-1)
    if onesided:
        spec = spec[..., : fl // 2 + 1]
    return _split(spec).astype(signal.dtype)


defop("stft", operands=("signal", "window", "frame_step?", "frame_length?"), infer=_stft_infer,
      reference=_stft,
      attrs={"onesided": AttrSpec(AttrKind.INT, 1), "frame_step": AttrSpec(AttrKind.INT, None),
             "frame_length": AttrSpec(AttrKind.INT, None)},
      dynamic={"frame_step": "frame_step", "frame_length": "frame_length"},
      doc="Short-time Fourier transform of [batch, length, 1|2] -> [batch, frames, bins, 2]; an empty window "
          "means a rectangular one of ``frame_length``.")


# -- windows and mel matrices ----------------------------------------------------------------------

def _window_infer(ctx: InferContext) -> list[TensorType]:
    n = ctx.attrs["size"]
    return [TensorType(ctx.attrs["dtype"], (UNKNOWN if n is None else max(n, 0),))]


def _window(kind: str, periodic: int, dtype: DType, size: int) -> np.ndarray:
    size = max(size, 0)
    n = np.arange(size, dtype=np.float64)
    denom = size if periodic else size - 1
    if kind == "hann":
        w = np.sin(np.pi * n / denom) ** 2
    elif kind == "hamming":
        alpha = 25.0 / 46.0
        w = alpha - (1 - alpha) * np.cos(2 * np.pi * n / denom)
    else:
        w = 0.42 - 0.5 * np.cos(2 * np.pi * n / denom) + 0.08 * np.cos(4 * np.pi * n / denom)
    return w.astype(dtype.numpy)


defop("window", operands=("size?",), infer=_window_infer, reference=_window, vjp=NOT_DIFFERENTIABLE,
      attrs={"kind": AttrSpec(AttrKind.STR, "hann", ("hann", "hamming", "blackman")),
             "periodic": AttrSpec(AttrKind.INT, 1), "dtype": AttrSpec(AttrKind.DTYPE, DType.f32),
             "size": AttrSpec(AttrKind.INT, None)},
      dynamic={"size": "size"}, doc="A Hann, Hamming or Blackman window of ``size`` samples.")


def _mel_infer(ctx: InferContext) -> list[TensorType]:
    a = ctx.attrs
    bins = UNKNOWN if a["dft_length"] is None else a["dft_length"] // 2 + 1
    mels = UNKNOWN if a["num_mel_bins"] is None else a["num_mel_bins"]
    return [TensorType(a["dtype"], (bins, mels))]


def _mel_weight_matrix(dtype: DType, num_mel_bins: int, dft_length: int, sample_rate: int,
                       lower_edge_hertz: float, upper_edge_hertz: float) -> np.ndarray:
    n_bins = dft_length // 2 + 1
    lo_mel = 2595 * np.log10(1 + lower_edge_hertz / 700)
    hi_mel = 2595 * np.log10(1 + upper_edge_hertz / 700)
    # num_mel_bins + 2 edges, spaced evenly in mel (the spec divides the range by their count)
    edges = np.arange(num_mel_bins + 2) * ((hi_mel - lo_mel) / (num_mel_bins + 2)) + lo_mel
    hz = 700 * (10 ** (edges / 2595) - 1)
    k = (((dft_length + 1) * hz) // sample_rate).astype(np.int64)
    out = np.zeros((n_bins, num_mel_bins))
    for i in range(num_mel_bins):
        lo, mid, hi = k[i], k[i + 1], k[i + 2]
        if mid == lo:
            out[mid, i] = 1
        else:
            j = np.arange(lo, mid + 1)
            out[j, i] = (j - lo) / (mid - lo)
        if hi > mid:
            j = np.arange(mid, hi)
            out[j, i] = (hi - j) / (hi - mid)
    return out.astype(dtype.numpy)


defop("mel_weight_matrix", operands=("num_mel_bins?", "dft_length?", "sample_rate?", "lower_edge_hertz?",
                                     "upper_edge_hertz?"),
      infer=_mel_infer, reference=_mel_weight_matrix, vjp=NOT_DIFFERENTIABLE,
      attrs={"dtype": AttrSpec(AttrKind.DTYPE, DType.f32), "num_mel_bins": AttrSpec(AttrKind.INT, None),
             "dft_length": AttrSpec(AttrKind.INT, None), "sample_rate": AttrSpec(AttrKind.INT, None),
             "lower_edge_hertz": AttrSpec(AttrKind.FLOAT, None), "upper_edge_hertz": AttrSpec(AttrKind.FLOAT, None)},
      dynamic={k: k for k in ("num_mel_bins", "dft_length", "sample_rate", "lower_edge_hertz", "upper_edge_hertz")},
      doc="[dft_length//2+1, num_mel_bins] triangular filters mapping a linear spectrum to the mel scale.")


# -- det ------------------------------------------------------------------------------------------

def _det_infer(ctx: InferContext) -> list[TensorType]:
    check_dtype(ctx, 0, FLOAT_TYPES)
    s = ctx.types[0].shape
    if s is None:
        return [ctx.types[0]]
    if len(s) < 2:
        raise ctx.fail("det needs [..., M, M]")
    if isinstance(s[-1], int) and isinstance(s[-2], int) and s[-1] != s[-2]:
        raise ctx.fail(f"det needs square matrices, got {s[-2]}x{s[-1]}")
    return [TensorType(ctx.types[0].dtype, tuple(s[:-2]))]


defop("det", operands=("x",), infer=_det_infer,
      reference=lambda x: np.asarray(np.linalg.det(x.astype(np.float64))).astype(x.dtype),
      traits=Trait.PURE, doc="Determinant of each trailing square matrix.")

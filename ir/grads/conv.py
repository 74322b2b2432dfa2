"""Gradient rules: ``conv`` and ``conv_transpose`` (N-D, any group count, strides, pads, dilations).

Every cotangent is again a convolution, so the backward pass runs on the same kernels as the
forward one. For ``y = conv(x, w)``: ``dx`` is mathematically ``conv_transpose(dy, w)``, but it is
written as the equivalent stride-1 ``conv`` of dy (zero-stuffed by the stride) with the flipped,
channel-swapped weights (``input_grad``), because backends run conv as an implicit GEMM while
conv_transpose is a gather loop (35x slower on x86 for a 64-channel 3x3 layer); with static shapes
and no dilation a strided conv's dx is instead one stride-1 conv per phase of the stride, with the
taps that reach it, interleaved (``input_grad_by_phases``: no multiplications by stuffed zeros). ``dw`` is a
convolution of the input, channels and batch swapped, with the output cotangent as its kernel,
strides and dilations exchanged, cropped to the kernel size (``weight_grad``). Groups stay one
grouped convolution (groups x batch become input channels), never a loop over groups. An ungrouped
1-D or 2-D conv with static shapes takes the ``conv_weight_grad`` op instead: that convolution's
"kernel" is the whole output cotangent and its output a few taps, a shape conv kernels run at a
fraction of their speed, while the op is a GEMM over the pixels (dw[M, C*K] = dy[M, N*out] @
im2col(x)^T) a backend can run as such.
``conv_transpose`` is the adjoint of ``conv`` with the same weight layout, so its cotangents are a
plain ``conv`` (dx) and the same ``weight_grad`` with the roles exchanged.
"""

from __future__ import annotations

import itertools
import math
from typing import Sequence

import numpy as np

from ..builder import Builder
from ..graph import Value
from ..ops.conv import fill, resolve_pads
from . import register_vjp, shape_generic
from .util import is_static, reshape, shape_of, zeros


def transpose(b: Builder, x: Value, perm: Sequence[int]) -> Value:
    if list(perm) == list(range(len(perm))):
        return x
    return b.op("transpose", x, perm=list(perm))


def crop(b: Builder, x: Value, sizes: Sequence[int], first_axis: int = 2) -> Value:
    """Keep the first ``sizes[i]`` entries of axis ``first_axis + i`` (no-op when they match)."""
    have = shape_of(x)[first_axis:first_axis + len(sizes)]
    if tuple(have) == tuple(sizes):
        return x
    axes = list(range(first_axis, first_axis + len(sizes)))
    return b.op("slice", x, starts=[0] * len(sizes), ends=list(sizes), axes=axes, steps=[1] * len(sizes))


def weight_grad(b: Builder, x: Value, gy: Value, kernel: Sequence[int], strides: Sequence[int],
                dilations: Sequence[int], pads: Sequence[int], group: int) -> Value:
    """The cotangent ``[M, C/group, *kernel]`` of the weight of ``conv(x[N, C, *in], w)`` given the
    output cotangent ``gy[N, M, *out]``.

    ``dw[m, c, t] = sum_{n, o} gy[n, m, o] * xpad[n, g(m)*C/group + c, o*s + t*d]``: a convolution
    whose batch is the C/group channels of a group, whose input channels are (group, image) pairs
    and whose kernel is ``gy`` transposed to ``[M, N, *out]`` (output channel m reads the N channels
    of its own group), with stride d and dilation s. Its output can overhang the kernel when the
    last windows did not reach the end padding; the overhang is cropped."""
    xs = shape_of(x)
    N, C, rank = xs[0], xs[1], len(xs)
    cg = C // group
    spatial = list(range(2, rank))
    if group == 1:
        xt = transpose(b, x, [1, 0] + spatial)  # [C, N, *in]
    else:
        xt = reshape(b, x, [N, group, cg] + list(xs[2:]))
        xt = transpose(b, xt, [2, 1, 0] + [a + 1 for a in spatial])  # [Cg, G, N, *in]
        xt = reshape(b, xt, [cg, group * N] + list(xs[2:]))
    gt = transpose(b, gy, [1, 0] + spatial)  # [M, N, *out]
    r = b.op("conv", xt, gt, strides=list(dilations), dilations=list(strides), pads=list(pads), group=group)
    r = crop(b, r, kernel)  # [Cg, M, *kernel]
    return transpose(b, r, [1, 0] + spatial)


def weight_grad_by_gemm(b: Builder, x: Value, gy: Value, kernel: Sequence[int], strides: Sequence[int],
                        dilations: Sequence[int], pads: Sequence[int], group: int) -> Value:
    """``weight_grad`` when the batch N is symbolic: the convolution form would have N as its
    input-channel count, which convolution kernels need static. Instead each kernel tap t reads a
    strided window of the padded input, the taps are stacked into columns ``[C*K, N*out]`` and
    ``dw = gy[M, N*out] @ columns^T`` is one GEMM (a batched matmul over the groups) whose
    reduction length N*out is read at run time. The columns take K times the input's memory."""
    xs, n = shape_of(x), len(kernel)
    C, M, out = xs[1], shape_of(gy)[1], list(shape_of(gy)[2:])
    K = math.prod(kernel)
    spatial = list(range(2, 2 + n))
    xp = b.op("pad", x, pads=[0, 0] + list(pads[:n]) + [0, 0] + list(pads[n:]), value=0.0) if any(pads) else x
    taps = []
    for t in np.ndindex(*kernel):
        starts = [t[i] * dilations[i] for i in range(n)]
        ends = [starts[i] + (out[i] - 1) * strides[i] + 1 for i in range(n)]
        win = b.op("slice", xp, starts=starts, ends=ends, axes=spatial, steps=list(strides))  # [N, C, *out]
        taps.append(b.op("unsqueeze", win, axes=[2]))
    cols = taps[0] if len(taps) == 1 else b.op("concat", *taps, axis=2)  # [N, C, K, *out]
    cols = transpose(b, cols, [1, 2, 0] + [a + 1 for a in spatial])  # [C, K, N, *out]
    gt = transpose(b, gy, [1, 0] + spatial)  # [M, N, *out]
    if group == 1:
        cols = b.op("reshape", cols, shape=[C * K, -1])
        g2 = b.op("reshape", gt, shape=[M, -1])
        dw = b.op("gemm", g2, cols, alpha=1.0, beta=0.0, trans_a=0, trans_b=1)  # [M, C*K]
    else:  # group-major channels: [G, C/G*K, N*out] and [G, M/G, N*out]
        cols = b.op("reshape", cols, shape=[group, C // group * K, -1])
        g2 = b.op("reshape", gt, shape=[group, M // group, -1])
        dw = b.op("matmul", g2, b.op("transpose", cols, perm=[0, 2, 1]))  # [G, M/G, C/G*K]
    return b.op("reshape", dw, shape=[M, C // group] + list(kernel))


def flip_weights(b: Builder, w: Value, group: int) -> Value:
    """``w[M, C/group, *k]`` -> ``[C, M/group, *k]`` with every spatial axis reversed: the weights of
    the convolution that maps an output cotangent back to the input."""
    ws = shape_of(w)
    M, cg, k = ws[0], ws[1], list(ws[2:])
    n = len(k)
    if group == 1:
        wt = transpose(b, w, [1, 0] + list(range(2, 2 + n)))
    else:
        wt = reshape(b, w, [group, M // group, cg] + k)
        wt = transpose(b, wt, [0, 2, 1] + list(range(3, 3 + n)))
        wt = reshape(b, wt, [group * cg, M // group] + k)
    K = math.prod(k)
    if K == 1:
        return wt
    # reversing every spatial axis reverses the flat row-major index over them: one step -1 slice
    # (a strided copy; the gather it replaces took 3.5x as long on x86)
    flat = reshape(b, wt, list(shape_of(wt)[:2]) + [K])
    rev = b.op("slice", flat, starts=[K - 1], ends=[-K - 1], axes=[2], steps=[-1])
    return reshape(b, rev, list(shape_of(wt)[:2]) + k)


def stuff(b: Builder, g: Value, strides: Sequence[int]) -> Value:
    """Insert ``s - 1`` zeros after every element of each spatial axis of ``g[N, M, *o]`` ->
    ``[N, M, *(o*s)]`` (reshape to [.., o, 1, ..], pad the unit axes, merge)."""
    gs = shape_of(g)
    n = len(gs) - 2
    if all(v == 1 for v in strides):
        return g
    split = list(gs[:2])
    for i in range(n):
        split += [gs[2 + i], 1]
    pads = [0] * (2 * len(split))
    for i in range(n):
        pads[len(split) + 3 + 2 * i] = strides[i] - 1  # end padding of the unit axis after o_i
    z = b.op("pad", reshape(b, g, split), pads=pads, value=0.0)
    return reshape(b, z, list(gs[:2]) + [gs[2 + i] * strides[i] for i in range(n)])


def input_grad(b: Builder, g: Value, w: Value, in_dims: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int], pads: Sequence[int], group: int) -> Value:
    """The cotangent ``[N, C, *in]`` of the input of ``conv(x, w)`` given ``g[N, M, *out]``.

    ``dx[i] = sum_t stuffed_g[i + pb - t*d] * w[t]``: a stride-1 correlation of the stuffed
    cotangent with the flipped kernel at dilation d, begin padding ``(k-1)*d - pb`` and end padding
    chosen so the result has x's size. A negative padding (pads larger than the kernel span, or
    trailing stuffed zeros beyond the end) becomes a crop of the stuffed cotangent."""
    n = len(in_dims)
    k = shape_of(w)[2:]
    out = shape_of(g)[2:]
    gz = stuff(b, g, strides)
    begins = [(k[i] - 1) * dilations[i] - pads[i] for i in range(n)]
    ends = [in_dims[i] + pads[i] - out[i] * strides[i] for i in range(n)]
    if any(v < 0 for v in begins + ends):
        length = [out[i] * strides[i] for i in range(n)]
        starts = [max(0, -v) for v in begins]
        stops = [length[i] - max(0, -ends[i]) for i in range(n)]
        gz = b.op("slice", gz, starts=starts, ends=stops, axes=list(range(2, 2 + n)), steps=[1] * n)
        begins, ends = [max(0, v) for v in begins], [max(0, v) for v in ends]
    return b.op("conv", gz, flip_weights(b, w, group), dilations=list(dilations), pads=begins + ends,
                group=group)


def input_grad_by_phases(b: Builder, g: Value, w: Value, in_dims: Sequence[int], strides: Sequence[int],
                         pads: Sequence[int], group: int) -> Value:
    """``input_grad`` of a strided conv (dilation 1) without stuffing zeros into the cotangent.

    The inputs whose index is ``r`` modulo the stride (a phase, per axis) are reached only by the
    taps ``i`` with ``(r + pad - i) % s == 0``, one output position apart: phase ``r`` of dx is a
    stride-1 conv of ``g`` with those taps (a strided slice of the flipped weights). Each phase is
    computed at ``ceil(in / s)`` positions (a phase no tap reaches is zeros) and the phases are
    interleaved (concat on unit axes, reshape) and cropped to the input's size: 1/s^d of the work of
    the stuffed form, whose products are mostly with zeros."""
    n = len(in_dims)
    k, out = shape_of(w)[2:], shape_of(g)[2:]
    N, C = shape_of(g)[0], shape_of(w)[1] * group
    units = [-(-in_dims[i] // strides[i]) for i in range(n)]
    wf = flip_weights(b, w, group)
    spatial = list(range(2, 2 + n))
    phases: dict[tuple[int, ...], Value] = {}
    for r in itertools.product(*(range(v) for v in strides)):
        taps = [[i for i in range(k[a]) if (r[a] + pads[a] - i) % strides[a] == 0] for a in range(n)]
        if not all(taps):
            phases[r] = zeros(b, [N, C] + units, g)
            continue
        first = [k[a] - 1 - max(taps[a]) for a in range(n)]  # in the flipped kernel
        lo = [(r[a] + pads[a] - max(taps[a])) // strides[a] for a in range(n)]  # first g row read
        begins = [-lo[a] for a in range(n)]
        ends = [units[a] + lo[a] + len(taps[a]) - 1 - out[a] for a in range(n)]
        v = wf
        if any(first) or any(len(taps[a]) != k[a] for a in range(n)):
            v = b.op("slice", wf, starts=first, ends=list(k), axes=spatial, steps=list(strides))
        gg = g
        if any(x < 0 for x in begins + ends):  # negative padding: crop the cotangent instead
            stops = [out[a] - max(0, -ends[a]) for a in range(n)]
            gg = b.op("slice", g, starts=[max(0, -x) for x in begins], ends=stops, axes=spatial, steps=[1] * n)
        phases[r] = b.op("conv", gg, v, pads=[max(0, x) for x in begins + ends], group=group)

    def interleave(prefix: tuple[int, ...]) -> Value:  # [N, C, u0, s0, u1, s1, ...] from the last axis up
        a = len(prefix)
        if a == n:
            return reshape(b, phases[prefix], [N, C] + [d for u in units for d in (u, 1)])
        parts = [interleave(prefix + (ri,)) for ri in range(strides[a])]
        return parts[0] if len(parts) == 1 else b.op("concat", *parts, axis=3 + 2 * a)

    dx = reshape(b, interleave(()), [N, C] + [units[a] * strides[a] for a in range(n)])
    return crop(b, dx, in_dims)


def _bias_grad(b: Builder, g: Value) -> Value:
    rank = len(shape_of(g))
    return b.op("reduce_sum", g, axes=[0] + list(range(2, rank)), keepdims=0)


@register_vjp("conv")
def _conv(b, op, cts):
    g = cts[0]
    x, w = op.operands[0], op.operands[1]
    xs, ws = shape_of(x), shape_of(w)
    n = len(xs) - 2
    kernel = ws[2:]
    s = fill(op.attrs["strides"], n, 1)
    d = fill(op.attrs["dilations"], n, 1)
    p = resolve_pads(op.attrs["auto_pad"], xs[2:], kernel, s, d, op.attrs["pads"])
    group = op.attrs["group"]
    if any(v > 1 for v in s) and all(v == 1 for v in d) and is_static(xs) and is_static(shape_of(g)):
        dx = input_grad_by_phases(b, g, w, xs[2:], s, p, group)
    else:
        dx = input_grad(b, g, w, xs[2:], s, d, p, group)
    if is_static(xs) and group == 1 and n <= 2:
        dw = b.op("conv_weight_grad", x, g, kernel_shape=list(kernel), strides=list(s), dilations=list(d),
                  pads=list(p), group=1)
    elif is_static(xs):
        dw = weight_grad(b, x, g, kernel, s, d, p, group)
    else:
        dw = weight_grad_by_gemm(b, x, g, kernel, s, d, p, group)
    res: list[Value | None] = [dx, dw]
    if len(op.operands) > 2:
        res.append(_bias_grad(b, g))
    return res


@register_vjp("conv_transpose")
def _conv_transpose(b, op, cts):
    g = cts[0]
    x, w = op.operands[0], op.operands[1]
    xs, ws = shape_of(x), shape_of(w)
    n = len(xs) - 2
    kernel = ws[2:]
    s = fill(op.attrs["strides"], n, 1)
    d = fill(op.attrs["dilations"], n, 1)
    p = fill(op.attrs["pads"], 2 * n, 0)
    group = op.attrs["group"]
    # conv_transpose(x, w) is the adjoint of z -> conv(z, w) (same weight layout, same geometry)
    # restricted to its first ``in`` output positions; output padding may add more: crop them
    dx = b.op("conv", g, w, strides=list(s), dilations=list(d), pads=list(p), group=group)
    dx = crop(b, dx, xs[2:])
    dw = weight_grad(b, g, x, kernel, s, d, p, group)  # [C, M/group, *kernel]
    res: list[Value | None] = [dx, dw]
    if len(op.operands) > 2:
        res.append(_bias_grad(b, g))
    return res


def _batch_only(op) -> str | None:
    """conv with a symbolic batch: channels, spatial dims and weights static, one group."""
    x, w = op.operands[0], op.operands[1]
    if not is_static(shape_of(x)[1:]) or not w.type.is_static:
        return f"only the batch dim may be symbolic ({x.name}: {x.type}, {w.name}: {w.type})"
    if op.opname == "conv_transpose":
        return "conv_transpose's weight gradient with a symbolic batch is not supported"
    return None


shape_generic("conv", "conv_transpose", check=_batch_only)

"""The INT8 depthwise convolution on x86 (``qconv`` with one input and one output channel per group,
NCHW), vectorised with 16-bit pair dot products, optionally with the following ``requantize`` in
its epilogue (``RequantSpec``: then it writes int8, never the i32 tensor).

Why pairs of 16-bit values and not ``vpdpbusd``: a depthwise output is a dot product over only
KH x KW taps of one channel. ``vpdpbusd`` wants four taps of one output pixel side by side in each
i32 lane, which for a row of 16 output pixels means a byte shuffle per tap group per vector, and a
3x3 (9 taps) wastes a quarter of it on padding. ``vpdpwssd`` (VNNI, 16-bit) sums *two* products per
lane, and the pairs it needs come almost for free:

- each task (image, channel) first builds a *pair plane* ``PP[r][i] = (x[r][s*i] - zp,
  x[r][s*i + 1] - zp)`` as two i16 in one i32, over the zero-padded input rows r (padding is the
  zero point, so it contributes 0 after the subtraction; ``x - zp`` fits i16). With stride 2 that
  plane *is* the zero-padded i16 row read as i32 (no shuffling at all); with stride 1 it is one
  extra vectorisable pass interleaving the row with itself shifted by one;
- the taps of a kernel row go in pairs (kw, kw+1) for even kw (an odd last tap pairs with a zero
  weight); output column j needs ``x[s*j + kw]`` and ``x[s*j + kw + 1]``, which is ``PP[r][j + kw/s]``:
  one unaligned 64-byte load feeds 16 output pixels;
- per 16 output pixels a 3x3 takes 6 ``vpdpwssd`` (9 i32 multiplies and 9 adds otherwise), a 5x5 15.

The weight pairs (``w[kw] | w[kw+1] << 16``) are packed at compile time; the bias is read in place. Without VNNI,
``vpdpwssd`` is emulated by widening multiplies and adds (``vpmaddwd`` + ``vpaddd``; exact, slower).
Integer results equal the reference's bit for bit: products and sums are exact in i32 for any
kernel that fits the reference's own exactness bound.
"""

from __future__ import annotations

import numpy as np
from llvmlite import ir

from nnc.ir import Op

from ..llvm_types import I8, I16, I32, I64, PTR, VOID, const_int, for_range
from . import dims as dm
from .broadcast_loops import vector_loop
from .requant_epilogue import V16, RequantSpec, splat, store_result
from .vnni import dpwssd, intrinsic

STACK_BYTES = 32768  # pair planes up to this size live on the task's stack (as conv.py's FP32 buffers)


def depthwise_supported(op: Op, geometry, wv: np.ndarray | None, has_const_bias: bool) -> bool:
    """Whether this kernel runs ``op``: 2-D, depthwise with multiplier 1, horizontal stride 1 or 2,
    no dilation, a constant weight (and bias, if any)."""
    n, ks, s, d, p, out = geometry
    x = op.operands[0]
    if n != 2 or wv is None or not has_const_bias:
        return False
    C, M, G = x.shape[1], wv.shape[0], op.attrs["group"]
    return G == C == M and wv.shape[1] == 1 and tuple(d) == (1, 1) and s[1] in (1, 2)


def _gep(b: ir.IRBuilder, p: ir.Value, i: ir.Value | int, t: ir.Type) -> ir.Value:
    return b.gep(p, [const_int(i) if isinstance(i, int) else i], source_etype=t, inbounds=True)


def _memset0(b: ir.IRBuilder, p: ir.Value, nbytes: ir.Value | int) -> None:
    f = intrinsic(b.module, "llvm.memset.p0.i64", VOID, [PTR, I8, I64, ir.IntType(1)])
    b.call(f, [p, ir.Constant(I8, 0), const_int(nbytes) if isinstance(nbytes, int) else nbytes,
               ir.Constant(ir.IntType(1), 0)])


def lower_depthwise(k, op: Op, geometry, wv: np.ndarray, requant: RequantSpec | None = None) -> None:
    """Emit the depthwise kernel for ``op`` (see the module docstring); ``requant`` fuses the
    requantize that reads its result (the kernel's output is then that op's int8 tensor)."""
    _, (KH, KW), (sh, sw), _, p, (OH, OW) = geometry
    x = op.operands[0]
    N = k.shape(x)[0]
    C, H, W = x.shape[1:]
    zp = op.attrs["x_zero_point"]
    vnni = k.target.has("avx512vnni")
    npairs = (KW + 1) // 2
    OWv = -(-OW // 16) * 16
    L = OWv + (2 * (npairs - 1)) // sw  # pair-plane row length (i32 words)
    Hp = (OH - 1) * sh + KH  # padded rows the windows read
    wpad = np.zeros((C, KH, 2 * npairs), np.int64)
    wpad[:, :, :KW] = wv.reshape(C, KH, KW)
    words = (wpad[:, :, 0::2] & 0xFFFF) | (wpad[:, :, 1::2] << 16)
    words = np.where(words >= 1 << 31, words - (1 << 32), words).astype(np.int32)
    woff = k.packed_constant(f"{op.operands[1].name}.dwpairs", words.reshape(-1), replaces=k.arg(1))
    has_bias = len(op.operands) > 2  # read in place
    # input columns copied into a padded row: [pl, pl + wfill) of the row buffer
    row16_len = 2 * L if sw == 2 else L + 1
    wfill = max(0, min(W, row16_len - p[1]))

    nbytes = Hp * L * 4 + (L + 1) * 2 + 128
    on_stack = nbytes <= STACK_BYTES

    def task(kb, t: ir.Value) -> None:  # one (image, channel) plane
        b = kb.b
        xin, yo = kb.local(k.arg(0)), kb.local(k.out(0))
        c = b.urem(t, const_int(C))
        wrow = _gep(b, kb.weights_ptr(woff), b.mul(c, const_int(KH * npairs)), I32)
        wsplat = [[splat(b, b.load(_gep(b, wrow, kh * npairs + q, I32), typ=I32), V16) for q in range(npairs)]
                  for kh in range(KH)]
        bias = splat(b, b.load(_gep(b, kb.local(k.arg(2)), c, I32), typ=I32), V16) if has_bias else \
            ir.Constant(V16, [0] * 16)
        mv, sv = requant.channel_params(k, kb, c) if requant is not None else (None, None)
        if on_stack:  # small planes: no allocator call per channel
            with b.goto_entry_block():  # a static alloca, not one per loop iteration
                slot = b.alloca(I32, size=const_int(nbytes // 4))
                slot.align = 64
                plane = b.inttoptr(b.ptrtoint(slot, I64), PTR)  # an opaque pointer, as malloc gives
        else:
            plane = b.call(intrinsic(b.module, "malloc", PTR, [I64]), [const_int(nbytes)])
        row16 = _gep(b, plane, Hp * L * 4 + 64, I8)  # the stride-1 row buffer
        xplane = _gep(b, xin, b.mul(t, const_int(H * W)), I8)
        if sw == 1:
            _memset0(b, row16, row16_len * 2)
        zpv = ir.Constant(I16, zp)
        # -- the pair plane ------------------------------------------------------------------------
        with for_range(b, Hp, "r") as r:
            ih = b.sub(r, const_int(p[0]))
            ok = b.and_(b.icmp_signed(">=", ih, const_int(0)), b.icmp_signed("<", ih, const_int(H)))
            prow = _gep(b, plane, b.mul(r, const_int(L * 4)), I8)
            with b.if_else(ok) as (then, other):
                with then:
                    dst16 = prow if sw == 2 else row16
                    if sw == 2:  # the row buffer is the plane row: zero its borders
                        if p[1]:
                            _memset0(b, dst16, 2 * p[1])
                        if p[1] + wfill < row16_len:
                            _memset0(b, _gep(b, dst16, p[1] + wfill, I16), 2 * (row16_len - p[1] - wfill))
                    src = _gep(b, xplane, b.mul(ih, const_int(W)), I8)
                    dst = _gep(b, dst16, p[1], I16)
                    with vector_loop(b, wfill, 16, "iw") as iw:
                        v = b.sext(b.load(_gep(b, src, iw, I8), typ=I8), I16)
                        b.store(b.sub(v, zpv), _gep(b, dst, iw, I16))
                    if sw == 1:  # interleave the row with itself shifted by one
                        with vector_loop(b, L, 16, "i") as i:
                            lo = b.zext(b.load(_gep(b, row16, i, I16), typ=I16), I32)
                            hi = b.zext(b.load(_gep(b, row16, b.add(i, const_int(1)), I16), typ=I16), I32)
                            b.store(b.or_(lo, b.shl(hi, ir.Constant(I32, 16))), _gep(b, prow, i, I32))
                with other:
                    _memset0(b, prow, L * 4)
        # -- the output rows -----------------------------------------------------------------------
        with for_range(b, OH, "oh") as oh:
            r0 = b.mul(oh, const_int(sh))
            orow = b.mul(b.add(b.mul(t, const_int(OH)), oh), const_int(OW))
            with for_range(b, OWv // 16, "jb") as jb:
                j0 = b.mul(jb, const_int(16))
                acc = bias
                for kh in range(KH):
                    prow = _gep(b, plane, b.mul(b.add(r0, const_int(kh)), const_int(L * 4)), I8)
                    for q in range(npairs):
                        ld = b.load(_gep(b, prow, b.add(j0, const_int((2 * q) // sw)), I32), typ=V16)
                        ld.align = 4
                        acc = dpwssd(b, vnni, acc, ld, wsplat[kh][q])
                store_result(b, acc, yo, b.add(orow, j0), b.sub(const_int(OW), j0), requant, mv, sv)
        if not on_stack:
            b.call(intrinsic(b.module, "free", VOID, [PTR]), [plane])

    k.parallel_for(dm.mul(k.b, N, C), task, name="qconv_dw")

"""The INT8 depthwise convolution on x86 (``qconv`` with one input and one output channel per group,
NCHW), vectorised with 16-bit pair dot products, optionally with the following ``requantize`` in
its epilogue (``RequantSpec``: then it writes int8, never the i32 tensor).

Why pairs of 16-bit values and not ``vpdpbusd``: a depthwise output is a dot product over only
KH x KW taps of one channel. ``vpdpbusd`` wants four taps of one output pixel side by side in each
i32 lane, which for a row of 16 output pixels means a byte shuffle per tap group per vector, and a
3x3 (9 taps) wastes a quarter of it on padding. ``vpdpwssd`` (VNNI, 16-bit) sums *two* products per
lane, and the pairs it needs come for free from a plain 16-bit copy of the input:

- each task (image, channel) first copies its plane as i16 ``x - zp`` into zero-padded rows
  (padding is the zero point, so it contributes 0 after the subtraction; ``x - zp`` fits i16): one
  vectorised pass, sign extension and a subtraction;
- the taps of a kernel row go in pairs (kw, kw+1) for even kw (an odd last tap pairs with a zero
  weight). An i32 loaded at i16 offset ``o`` of a row is the pair ``(row[o], row[o+1])``, so 16
  lanes at offsets ``o, o+2, ..., o+30`` (one unaligned 64-byte load) are the pairs of 16 output
  columns *two apart*. With stride 2 those are consecutive outputs (column j reads from ``2j + kw``).
  With stride 1 the kernel runs two phases, the even and the odd columns of a block of 32, and
  interleaves the two finished vectors (one shuffle) before the store;
- per 16 output pixels a 3x3 takes 6 ``vpdpwssd`` (9 i32 multiplies and 9 adds otherwise), a 5x5 15.
  (A first version built an interleaved "pair plane" for stride 1; that extra pass over every row
  made stride-1 layers 1.2-1.6x slower than FP32, the two phases 0.74-1.15x, bench/int8_depthwise.py.)

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
from .requant_epilogue import V16, RequantSpec, requantize_v16, splat, store_lanes
from .vnni import dpwssd, intrinsic

FLAT_MAX_WIDTH = 16  # stride-1 planes at most this wide run flat (lower_depthwise)
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
    # stride 1 runs two phases (even and odd output columns) of 16 lanes each: 32 columns per block
    block = 32 if sw == 1 else 16
    OWb = -(-OW // block) * block
    Hp = (OH - 1) * sh + KH  # padded rows the windows read
    # small stride-1 planes (7x7, 14x14) run "flat": rows of exactly the padded width, the output
    # position (oh, ow) at flat index oh * R16 + ow reads its taps at + kh * R16 + kw, so 32-lane
    # blocks span several rows (7x7: 64 lanes for 49 outputs, not 7 rows x 32) and a copy drops the
    # KW - 1 columns between rows
    flat = sh == sw == 1 and OW <= FLAT_MAX_WIDTH
    if flat:
        R16 = OW + KW - 1
        nflat = -(-(OH * R16) // block)  # 32-lane blocks
        slack = nflat * block + (KH - 1) * R16 + 2 * npairs + 32 - Hp * R16  # i16 read past the plane
    else:
        R16 = (OWb if sw == 1 else 2 * OWb) + 2 * npairs + 2  # i16 per padded row: every load stays inside
        slack = 0
    wpad = np.zeros((C, KH, 2 * npairs), np.int64)
    wpad[:, :, :KW] = wv.reshape(C, KH, KW)
    words = (wpad[:, :, 0::2] & 0xFFFF) | (wpad[:, :, 1::2] << 16)
    words = np.where(words >= 1 << 31, words - (1 << 32), words).astype(np.int32)
    woff = k.packed_constant(f"{op.operands[1].name}.dwpairs", words.reshape(-1), replaces=k.arg(1))
    has_bias = len(op.operands) > 2  # read in place
    wfill = max(0, min(W, R16 - p[1]))  # input columns copied into [pl, pl + wfill) of a padded row
    tmp_off = Hp * R16 * 2 + 2 * max(slack, 0) + 64  # flat: the block outputs before the row copy
    nbytes = tmp_off + (nflat * block * 4 if flat else 0) + 128
    on_stack = nbytes <= STACK_BYTES
    out_t = I8 if requant is not None else I32

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
        xplane = _gep(b, xin, b.mul(t, const_int(H * W)), I8)
        zpv = ir.Constant(I16, zp)
        # -- the zero-padded i16 plane of x - zp ---------------------------------------------------
        with for_range(b, Hp, "r") as r:
            ih = b.sub(r, const_int(p[0]))
            ok = b.and_(b.icmp_signed(">=", ih, const_int(0)), b.icmp_signed("<", ih, const_int(H)))
            row = _gep(b, plane, b.mul(r, const_int(R16 * 2)), I8)
            with b.if_else(ok) as (then, other):
                with then:
                    if p[1]:
                        _memset0(b, row, 2 * p[1])
                    if p[1] + wfill < R16:
                        _memset0(b, _gep(b, row, p[1] + wfill, I16), 2 * (R16 - p[1] - wfill))
                    src = _gep(b, xplane, b.mul(ih, const_int(W)), I8)
                    dst = _gep(b, row, p[1], I16)
                    with vector_loop(b, wfill, 16, "iw") as iw:
                        v = b.sext(b.load(_gep(b, src, iw, I8), typ=I8), I16)
                        b.store(b.sub(v, zpv), _gep(b, dst, iw, I16))
                with other:
                    _memset0(b, row, R16 * 2)
        # -- the output rows -----------------------------------------------------------------------

        def phase(r0: ir.Value, j0: ir.Value, ph: int) -> ir.Value:
            """16 outputs of columns j0 + ph + (2 if stride 1 else 1) * lane, finished (i32 or bytes):
            the pair (kw, kw+1) of lane i is the i32 at i16 offset sw * j0 + ph + kw + 2 * i."""
            acc = bias
            for kh in range(KH):
                row = _gep(b, plane, b.mul(b.add(r0, const_int(kh)), const_int(R16 * 2)), I8)
                for q in range(npairs):
                    at = b.add(b.mul(j0, const_int(sw)), const_int(ph + 2 * q))
                    ld = b.load(_gep(b, row, at, I16), typ=V16)
                    ld.align = 2
                    acc = dpwssd(b, vnni, acc, ld, wsplat[kh][q])
            return acc if requant is None else requantize_v16(b, acc, mv, sv, requant)

        def interleaved(r0: ir.Value, j0: ir.Value) -> ir.Value:
            even, odd = phase(r0, j0, 0), phase(r0, j0, 1)
            return b.shuffle_vector(even, odd, ir.Constant(ir.VectorType(I32, 32),
                                                          [i // 2 + 16 * (i % 2) for i in range(32)]))

        if flat:
            tmp = _gep(b, plane, tmp_off, I8)
            with for_range(b, nflat, "fb") as fb:
                f0 = b.mul(fb, const_int(block))
                st = b.store(interleaved(const_int(0), f0), b.gep(tmp, [f0], source_etype=out_t, inbounds=True))
                st.align = 1
            with for_range(b, OH, "oh") as oh:
                src = b.gep(tmp, [b.mul(oh, const_int(R16))], source_etype=out_t, inbounds=True)
                dst = b.gep(yo, [b.mul(b.add(b.mul(t, const_int(OH)), oh), const_int(OW))], source_etype=out_t,
                            inbounds=True)
                with vector_loop(b, OW, 16, "ow") as ow:
                    v = b.load(b.gep(src, [ow], source_etype=out_t, inbounds=True), typ=out_t)
                    b.store(v, b.gep(dst, [ow], source_etype=out_t, inbounds=True))
            if not on_stack:
                b.call(intrinsic(b.module, "free", VOID, [PTR]), [plane])
            return

        with for_range(b, OH, "oh") as oh:
            r0 = b.mul(oh, const_int(sh))
            orow = b.mul(b.add(b.mul(t, const_int(OH)), oh), const_int(OW))
            with for_range(b, OWb // block, "jb") as jb:
                j0 = b.mul(jb, const_int(block))
                if sw == 1:  # interleave the even and odd columns back into order
                    y = interleaved(r0, j0)
                else:
                    y = phase(r0, j0, 0)
                dst = b.gep(yo, [b.add(orow, j0)], source_etype=out_t, inbounds=True)
                store_lanes(b, y, dst, b.sub(const_int(OW), j0))
        if not on_stack:
            b.call(intrinsic(b.module, "free", VOID, [PTR]), [plane])

    k.parallel_for(dm.mul(k.b, N, C), task, name="qconv_dw")

"""Matrix products: matmul (batched, numpy semantics) and gemm.

This is the straightforward triple loop (i, k, j order, so the inner loop streams both B and C and
vectorises); the packed, register-blocked microkernel replaces it for the hot shapes.
"""

from __future__ import annotations

from llvmlite import ir

from nnc.ir import Op

from ..llvm_types import const_int, for_range, ll_type
from .registry import lowering


def _matmul_2d(k, c_ptr, a_ptr, b_ptr, M: int, K: int, N: int, a_off, b_off, c_off, dt,
               trans_a: bool = False, trans_b: bool = False, alpha: float = 1.0) -> None:
    b = k.b
    t = ll_type(dt)
    zero = ir.Constant(t, 0.0) if dt.is_float else ir.Constant(t, 0)
    fl = dt.is_float
    with for_range(b, M, "m") as m:
        row = b.add(c_off, b.mul(m, const_int(N)))
        with for_range(b, N, "n0") as n:
            b.store(zero, b.gep(c_ptr, [b.add(row, n)], source_etype=t, inbounds=True))
        with for_range(b, K, "kk") as kk:
            a_idx = b.add(a_off, b.add(b.mul(kk, const_int(M)), m) if trans_a else b.add(b.mul(m, const_int(K)), kk))
            av = b.load(b.gep(a_ptr, [a_idx], source_etype=t, inbounds=True), typ=t)
            if alpha != 1.0:
                av = b.fmul(av, ir.Constant(t, alpha))
            with for_range(b, N, "n") as n:
                b_rel = b.add(b.mul(n, const_int(K)), kk) if trans_b else b.add(b.mul(kk, const_int(N)), n)
                b_idx = b.add(b_off, b_rel)
                bv = b.load(b.gep(b_ptr, [b_idx], source_etype=t, inbounds=True), typ=t)
                cp = b.gep(c_ptr, [b.add(row, n)], source_etype=t, inbounds=True)
                acc = b.load(cp, typ=t)
                b.store(b.fadd(acc, b.fmul(av, bv)) if fl else b.add(acc, b.mul(av, bv)), cp)


@lowering("matmul")
def lower_matmul(k, op: Op) -> None:
    a, bv = op.operands
    out = op.results[0]
    sa, sb = list(a.shape), list(bv.shape)
    if len(sa) == 1:
        sa = [1] + sa
    if len(sb) == 1:
        sb = sb + [1]
    M, K, N = sa[-2], sa[-1], sb[-1]
    batch = tuple(out.shape[: max(len(out.shape) - 2, 0)]) if len(a.shape) > 1 and len(bv.shape) > 1 else ()
    if len(a.shape) == 1 or len(bv.shape) == 1:
        batch = tuple(out.shape[: len(out.shape) - (1 if (len(a.shape) == 1) != (len(bv.shape) == 1) else 0)])
        batch = batch[: max(len(batch) - 1, 0)] if len(a.shape) != 1 and len(bv.shape) == 1 else batch
    ba = (1,) * (len(batch) - len(sa[:-2])) + tuple(sa[:-2])
    bb = (1,) * (len(batch) - len(sb[:-2])) + tuple(sb[:-2])
    n_batch = 1
    for d in batch:
        n_batch *= d
    for flat in range(n_batch):  # batch dims are small and static: unrolled
        idx, rem = [], flat
        for d in reversed(batch):
            idx.append(rem % d)
            rem //= d
        idx.reverse()
        a_off = b_off = 0
        for i in range(len(batch)):
            a_off = a_off * ba[i] + (idx[i] if ba[i] != 1 else 0)
            b_off = b_off * bb[i] + (idx[i] if bb[i] != 1 else 0)
        _matmul_2d(k, k.out(0), k.arg(0), k.arg(1), M, K, N, const_int(a_off * M * K), const_int(b_off * K * N),
                   const_int(flat * M * N), out.dtype)


@lowering("gemm")
def lower_gemm(k, op: Op) -> None:
    a, bv = op.operands[:2]
    out = op.results[0]
    ta, tb = bool(op.attrs["trans_a"]), bool(op.attrs["trans_b"])
    M, N = out.shape
    K = a.shape[0] if ta else a.shape[1]
    zero = const_int(0)
    _matmul_2d(k, k.out(0), k.arg(0), k.arg(1), M, K, N, zero, zero, zero, out.dtype, ta, tb, op.attrs["alpha"])
    if len(op.operands) == 3:
        from .elementwise import broadcast_strides

        c = op.operands[2]
        beta = op.attrs["beta"]
        b = k.b
        t = ll_type(out.dtype)
        s = broadcast_strides(c, tuple(out.shape))
        with for_range(b, M, "gm") as m:
            with for_range(b, N, "gn") as n:
                ci = b.add(b.mul(m, const_int(s[0])), b.mul(n, const_int(s[1])))
                cv = b.load(b.gep(k.arg(2), [ci], source_etype=t, inbounds=True), typ=t)
                if beta != 1.0:
                    cv = b.fmul(cv, ir.Constant(t, beta))
                p = b.gep(k.out(0), [b.add(b.mul(m, const_int(N)), n)], source_etype=t, inbounds=True)
                b.store(b.fadd(b.load(p, typ=t), cv), p)

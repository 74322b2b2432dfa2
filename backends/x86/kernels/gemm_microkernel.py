"""The GEMM microkernel (``C[MR x NR] (+)= Apanel @ Bpanel`` in vector registers, then the epilogue)
and the small LLVM IR helpers the GEMM, conv and other kernels build with.

Split from gemm.py (the driver and packing): the microkernel is shared by gemm.py's ``emit_gemm``
and conv_channel_vectors.py, which reads its A rows in place through an offset table instead of
from packed panels (``a_stride``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from llvmlite import ir

from ..llvm_types import F64, I1, I8, I32, I64, PTR, VOID, const_int

if TYPE_CHECKING:
    from .gemm import Blocking, Epilogue


# -- IR helpers ----------------------------------------------------------------------------------

def _intrinsic(mod: ir.Module, name: str, ret: ir.Type, args: list[ir.Type]) -> ir.Function:
    fn = mod.globals.get(name)
    if fn is None:
        fn = ir.Function(mod, ir.FunctionType(ret, args), name=name)
    return fn


def _ename(t: ir.Type) -> str:
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    return {ir.DoubleType: "f64", ir.FloatType: "f32", ir.HalfType: "f16"}.get(type(t), "bf16")


def _vname(vt: ir.VectorType) -> str:
    return f"v{vt.count}{_ename(vt.element)}"


def elem_bytes(t: ir.Type) -> int:
    """Bytes of a scalar element type (the alignment an access of it may assume)."""
    if isinstance(t, ir.IntType):
        return max(1, t.width // 8)
    return {"f64": 8, "f32": 4}.get(_ename(t), 2)


def _align(vt: ir.VectorType) -> ir.Constant:
    """The alignment a masked access may assume: its element's."""
    return ir.Constant(I32, elem_bytes(vt.element))


def gep(b: ir.IRBuilder, p: ir.Value, i: ir.Value | int, t: ir.Type) -> ir.Value:
    return b.gep(p, [const_int(i) if isinstance(i, int) else i], source_etype=t, inbounds=True)


def splat(b: ir.IRBuilder, x: ir.Value, vt: ir.VectorType) -> ir.Value:
    v = b.insert_element(ir.Constant(vt, ir.Undefined), x, ir.Constant(I32, 0))
    # the all-zero mask as zeroinitializer: the same constant to LLVM, but llvmlite builds and prints
    # it in one step instead of element by element (splats are a hot spot of code generation)
    return b.shuffle_vector(v, ir.Constant(vt, ir.Undefined), ir.Constant(ir.VectorType(I32, vt.count), None))


def fmuladd(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    """x*y+z, fused where the target has FMA (llvm.fmuladd: never a libm call)."""
    t = x.type
    name = "llvm.fmuladd." + (_vname(t) if isinstance(t, ir.VectorType) else ("f64" if t == F64 else "f32"))
    return b.call(_intrinsic(b.module, name, t, [t, t, t]), [x, y, z])


def masked_load(b: ir.IRBuilder, p: ir.Value, mask: ir.Value, vt: ir.VectorType,
                passthru: ir.Value | None = None) -> ir.Value:
    """Lanes of ``mask`` load from ``p``; the others are ``passthru``'s (0 by default), never touched."""
    fn = _intrinsic(b.module, f"llvm.masked.load.{_vname(vt)}.p0", vt, [PTR, I32, mask.type, vt])
    return b.call(fn, [p, _align(vt), mask, ir.Constant(vt, None) if passthru is None else passthru])


def masked_gather(b: ir.IRBuilder, ptrs: ir.Value, mask: ir.Value, vt: ir.VectorType) -> ir.Value:
    """Lanes of ``ptrs`` where ``mask`` holds are loaded, the others are 0 (and never touched)."""
    fn = _intrinsic(b.module, f"llvm.masked.gather.{_vname(vt)}.v{vt.count}p0", vt,
                    [ptrs.type, I32, mask.type, vt])
    return b.call(fn, [ptrs, ir.Constant(I32, 4), mask, ir.Constant(vt, None)])


def masked_store(b: ir.IRBuilder, x: ir.Value, p: ir.Value, mask: ir.Value) -> None:
    fn = _intrinsic(b.module, f"llvm.masked.store.{_vname(x.type)}.p0", VOID, [x.type, PTR, I32, mask.type])
    b.call(fn, [x, p, _align(x.type), mask])


def imin(b: ir.IRBuilder, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(b.icmp_signed("<", x, y), x, y)


def heap_buffer(b: ir.IRBuilder, nbytes: int) -> tuple[ir.Value, ir.Value]:
    """(64-byte aligned pointer, pointer to free) of a malloc'd scratch buffer."""
    malloc = _intrinsic(b.module, "malloc", PTR, [I64])
    raw = b.call(malloc, [const_int(nbytes + 64)])
    addr = b.ptrtoint(raw, I64)
    aligned = b.and_(b.add(addr, const_int(63)), const_int(-64))
    return b.gep(raw, [b.sub(aligned, addr)], source_etype=I8), raw


def heap_free(b: ir.IRBuilder, raw: ir.Value) -> None:
    b.call(_intrinsic(b.module, "free", VOID, [PTR]), [raw])


# -- the microkernel -----------------------------------------------------------------------------

def microkernel(mod: ir.Module, blk: Blocking, epi: Epilogue, name: str, a_stride: int | None = None
                ) -> ir.Function:
    """``void micro(i64 kc, ptr a, ptr b, ptr c, i64 ldc, i64 mrem, i64 nrem, i1 first, i1 last,
    ptr bias)``: C[MR x NR tile] (+)= Apanel @ Bpanel; the epilogue runs when ``last``; rows >= mrem
    and columns >= nrem are left alone (masked).

    ``a_stride``: A is read in place, not from a packed panel: the function takes one more argument,
    ``ptr aoff`` (i64 element offsets), and A[r, k] is ``a[aoff[k] + r*a_stride]``."""
    et, vt, MR, nv, L = blk.et, blk.vt, blk.MR, blk.nv, blk.lanes
    extra = [PTR] if a_stride is not None else []
    fn = ir.Function(mod, ir.FunctionType(VOID, [I64, PTR, PTR, PTR, I64, I64, I64, I1, I1, PTR] + extra), name=name)
    fn.linkage = "internal"
    kc, ap, bp, cp, ldc, mrem, nrem, first, last, bias = fn.args[:10]
    for a in (ap, bp, cp):
        a.add_attribute("noalias")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    zero = ir.Constant(vt, None)
    entry = b.block
    loop = fn.append_basic_block("k")
    done = fn.append_basic_block("store")
    b.cbranch(b.icmp_signed(">", kc, const_int(0)), loop, done)
    b.position_at_end(loop)
    k = b.phi(I64, name="kk")
    k.add_incoming(const_int(0), entry)
    accs = []
    for r in range(MR):
        row = []
        for v in range(nv):
            ph = b.phi(vt, name=f"acc{r}_{v}")
            ph.add_incoming(zero, entry)
            row.append(ph)
        accs.append(row)
    brow = gep(b, bp, b.mul(k, const_int(blk.NR)), et)
    bvec = [b.load(gep(b, brow, v * L, et), typ=vt, align=4) for v in range(nv)]
    if a_stride is None:
        arow, astep = gep(b, ap, b.mul(k, const_int(MR)), et), 1
    else:
        arow = b.gep(ap, [b.load(gep(b, fn.args[10], k, I64), typ=I64)], source_etype=et)
        astep = a_stride
    new = []
    for r in range(MR):
        s = splat(b, b.load(gep(b, arow, r * astep, et), typ=et, align=4), vt)
        new.append([fmuladd(b, s, bvec[v], accs[r][v]) for v in range(nv)])
    k1 = b.add(k, const_int(1))
    k.add_incoming(k1, b.block)
    for r in range(MR):
        for v in range(nv):
            accs[r][v].add_incoming(new[r][v], b.block)
    b.cbranch(b.icmp_signed("<", k1, kc), loop, done)
    b.position_at_end(done)
    fin = []
    for r in range(MR):
        row = []
        for v in range(nv):
            ph = b.phi(vt)
            ph.add_incoming(zero, entry)
            ph.add_incoming(new[r][v], loop)
            row.append(ph)
        fin.append(row)

    def finish(x, r, v, mask):
        y = x
        if epi.alpha != 1.0:
            y = b.fmul(y, splat(b, ir.Constant(et, epi.alpha), vt))
        if epi.bias is not None:
            if epi.bias_cs:
                q = gep(b, bias, r * epi.bias_rs + v * L, et)
                bv = masked_load(b, q, mask, vt) if mask is not None else b.load(q, typ=vt, align=4)
            else:
                bv = splat(b, b.load(gep(b, bias, r * epi.bias_rs, et), typ=et), vt)
            if epi.beta != 1.0:
                bv = b.fmul(bv, splat(b, ir.Constant(et, epi.beta), vt))
            y = b.fadd(y, bv)
        if epi.act is not None:
            y = epi.act(b, y)
        return y if epi.trivial else b.select(last, y, x)

    full = b.and_(b.icmp_signed("==", mrem, const_int(MR)), b.icmp_signed("==", nrem, const_int(blk.NR)))
    fullbb = fn.append_basic_block("full")
    partbb = fn.append_basic_block("part")
    exitbb = fn.append_basic_block("exit")
    b.cbranch(full, fullbb, partbb)
    b.position_at_end(fullbb)
    for r in range(MR):
        crow = gep(b, cp, b.mul(ldc, const_int(r)), et)
        for v in range(nv):
            q = gep(b, crow, v * L, et)
            x = b.select(first, fin[r][v], b.fadd(fin[r][v], b.load(q, typ=vt, align=4)))
            b.store(finish(x, r, v, None), q, align=4)
    b.branch(exitbb)
    b.position_at_end(partbb)
    iota = ir.Constant(ir.VectorType(I64, L), list(range(L)))
    nsplat = splat(b, nrem, ir.VectorType(I64, L))
    masks = [b.icmp_signed("<", b.add(iota, splat(b, const_int(v * L), ir.VectorType(I64, L))), nsplat)
             for v in range(nv)]
    for r in range(MR):
        with b.if_then(b.icmp_signed("<", const_int(r), mrem)):
            crow = gep(b, cp, b.mul(ldc, const_int(r)), et)
            for v in range(nv):
                q = gep(b, crow, v * L, et)
                x = b.select(first, fin[r][v], b.fadd(fin[r][v], masked_load(b, q, masks[v], vt)))
                masked_store(b, finish(x, r, v, masks[v]), q, masks[v])
    b.branch(exitbb)
    b.position_at_end(exitbb)
    b.ret_void()
    return fn

"""A stable sort emitted as LLVM IR, for the kernels that order data at run time (``unique_bounded``,
``nms_bounded``, ``topk_bounded``): a bottom-up merge sort of i64 items (indices into the data the
comparison reads), O(n log n), ping-ponging between two buffers. Stability is what gives equal keys
the lower index first, as the reference's ``argsort(kind="stable")`` does.
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterator

from llvmlite import ir

from nnc.ir import DType

from ..llvm_types import F64, I64, const_int, for_range
from .loopkit import Loops


@contextmanager
def while_(b: ir.IRBuilder, cond: Callable[[], ir.Value], name: str = "w") -> Iterator[None]:
    """``while (cond()) { body }``; ``cond`` is emitted in the loop head."""
    fn = b.function
    head, body, end = (fn.append_basic_block(f"{name}.{s}") for s in ("head", "body", "end"))
    b.branch(head)
    b.position_at_end(head)
    b.cbranch(cond(), body, end)
    b.position_at_end(body)
    yield
    b.branch(head)
    b.position_at_end(end)


def at(b: ir.IRBuilder, ptr: ir.Value, i: ir.Value) -> ir.Value:
    return b.gep(ptr, [i], source_etype=I64, inbounds=True)


def merge_sort(L: Loops, items: ir.Value, scratch: ir.Value, n: ir.Value,
               less: Callable[[ir.Value, ir.Value], ir.Value]) -> ir.Value:
    """Sort the i64 ``items[0:n]`` stably by ``less(a, b)`` (i1: item a strictly before item b; it
    may emit loops). ``scratch`` holds n items too. Returns the buffer the sorted items end in."""
    b = L.b
    src, dst, width = L.var(items), L.var(scratch), L.var(const_int(1))
    with while_(b, lambda: b.icmp_signed("<", L.get(width), n), "pass"):
        w, s, d = L.get(width), L.get(src), L.get(dst)
        lo = L.var(const_int(0))
        with while_(b, lambda: b.icmp_signed("<", L.get(lo), n), "run"):
            start = L.get(lo)
            mid = L.imin(b.add(start, w), n)
            hi = L.imin(b.add(start, b.add(w, w)), n)
            i, j = L.var(start), L.var(mid)
            with for_range(b, hi, "m", start=start) as k:
                iv, jv = L.get(i), L.get(j)
                left = b.load(at(b, s, L.imin(iv, b.sub(mid, const_int(1)))), typ=I64)
                right = b.load(at(b, s, L.imin(jv, b.sub(hi, const_int(1)))), typ=I64)
                take_right = b.and_(b.icmp_signed("<", jv, hi),
                                    b.or_(b.icmp_signed(">=", iv, mid), less(right, left)))
                b.store(b.select(take_right, right, left), at(b, d, k))
                L.set(j, b.select(take_right, b.add(jv, const_int(1)), jv))
                L.set(i, b.select(take_right, iv, b.add(iv, const_int(1))))
            L.set(lo, hi)
        L.set(src, d)
        L.set(dst, s)
        L.set(width, b.add(w, w))
    return L.get(src)


def sort_key(L: Loops, ptr: ir.Value, i: ir.Value, dt: DType) -> ir.Value:
    """Element ``i`` as a value ``key_less``/``key_equal`` compare: f64 for floats (exact for every
    float dtype), i64 for integers and bool."""
    return L.ld(ptr, i, dt, F64) if dt.is_float else L.ld_int(ptr, i, dt)


def key_less(b: ir.IRBuilder, x: ir.Value, y: ir.Value, dt: DType) -> ir.Value:
    """x < y in numpy's sort order: NaN after every number."""
    if dt.is_float:
        return b.or_(b.fcmp_ordered("<", x, y), b.and_(b.fcmp_ordered("ord", x, x), b.fcmp_unordered("uno", y, y)))
    return (b.icmp_unsigned if dt.name.startswith("u") else b.icmp_signed)("<", x, y)


def key_equal(b: ir.IRBuilder, x: ir.Value, y: ir.Value, dt: DType) -> ir.Value:
    """x == y, with NaN equal to NaN (numpy's unique collapses NaNs)."""
    if dt.is_float:
        return b.or_(b.fcmp_ordered("==", x, y), b.and_(b.fcmp_unordered("uno", x, x), b.fcmp_unordered("uno", y, y)))
    return b.icmp_signed("==", x, y)

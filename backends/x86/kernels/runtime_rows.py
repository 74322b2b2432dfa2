"""Independent rows (the planes of a pooling) whose count is read at run time, in chunks.

A static pooling splits its planes over the worker threads in chunks of about ``PAR_BYTES`` of
input (``indexing.chunked``), decided at compile time. When the count depends on a batch known
only at run time, the chunks keep their compile-time size and their number is computed at run time,
so a small run is one chunk and a large one spreads over every thread; the last chunk stops at the
run's count. With one thread the rows are a plain loop in the kernel.
"""

from __future__ import annotations

from typing import Callable

from llvmlite import ir

from ..llvm_types import const_int, for_range
from . import dims as dm
from .data_movement import PAR_BYTES, smin


def runtime_rows(k, count: Callable[[object], dm.Dim], item_bytes: int, body: Callable[[object, ir.Value], None],
                 name: str = "rows") -> None:
    """``body(kb, i)`` for every ``i < count(kb)``. ``count`` reads the run's dims through the
    builder it is given (``kb.shape``): a parallel task has its own copy of the frame."""
    if getattr(k.cg, "threads", 1) <= 1:
        with for_range(k.b, dm.val(count(k)), name) as i:
            body(k, i)
        return
    per = max(1, PAR_BYTES // max(item_bytes, 1))

    def task(kb, c: ir.Value) -> None:
        b = kb.b
        lo = b.mul(c, const_int(per))
        hi = smin(b, b.add(lo, const_int(per)), dm.val(count(kb)))
        with for_range(b, hi, name, start=lo) as i:
            body(kb, i)
    k.parallel_for(dm.val(dm.ceil_div(k.b, count(k), per)), task, name=name)

"""Where every value lives at run time: an input, an output, the arena, or the weights blob.

The arena offsets come from the memory planner (``passes/plan_memory.py``). Constants live in one
weights blob whose entries are 64-byte aligned, and a constant gets space only if some kernel reads
it: the weights pre-packed for a GEMM/conv microkernel are placed when the kernel asks for them
(``add_weights``), and a ``const`` value in its raw form only when the entry point passes its pointer
to a kernel (``slot``, called after every kernel is emitted). A weight that a kernel only reads in
packed form (it passes ``replaces=`` to ``KernelBuilder.packed_constant``, and the entry point gives
it a null pointer) is therefore not stored twice. The blob's bytes are gathered once, on the first
read of ``weights``, after code generation.

The arena ends with a 64-byte error record when some kernel checks its data at run time (an index
out of range): ``error_record`` places it after the planned values, so a model that checks nothing
keeps the planner's arena size.

A value or an arena larger than the machine's memory (``nnc.ir.memory_limits``) is refused here, at
compile time, with a ``TargetError`` naming it, before anything is allocated.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nnc.ir import Graph, Module, TargetError, Value
from nnc.ir.memory_limits import check_allocation
from nnc.passes.concat_views import concat_views, plan_with_views
from nnc.passes.liveness import aligned
from nnc.passes.plan_memory import MemoryPlan, plan_graph

ERROR_RECORD_BYTES = 64


@dataclass(frozen=True)
class Slot:
    kind: str  # "input" | "output" | "arena" | "weights"
    index: int  # input/output position, or byte offset into arena/weights


class StorageMap:
    """The slot of every value, and the layout of the weights blob (filled in lazily)."""

    def __init__(self, module: Module, slots: dict[int, Slot], const_keys: dict[int, str], plan: MemoryPlan | None,
                 output_copies: list[tuple[int, Value]], arena_order: list[Value] | None = None):
        self.module = module
        self.slots = slots  # id(value) -> slot, for every value that is not a constant
        self.const_keys = const_keys  # id(value) -> constant-pool key, for the results of const ops
        self.plan = plan
        self.output_copies = output_copies  # outputs stored elsewhere: (output index, value)
        self.weight_offsets: dict[str, int] = {}  # constant-pool key -> byte offset, for placed ones
        self._size = 0
        self._blob: np.ndarray | None = None
        self._packed: set[str] = set()  # keys added by add_weights (compile-time data of this map)
        self.error_offset: int | None = None  # byte offset of the error record in the arena, once placed
        self.kernel_table: list[str] = []  # the code generator's kernel descriptions (error code - 1)
        self._arena_order: list[Value] = list(arena_order or [])  # the values in the arena, in op order
        self.layout = None  # shape-generic code: its FrameLayout (frame.py), set by the backend
        self.view_concats: set[int] = set()  # id(op) of concats whose inputs were written in place

    def slot(self, v: Value) -> Slot:
        """Where ``v`` lives; a constant asked for here is placed in the blob (if not already)."""
        key = self.const_keys.get(id(v))
        if key is not None:
            return Slot("weights", self._place(key))
        return self.slots[id(v)]

    def is_constant(self, v: Value) -> bool:
        return id(v) in self.const_keys

    def add_weights(self, module: Module, name: str, array: np.ndarray) -> int:
        """Add a constant that kernels read but no const op produces (weights pre-packed at compile
        time) to the pool and the blob; return its byte offset in the blob."""
        key = module.add_constant(name, np.ascontiguousarray(array))
        self._packed.add(key)
        return self._place(key)

    def _place(self, key: str) -> int:
        off = self.weight_offsets.get(key)
        if off is None:
            off = aligned(self._size)
            self._size = off + aligned(max(int(self.module.constants[key].nbytes), 1))
            self.weight_offsets[key] = off
            self._blob = None
        return off

    @property
    def weights(self) -> np.ndarray:
        """The blob (uint8, at least 64 bytes, 64-byte aligned): every placed constant at its offset. Read it once code
        generation is done; a constant placed later makes the next read gather it again."""
        if self._blob is None:
            blob = aligned_zeros(max(self._size, 64))
            consts = self.module.constants
            for key, off in self.weight_offsets.items():
                arr = np.ascontiguousarray(consts[key])
                blob[off:off + arr.nbytes] = arr.reshape(-1).view(np.uint8)
                if key in self._packed:  # the pool entry becomes a view of the blob: one copy, not two
                    view = blob[off:off + arr.nbytes].view(arr.dtype).reshape(arr.shape)
                    view.flags.writeable = False
                    consts[key] = view
            self._blob = blob
        return self._blob

    def error_record(self) -> int:
        """The arena offset of the run-time error record (code generation asks once it needs one)."""
        if self.error_offset is None:
            self.error_offset = aligned(self.plan.arena_bytes)
        return self.error_offset

    @property
    def generic(self) -> bool:
        """Shape-generic code: arena offsets are read from the run's frame."""
        return self.plan is None

    def arena_values(self) -> list[Value]:
        """The values that live in the arena, in op order."""
        return list(self._arena_order)

    @property
    def arena_bytes(self) -> int:
        if self.plan is None:
            return 0  # per binding (frame.py)
        if self.error_offset is None:
            return self.plan.arena_bytes
        return self.error_offset + ERROR_RECORD_BYTES


def aligned_zeros(nbytes: int, align: int = 64) -> np.ndarray:
    """A zeroed uint8 array of ``nbytes`` whose data starts on an ``align``-byte boundary (the
    executable runs on the blob where it lies, without copying it to an aligned buffer)."""
    buf = np.zeros(nbytes + align, dtype=np.uint8)
    start = -buf.ctypes.data % align
    return buf[start:start + nbytes]


def assign_storage(module: Module, g: Graph, generic: bool = False) -> StorageMap:
    """Slots for every value. ``generic``: the graph has symbolic dims; arena values get a slot of
    offset -1 and their offsets come from the run's frame (``frame.py``), planned per binding."""
    if generic:
        return _slots(module, g, None, lambda r: -1)
    for op in g.ops:  # the most specific complaint first: the value that does not fit
        for r in op.results:
            if op.opname != "const":
                check_allocation(r.type.nbytes or 0, f"x86: {op.where()}: %{r.name} ({r.type})", TargetError)
    cv = concat_views(g)
    if cv.views:  # concat inputs computed in their slices of the result (passes/concat_views.py)
        plan, offsets = plan_with_views(g, cv)
        offset_of = lambda r: offsets.get(id(r))  # noqa: E731
    else:
        plan = plan_graph(g)
        offset_of = plan.offset_of
    check_allocation(plan.arena_bytes, f"x86: the arena of {g.name or 'the graph'} (every intermediate value at "
                     f"its planned offset)", TargetError)
    storage = _slots(module, g, plan, offset_of)
    storage.view_concats = cv.concats
    return storage


def _slots(module: Module, g: Graph, plan: MemoryPlan | None, offset_of) -> StorageMap:
    slots: dict[int, Slot] = {}
    for i, p in enumerate(g.params):
        slots[id(p)] = Slot("input", i)
    # constants: placed in the blob only when some kernel reads them (StorageMap.slot)
    const_keys = {id(op.results[0]): op.attrs["ref"] for op in g.ops if op.opname == "const"}
    # outputs: the producing op writes straight into the caller's output array, once
    copies: list[tuple[int, Value]] = []
    for j, v in enumerate(g.outputs):
        if id(v) in slots or id(v) in const_keys or v.producer is None:
            copies.append((j, v))  # a parameter, a constant, or a value already returned
        else:
            slots[id(v)] = Slot("output", j)
    arena: list[Value] = []
    for op in g.ops:
        for r in op.results:
            if id(r) not in slots and id(r) not in const_keys:
                off = offset_of(r)
                if off is None:
                    raise AssertionError(f"%{r.name} has no storage")
                slots[id(r)] = Slot("arena", off)
                arena.append(r)
    return StorageMap(module, slots, const_keys, plan, copies, arena)

"""Shape-generic x86 code: one compile serves every value of a model's symbolic dims.

A model whose inputs have symbolic dims (``N``, ``seq``, or ``?`` dims inside) compiles once: every
kernel reads the dims it needs from the run's *frame* (``frame.py``) and the entry point reads each
value's arena offset from it, so loop bounds, strides and offsets are computed at run time. Per new
input signature, ``GenericExecutable`` computes the frame in Python (the concrete shape of every
value through ``ir.shape_eval``, then the memory planner over those sizes; milliseconds) and keeps
it; the machine code never changes.

A model compiles shape-generic when every op's lowering is (``kernels.registry.why_not_generic``)
and no shape depends on tensor data (``ShapeEvaluator.data_dependence``: a NonZero's size). When
not, ``shape_generic_reason`` says why and the driver compiles per input shape instead
(``nnc.specializer``), reporting the reason (``report["shapes"]``).
"""

from __future__ import annotations

import collections
import ctypes
import threading
from typing import Any, Mapping

import numpy as np

from nnc.ir import Graph, InputError, Module, TargetError
from nnc.ir.memory_limits import check_allocation
from nnc.ir.shape_eval import ShapeEvaluator, bound_symbols

from .bounded_frames import BoundedFrames
from .executable import ALIGN, Interface, _aligned_buffer, bind_io, feeds_in_order, given_outputs, weights_buffer
from .frame import FrameLayout, ShapePlan, all_values
from .frame_formulas import derive, input_symbols, shape_only_args
from .kernels.registry import why_not_generic
from .stacked_frames import StackedFrames, derive_stacked

MAX_FORMULA_SETS = 4  # signatures the frame formulas are derived from, at most (stacked_frames.py)
_ENTRY_T = ctypes.CFUNCTYPE(ctypes.c_int32, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p,
                            ctypes.c_void_p)


def is_symbolic(graph: Graph) -> bool:
    """Some input or intermediate value has a dim that is not a compile-time int."""
    return any(not v.type.is_static for v in all_values(graph))


def shape_generic_reason(graph: Graph, evaluator: ShapeEvaluator) -> str | None:
    """Why ``graph`` (prepared, symbolic; ``evaluator`` is its shape evaluator) cannot compile to
    shape-generic code, or None."""
    for op in graph.ops:
        if op.opname == "const":
            continue
        if all(v.type.is_static for v in op.operands) and any(r.type.shape is None for r in op.results):
            return f"{op.where()} has an output of unknown rank"
        why = why_not_generic(op)
        if why is not None:
            return f"{op.where()}: {why}"
    return evaluator.data_dependence


class GenericExecutable:
    """The compiled shape-generic model: one entry point, a frame per input signature."""

    target = "x86"
    keep = 64  # frames kept (one per distinct input signature), most recent first

    def __init__(self, interface: Interface, layout: FrameLayout, weights: np.ndarray | bytes, entry_address: int,
                 keepalive: Any, module: Module | None = None, storage: Any = None):
        self.interface = interface  # symbolic input/output types; arena_bytes 0 (per binding)
        self.layout = layout
        self.module = module
        self.graph = layout.graph
        self.storage = storage
        self.cache_status = "off"
        self.value_inputs = layout.evaluator.value_inputs()
        self._keepalive = keepalive
        self._entry = _ENTRY_T(entry_address)
        self._weights_buf, self._weights_ptr = weights_buffer(weights)
        self._plans: collections.OrderedDict[tuple, ShapePlan] = collections.OrderedDict()
        self._arena_buf, self._arena_ptr = _aligned_buffer(ALIGN)
        self._arena_size = 0
        self._in_ptrs = (ctypes.c_void_p * max(len(interface.inputs), 1))()
        self._out_ptrs = (ctypes.c_void_p * max(len(interface.outputs), 1))()
        self._lock = threading.Lock()  # one arena (grown to the largest binding seen): runs take turns
        self.plans_made = 0  # how many distinct input signatures were planned (a report figure)
        self.max_dims: dict[str, int] = {}  # bounds of the symbolic dims (max_dims=): runs check them
        self.bounded: BoundedFrames | None = None  # frames from formulas, when max_dims bound every dim
        self.bounded_reason: str | None = None  # why not, when max_dims were given
        self.formula_sets: list[StackedFrames] = []  # frames from plans' stacking, without max_dims
        self.stacked_reason: str | None = None  # why the last try to derive them failed
        self.memory_report: dict[str, Any] | None = None  # the compile report's memory section, kept up to date
        self.derive_tries = 0  # formulas derived (or tried) from this many signatures' plans

    def set_max_dims(self, max_dims: Mapping[str, int]) -> None:
        symbols = {d for p in self.graph.params for d in (p.type.shape or ()) if isinstance(d, str) and d != "?"}
        unknown = sorted(set(max_dims) - symbols)
        if unknown:
            raise TargetError(f"x86: max_dims names {', '.join(unknown)}, which no input dim is (the input dims: "
                              f"{', '.join(sorted(symbols))})")
        self.max_dims = dict(max_dims)
        self.bounded = None
        self.bounded_reason = None
        try:  # every dim bounded: frames from formulas, nothing planned per shape (bounded_frames.py)
            self.bounded = BoundedFrames(self.layout, derive(self.layout, self.max_dims))
        except TargetError as e:
            self.bounded_reason = str(e)

    @property
    def output_names(self) -> list[str]:
        return [n for n, _ in self.interface.outputs]

    def check_feeds(self, feeds: Mapping[str, Any]) -> list[np.ndarray]:
        return feeds_in_order(self.interface, feeds)

    def plan_for(self, args: list[np.ndarray]) -> ShapePlan:
        """The frame for these inputs (made once per input signature)."""
        key = tuple(a.shape for a in args) + tuple(
            args[i].tobytes() for i, (n, _) in enumerate(self.interface.inputs) if n in self.value_inputs)
        plan = self._plans.get(key)
        if plan is None:
            dims = bound_symbols(self.graph, args)
            for sym, n in dims.items():
                if sym in self.max_dims and n > self.max_dims[sym]:
                    raise InputError(f"x86: {sym}={n} is above its maximum {self.max_dims[sym]} (max_dims)")
            plan = self.bounded.plan(dims) if self.bounded is not None else self._unbounded_plan(args, dims)
            for (name, _), t in zip(self.interface.outputs, plan.outputs):
                check_allocation(t.nbytes or 0, f"x86: output {name!r} ({t})", TargetError)
            self._plans[key] = plan
            self.plans_made += 1
            if len(self._plans) > self.keep:
                self._plans.popitem(last=False)
        else:
            self._plans.move_to_end(key)
        return plan

    def _unbounded_plan(self, args: list[np.ndarray], dims: Mapping[str, int]) -> ShapePlan:
        """Frames from the stacking formulas where a set of them holds (``stacked_frames.py``); else
        the planner, whose plan then gives a new set (from the second signature on, four at most:
        formulas hold where the shape evaluation's branches at their probe do, so batch 1 and
        batch > 1, or lengths on either side of a clamp, get sets of their own)."""
        for sf in self.formula_sets:
            plan = sf.plan(dims)
            if plan is not None:
                return plan
        derive = bool(self._plans) and self.derive_tries < MAX_FORMULA_SETS
        plan = self.layout.plan(args, keep_memory=derive)
        if derive:
            self.derive_tries += 1
            try:
                self.formula_sets.append(derive_stacked(self.layout, plan, [
                    p for p in self._plans.values() if p.lower_bound_bytes is not None]))
                self.stacked_reason = None
            except (TargetError, InputError) as e:
                self.stacked_reason = str(e)  # the sets from before (if any) still serve where they hold
            plan.memory = None
            self._update_memory_report()
        return plan

    @property
    def stacked(self) -> StackedFrames | None:
        """The newest set of frame formulas (``formula_sets``), if any."""
        return self.formula_sets[-1] if self.formula_sets else None

    def _update_memory_report(self) -> None:
        rep = self.memory_report
        if rep is None:
            return
        if self.stacked is None:
            rep["formula"] = {"derived": False, "tries": self.derive_tries, "reason": self.stacked_reason}
            return
        used, exact = self.stacked.used_formula()
        rep["formula"] = {"derived": True, "sets": len(self.formula_sets), "from_dims": self.stacked.probe,
                          "guards": len(self.stacked.guards), "checked_at": self.stacked.checked_at,
                          "used_formula": used, "exact": exact, "tries": self.derive_tries,
                          "reason": "from the second input signature on, the arena offsets are formulas of the "
                                    "dims (the stacking of one signature's plan), valid where the shape "
                                    "evaluation's branches at that signature hold (guards): a new signature "
                                    "plans nothing; from_dims, used_formula: the newest set; "
                                    "used_formula gives the bytes the buffers reach (exact, or a bound never "
                                    "below them); the arena adds a 64-byte error record"}

    def run(self, feeds: Mapping[str, Any], outputs: Mapping[str, np.ndarray] | None = None) -> dict[str, np.ndarray]:
        """Run on ``feeds``; ``outputs`` optionally names the caller's buffers for some outputs."""
        args = self.check_feeds(feeds)
        given = given_outputs(self.output_names, outputs)
        with self._lock:
            plan = self.plan_for(args)
            if plan.arena_bytes > self._arena_size:
                self._arena_buf, self._arena_ptr = _aligned_buffer(plan.arena_bytes)
                self._arena_size = plan.arena_bytes
            outs = bind_io(self._in_ptrs, self._out_ptrs, args, plan.outputs, given)
            status = self._entry(ctypes.addressof(self._in_ptrs), ctypes.addressof(self._out_ptrs), self._arena_ptr,
                                 self._weights_ptr, plan.frame.ctypes.data)
            if status:
                err = Interface(self.interface.inputs, self.interface.outputs, plan.arena_bytes,
                                self.interface.kernels, int(plan.frame[self.layout.error_slot]))
                raise InputError(err.error_message(status, self._arena_ptr))
        return dict(zip(self.output_names, outs))

    def shapes_seen(self) -> list[dict[str, Any]]:
        """The input signatures planned so far (most recent last): dims, arena and lower bound."""
        with self._lock:
            seen = [{"dims": p.symbols, "arena_bytes": p.arena_bytes, "lower_bound_bytes": p.lower_bound_bytes}
                    for p in self._plans.values()]
            for row, p in zip(seen, self._plans.values()):
                if self.bounded is not None:  # the arena is the bounds'; what these dims use of it
                    row["used_bytes"] = int(p.frame[self.layout.error_slot])
                row["frame"] = "planned" if p.lower_bound_bytes is not None else "formula"
                if p.lower_bound_bytes is None:  # a frame from formulas planned nothing: the bound, on request
                    row["lower_bound_bytes"] = self._lower_bound(p.symbols)
            return seen

    def _lower_bound(self, dims: Mapping[str, int]) -> int:
        _, inputs = input_symbols(self.layout)
        return self.layout.plan(shape_only_args(self.layout, inputs, dims)).lower_bound_bytes

    def memory_at(self, feeds: Mapping[str, Any]) -> dict[str, Any]:
        """The arena at these input shapes: bytes, the planner's lower bound, the bound symbols."""
        args = self.check_feeds(feeds)
        with self._lock:
            plan = self.plan_for(args)
        lower = plan.lower_bound_bytes
        if lower is None:  # frames from formulas plan nothing per shape: the planner's bound, on request
            lower = self.layout.plan(args).lower_bound_bytes
        return {"dims": plan.symbols, "arena_bytes": plan.arena_bytes, "lower_bound_bytes": lower}


def symbolic_interface(graph: Graph, kernels: list[str]) -> Interface:
    return Interface(tuple((p.name, p.type) for p in graph.params),
                     tuple(zip(graph.output_names, (v.type for v in graph.outputs))), 0, tuple(kernels), None)


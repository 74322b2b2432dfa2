"""The reference interpreter: runs any graph with numpy from the registry's reference semantics.

It is the oracle every backend and pass is tested against, not a performance path. It checks the
inputs against the graph's signature (raising ``InputError``) and every op's results against the
declared types (raising ``IRError``), so a wrong inference rule or reference cannot hide. Before an op
runs, each result whose size is known (static, or its symbols bound by the inputs) is checked against
the memory bound (``memory_limits``): too large is an ``InputError`` naming the value and its size,
not a ``MemoryError`` from numpy halfway through the run.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

from .dtypes import DType
from .errors import InputError, IRError, NncError
from .graph import Graph, Module, Op, Value
from .memory_limits import check_allocation
from .types import UNKNOWN, OptionalType, SequenceType, TensorType


def check_inputs(inputs: Sequence[tuple[str, TensorType]], feeds: Mapping[str, Any],
                 defaults: Mapping[str, np.ndarray] | None = None) -> list[np.ndarray]:
    """Match named feeds to a signature, in signature order, with one set of rules and messages for
    every executor (interpreter, JIT, AOT library): missing, unexpected, dtype, shape, and symbols
    bound consistently across inputs. ``defaults`` supplies inputs that may be omitted (weights)."""
    defaults = defaults or {}
    extra = sorted(set(feeds) - {n for n, _ in inputs})
    if extra:
        takes = sorted(n for n, _ in inputs if n not in defaults)
        raise InputError(f"unexpected input(s) {extra}; the model takes {takes}")
    bindings: dict[str, int] = {}
    args = []
    for name, ty in inputs:
        if name not in feeds and name not in defaults:
            raise InputError(f"missing input {name!r} ({ty})")
        if not isinstance(ty, TensorType):
            args.append(check_container(name, ty, feeds[name] if name in feeds else defaults[name]))
            continue
        arr = np.asarray(feeds[name]) if name in feeds else defaults[name]
        try:
            got = DType.from_numpy(arr.dtype)
        except TypeError:
            raise InputError(f"input {name!r}: unsupported dtype {arr.dtype}; expected {ty}") from None
        why = ty.matches(got, tuple(arr.shape), bindings)
        if why:
            raise InputError(f"input {name!r}: {why}")
        args.append(arr)
    return args


def check_container(name: str, ty: SequenceType | OptionalType, value: Any) -> Any:
    """A sequence input is a list (or tuple) of arrays, an optional one an array, a list or None."""
    if isinstance(ty, OptionalType):
        if value is None:
            return None
        ty = ty.elem
        if isinstance(ty, TensorType):
            return check_inputs([(name, ty)], {name: value})[0]
    if not isinstance(value, (list, tuple)):
        raise InputError(f"input {name!r}: expected a list of arrays ({ty}), got {type(value).__name__}")
    out = []
    for i, x in enumerate(value):
        out.append(check_inputs([(f"{name}[{i}]", ty.elem)], {f"{name}[{i}]": x})[0])
    return out


def check_feeds(g: Graph, feeds: Mapping[str, Any], module: Module) -> list[np.ndarray]:
    """Match named feeds to the graph's parameters; bound weights default to their pool values."""
    defaults = {p.name: module.constants[p.binding] for p in g.params if p.binding is not None}
    return check_inputs([(p.name, p.type) for p in g.params], feeds, defaults)


class Interpreter:
    def __init__(self, module: Module, check_types: bool = True):
        self.module = module
        self.check_types = check_types
        self._last_use: dict[int, dict[int, int]] = {}

    def run(self, feeds: Mapping[str, Any], graph: str | None = None) -> dict[str, np.ndarray]:
        g = self.module.graphs[graph] if graph else self.module.main
        args = check_feeds(g, feeds, self.module)
        outs = self.run_graph(g, args)
        return dict(zip(g.output_names, outs))

    def _plan(self, g: Graph) -> dict[int, int]:
        key = id(g)
        if key not in self._last_use:
            last: dict[int, int] = {}
            for i, op in enumerate(g.ops):
                for v in op.operands:
                    last[id(v)] = i
            for v in g.outputs:
                last[id(v)] = len(g.ops)
            self._last_use[key] = last
        return self._last_use[key]

    def run_graph(self, g: Graph, args: Sequence[np.ndarray]) -> list[np.ndarray]:
        env: dict[int, np.ndarray] = {id(p): a for p, a in zip(g.params, args)}
        last = self._plan(g)
        dims = _bound_symbols(g, args)
        with np.errstate(all="ignore"):
            for i, op in enumerate(g.ops):
                for r in op.results:
                    nbytes = _nbytes(r.type, dims)
                    if nbytes is not None:
                        check_allocation(nbytes, f"{op.where()}: %{r.name} ({r.type})", InputError)
                results = self.run_op(op, [env[id(v)] for v in op.operands])
                for r, a in zip(op.results, results):
                    env[id(r)] = a
                for v in op.operands:  # free what is dead, so big models fit
                    if last.get(id(v)) == i and not v.is_param:
                        env.pop(id(v), None)
        return [env[id(v)] for v in g.outputs]

    def run_op(self, op: Op, arrays: list[np.ndarray]) -> list[np.ndarray]:
        if op.opname == "const":
            key = op.attrs["ref"]
            if key not in self.module.constants:
                raise IRError(f"constant @{key} has no data (parse the text with weights=...)")
            return [self.module.constants[key]]
        d = op.opdef
        attrs = d.attrs_with_dynamic(op.attrs, arrays, static=False)
        dyn = d.dynamic_operand_indices()
        positional = [a for i, a in enumerate(arrays) if i not in dyn]
        kwargs = dict(attrs)
        if op.regions:
            kwargs["regions"] = [RegionCall(self, r) for r in op.regions]
        try:
            out = d.reference(*positional, **kwargs)
        except InputError as e:  # bad data (an index out of range): say which op met it, once
            if getattr(e, "op_named", False):
                raise
            err = InputError(f"{op.where()}: {e}")
            err.op_named = True  # type: ignore[attr-defined]
            raise err from None
        except NncError:
            raise
        except Exception as e:
            raise IRError(f"{op.where()}: reference failed: {type(e).__name__}: {e}") from e
        one_container = len(op.results) == 1 and not isinstance(op.results[0].type, TensorType)  # a list is one value
        results = list(out) if isinstance(out, tuple) or (isinstance(out, list) and not one_container) else [out]
        if len(results) != len(op.results):
            raise IRError(f"{op.where()}: reference gave {len(results)} results, declared {len(op.results)}")
        results = [np.asarray(a) if isinstance(r.type, TensorType) else a for r, a in zip(op.results, results)]
        if self.check_types:
            for r, a in zip(op.results, results):
                _check_result(op, r, a)
        return results


class RegionCall:
    """A region as the reference semantics see it: called with its parameters' values, it returns
    its results; ``graph`` gives its signature (a loop stacks nothing when it runs no iteration,
    and needs the types then)."""

    def __init__(self, interp: Interpreter, graph: Graph):
        self.interp = interp
        self.graph = graph

    def __call__(self, *args: Any) -> list[Any]:
        return self.interp.run_graph(self.graph, args)


def _bound_symbols(g: Graph, args: Sequence[np.ndarray]) -> dict[str, int]:
    """The sizes the inputs give the graph's symbolic dims."""
    dims: dict[str, int] = {}
    for p, a in zip(g.params, args):
        if isinstance(p.type, TensorType) and p.type.shape is not None:
            for d, n in zip(p.type.shape, np.shape(a)):
                if isinstance(d, str) and d != UNKNOWN:  # "?" is not a name: two of them may differ
                    dims.setdefault(d, int(n))
    return dims


def _nbytes(t: TensorType, dims: Mapping[str, int]) -> int | None:
    """Bytes of a value of type ``t``, or None while a dim is unknown (or it is not a tensor)."""
    if not isinstance(t, TensorType) or t.shape is None:
        return None
    n = t.dtype.itemsize
    for d in t.shape:
        if isinstance(d, int):
            n *= d
        elif d in dims:
            n *= dims[d]
        else:
            return None
    return n


def _check_result(op: Op, r: Value, a: Any, t: Any = None) -> None:
    t = r.type if t is None else t
    if isinstance(t, OptionalType):
        if a is not None:
            _check_result(op, r, a, t.elem)
        return
    if isinstance(t, SequenceType):
        if not isinstance(a, list):
            raise IRError(f"{op.where()}: reference returned {type(a).__name__} for %{r.name}, declared {t}")
        for x in a:
            _check_result(op, r, x, t.elem)
        return
    if not isinstance(a, np.ndarray):
        raise IRError(f"{op.where()}: reference returned {type(a).__name__} for %{r.name}, declared {t}")
    if a.dtype != t.dtype.numpy:
        raise IRError(f"{op.where()}: reference returned dtype {a.dtype} for %{r.name}, declared {t}")
    if t.shape is not None:
        if a.ndim != len(t.shape) or any(isinstance(d, int) and d != s for d, s in zip(t.shape, a.shape)):
            raise IRError(f"{op.where()}: reference returned shape {list(a.shape)} for %{r.name}, declared {t}")


def interpret(module: Module, feeds: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """Run the module's main graph on named inputs; outputs keyed by output name."""
    return Interpreter(module).run(feeds)

"""The IR's data structures: Value, Op, Graph and Module.

A ``Graph`` is an SSA dataflow function: typed parameters, ops in a valid topological order, and
results. A ``Module`` holds graphs plus the constant pool (weights, keyed by name). Ops own nested
graphs in ``regions`` (fused groups, and later control flow). Values keep their uses up to date
through the mutation methods here, so passes can ask "who reads this?" in O(1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Iterator

import numpy as np

from .dtypes import DType
from .types import TensorType


class Value:
    """One SSA definition: an op result or a graph parameter."""

    __slots__ = ("name", "type", "producer", "index", "uses", "binding")

    def __init__(self, name: str, type: TensorType, producer: Op | None = None, index: int = 0):
        self.name = name
        self.type = type
        self.producer = producer
        self.index = index
        self.uses: list[tuple[Op, int]] = []
        # For graph parameters only: the constant-pool key of a bound weight (a trainable
        # parameter with an initial value); None for ordinary inputs.
        self.binding: str | None = None

    @property
    def dtype(self) -> DType:
        return self.type.dtype

    @property
    def shape(self) -> tuple | None:
        return self.type.shape

    @property
    def is_param(self) -> bool:
        return self.producer is None

    def __repr__(self) -> str:
        return f"%{self.name}: {self.type}"


class Op:
    """One operation: a registered op name, operands, typed attributes, results, regions."""

    __slots__ = ("opname", "operands", "attrs", "results", "regions", "loc")

    def __init__(self, opname: str, operands: list[Value], attrs: dict[str, Any],
                 result_types: list[TensorType], result_names: list[str],
                 regions: list[Graph] | None = None, loc: str | None = None):
        self.opname = opname
        self.operands: list[Value] = []
        self.attrs = dict(attrs)
        self.results = [Value(n, t, self, i) for i, (n, t) in enumerate(zip(result_names, result_types))]
        self.regions: list[Graph] = list(regions or [])
        self.loc = loc  # where it came from (e.g. the ONNX node name), for error messages
        for v in operands:
            self._add_operand(v)

    def _add_operand(self, v: Value) -> None:
        if not isinstance(v, Value):
            raise TypeError(f"{self.opname}: operand must be a Value, got {v!r}")
        v.uses.append((self, len(self.operands)))
        self.operands.append(v)

    def set_operand(self, i: int, v: Value) -> None:
        old = self.operands[i]
        old.uses.remove((self, i))
        self.operands[i] = v
        v.uses.append((self, i))

    def drop_operands(self) -> None:
        for i, v in enumerate(self.operands):
            v.uses.remove((self, i))
        self.operands = []

    @property
    def result(self) -> Value:
        if len(self.results) != 1:
            raise ValueError(f"{self.opname} has {len(self.results)} results")
        return self.results[0]

    @property
    def opdef(self):  # -> OpDef, imported lazily to keep this module free of the registry
        from .registry import get_opdef

        return get_opdef(self.opname)

    def where(self) -> str:
        """A short description for error messages: op name, result names and source location."""
        names = ", ".join("%" + r.name for r in self.results)
        loc = f" (node {self.loc!r})" if self.loc else ""
        return f"{self.opname} -> {names}{loc}"

    def __repr__(self) -> str:
        return f"<Op {self.where()}>"


_NAME_SUFFIX = re.compile(r"^(.*)_(\d+)$")


class Graph:
    """An SSA function: parameters, ops in topological order, and named results."""

    def __init__(self, name: str = "main"):
        self.name = name
        self.params: list[Value] = []
        self.ops: list[Op] = []
        self.outputs: list[Value] = []
        self.output_names: list[str] = []
        self._names: set[str] = set()

    # -- names --------------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        """``base`` if free in this graph, otherwise ``base_1``, ``base_2``, ..."""
        base = base or "v"
        if base not in self._names:
            return base
        k = 1
        while f"{base}_{k}" in self._names:
            k += 1
        return f"{base}_{k}"

    def claim_name(self, name: str) -> str:
        name = self.unique_name(name)
        self._names.add(name)
        return name

    def rename(self, v: Value, name: str) -> None:
        """Give ``v`` the name ``name`` (made unique) and free its old name."""
        if v.name == name:
            return
        self._names.discard(v.name)
        v.name = self.claim_name(name)

    # -- building -----------------------------------------------------------------------------
    def add_param(self, name: str, type: TensorType, binding: str | None = None) -> Value:
        v = Value(self.claim_name(name), type)
        v.binding = binding
        self.params.append(v)
        return v

    def insert(self, op: Op, index: int | None = None) -> Op:
        for r in op.results:
            r.name = self.claim_name(r.name)
        if index is None:
            self.ops.append(op)
        else:
            self.ops.insert(index, op)
        return op

    def set_outputs(self, values: list[Value], names: list[str] | None = None) -> None:
        self.outputs = list(values)
        self.output_names = list(names) if names is not None else [v.name for v in values]

    # -- mutation -----------------------------------------------------------------------------
    def replace_all_uses(self, old: Value, new: Value) -> None:
        """Redirect every reader of ``old`` (ops and graph outputs) to ``new``."""
        for op, i in list(old.uses):
            op.set_operand(i, new)
        self.outputs = [new if v is old else v for v in self.outputs]

    def erase(self, op: Op) -> None:
        """Remove ``op``; its results must be unused."""
        for r in op.results:
            if r.uses or any(r is o for o in self.outputs):
                raise ValueError(f"cannot erase {op.where()}: result %{r.name} is still used")
        op.drop_operands()
        self.ops.remove(op)
        for r in op.results:
            self._names.discard(r.name)

    def values(self) -> Iterator[Value]:
        yield from self.params
        for op in self.ops:
            yield from op.results

    def walk(self) -> Iterator[Op]:
        """Every op, including ops inside regions (pre-order)."""
        for op in self.ops:
            yield op
            for region in op.regions:
                yield from region.walk()

    def to_networkx(self, params: bool = True) -> Any:
        """This graph as a ``networkx.MultiDiGraph`` for analyses (reachability, cycles, dominators).

        Nodes are the ``Op`` objects of ``self.ops`` and, with ``params``, the parameter ``Value``
        objects (sources with ``opname="param"``). Node attributes: ``opname``, ``types`` (result
        types; a parameter's own type), ``names`` (result names) and ``position`` (index in
        ``self.ops``; -1 for a parameter). There is one edge per operand use, from the producing op
        (or parameter) to the reading op, keyed by the operand index, with attributes ``operand``
        (that index), ``value`` (the value's name) and ``result`` (its index among the producer's
        results), so ``add(%x, %x)`` gives two parallel edges; an operand defined outside this graph
        (or a parameter, without ``params``) gives none. ``graph.graph`` holds ``name`` and
        ``outputs``: (node, result index) per returned value. Regions are not expanded (a ``fused``
        op is one node; call ``to_networkx`` on ``op.regions[i]``). The result is a snapshot: later
        changes to this graph do not show in it.
        """
        import networkx as nx  # imported here: it adds ~0.1 s to `import nnc`, and most runs never need it

        nxg = nx.MultiDiGraph(name=self.name)
        node: dict[int, Any] = {}  # id(value) -> its producing node
        if params:
            for p in self.params:
                nxg.add_node(p, opname="param", types=[p.type], names=[p.name], position=-1)
                node[id(p)] = p
        for pos, op in enumerate(self.ops):
            nxg.add_node(op, opname=op.opname, types=[r.type for r in op.results],
                         names=[r.name for r in op.results], position=pos)
            for r in op.results:
                node[id(r)] = op
        for op in self.ops:
            for i, v in enumerate(op.operands):
                src = node.get(id(v))
                if src is not None:
                    nxg.add_edge(src, op, key=i, operand=i, value=v.name, result=v.index)
        nxg.graph["outputs"] = [(node[id(v)], v.index) for v in self.outputs if id(v) in node]
        return nxg

    def clone(self) -> Graph:
        """A structural copy (new values and ops; attribute values are immutable and shared)."""
        g = Graph(self.name)
        mapping: dict[int, Value] = {}
        for p in self.params:
            q = g.add_param(p.name, p.type, p.binding)
            mapping[id(p)] = q
        for op in self.ops:
            new = Op(op.opname, [mapping[id(v)] for v in op.operands], op.attrs, [r.type for r in op.results],
                     [r.name for r in op.results], [r.clone() for r in op.regions], op.loc)
            g.ops.append(new)
            for r, nr in zip(op.results, new.results):
                mapping[id(r)] = nr
                g._names.add(nr.name)
        g.set_outputs([mapping[id(v)] for v in self.outputs], list(self.output_names))
        return g

    def __repr__(self) -> str:
        return f"<Graph @{self.name}: {len(self.params)} params, {len(self.ops)} ops>"


@dataclass
class Module:
    """A compilation unit: named graphs plus the constant pool shared by them."""

    name: str = "module"
    graphs: dict[str, Graph] = field(default_factory=dict)
    constants: dict[str, np.ndarray] = field(default_factory=dict)
    # Types of pool entries whose data is absent (a module parsed from text without weights).
    constant_types: dict[str, TensorType] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    # Results of analyses and plans attached by passes for later consumers (the memory plan, fusion
    # decisions). Not part of the text form; a pass that changes the graph drops stale entries.
    annotations: dict[str, object] = field(default_factory=dict)

    @property
    def main(self) -> Graph:
        if "main" in self.graphs:
            return self.graphs["main"]
        return next(iter(self.graphs.values()))

    def clone(self) -> Module:
        """A copy whose graphs can be rewritten freely; the constant arrays are shared (passes add
        new pool entries rather than writing into existing ones)."""
        return Module(self.name, {k: g.clone() for k, g in self.graphs.items()}, dict(self.constants),
                      dict(self.constant_types), dict(self.metadata), {})

    def add_graph(self, graph: Graph) -> Graph:
        self.graphs[graph.name] = graph
        return graph

    def add_constant(self, name: str, array: np.ndarray) -> str:
        """Store ``array`` in the pool under a free key derived from ``name``; return the key."""
        key = name or "const"
        if key in self.constants or key in self.constant_types:
            k = 1
            while f"{key}_{k}" in self.constants or f"{key}_{k}" in self.constant_types:
                k += 1
            key = f"{key}_{k}"
        arr = np.asarray(array)
        self.constants[key] = arr
        self.constant_types[key] = TensorType(DType.from_numpy(arr.dtype), tuple(arr.shape))
        return key

    def constant_type(self, key: str) -> TensorType:
        return self.constant_types[key]

    def has_data(self, key: str) -> bool:
        return key in self.constants

    def weights_bytes(self) -> int:
        return sum(int(a.nbytes) for a in self.constants.values())

    def __str__(self) -> str:
        from .printer import print_module

        return print_module(self)


def region_constant_refs(ops: Iterable[Op]) -> set[str]:
    """The constant-pool keys read by ``const`` ops inside the regions of ``ops`` (at any depth):
    what a module made of ``ops`` must carry besides the constants they read directly."""
    refs: set[str] = set()
    for op in ops:
        for region in op.regions:
            refs.update(o.attrs["ref"] for o in region.walk() if o.opname == "const")
    return refs


def iter_values(values: Iterable[Value]) -> list[str]:
    return ["%" + v.name for v in values]

"""networkx and the IR: ``Graph.to_networkx``, the verifier's structural errors (two producers, declared
types that contradict inference, cycles), and the hand-written graph walks that nnc keeps for speed
checked against networkx on random graphs."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nnc.ir import Builder, Graph, Module, Op, VerifyError, interpret, parse_module, tensor, verify_module
from nnc.ir.grads.engine import _on_path
from nnc.passes import PassManager
from nnc.passes.cost import op_flops
from nnc.passes.fuse import Fuse
from nnc.passes.training.remat import _closure_flops

F33 = tensor("f32", [3, 3])


def small() -> tuple[Module, dict]:
    """x, w -> a = add(x, x); m = matmul(a, w); (vals, idx) = topk(m); y = relu(vals)."""
    m = Module("m")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", F33)
    w = g.add_param("w", F33)
    a = b.op("add", x, x, name="a")
    mm = b.op("matmul", a, w, name="mm")
    vals, idx = b.op("topk", mm, k=2, names=["vals", "idx"])
    y = b.op("relu", vals, name="y")
    g.set_outputs([y, idx], ["y", "idx"])
    return m, {"x": x, "w": w, "a": a.producer, "mm": mm.producer, "topk": vals.producer, "y": y.producer}


# -- to_networkx -----------------------------------------------------------------------------------

def test_to_networkx_nodes_are_ops_and_params():
    m, n = small()
    nxg = m.main.to_networkx()
    assert isinstance(nxg, nx.MultiDiGraph)
    assert set(nxg.nodes) == {n["x"], n["w"], n["a"], n["mm"], n["topk"], n["y"]}
    assert nxg.nodes[n["x"]] == {"opname": "param", "types": [F33], "names": ["x"], "position": -1}
    assert nxg.nodes[n["topk"]] == {"opname": "topk", "types": [tensor("f32", [3, 2]), tensor("i64", [3, 2])],
                                    "names": ["vals", "idx"], "position": 2}
    assert nxg.nodes[n["y"]]["position"] == 3
    assert nxg.graph["name"] == "main"
    assert nxg.graph["outputs"] == [(n["y"], 0), (n["topk"], 1)]


def test_to_networkx_has_one_edge_per_operand_use():
    m, n = small()
    nxg = m.main.to_networkx()
    # add(%x, %x): two parallel edges, keyed by operand index
    assert sorted(nxg[n["x"]][n["a"]]) == [0, 1]
    assert nxg.edges[n["x"], n["a"], 1] == {"operand": 1, "value": "x", "result": 0}
    assert nxg.edges[n["w"], n["mm"], 1] == {"operand": 1, "value": "w", "result": 0}
    assert nxg.edges[n["topk"], n["y"], 0] == {"operand": 0, "value": "vals", "result": 0}
    assert nxg.number_of_edges() == 6  # x->a twice, a->mm, w->mm, mm->topk, topk->y
    assert nx.is_directed_acyclic_graph(nxg)
    assert list(nx.topological_sort(nxg))[-3:] == [n["mm"], n["topk"], n["y"]]


def test_to_networkx_without_params_and_regions_stay_folded():
    m, n = small()
    nxg = m.main.to_networkx(params=False)
    assert set(nxg.nodes) == {n["a"], n["mm"], n["topk"], n["y"]}
    assert nxg.number_of_edges() == 3
    m2 = Module("f")
    g = m2.add_graph(Graph("main"))
    b = Builder(m2, g)
    x = g.add_param("x", F33)
    g.set_outputs([b.op("neg", b.op("relu", b.op("exp", x)))])
    PassManager("fuse").run(m2)
    nxg = g.to_networkx()
    assert [d["opname"] for _, d in nxg.nodes(data=True)] == ["param", "fused"]
    inner = g.ops[0].regions[0].to_networkx()
    assert sorted(d["opname"] for _, d in inner.nodes(data=True)) == ["exp", "neg", "param", "relu"]


def test_to_networkx_is_a_snapshot():
    m, n = small()
    nxg = m.main.to_networkx()
    Builder(m, m.main).op("neg", n["y"].results[0], name="late")
    assert len(nxg) == 6 and nxg.number_of_edges() == 6


def test_the_writing_a_pass_example():
    """The snippet in docs/writing-a-pass.md section 5, on x -> r = relu(x) -> (a = neg(r), b = exp(r))
    -> s = add(a, b) -> y = tanh(s), plus an unused sigmoid(x)."""
    m = Module("doc")
    graph = m.add_graph(Graph("main"))
    b = Builder(m, graph)
    x = graph.add_param("x", F33)
    r = b.op("relu", x, name="r")
    b.op("sigmoid", x, name="unused")
    y = b.op("tanh", b.op("add", b.op("neg", r, name="a"), b.op("exp", r, name="e"), name="s"), name="y")
    graph.set_outputs([y])
    names = {op.results[0].name: op for op in graph.ops}

    nxg = graph.to_networkx()
    needed = set()
    for node, _ in nxg.graph["outputs"]:
        needed |= {node} | nx.ancestors(nxg, node)
    unused = [op for op in graph.ops if op not in needed]

    nxg.add_edges_from(("inputs", p) for p in graph.params)
    idom = nx.immediate_dominators(nxg, "inputs")
    node, chain = nxg.graph["outputs"][0][0], []
    while node != "inputs":
        chain.append(node)
        node = idom[node]

    assert unused == [names["unused"]]
    assert chain == [names["y"], names["s"], names["r"], x]


# -- verifier: two producers -----------------------------------------------------------------------

def chain() -> tuple[Module, list[Op]]:
    m = Module("c")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", F33)
    a = b.op("relu", x, name="a")
    c = b.op("neg", a, name="c")
    d = b.op("exp", c, name="d")
    g.set_outputs([d])
    return m, list(g.ops)


def test_verifier_rejects_a_result_shared_by_two_ops():
    m, (relu, neg, exp) = chain()
    exp.results[0] = neg.results[0]  # exp claims neg's result as its own
    with pytest.raises(VerifyError, match=r"at exp -> %c: result %c has two producers: this op and neg -> %c"):
        verify_module(m)


def test_verifier_rejects_a_parameter_that_an_op_produces():
    m, (relu, neg, exp) = chain()
    m.main.params.append(neg.results[0])
    with pytest.raises(VerifyError, match=r"parameter %c is also a result of neg -> %c"):
        verify_module(m)


def test_verifier_rejects_an_op_result_that_is_a_parameter():
    m, (relu, neg, exp) = chain()
    neg.results[0] = m.main.params[0]
    with pytest.raises(VerifyError, match=r"at neg -> %x: result %x is a graph parameter"):
        verify_module(m)


def test_verifier_rejects_an_op_listed_twice():
    m, (relu, neg, exp) = chain()
    m.main.ops.insert(2, neg)
    with pytest.raises(VerifyError, match=r"%c is defined twice by neg -> %c: it is listed twice"):
        verify_module(m)


def test_verifier_rejects_two_values_with_one_name():
    m, (relu, neg, exp) = chain()
    neg.results[0].name = "x"
    with pytest.raises(VerifyError, match=r"%x is defined twice: by parameter and by neg -> %x"):
        verify_module(m)


def test_verifier_rejects_a_wrong_result_index():
    m, _ = small()
    topk = m.main.ops[2]
    topk.results[1].index = 0
    with pytest.raises(VerifyError, match=r"at topk -> %vals, %idx: result %idx is result 1 but records index 0"):
        verify_module(m)


# -- verifier: declared types against inference ----------------------------------------------------

@pytest.mark.parametrize("declared", [tensor("f32", [3, 3]), tensor("f16", [3, 2])])  # wrong shape, wrong dtype
def test_verifier_rejects_declared_types_that_contradict_inference(declared):
    m, _ = small()
    m.main.ops[2].results[0].type = declared
    want = (f"at topk -> %vals, %idx: declared result types {declared}, i64[3,2] but inference gives "
            "f32[3,2], i64[3,2]")
    with pytest.raises(VerifyError) as e:
        verify_module(m)
    assert want in str(e.value)


def test_verifier_checks_every_result_of_a_multi_result_op():
    m, _ = small()
    m.main.ops[2].results[1].type = tensor("i32", [3, 2])  # topk indices are i64
    with pytest.raises(VerifyError, match=r"declared result types f32\[3,2\], i32\[3,2\] but inference gives"):
        verify_module(m)


def test_verifier_rejects_a_parsed_op_whose_type_contradicts_inference():
    text = ("graph @main(%a: f32[2,3], %b: f32[3,4]) -> (y: f32[2,3]) {\n"
            "  %y = matmul(%a, %b) : f32[2,3]\n  return %y\n}")
    with pytest.raises(VerifyError, match=r"matmul -> %y: declared result types f32\[2,3\] but inference gives "
                                          r"f32\[2,4\]"):
        verify_module(parse_module(text))


# -- verifier: order and cycles --------------------------------------------------------------------

def test_verifier_names_the_ops_of_a_cycle():
    m, (relu, neg, exp) = chain()
    relu.set_operand(0, exp.results[0])  # relu reads exp, which reads neg, which reads relu
    with pytest.raises(VerifyError) as e:
        verify_module(m)
    msg = str(e.value)
    assert "at relu -> %a: operand 0 %d is not defined before use: the ops form a cycle: " in msg
    cycle = msg.split("the ops form a cycle: ")[1]
    # the cycle is reported starting anywhere; each step names the op and the value it passes on
    steps = {"relu -> %a --%a-->", "neg -> %c --%c-->", "exp -> %d --%d-->"}
    assert all(s in cycle for s in steps)
    assert cycle.count("-->") == 3


def test_verifier_explains_ops_out_of_topological_order():
    m, (relu, neg, exp) = chain()
    m.main.ops[:] = [neg, relu, exp]
    with pytest.raises(VerifyError, match=r"at neg -> %c: operand 0 %a is not defined before use: its producer "
                                          r"relu -> %a comes later \(position 1\); the ops are not in topological"):
        verify_module(m)


def test_verifier_names_an_operand_from_another_graph():
    m, (relu, neg, exp) = chain()
    other, _ = chain()
    neg.set_operand(0, other.main.ops[0].results[0])
    with pytest.raises(VerifyError, match=r"operand 0 %a is not defined before use: it is not a parameter or a "
                                          r"result of an op of this graph"):
        verify_module(m)


# -- random graphs: the verifier's order check against networkx ------------------------------------

OPS = ("relu", "neg", "tanh", "add", "mul", "matmul")


@st.composite
def random_graphs(draw) -> Module:
    """A random DAG of f32[3,3] ops (elementwise and matmul) over two parameters, with random outputs
    (so some ops are dead and some values are read by several ops)."""
    m = Module("r")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    values = [g.add_param("p0", F33), g.add_param("p1", F33)]
    n = draw(st.integers(1, 14))
    for i in range(n):
        opname = draw(st.sampled_from(OPS))
        arity = 1 if opname in ("relu", "neg", "tanh") else 2
        operands = [values[draw(st.integers(0, len(values) - 1))] for _ in range(arity)]
        values.append(b.op(opname, *operands, name=f"v{i}"))
    results = values[2:]
    outs = draw(st.lists(st.sampled_from(results), min_size=1, max_size=3, unique_by=id))
    if results[-1] not in outs:
        outs.append(results[-1])
    g.set_outputs(outs, [f"out{i}" for i in range(len(outs))])
    return m


@settings(max_examples=60, deadline=None)
@given(random_graphs(), st.randoms(use_true_random=False))
def test_verifier_order_check_agrees_with_networkx(m, rnd):
    """The verifier's linear defined-before-use scan accepts exactly the topological orders."""
    g = m.main
    nxg = g.to_networkx()
    rnd.shuffle(g.ops)
    position = {op: i for i, op in enumerate(g.ops)}
    is_topological = all(position[u] < position[v] for u, v in nxg.edges() if isinstance(u, Op))
    try:
        verify_module(m)
        accepted = True
    except VerifyError as e:
        assert "not in topological order" in str(e)
        accepted = False
    assert accepted == is_topological


# -- fusion legality -------------------------------------------------------------------------------

def groups_of(fused_module: Module, original: Graph) -> list[set]:
    by_name = {r.name: op for op in original.ops for r in op.results}
    return [{by_name[o.results[0].name] for o in op.regions[0].ops}
            for op in fused_module.main.ops if op.opname == "fused"]


def is_convex(nxg: nx.MultiDiGraph, group: set) -> bool:
    """No path leaves the group and comes back into it (fusing it would close a cycle)."""
    below = set().union(*(nx.descendants(nxg, op) for op in group)) - group
    above = set().union(*(nx.ancestors(nxg, op) for op in group))
    return not (below & above)


@settings(max_examples=80, deadline=None)
@given(random_graphs())
def test_fusion_groups_are_convex(m):
    """Fusion legality holds by construction (see passes/fuse.py); networkx checks it on every group,
    and the fused graph verifies and computes the same outputs."""
    original = m.clone()
    nxg = original.main.to_networkx()
    rng = np.random.default_rng(0)
    feeds = {p.name: rng.uniform(-1, 1, (3, 3)).astype(np.float32) for p in m.main.params}
    want = interpret(m, feeds)
    Fuse().run(m)
    verify_module(m)
    for group in groups_of(m, original.main):
        assert len(group) >= 2 and is_convex(nxg, group)
    got = interpret(m, feeds)
    for k in want:
        np.testing.assert_allclose(got[k], want[k], rtol=1e-6, atol=1e-6)


def test_fusion_refuses_a_group_that_a_path_leaves_and_reenters():
    """y = add(r, softmax(r)) with r = relu(x): fusing {relu, add} would put softmax both before and
    after the group."""
    m = Module("loop")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    x = g.add_param("x", F33)
    r = b.op("relu", x, name="r")
    s = b.op("softmax", r, axis=1, name="s")
    y = b.op("add", r, s, name="y")
    g.set_outputs([b.op("neg", y, name="out")])
    original = m.clone()
    nxg = original.main.to_networkx()
    assert not is_convex(nxg, {op for op in original.main.ops if op.opname in ("relu", "add")})
    f = Fuse(explain=True)
    f.run(m)
    verify_module(m)
    assert [op.opname for op in g.ops] == ["relu", "softmax", "fused"]
    assert [o.opname for o in g.ops[2].regions[0].ops] == ["add", "neg"]
    assert "relu %r not fused into the group of %y: %r is also read outside the group" in f.stats["rejected"]


def test_fused_epilogue_keeps_only_what_reads_the_anchor():
    """The networkx descendants of the anchor inside a group: ops that do not read the matmul
    (directly or through members) stay outside the epilogue."""
    m = Module("epi")
    g = m.add_graph(Graph("main"))
    b = Builder(m, g)
    a, w, c = (g.add_param(n, F33) for n in "awc")
    pre = b.op("neg", b.op("relu", c, name="c1"), name="c2")   # before the anchor, not reading it
    mm = b.op("matmul", a, w, name="mm")
    t = b.op("tanh", b.op("add", mm, pre, name="s"), name="t")
    g.set_outputs([t])
    Fuse().run(m)
    verify_module(m)
    fused = [op for op in g.ops if op.opname == "fused"]
    kinds = sorted((op.attrs["kind"], tuple(o.opname for o in op.regions[0].ops)) for op in fused)
    assert kinds == [("elementwise", ("relu", "neg")), ("matmul", ("matmul", "add", "tanh"))]


# -- hand-written walks kept for speed -------------------------------------------------------------

def op_ancestors(nxg: nx.MultiDiGraph, ops) -> set:
    found = set(ops)
    for op in ops:
        found |= nx.ancestors(nxg, op)
    return {v for v in found if isinstance(v, Op)}


@settings(max_examples=60, deadline=None)
@given(random_graphs(), st.data())
def test_autodiff_path_agrees_with_networkx(m, data):
    """``_on_path`` (two linear sweeps over the op order) == descendants of ``wrt`` that are ancestors
    of the loss."""
    g = m.main
    nxg = g.to_networkx()
    candidates = g.params + [r for op in g.ops for r in op.results]
    wrt = data.draw(st.lists(st.sampled_from(candidates), min_size=1, max_size=3, unique_by=id))
    loss = data.draw(st.sampled_from([r for op in g.ops for r in op.results]))
    downstream = set()
    for w in wrt:
        readers = {u for u, _ in w.uses}
        downstream |= readers
        for r in readers:
            downstream |= nx.descendants(nxg, r)
    upstream = {loss.producer} | nx.ancestors(nxg, loss.producer)
    want = [op for op in g.ops if op in downstream and op in upstream]
    assert _on_path(g, loss, wrt) == want


@settings(max_examples=60, deadline=None)
@given(random_graphs(), st.data())
def test_remat_closure_agrees_with_networkx(m, data):
    """``_closure_flops`` (a DFS that stops at kept values) == FLOPs of the producer's ancestors in the
    graph restricted to edges carrying values that were freed after the forward pass."""
    g = m.main
    results = [r for op in g.ops for r in op.results]
    kept = {id(v) for v in data.draw(st.lists(st.sampled_from(results), unique_by=id))}
    v = data.draw(st.sampled_from(results))
    forward = {id(op) for op in g.ops}
    nxg = g.to_networkx(params=False)  # every edge leaves an op: the value it carries is a result
    freed = nx.subgraph_view(nxg, filter_edge=lambda u, w, k: id(u.results[nxg.edges[u, w, k]["result"]]) not in kept)
    closure = {v.producer} | nx.ancestors(freed, v.producer)
    assert _closure_flops(v, kept - {id(v)}, forward) == sum(op_flops(op) for op in closure)


@settings(max_examples=60, deadline=None)
@given(random_graphs())
def test_dce_keeps_exactly_the_ancestors_of_the_outputs(m):
    g = m.main
    nxg = g.to_networkx()
    live = op_ancestors(nxg, [p for p, _ in nxg.graph["outputs"] if isinstance(p, Op)])
    want = [r.name for op in g.ops if op in live for r in op.results]
    PassManager("dce").run(m)
    assert [r.name for op in g.ops for r in op.results] == want

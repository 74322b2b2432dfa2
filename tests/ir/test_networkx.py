"""networkx and the IR: ``Graph.to_networkx``, the verifier's structural errors (two producers, declared
types that contradict inference, cycles), and the hand-written graph walks that nnc keeps for speed
checked against networkx on random graphs."""

from __future__ import annotations

import networkx as nx

from nnc.ir import Builder, Graph, Module, tensor
from nnc.passes import PassManager

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

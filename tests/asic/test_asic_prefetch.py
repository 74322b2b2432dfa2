"""Weight prefetch (backends/asic/prefetch.py): a batch-1 fully connected layer after conv layers gets
its weights copied into the resident region while the convs run; the run stays bit-exact with the
integer graph, its weight loads read the region, and the copies only use DRAM time the other
transfers leave, so the layer's time falls."""

from __future__ import annotations

import numpy as np

from nnc.backends import asic
from nnc.backends.asic.isa import ACT_BASE
from nnc.ir import Builder, DType, Graph, Module, TensorType, interpret, verify_module


def _se_like(rng):
    """conv 3x3 (32 -> 64 over 24x24) -> conv 1x1 -> global pool -> fc 64 -> 512 (a 1x1 conv on 1x1)."""
    m = Module()
    g = m.add_graph(Graph("main"))
    x = g.add_param("x", TensorType(DType.i8, (1, 32, 24, 24)))
    b = Builder(m)

    def conv(v, cin, cout, k):
        w = rng.integers(-128, 128, (cout, cin, k, k)).astype(np.int8)
        acc = b.op("qconv", v, b.const(w), b.const(rng.integers(-500, 500, (cout,)).astype(np.int32)),
                   strides=(1, 1), pads=(k // 2,) * 4, group=1, x_zero_point=0)
        return b.op("requantize", acc, b.const(np.int32(1 << 30)), b.const(np.int32(44)))

    h = conv(conv(x, 32, 64, 3), 64, 64, 1)
    acc = b.op("reduce_sum", b.op("cast", h, to=DType.i32), axes=(2, 3), keepdims=1)
    pooled = b.op("requantize", acc, b.const(np.int32(1 << 30)), b.const(np.int32(39)))
    g.set_outputs([conv(pooled, 64, 512, 1)], ["y"])
    verify_module(m)
    return m


def test_fc_weights_are_prefetched_and_the_run_stays_exact():
    rng = np.random.default_rng(0)
    m = _se_like(rng)
    feeds = {"x": rng.integers(-128, 128, (1, 32, 24, 24)).astype(np.int8)}
    want = interpret(m, feeds)["y"]
    runs = {}
    for on in (True, False):
        exe = asic.compile(m, {"asic_config": {"prefetch_weights": on}})
        assert np.array_equal(exe.run(feeds)["y"], want)
        runs[on] = exe
    on, off = runs[True], runs[False]
    assert on.report["resident_activations"]["prefetched_layers"] == 1
    assert on.report["resident_activations"]["prefetched_bytes"] == 64 * 512  # the fc's whole [64, 512]
    assert off.report["resident_activations"]["prefetched_layers"] == 0
    assert [i.op for i in off.program.instrs].count("prefetch") == 0
    fc = on.program.layer_info[-1]
    i0, i1 = fc["instrs"]
    w_loads = [ins for ins in on.program.instrs[i0:i1] if ins.op == "load" and ins.args["mem"] == "wspad"]
    assert w_loads and all(ins.args["src"] >= ACT_BASE for ins in w_loads)
    # the copies overlap the convs: the fc's span shrinks, and the whole run is no slower
    span = {k: r.report["layers"][-1]["end_cycle"] - r.report["layers"][-1]["start_cycle"] for k, r in runs.items()}
    assert span[True] < span[False]
    assert on.report["cycles"] <= off.report["cycles"]
    # DRAM still moves every weight byte once: the fc's now as the prefetch, booked to the fc layer
    assert on.report["dram_bytes"] == off.report["dram_bytes"]
    rep = on.report["layers"]
    assert rep[-1]["prefetch_bytes"] == 64 * 512 and rep[-1]["prefetch_cycles"] > 0
    assert rep[-1]["dram_bytes"] >= 64 * 512 and all(la["prefetch_bytes"] == 0 for la in rep[:-1])
    assert [la["dram_bytes"] for la in rep[:-1]] == [la["dram_bytes"] for la in off.report["layers"][:-1]]

"""The host's compute time: a roofline of the edge CPU named in the config.

The ops the chip cannot take run on the host CPU of the edge device (compiled by the x86 backend in
this simulation, ``host.py``). Their time is not measured on the build machine (a many-core AVX-512
server shared with other jobs says nothing about the edge device and changes from run to run) but
modelled on the preset's host: ``host_cpu`` (a name), ``host_gflops`` (peak fp32 FLOP/s),
``host_gbps`` (sustained memory bandwidth) and ``host_op_overhead_ns`` (a kernel's fixed cost). Per op

    seconds = max(flops / host_gflops, bytes / host_gbps) + host_op_overhead_ns

with bytes = every operand plus every result (ops unfused: an upper bound where x86 fuses a chain)
and flops from ``nnc.passes.cost.op_flops`` (2 x MACs for contractions, one per result element
otherwise), times ``FLOPS_PER_ELEMENT`` for ops costlier than one arithmetic instruction, reductions
counting their input elements. Ops that only relabel a buffer (reshape and kin) cost the overhead.
"""

from __future__ import annotations

import dataclasses
import math

from nnc.ir import Op, Trait, Value
from nnc.passes.cost import op_flops

from .config import AsicConfig

VIEW_OPS = frozenset({"reshape", "flatten", "squeeze", "unsqueeze", "identity"})
# fp32 operations per result element (vectorised polynomial exp/erf: ~10 operations)
FLOPS_PER_ELEMENT = {
    "quantize": 4,        # scale, round, add zero point, clamp
    "dequantize": 2,      # subtract zero point, scale
    "hard_sigmoid": 4,    # multiply-add, min, max
    "hard_swish": 5,      # hard_sigmoid then a multiply
    "sigmoid": 12, "silu": 13, "tanh": 12, "exp": 10, "log": 10, "erf": 12, "gelu": 15,
    "softmax": 14, "log_softmax": 14, "softplus": 12, "mish": 25,
}


@dataclasses.dataclass
class HostCost:
    flops: int
    bytes: int
    seconds: float
    bound: str          # compute | memory | overhead

    def cycles(self, cfg: AsicConfig) -> int:
        """The cost in chip clock cycles (the timeline's unit)."""
        return max(1, math.ceil(self.seconds * cfg.clock_ghz * 1e9))


def _nbytes(v: Value) -> int:
    t = v.type
    return int(t.numel or 0) * t.dtype.itemsize if t.is_static else 0


def host_flops(op: Op) -> int:
    if op.opname in VIEW_OPS:
        return 0
    if op.opdef.traits & Trait.REDUCTION and op.operands and op.operands[0].type.is_static:
        return int(op.operands[0].type.numel or 0)
    return op_flops(op) * FLOPS_PER_ELEMENT.get(op.opname, 1)


def host_cost(cfg: AsicConfig, op: Op) -> HostCost:
    overhead = cfg.host_op_overhead_ns * 1e-9
    if op.opname in VIEW_OPS:
        return HostCost(0, 0, overhead, "overhead")
    flops = host_flops(op)
    nbytes = sum(_nbytes(v) for v in op.operands) + sum(_nbytes(r) for r in op.results)
    compute = flops / (cfg.host_gflops * 1e9)
    memory = nbytes / (cfg.host_gbps * 1e9)
    bound = "compute" if compute >= memory else "memory"
    if max(compute, memory) < overhead:
        bound = "overhead"
    return HostCost(flops, nbytes, max(compute, memory) + overhead, bound)

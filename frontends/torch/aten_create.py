"""Converters for ATen tensor factories: arange, full/zeros/ones/empty (and their ``_like`` and
``new_`` forms), ``scalar_tensor``, ``fill``.

Static sizes give constants (folded into the module's constant pool); a size with run-time dims
gives ``expand`` of a scalar, and an arange with a run-time bound gives ``range``. ``empty`` is
zeros: its contents are unspecified in torch, and every use overwrites them.
"""

from __future__ import annotations

import numpy as np

from nnc.ir import Value

from .context import AtenNode, TorchContext
from .registry import aten


def _filled(ctx: TorchContext, node: AtenNode, size, value) -> Value:
    dt = node.out_dtype()
    size = list(size)
    if all(isinstance(d, int) for d in size):
        return ctx.const(np.full(tuple(size), value, dt.numpy), name=ctx._name("c"))
    shape = ctx.shape_operand(size)
    return ctx.op_dynamic("expand", [ctx.scalar(value, dt)], {"shape": shape})


@aten("aten.full.default", "aten.zeros.default", "aten.ones.default", "aten.empty.memory_format",
      "aten.empty.default", "aten.new_full.default", "aten.new_zeros.default", "aten.new_ones.default",
      "aten.new_empty.default", "aten.empty_strided.default", "aten.new_empty_strided.default")
def full(ctx: TorchContext, node: AtenNode):
    packet = node.target.split(".")[1]
    first = node.positional[0]
    size = node.positional[1] if packet.startswith("new_") else first
    value = {"zeros": 0, "ones": 1}.get(packet.replace("new_", ""), None)
    if value is None:
        value = node.args.get("fill_value", 0) if "full" in packet else 0
    if isinstance(value, Value):
        raise node.unsupported("a run-time fill value")
    return _filled(ctx, node, size, value)


@aten("aten.full_like.default", "aten.zeros_like.default", "aten.ones_like.default", "aten.empty_like.default")
def full_like(ctx: TorchContext, node: AtenNode):
    x = node.positional[0]
    packet = node.target.split(".")[1]
    value = {"zeros_like": 0, "ones_like": 1, "empty_like": 0}.get(packet)
    if value is None:
        value = node.positional[1]
    if x.shape is not None and all(isinstance(d, int) for d in x.shape):
        return _filled(ctx, node, x.shape, value)
    return ctx.op_dynamic("expand", [ctx.scalar(value, node.out_dtype())], {"shape": ctx.op("shape", x)})


@aten("aten.fill.Scalar", "aten.fill.Tensor")
def fill(ctx: TorchContext, node: AtenNode):
    x, value = node.positional[:2]
    dt = node.out_dtype()
    v = ctx.tensor(value, dt)
    if x.shape is not None and all(isinstance(d, int) for d in x.shape):
        return ctx.op("expand", v, shape=tuple(x.shape))
    return ctx.op_dynamic("expand", [v], {"shape": ctx.op("shape", x)})


@aten("aten.scalar_tensor.default")
def scalar_tensor(ctx: TorchContext, node: AtenNode):
    return ctx.tensor(node.positional[0], node.out_dtype())


@aten("aten.arange.default", "aten.arange.start", "aten.arange.start_step")
def arange(ctx: TorchContext, node: AtenNode):
    dt = node.out_dtype()
    if node.target == "aten.arange.default":
        start, end, step = 0, node.positional[0], 1
    else:
        start, end = node.positional[:2]
        step = node.arg("step", 1)
    if not any(isinstance(v, Value) for v in (start, end, step)):
        return ctx.const(np.arange(start, end, step).astype(dt.numpy), name=ctx._name("c"))
    return ctx.op("range", ctx.tensor(start, dt), ctx.tensor(end, dt), ctx.tensor(step, dt))



"""Assemble a training step: one graph that runs forward, loss, backward and optimizer updates.

``build_train_step(model, loss=..., optimizer=...)`` returns a new module whose main graph takes

    the model's data inputs, the labels, ``lr`` (f32 scalar) and ``step`` (i64 scalar, counting
    from 1), then every trained parameter (named as in the model), every buffer (batch-norm running
    statistics of a training-form model) and every optimizer state tensor

(parameters, buffers and state are parameters bound to their initial values in the constant pool)
and returns ``loss``, then ``<name>.new`` for each parameter, buffer and state tensor in that
order, then ``<name>.grad`` for each parameter when ``gradients`` is set. A ``StepSignature``
lists these names. Frozen weights become constants. Data inputs may have symbolic dims (a batch
``N``, a sequence length): the step is then shape-generic, autodiff taking the sizes it needs at run
time (``ir/grads``); a run-time shape computation of the model is folded into reshapes that copy
the input's dims first (``fold-symbolic-shapes``), so the gradients' types stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

from nnc.ir import Builder, DType, ModelError, Module
from nnc.ir.grads.util import scalar_attr
from nnc.ir.types import TensorType

from ..fold_symbolic_shapes import FoldSymbolicShapes
from .autodiff import grad
from .losses import add_loss
from .optimizers import OptimizerConfig, append_updates
from .params import freeze_values, running_stats, select_parameters


@dataclass
class StepSignature:
    """Names of a training step's inputs and outputs (see the module docstring)."""

    data_inputs: list[str]
    label: str
    lr: str
    step: str
    params: list[str]
    buffers: list[str]
    state: list[str]
    gradients: bool
    loss: str = "loss"
    bindings: dict[str, str] = field(default_factory=dict)  # bound input -> pool key (initial value)

    def new(self, name: str) -> str:
        return f"{name}.new"

    def grad(self, name: str) -> str:
        return f"{name}.grad"

    def to_json(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in ("data_inputs", "label", "lr", "step", "params", "buffers", "state",
                                                "gradients", "loss")}


def key_dropouts(m: Module, step) -> int:
    """Training-mode ``dropout`` ops become ``keyed_dropout`` keyed by the step count: a fresh mask
    every step from a counter generator that x86 reproduces bit for bit (and remat may recompute).
    Each op gets its own seed (its ``seed`` attribute, else its position). Dropout with a run-time
    ratio or training flag stays as it is (reference target only). Returns how many were keyed."""
    g = m.main
    n = 0
    for i, op in enumerate(list(g.ops)):
        if op.opname != "dropout":
            continue
        ratio, ratio_rt = scalar_attr(m, op, "ratio", 1)
        training, training_rt = scalar_attr(m, op, "training", 2)
        if ratio_rt is not None or training_rt is not None:
            continue
        ratio = 0.5 if ratio is None else ratio
        if training == 0 or ratio == 0:
            continue
        seed = op.attrs.get("seed")
        b = Builder(m, g, loc=op.loc)
        b.set_insertion_before(op)
        out, mask = b.op("keyed_dropout", op.operands[0], step, ratio=ratio,
                         seed=int(seed) if seed is not None and seed == seed else 1000 + i,
                         names=[r.name + ".keyed" for r in op.results])
        g.replace_all_uses(op.results[0], out)
        g.replace_all_uses(op.results[1], mask)
        g.erase(op)
        n += 1
    return n


def build_train_step(model: Module, loss: str = "cross_entropy", optimizer: OptimizerConfig | None = None,
                     trainable: Iterable[str] | None = None, frozen: Iterable[str] | None = None,
                     loss_output: str | int | None = None, label_name: str = "labels", reduction: str = "mean",
                     label_smoothing: float = 0.0, gradients: bool = True) -> tuple[Module, StepSignature]:
    """The training-step module for ``model`` (which is not modified) and its signature."""
    optimizer = optimizer or OptimizerConfig.make("sgd", 1e-2)
    m = model.clone()
    g = m.main
    for p in g.params:
        if not isinstance(p.type, TensorType) or p.type.shape is None:
            raise ModelError(f"input {p.name} has the type {p.type}: a training step needs tensor inputs of known "
                             "rank (give the input shapes: input_shapes={...})")
        if p.binding is not None and not p.type.is_static:
            raise ModelError(f"parameter {p.name} has the symbolic type {p.type}: weights must have static shapes")
    data_inputs = [p.name for p in g.params if p.binding is None]
    FoldSymbolicShapes().run(m)  # exact symbolic types for the gradients (a no-op for static shapes)
    sel = select_parameters(m, trainable, frozen)
    if not sel.trainable:
        raise ModelError("nothing to train: the model has no trainable float parameters "
                         "(import ONNX with weights='param'; check trainable=/frozen=)")
    freeze_values(m, g, sel.frozen)
    loss_v = add_loss(m, loss, loss_output, label_name, reduction, label_smoothing)
    lr = g.add_param("lr", TensorType(DType.f32, ()))
    step = g.add_param("step", TensorType(DType.i64, ()))
    key_dropouts(m, step)
    grads = grad(m, loss_v, sel.trainable)
    updates = append_updates(m, g, grads, optimizer, lr, step)
    stats = running_stats(g)
    outs, names = [loss_v], ["loss"]
    for u in updates:
        outs.append(u.new_param)
        names.append(f"{u.param.name}.new")
    for p in sel.buffers:
        outs.append(stats[id(p)][0])
        names.append(f"{p.name}.new")
    state = [s for u in updates for s, _ in u.state]
    for u in updates:
        for s, new in u.state:
            outs.append(new)
            names.append(f"{s.name}.new")
    if gradients:
        for p in sel.trainable:
            outs.append(grads[p])
            names.append(f"{p.name}.grad")
    g.set_outputs(outs, names)
    # inputs in a fixed order: data, labels, lr, step, params, buffers, state
    ordered = ([p for p in g.params if p.name in data_inputs] + [p for p in g.params if p.name == label_name]
               + [lr, step] + sel.trainable + sel.buffers + state)
    g.params = ordered
    sig = StepSignature(data_inputs, label_name, lr.name, step.name, [p.name for p in sel.trainable],
                        [p.name for p in sel.buffers], [s.name for s in state], gradients,
                        bindings={p.name: p.binding for p in ordered if p.binding is not None})
    m.metadata = dict(m.metadata, mode="train")
    return m, sig

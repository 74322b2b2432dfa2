"""Loss construction: ``mse``, ``cross_entropy`` and ``bce_with_logits`` built as IR on a module.

``add_loss`` attaches a loss to one output of the model's graph (the first, or ``output=``), adds
the labels as a new graph input (``labels``, or ``label_name=``) and returns the scalar loss value.
The formulas are torch's:

- ``mse``: ``(pred - labels)^2``, labels of the prediction's type;
- ``cross_entropy``: logits ``[N, C, ...]`` and integer class labels ``[N, ...]``;
  ``-sum_c q_c * log_softmax(logits)_c`` with ``q = (1 - s) * onehot + s / C`` (label smoothing s);
- ``bce_with_logits``: ``max(x, 0) - x * y + log(1 + exp(-|x|))``, float labels of x's type;

reduced by ``mean`` (over every element, or every sample position for cross entropy) or ``sum``.
The one-hot target is a comparison against a constant ``arange``, so no gather gradient is needed.
"""

from __future__ import annotations

import numpy as np

from nnc.ir import Builder, DType, Graph, ModelError, Module, Value
from nnc.ir.sym_names import formula_types, input_name
from nnc.ir.types import TensorType

LOSSES = ("mse", "cross_entropy", "bce_with_logits")
REDUCTIONS = ("mean", "sum")


def _output(graph: Graph, output: str | int | None) -> Value:
    if output is None:
        if not graph.outputs:
            raise ModelError("the model has no outputs to attach a loss to")
        return graph.outputs[0]
    if isinstance(output, int):
        return graph.outputs[output]
    if output not in graph.output_names:
        raise ModelError(f"no output named {output!r} for the loss (outputs: {', '.join(graph.output_names)})")
    return graph.outputs[graph.output_names.index(output)]


def _reduce(b: Builder, x: Value, reduction: str, name: str) -> Value:
    if reduction not in REDUCTIONS:
        raise ModelError(f"unknown loss reduction {reduction!r}; choose one of {', '.join(REDUCTIONS)}")
    kind = "reduce_mean" if reduction == "mean" else "reduce_sum"
    return b.op(kind, x, axes=tuple(range(x.type.rank)), keepdims=0, name=name)


def label_type(pred: Value | TensorType, loss: str) -> TensorType:
    """The type of the labels input for ``loss`` on prediction ``pred`` (a value or its type):
    symbolic dims (a batch ``N``) stay symbolic, and the mean divides by the count read at run time."""
    t = pred.type if isinstance(pred, Value) else pred
    shape = t.shape
    if shape is None:
        raise ModelError(f"the loss input has an unknown rank ({t}): give the input shapes")
    if loss == "cross_entropy":
        if len(shape) < 2:
            raise ModelError(f"cross_entropy needs logits shaped [N, C, ...], got {t}")
        if not isinstance(shape[1], int):
            raise ModelError(f"cross_entropy needs a static class count (dim 1 of the logits {t})")
        return TensorType(DType.i64, (shape[0],) + tuple(shape[2:]))
    return t


def _named(module: Module, g: Graph, pred: Value) -> Value | TensorType:
    """``pred``'s type with its ``?`` dims named after the input symbols they equal (a flatten's
    ``[?, 10]`` is ``[N, 10]``), so the labels' dims are tied to the inputs'."""
    if pred.type.shape is None or pred.type.is_static:
        return pred
    types = formula_types(module, g)
    if types is None or id(pred) not in types:
        return pred
    return TensorType(pred.dtype, tuple(input_name(d) for d in types[id(pred)].shape))


def add_loss(module: Module, loss: str, output: str | int | None = None, label_name: str = "labels",
             reduction: str = "mean", label_smoothing: float = 0.0, graph: Graph | None = None) -> Value:
    """Append ``loss`` on an output of ``graph`` (default main); return the scalar loss value."""
    g = graph if graph is not None else module.main
    if loss not in LOSSES:
        raise ModelError(f"unknown loss {loss!r}; choose one of {', '.join(LOSSES)}")
    pred = _output(g, output)
    if not pred.dtype.is_float:
        raise ModelError(f"the loss needs a float output, {pred.name} is {pred.type}")
    if label_name in {p.name for p in g.params}:
        raise ModelError(f"the model already has an input named {label_name!r}; pass label_name=")
    labels = g.add_param(label_name, label_type(_named(module, g, pred), loss))
    b = Builder(module, g, loc="loss")
    if loss == "mse":
        d = b.op("sub", pred, labels, name="loss.diff")
        return _reduce(b, b.op("mul", d, d, name="loss.sq"), reduction, "loss")
    if loss == "bce_with_logits":
        pos = b.op("relu", pred, name="loss.relu")
        xy = b.op("mul", pred, labels, name="loss.xy")
        soft = b.op("softplus", b.op("neg", b.op("abs", pred, name="loss.abs"), name="loss.nabs"), name="loss.log1pexp")
        return _reduce(b, b.op("add", b.op("sub", pos, xy, name="loss.a"), soft, name="loss.each"), reduction, "loss")
    shape = pred.type.shape
    classes = int(shape[1])
    dt = pred.dtype.numpy
    logp = b.op("log_softmax", pred, axis=1, name="loss.logp")
    # the one-hot target: labels[N, 1, ...] == arange(C)[1, C, 1...]
    ar = b.const(np.arange(classes, dtype=np.int64).reshape((1, classes) + (1,) * (len(shape) - 2)),
                 name="loss.classes")
    lab = b.op("unsqueeze", labels, axes=(1,), name="loss.labels1")
    onehot = b.op("cast", b.op("equal", lab, ar, name="loss.hit"), to=pred.dtype, name="loss.onehot")
    s = float(label_smoothing)
    if s:
        onehot = b.op("add", b.op("mul", onehot, b.const(np.asarray(1 - s, dt)), name="loss.q1"),
                      b.const(np.asarray(s / classes, dt)), name="loss.q")
    picked = b.op("reduce_sum", b.op("mul", onehot, logp, name="loss.qlogp"), axes=(1,), keepdims=0, name="loss.ll")
    return _reduce(b, b.op("neg", picked, name="loss.nll"), reduction, "loss")

"""Optimizer update ops: ``sgd_update`` (plain, momentum, Nesterov, weight decay) and
``adam_update`` (Adam, and AdamW through ``decoupled``), as used inside a compiled training step.

Each op takes a parameter, its gradient and its optimizer state, and returns the updated parameter
and state (the caller writes them back: functionally here, in place where a backend aliases the
buffers). The learning rate and the step count are run-time scalar operands, so a schedule changes
them without recompiling. The numpy references follow ``torch.optim``'s single-tensor CPU code
operation by operation (the order of roundings matters when 30 steps must agree to rtol 1e-3):

- SGD: ``d = g + wd * p``; with momentum ``buf = mu * buf + (1 - dampening) * d`` (the buffer
  takes ``d`` unscaled on the first step, ``step == first_step``), ``d = d + mu * buf`` (Nesterov)
  or ``d = buf``; ``p = p - lr * d``. ONNX's ``Momentum`` is this op with ``first_step=0``.
- Adam: ``g = g + wd * p`` (Adam) or ``p = p * (1 - lr * wd)`` (AdamW, decoupled);
  ``m = lerp(m, g, 1 - b1)``; ``v = b2 * v + (1 - b2) * g * g``;
  ``p = p - lr / (1 - b1^t) * m / (sqrt(v) / sqrt(1 - b2^t) + eps)``.

They are not differentiable (an update is not part of the function being differentiated).
"""

from __future__ import annotations

import math

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import FLOAT_TYPES, INT_TYPES
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..shape_rules import check_dtype
from ..types import TensorType


def _scalar(ctx: InferContext, i: int, what: str, allowed) -> None:
    t = ctx.types[i]
    check_dtype(ctx, i, allowed)
    if t.shape is not None and t.numel not in (1, None):
        raise ctx.fail(f"{what} (operand {i}) must be a scalar, got {t}")


def _same_as_param(ctx: InferContext, indices: tuple[int, ...]) -> TensorType:
    p = ctx.types[0]
    check_dtype(ctx, 0, FLOAT_TYPES)
    for i in indices:
        t = ctx.types[i]
        if t.dtype != p.dtype:
            raise ctx.fail(f"operand {i} has dtype {t.dtype}; the parameter is {p.dtype}")
        if t.shape is not None and p.shape is not None and len(t.shape) != len(p.shape):
            raise ctx.fail(f"operand {i} has type {t}; the parameter is {p}")
        if t.shape is not None and p.shape is not None and any(
                isinstance(a, int) and isinstance(b, int) and a != b for a, b in zip(t.shape, p.shape)):
            raise ctx.fail(f"operand {i} has type {t}; the parameter is {p}")
    return p


def _scalar_value(a: np.ndarray) -> float:
    return float(np.asarray(a).reshape(-1)[0])


# -- SGD ---------------------------------------------------------------------------------------------

def _sgd_infer(ctx: InferContext) -> list[TensorType]:
    n = len(ctx.types)
    p = _same_as_param(ctx, (1,) + ((3,) if n > 3 else ()))
    _scalar(ctx, 2, "lr", FLOAT_TYPES)
    if n > 4:
        _scalar(ctx, 4, "step", FLOAT_TYPES | INT_TYPES)
    if ctx.attrs["momentum"] != 0 and n < 5:
        raise ctx.fail("momentum needs the buffer and step operands")
    return [p, p] if n > 3 else [p]


def _sgd(param: np.ndarray, grad: np.ndarray, lr: np.ndarray, buf: np.ndarray | None = None,
         step: np.ndarray | None = None, *, momentum: float, dampening: float, nesterov: int,
         weight_decay: float, first_step: int) -> tuple[np.ndarray, ...]:
    dt = param.dtype.type
    d = grad
    if weight_decay != 0:
        d = d + dt(weight_decay) * param
    new_buf = None
    if buf is not None:
        first = step is not None and _scalar_value(step) == first_step
        scale = 1.0 if first else 1.0 - dampening
        new_buf = dt(momentum) * buf + (d if scale == 1.0 else dt(scale) * d)
        d = d + dt(momentum) * new_buf if nesterov else new_buf
    out = param - dt(_scalar_value(lr)) * d
    if new_buf is None:
        return (out.astype(param.dtype),)
    return out.astype(param.dtype), new_buf.astype(param.dtype)


defop("sgd_update", operands=("param", "grad", "lr", "buf?", "step?"), results=("outs*",),
      attrs={"momentum": AttrSpec(AttrKind.FLOAT, 0.0), "dampening": AttrSpec(AttrKind.FLOAT, 0.0),
             "nesterov": AttrSpec(AttrKind.INT, 0), "weight_decay": AttrSpec(AttrKind.FLOAT, 0.0),
             "first_step": AttrSpec(AttrKind.INT, 1)},
      infer=_sgd_infer, reference=_sgd, traits=Trait.PURE, vjp=NOT_DIFFERENTIABLE, fold=False,
      doc="SGD step: (param, grad, lr[, momentum buffer, step]) -> (new param[, new buffer]); "
          "torch.optim.SGD's formula; the buffer takes the gradient unscaled when step == first_step")


# -- Adam / AdamW ------------------------------------------------------------------------------------

def _adam_infer(ctx: InferContext) -> list[TensorType]:
    p = _same_as_param(ctx, (1, 2, 3))
    _scalar(ctx, 4, "lr", FLOAT_TYPES)
    _scalar(ctx, 5, "step", FLOAT_TYPES | INT_TYPES)
    return [p, p, p]


def _adam(param: np.ndarray, grad: np.ndarray, m: np.ndarray, v: np.ndarray, lr: np.ndarray,
          step: np.ndarray, *, beta1: float, beta2: float, epsilon: float, weight_decay: float,
          decoupled: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    dt = param.dtype.type
    lr_f, t = _scalar_value(lr), _scalar_value(step)
    g = grad
    if weight_decay != 0:
        if decoupled:
            param = param * dt(1 - lr_f * weight_decay)
        else:
            g = g + dt(weight_decay) * param
    m = m + dt(1 - beta1) * (g - m)  # torch's lerp for weights below 0.5
    v = v * dt(beta2) + dt(1 - beta2) * g * g
    bc1 = 1 - beta1 ** t
    bc2_sqrt = math.sqrt(1 - beta2 ** t)
    denom = np.sqrt(v) / dt(bc2_sqrt) + dt(epsilon)
    out = param - dt(lr_f / bc1) * (m / denom)
    return out.astype(param.dtype), m.astype(param.dtype), v.astype(param.dtype)


defop("adam_update", operands=("param", "grad", "m", "v", "lr", "step"), results=("param_out", "m_out", "v_out"),
      attrs={"beta1": AttrSpec(AttrKind.FLOAT, 0.9), "beta2": AttrSpec(AttrKind.FLOAT, 0.999),
             "epsilon": AttrSpec(AttrKind.FLOAT, 1e-8), "weight_decay": AttrSpec(AttrKind.FLOAT, 0.0),
             "decoupled": AttrSpec(AttrKind.INT, 0)},
      infer=_adam_infer, reference=_adam, traits=Trait.PURE, vjp=NOT_DIFFERENTIABLE, fold=False,
      doc="Adam step (AdamW with decoupled=1): (param, grad, m, v, lr, step) -> (param, m, v); "
          "torch.optim.Adam's formula; step counts from 1")

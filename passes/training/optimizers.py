"""Optimizer updates appended to a training graph: SGD (momentum, Nesterov, weight decay), Adam and
AdamW as ``sgd_update`` / ``adam_update`` ops (``ir/ops/optim.py``).

Optimizer state (momentum buffers, Adam's first and second moments) becomes graph parameters bound
to zero-initialised pool entries, named after the parameter and torch's state keys
(``fc.weight.momentum_buffer``, ``fc.weight.exp_avg``, ``fc.weight.exp_avg_sq``). The learning rate
and the step count are graph inputs, so schedules need no recompilation. Defaults are torch's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from nnc.ir import Builder, Graph, ModelError, Module, Value

OPTIMIZERS = ("sgd", "adam", "adamw")
_OPTIONS = {
    "sgd": {"momentum": 0.0, "dampening": 0.0, "nesterov": False, "weight_decay": 0.0},
    "adam": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0},
    "adamw": {"betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 1e-2},
}


@dataclass
class OptimizerConfig:
    """An optimizer and its hyper-parameters (torch.optim's names and defaults)."""

    name: str
    lr: float
    options: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def make(cls, name: str, lr: float | None = None, **options: Any) -> OptimizerConfig:
        name = name.lower()
        if name not in OPTIMIZERS:
            raise ModelError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")
        opts = dict(_OPTIONS[name])
        if "beta1" in options or "beta2" in options:
            b1, b2 = opts["betas"]
            opts["betas"] = (float(options.pop("beta1", b1)), float(options.pop("beta2", b2)))
        for k, v in options.items():
            if k not in opts:
                raise ModelError(f"unknown option {k!r} for optimizer {name} (options: {', '.join(opts)})")
            opts[k] = v
        if name == "sgd" and opts["nesterov"] and (opts["momentum"] <= 0 or opts["dampening"] != 0):
            raise ModelError("Nesterov momentum requires a momentum and zero dampening")
        if lr is None:
            lr = 1e-3 if name != "sgd" else 1e-2
        return cls(name, float(lr), opts)

    def state_names(self) -> tuple[str, ...]:
        if self.name == "sgd":
            return ("momentum_buffer",) if self.options["momentum"] else ()
        return ("exp_avg", "exp_avg_sq")

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "lr": self.lr, "options": {k: list(v) if isinstance(v, tuple) else v
                                                              for k, v in self.options.items()}}


@dataclass
class Update:
    """The new value of one trained parameter and of its optimizer state."""

    param: Value
    new_param: Value
    state: list[tuple[Value, Value]]  # (state param, new state value)


def append_updates(module: Module, graph: Graph, grads: dict[Value, Value], config: OptimizerConfig,
                   lr: Value, step: Value) -> list[Update]:
    """Append one update op per parameter in ``grads``; return what each produces."""
    b = Builder(module, graph, loc="optimizer")
    o = config.options
    updates = []
    for p, g in grads.items():
        state = []
        for s in config.state_names():
            key = module.add_constant(f"{p.name}.{s}", np.zeros(p.type.shape, p.dtype.numpy))
            state.append(graph.add_param(f"{p.name}.{s}", p.type, binding=key))
        if config.name == "sgd":
            res = b.op("sgd_update", p, g, lr, *(state + [step] if state else []),
                       momentum=float(o["momentum"]), dampening=float(o["dampening"]),
                       nesterov=int(bool(o["nesterov"])), weight_decay=float(o["weight_decay"]),
                       names=[f"{p.name}.new"] + [f"{v.name}.new" for v in state])
        else:
            b1, b2 = o["betas"]
            res = b.op("adam_update", p, g, state[0], state[1], lr, step, beta1=float(b1), beta2=float(b2),
                       epsilon=float(o["eps"]), weight_decay=float(o["weight_decay"]),
                       decoupled=int(config.name == "adamw"),
                       names=[f"{p.name}.new"] + [f"{v.name}.new" for v in state])
        updates.append(Update(p, res[0], list(zip(state, res[1:]))))
    return updates

"""nnc as a ``torch.compile`` backend: ``torch.compile(model, backend="nnc")``.

Registered through the ``torch_dynamo_backends`` entry point (pyproject.toml). Dynamo hands over
each captured FX graph with example inputs; the backend exports it with ``torch.export`` (core
ATen), compiles it with ``nnc.compile`` (target ``reference`` unless ``options={"target": "x86"}``
or ``$NNC_TORCH_TARGET``) and returns a callable that runs the compiled model on numpy views of the
tensors. A graph nnc cannot take (an unsupported op, a training graph that needs autograd, a
non-tensor input) falls back to eager execution with one warning naming the reason; so does a call that
needs gradients (nnc does not take part in torch's autograd).
"""

from __future__ import annotations

import os
import warnings
from typing import Any, Callable, Sequence


def nnc_backend(gm: Any, example_inputs: Sequence[Any], options: dict[str, Any] | None = None,
                **kwargs: Any) -> Callable[..., Any]:
    """The dynamo backend: a compiled callable for ``gm``, or ``gm.forward`` when nnc cannot compile it."""
    opts = dict(options or {})
    opts.update(kwargs.get("options") or {})
    try:
        return _compile(gm, list(example_inputs), opts)
    except Exception as e:  # noqa: BLE001 - any failure falls back to eager, as torch.compile backends do
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        warnings.warn(f"nnc could not compile this graph; running it eagerly: {reason}", RuntimeWarning, stacklevel=2)
        return gm.forward


def _compile(gm: Any, example_inputs: list[Any], opts: dict[str, Any]) -> Callable[..., Any]:
    import torch

    import nnc
    from nnc.frontends.torch.importer import import_program
    from nnc.ir import UnsupportedOpError

    if not all(isinstance(t, torch.Tensor) for t in example_inputs):
        kinds = sorted({type(t).__name__ for t in example_inputs if not isinstance(t, torch.Tensor)})
        raise UnsupportedOpError(f"non-tensor graph inputs ({', '.join(kinds)})")
    target = opts.pop("target", os.environ.get("NNC_TORCH_TARGET", "reference"))
    opts.setdefault("quiet", True)
    ep = torch.export.export(gm, tuple(example_inputs), strict=False)
    module = import_program(ep, name="dynamo_graph")
    cm = nnc.compile(module, target=target, **opts)
    outs_spec = _output_structure(gm, example_inputs)

    warned = []

    def run(*args: Any) -> Any:
        if torch.is_grad_enabled() and any(a.requires_grad for a in args):
            # nnc computes no gradients for torch's autograd: a call that needs them runs eagerly
            if not warned:
                warned.append(True)
                warnings.warn("nnc runs this graph eagerly while gradients are needed (call it under "
                              "torch.no_grad() to use the compiled code)", RuntimeWarning, stacklevel=2)
            return gm.forward(*args)
        arrays = [a.detach().cpu().numpy() for a in args]
        outs = cm(*arrays)
        outs = outs if isinstance(outs, tuple) else (outs,)
        tensors = [torch.from_numpy(o.copy() if not o.flags.writeable else o) for o in outs]
        return outs_spec(tensors)

    return run


def _output_structure(gm: Any, example_inputs: list[Any]) -> Callable[[list[Any]], Any]:
    """Dynamo graphs return a tuple (or list) of tensors; rebuild that container."""
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    result = out_node.args[0]
    if isinstance(result, (list, tuple)):
        kind = type(result)
        return lambda ts: kind(ts) if kind in (list, tuple) else tuple(ts)
    return lambda ts: ts[0]

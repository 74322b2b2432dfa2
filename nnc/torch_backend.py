"""nnc as a ``torch.compile`` backend: ``torch.compile(model, backend="nnc")``, with no silent eager.

Registered through the ``torch_dynamo_backends`` entry point (pyproject.toml). Dynamo hands over
each captured FX graph (one per piece of a model split by graph breaks) with example inputs; the
backend exports it with ``torch.export`` (core ATen), compiles it with ``nnc.compile`` (target
``reference`` unless ``options={"target": "x86"}`` or ``$NNC_TORCH_TARGET``) and returns a callable
that runs the compiled model on numpy views of the tensors.

A graph nnc cannot take (an unsupported op, a non-tensor input) runs eagerly, and says so: one
``NncFallbackWarning`` per graph naming the op, its node and the reason, and a count in ``stats()``.
So does a call that needs gradients (nnc does not take part in torch's autograd), counted as
``"eager: gradients needed"``. In strict mode (``$NNC_STRICT=1`` or ``options={"strict": True}``)
there is no eager fallback: the graph's first run raises the nnc error naming the op.
"""

from __future__ import annotations

import os
import re
import threading
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from nnc.ir import NncError, TargetError, UnsupportedOpError

GRADIENTS_NEEDED = "eager: gradients needed"
_STRICT_ON = ("1", "true", "yes", "on")


class NncFallbackWarning(RuntimeWarning):
    """nnc ran a ``torch.compile`` graph eagerly; the message names the op, its node and the reason."""


@dataclass(frozen=True)
class TorchBackendStats:
    """What the backend did since the last ``reset_stats()``, counted per dynamo graph.

    ``compiled``: graphs nnc compiled; ``fallen_back``: graphs that ran eagerly (a graph compiled by
    nnc and later called while gradients are needed counts in both); ``errors``: graphs refused in
    strict mode; ``ops_missing``: why, keyed by the ATen op nnc lacks, or by ``"eager: <reason>"``
    when no op is to blame (``"eager: gradients needed"``, ``"eager: non-tensor inputs"``)."""

    compiled: int = 0
    fallen_back: int = 0
    errors: int = 0
    ops_missing: dict[str, int] = field(default_factory=dict)


class _Counts:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.graphs = 0
        self.compiled = 0
        self.fallen_back = 0
        self.errors = 0
        self.missing: Counter[str] = Counter()


_counts = _Counts()


def stats() -> TorchBackendStats:
    """A snapshot of the counts since the last ``reset_stats()``."""
    with _counts.lock:
        return TorchBackendStats(_counts.compiled, _counts.fallen_back, _counts.errors, dict(_counts.missing))


def reset_stats() -> None:
    with _counts.lock:
        _counts.compiled = _counts.fallen_back = _counts.errors = 0
        _counts.missing.clear()


def _count(compiled: int = 0, fallen_back: int = 0, errors: int = 0, missing: Sequence[str] = ()) -> None:
    with _counts.lock:
        _counts.compiled += compiled
        _counts.fallen_back += fallen_back
        _counts.errors += errors
        _counts.missing.update(missing)


def _next_graph_number() -> int:
    with _counts.lock:
        _counts.graphs += 1
        return _counts.graphs


# -- why a graph could not be compiled -------------------------------------------------------------

# the frontend's errors start "<ATen overload> node '<fx name>' [in module '<path>' (<class>)]: <why>"
_DESCRIBED = re.compile(r"(?P<op>aten\.[\w.]+) node '(?P<node>[^']*)'(?P<where> in module '[^']*' \([^)]*\))?"
                        r"(?::\s*(?P<why>.*))?")


@dataclass(frozen=True)
class Blame:
    """The op (an ATen overload) and node that stopped a compile, or None, and the reason in one line."""

    op: str | None
    node: str | None
    reason: str
    key: str  # the ``ops_missing`` key
    where: str = ""  # " in module 'layer1.0' (Conv2d)" when torch.export recorded the module
    others: tuple[tuple[str, str], ...] = ()  # (op, node) of the graph's other ops without a converter

    @property
    def keys(self) -> list[str]:
        """The ``ops_missing`` keys to count for this graph, each once."""
        return list(dict.fromkeys([self.key] + [op for op, _ in self.others]))

    def describe(self) -> str:
        if self.op is None:
            return self.reason
        text = f"op {self.op}, node {self.node!r}{self.where}: {self.reason}"
        others = [f"{op} (node {node!r})" for op, node in self.others if node != self.node]
        return text + (f"; the graph's other ops without a converter: {', '.join(others)}" if others else "")


def blame(e: BaseException, others: Sequence[tuple[str, str]] = ()) -> Blame:
    text = str(e).strip()
    line = text.splitlines()[0] if text else type(e).__name__
    m = _DESCRIBED.search(line)
    if m:
        return Blame(m["op"], m["node"], m["why"] or line, m["op"], m["where"] or "", tuple(others))
    if isinstance(e, _NonTensorInputs):
        return Blame(None, None, line, "eager: non-tensor inputs")
    return Blame(None, None, f"{type(e).__name__}: {line}", f"eager: {type(e).__name__}")


class _NonTensorInputs(UnsupportedOpError):
    pass


class _ImportFailed(Exception):
    """The frontend's error for a graph, with every op of the graph that has no converter."""

    def __init__(self, error: UnsupportedOpError, missing: list[tuple[str, str]]):
        super().__init__(str(error))
        self.error = error
        self.missing = missing


# -- the backend ------------------------------------------------------------------------------------

def nnc_backend(gm: Any, example_inputs: Sequence[Any], options: dict[str, Any] | None = None,
                **kwargs: Any) -> Callable[..., Any]:
    """The dynamo backend: a compiled callable for ``gm``; or ``gm.forward`` (with a warning) when
    nnc cannot compile it; or, in strict mode, a callable raising the nnc error when first run."""
    opts = dict(options or {})
    opts.update(kwargs.get("options") or {})
    strict = _strict(opts)
    number = _next_graph_number()
    compile_options = _compile_options(opts)  # a wrong option is the caller's error, never a fallback
    try:
        run = _compile(gm, list(example_inputs), compile_options, number, strict)
    except Exception as e:  # noqa: BLE001 - any failure means eager (or, strict, an error), never a crash here
        error, others = (e.error, e.missing) if isinstance(e, _ImportFailed) else (e, [])
        why = blame(error, others)
        if strict:
            _count(errors=1, missing=why.keys)
            return _raise_when_run(error, why, number)
        _count(fallen_back=1, missing=why.keys)
        warnings.warn(f"nnc could not compile torch.compile graph {number}; running it eagerly: {why.describe()}",
                      NncFallbackWarning, stacklevel=2)
        return gm.forward
    _count(compiled=1)
    return run


def _strict(opts: dict[str, Any]) -> bool:
    """``options={"strict": ...}`` if given, else ``$NNC_STRICT``."""
    if "strict" in opts:
        value = opts.pop("strict")
        if not isinstance(value, bool):
            raise NncError(f"torch.compile option strict={value!r}: give True or False")
        return value
    return os.environ.get("NNC_STRICT", "").strip().lower() in _STRICT_ON


def _compile_options(opts: dict[str, Any]) -> Any:
    from nnc.backends.options import as_options
    from nnc.backends.registry import get_backend

    target = opts.pop("target", os.environ.get("NNC_TORCH_TARGET", "reference"))
    opts.setdefault("quiet", True)
    options = as_options(target, "infer", opts)
    get_backend(options.target).check(options)
    return options


def _raise_when_run(e: BaseException, why: Blame, number: int) -> Callable[..., Any]:
    """Raising from the backend itself would reach the user as dynamo's ``BackendCompilerFailed``;
    raising from the graph's code gives them the typed nnc error."""
    kind = type(e) if isinstance(e, NncError) else TargetError
    message = (f"{why.describe()} (torch.compile graph {number}; strict mode (NNC_STRICT / "
               f"options={{'strict': True}}) does not run it eagerly)")

    def run(*args: Any) -> Any:
        if isinstance(e, NncError):
            raise kind(message) from None
        raise kind(message) from e

    return run


def _compile(gm: Any, example_inputs: list[Any], options: Any, number: int, strict: bool) -> Callable[..., Any]:
    import torch

    import nnc
    from nnc.frontends.torch.importer import import_program, missing_converters

    picks, dynamic = _tensor_inputs(gm, example_inputs)
    tensors = [t for t, p in zip(example_inputs, picks) if p is None]
    if dynamic is None:
        ep = torch.export.export(gm, tuple(tensors), strict=False)
    else:  # dynamo's dynamic graph: its SymInt inputs are sizes of tensor inputs, read from them
        with torch._guards.tracing(None):  # a fresh export: its shape guards are not the outer frame's
            ep = torch.export.export(_tensors_only(gm, picks), tuple(tensors), dynamic_shapes=(dynamic,),
                                     strict=False)
    try:
        module = import_program(ep, name="dynamo_graph")
    except UnsupportedOpError as e:
        try:
            missing = missing_converters(ep)
        except Exception:  # noqa: BLE001 - the list only adds to the error already in hand
            missing = []
        raise _ImportFailed(e, missing) from e
    cm = nnc.compile(module, options=options)
    outs_spec = _output_structure(gm)
    needed_gradients = []

    def run(*args: Any) -> Any:
        if torch.is_grad_enabled() and any(a.requires_grad for a in args):
            # nnc computes no gradients for torch's autograd: a call that needs them runs eagerly
            if not needed_gradients:
                needed_gradients.append(True)
                _count(errors=int(strict), fallen_back=int(not strict), missing=[GRADIENTS_NEEDED])
                if not strict:
                    warnings.warn(f"nnc runs torch.compile graph {number} eagerly while gradients are needed "
                                  "(call it under torch.no_grad() to use the compiled code)",
                                  NncFallbackWarning, stacklevel=2)
            if strict:
                raise TargetError(f"torch.compile graph {number} was called while gradients are needed; nnc "
                                  "computes no gradients for torch's autograd and strict mode (NNC_STRICT / "
                                  "options={'strict': True}) does not run it eagerly: call it under torch.no_grad()")
            return gm.forward(*args)
        arrays = [a.detach().cpu().numpy() for a, p in zip(args, picks) if p is None]
        outs = cm(*arrays)
        outs = outs if isinstance(outs, tuple) else (outs,)
        tensors = [torch.from_numpy(o.copy() if not o.flags.writeable else o) for o in outs]
        return outs_spec(tensors)

    return run


def _tensor_inputs(gm: Any, example_inputs: list[Any]) -> tuple[list[tuple[int, int] | None], Any]:
    """Where each graph input comes from: None for a tensor, (tensor number, axis) for a ``SymInt``
    that is a size of a tensor input (what dynamo passes once a second shape made a dim dynamic);
    and the ``dynamic_shapes`` of the tensors for ``torch.export`` (None when nothing is symbolic).
    Other non-tensor inputs are refused (the graph runs eagerly, counted)."""
    import torch

    nodes = [n for n in gm.graph.nodes if n.op == "placeholder"]
    found: dict[str, tuple[int, int]] = {}
    specs: list[dict[int, Any]] = []
    for node, ex in zip(nodes, example_inputs):
        if not isinstance(ex, torch.Tensor):
            continue
        val = node.meta.get("example_value")
        spec = {}
        for axis, d in enumerate(val.shape if isinstance(val, torch.Tensor) else ex.shape):
            if isinstance(d, torch.SymInt):
                name = str(d.node.expr)
                found.setdefault(name, (len(specs), axis))
                spec[axis] = torch.export.Dim.DYNAMIC
        specs.append(spec)
    picks: list[tuple[int, int] | None] = []
    others = []
    for ex in example_inputs:
        if isinstance(ex, torch.Tensor):
            picks.append(None)
        elif isinstance(ex, torch.SymInt) and str(ex.node.expr) in found:
            picks.append(found[str(ex.node.expr)])
        else:
            others.append(type(ex).__name__ if not isinstance(ex, torch.SymInt) else f"SymInt {ex.node.expr}")
    if others:
        raise _NonTensorInputs(f"non-tensor graph inputs ({', '.join(sorted(set(others)))}); nnc compiles tensor "
                               "graphs, and symbolic sizes that are dims of their tensor inputs")
    if not any(specs):
        return picks, None
    return picks, tuple(spec or None for spec in specs)


def _tensors_only(gm: Any, picks: list[tuple[int, int] | None]) -> Any:
    """``gm`` as a module taking its tensors only: each SymInt input is read off a tensor's shape
    (``picks``: ``_tensor_inputs``)."""
    import torch

    class TensorsOnly(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.gm = gm

        def forward(self, *tensors: Any) -> Any:
            it = iter(tensors)
            return self.gm(*[next(it) if p is None else tensors[p[0]].shape[p[1]] for p in picks])

    return TensorsOnly()


def _output_structure(gm: Any) -> Callable[[list[Any]], Any]:
    """Dynamo graphs return a tuple (or list) of tensors; rebuild that container."""
    out_node = next(n for n in gm.graph.nodes if n.op == "output")
    result = out_node.args[0]
    if isinstance(result, (list, tuple)):
        kind = type(result)
        return lambda ts: kind(ts) if kind in (list, tuple) else tuple(ts)
    return lambda ts: ts[0]

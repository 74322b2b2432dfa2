"""Control flow: ``if``, ``loop`` and ``scan``, each owning its body graphs as regions.

Regions are closed: a body reads only its parameters. Values a source model's body takes from
the enclosing scope are passed in as trailing operands ("captures") at import and bound to trailing
region parameters, so passes and backends can treat a region as an ordinary function.

- ``if(cond, captures*) {then, else}``: both regions take the captures and return the results.
- ``loop(trip_count, cond, carried*, captures*) {n_carried}``: body ``(iter: i64, cond: bool,
  carried..., captures...) -> (cond, carried..., scan_outs...)``; it runs while
  ``iter < trip_count and cond``; results are the final carried values and, per scan output, the
  per-iteration values stacked on a new leading axis.
- ``scan(states*, xs*, captures*) {n_state, n_scan_inputs, axes, directions}``: body
  ``(states..., x slices..., captures...) -> (states..., y slices...)`` once per slice of the scan
  inputs along their axes; results are the final states and the y slices stacked along the
  output axes.

A carried value or a scan state may change shape between iterations: its body parameter's type
covers both the initial value and the body's output (see ``types.join_types``), and that is the
result type.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import DType
from ..registry import NOT_DIFFERENTIABLE, InferContext, Trait, defop
from ..types import UNKNOWN, TensorType, join_types

Region = Callable[..., list[Any]]


def _covers(wide: Any, narrow: Any) -> bool:
    return join_types(wide, narrow) == wide


def _check_params(ctx: InferContext, region: Any, first: int, types: Sequence[Any], what: str) -> None:
    params = region.params[first:first + len(types)]
    if len(params) != len(types):
        raise ctx.fail(f"region @{region.name} takes {len(region.params)} parameters; {what} need "
                       f"{first + len(types)}")
    for p, t in zip(params, types):
        if not _covers(p.type, t):
            raise ctx.fail(f"region parameter %{p.name}: {p.type} does not cover the {what} type {t}")


def _scalar_like(ctx: InferContext, i: int, dtypes: set[DType], what: str) -> None:
    t = ctx.types[i]
    if not isinstance(t, TensorType) or t.dtype not in dtypes:
        raise ctx.fail(f"{what} must be a {'/'.join(sorted(map(str, dtypes)))} tensor, got {t}")
    if t.is_static and t.numel != 1:
        raise ctx.fail(f"{what} must have one element, got {t}")


def _truth(a: np.ndarray) -> bool:
    return bool(np.asarray(a).reshape(-1)[0])


# -- if ----------------------------------------------------------------------------------------------
def _if_infer(ctx: InferContext) -> list[Any]:
    if len(ctx.regions) != 2:
        raise ctx.fail("an if owns two regions (then, else)")
    _scalar_like(ctx, 0, {DType.bool}, "the condition")
    then, other = ctx.regions
    for r in (then, other):
        if len(r.params) != len(ctx.types) - 1:
            raise ctx.fail(f"region @{r.name} takes {len(r.params)} parameters, the if passes {len(ctx.types) - 1}")
        _check_params(ctx, r, 0, ctx.types[1:], "captured")
    if len(then.outputs) != len(other.outputs):
        raise ctx.fail(f"the branches return {len(then.outputs)} and {len(other.outputs)} values")
    out = []
    for i, (a, b) in enumerate(zip(then.outputs, other.outputs)):
        j = join_types(a.type, b.type)
        if j is None:
            raise ctx.fail(f"result {i}: the branches return {a.type} and {b.type}")
        out.append(j)
    return out


def _if_ref(cond: np.ndarray, *captures: Any, regions: list[Region]) -> tuple:
    return tuple(regions[0 if _truth(cond) else 1](*captures))


defop("if", operands=("cond", "captures*"), results=("outs*",), infer=_if_infer, reference=_if_ref,
      traits=Trait.PURE, vjp=NOT_DIFFERENTIABLE, fold=False,
      doc="Runs region 0 (then) or region 1 (else) on the captures, as the one-element bool ``cond`` says.")


# -- loop --------------------------------------------------------------------------------------------
def _stacked(t: Any, lead: Any = UNKNOWN) -> TensorType:
    if not isinstance(t, TensorType):
        raise TypeError(f"a scan output must be a tensor, got {t}")
    return TensorType(t.dtype, None if t.shape is None else (lead,) + t.shape)


def _loop_infer(ctx: InferContext) -> list[Any]:
    if len(ctx.regions) != 1:
        raise ctx.fail("a loop owns one region (the body)")
    _scalar_like(ctx, 0, {DType.i64}, "the trip count")
    _scalar_like(ctx, 1, {DType.bool}, "the condition")
    n = ctx.attrs["n_carried"]
    body = ctx.regions[0]
    operands = ctx.types[2:]
    if n > len(operands):
        raise ctx.fail(f"n_carried={n} but only {len(operands)} values are passed")
    if len(body.params) != 2 + len(operands):
        raise ctx.fail(f"the body takes {len(body.params)} parameters; the loop passes 2 + {len(operands)}")
    it, cond = body.params[0].type, body.params[1].type
    if not (isinstance(it, TensorType) and it.dtype == DType.i64 and isinstance(cond, TensorType)
            and cond.dtype == DType.bool):
        raise ctx.fail(f"the body's first parameters must be the i64 iteration number and the bool condition, "
                       f"got {it} and {cond}")
    _check_params(ctx, body, 2, operands, "loop operand")
    outs = [v.type for v in body.outputs]
    if len(outs) < 1 + n:
        raise ctx.fail(f"the body returns {len(outs)} values; it must return the condition and {n} carried")
    if not (isinstance(outs[0], TensorType) and outs[0].dtype == DType.bool):
        raise ctx.fail(f"the body's first result must be the bool condition, got {outs[0]}")
    carried = [p.type for p in body.params[2:2 + n]]
    for p, o in zip(body.params[2:2 + n], outs[1:1 + n]):
        if not _covers(p.type, o):
            raise ctx.fail(f"carried %{p.name}: {p.type} does not cover the body's result type {o}")
    return carried + [_stacked(t) for t in outs[1 + n:]]


def _loop_ref(trip_count: np.ndarray, cond: np.ndarray, *operands: Any, n_carried: int,
              regions: list[Region]) -> tuple:
    body = regions[0]
    params = body.graph.params  # type: ignore[attr-defined]
    it_shape, cond_shape = _shape_of(params[0].type), _shape_of(params[1].type)
    carried, captures = list(operands[:n_carried]), list(operands[n_carried:])
    limit = int(np.asarray(trip_count).reshape(-1)[0])
    go = _truth(cond)
    scans: list[list[np.ndarray]] | None = None
    i = 0
    while i < limit and go:
        outs = body(np.array(i, np.int64).reshape(it_shape), np.array(go).reshape(cond_shape), *carried, *captures)
        go = _truth(outs[0])
        carried = list(outs[1:1 + n_carried])
        if scans is None:
            scans = [[] for _ in outs[1 + n_carried:]]
        for acc, y in zip(scans, outs[1 + n_carried:]):
            acc.append(np.asarray(y))
        i += 1
    outputs = body.graph.outputs[1 + n_carried:]  # type: ignore[attr-defined]
    stacked = [np.stack(acc) if acc else np.zeros((0,) + _static_or_empty(v.type), v.type.dtype.numpy)
               for acc, v in zip(scans or [[] for _ in outputs], outputs)]
    return (*carried, *stacked)


def _shape_of(t: TensorType) -> tuple[int, ...]:
    return tuple(1 for _ in t.shape) if t.shape else ()


def _static_or_empty(t: TensorType) -> tuple[int, ...]:
    return tuple(t.shape) if t.is_static else tuple(0 for _ in (t.shape or ()))  # type: ignore[arg-type]


defop("loop", operands=("trip_count", "cond", "operands*"), results=("outs*",),
      attrs={"n_carried": AttrSpec(AttrKind.INT)}, infer=_loop_infer, reference=_loop_ref,
      traits=Trait.PURE, vjp=NOT_DIFFERENTIABLE, fold=False,
      doc="Runs the body while iter < trip_count and cond; carries n_carried values, stacks the rest.")


# -- scan --------------------------------------------------------------------------------------------
_SCAN_ATTRS = {
    "n_state": AttrSpec(AttrKind.INT),
    "n_scan_inputs": AttrSpec(AttrKind.INT),
    "scan_input_axes": AttrSpec(AttrKind.INTS, ()),
    "scan_input_directions": AttrSpec(AttrKind.INTS, ()),
    "scan_output_axes": AttrSpec(AttrKind.INTS, ()),
    "scan_output_directions": AttrSpec(AttrKind.INTS, ()),
}


def _per(values: tuple[int, ...], n: int, what: str, ctx: InferContext | None = None) -> list[int]:
    if not values:
        return [0] * n
    if len(values) != n:
        msg = f"{what} has {len(values)} entries for {n} values"
        raise ctx.fail(msg) if ctx is not None else ValueError(msg)
    return list(values)


def _scan_infer(ctx: InferContext) -> list[Any]:
    if len(ctx.regions) != 1:
        raise ctx.fail("a scan owns one region (the body)")
    a = ctx.attrs
    ns, nx = a["n_state"], a["n_scan_inputs"]
    body = ctx.regions[0]
    if ns + nx > len(ctx.types) or nx < 1:
        raise ctx.fail(f"n_state={ns}, n_scan_inputs={nx} but {len(ctx.types)} operands (and at least one scan input)")
    if len(body.params) != len(ctx.types):
        raise ctx.fail(f"the body takes {len(body.params)} parameters; the scan passes {len(ctx.types)}")
    in_axes = _per(a["scan_input_axes"], nx, "scan_input_axes", ctx)
    _per(a["scan_input_directions"], nx, "scan_input_directions", ctx)
    length: Any = None
    slices = []
    for t, ax in zip(ctx.types[ns:ns + nx], in_axes):
        if not isinstance(t, TensorType):
            raise ctx.fail(f"scan inputs are tensors, got {t}")
        if t.shape is None:
            slices.append(t)
            continue
        if not 0 <= ax < len(t.shape):
            raise ctx.fail(f"scan axis {ax} is out of range for {t}")
        d = t.shape[ax]
        if length is None or length == UNKNOWN:
            length = d
        elif isinstance(d, int) and isinstance(length, int) and d != length:
            raise ctx.fail(f"scan inputs have lengths {length} and {d}")
        slices.append(t.with_shape(t.shape[:ax] + t.shape[ax + 1:]))
    _check_params(ctx, body, 0, ctx.types[:ns], "state")
    _check_params(ctx, body, ns, slices, "scan slice")
    _check_params(ctx, body, ns + nx, ctx.types[ns + nx:], "captured")
    outs = [v.type for v in body.outputs]
    if len(outs) < ns:
        raise ctx.fail(f"the body returns {len(outs)} values, fewer than the {ns} states")
    for p, o in zip(body.params[:ns], outs[:ns]):
        if not _covers(p.type, o):
            raise ctx.fail(f"state %{p.name}: {p.type} does not cover the body's result type {o}")
    ys = outs[ns:]
    out_axes = _per(a["scan_output_axes"], len(ys), "scan_output_axes", ctx)
    _per(a["scan_output_directions"], len(ys), "scan_output_directions", ctx)
    lead = UNKNOWN if length is None else length
    results = [p.type for p in body.params[:ns]]
    for y, ax in zip(ys, out_axes):
        if not isinstance(y, TensorType):
            raise ctx.fail(f"scan outputs are tensors, got {y}")
        if y.shape is None:
            results.append(y)
            continue
        if not 0 <= ax <= len(y.shape):
            raise ctx.fail(f"scan output axis {ax} is out of range for {y}")
        results.append(y.with_shape(y.shape[:ax] + (lead,) + y.shape[ax:]))
    return results


def _scan_ref(*operands: Any, n_state: int, n_scan_inputs: int, scan_input_axes: tuple[int, ...],
              scan_input_directions: tuple[int, ...], scan_output_axes: tuple[int, ...],
              scan_output_directions: tuple[int, ...], regions: list[Region]) -> tuple:
    body = regions[0]
    states = list(operands[:n_state])
    xs = operands[n_state:n_state + n_scan_inputs]
    captures = operands[n_state + n_scan_inputs:]
    in_axes = _per(scan_input_axes, len(xs), "scan_input_axes")
    in_dirs = _per(scan_input_directions, len(xs), "scan_input_directions")
    length = xs[0].shape[in_axes[0]]
    for x, ax in zip(xs, in_axes):
        if x.shape[ax] != length:
            raise ValueError(f"scan inputs have lengths {length} and {x.shape[ax]}")
    ys: list[list[np.ndarray]] = []
    for t in range(length):
        sl = [np.take(x, length - 1 - t if d else t, axis=ax) for x, ax, d in zip(xs, in_axes, in_dirs)]
        outs = body(*states, *sl, *captures)
        states = list(outs[:n_state])
        if not ys:
            ys = [[] for _ in outs[n_state:]]
        for acc, y in zip(ys, outs[n_state:]):
            acc.append(np.asarray(y))
    outputs = body.graph.outputs[n_state:]  # type: ignore[attr-defined]
    out_axes = _per(scan_output_axes, len(outputs), "scan_output_axes")
    out_dirs = _per(scan_output_directions, len(outputs), "scan_output_directions")
    stacked = []
    for acc, v, ax, d in zip(ys or [[] for _ in outputs], outputs, out_axes, out_dirs):
        if not acc:
            empty = _static_or_empty(v.type)
            stacked.append(np.zeros(empty[:ax] + (0,) + empty[ax:], v.type.dtype.numpy))
            continue
        stacked.append(np.stack(acc[::-1] if d else acc, axis=ax))
    return (*states, *stacked)


defop("scan", operands=("operands*",), results=("outs*",), attrs=_SCAN_ATTRS, infer=_scan_infer,
      reference=_scan_ref, traits=Trait.PURE, vjp=NOT_DIFFERENTIABLE, fold=False,
      doc="Runs the body over slices of the scan inputs, threading n_state states; stacks the other results.")

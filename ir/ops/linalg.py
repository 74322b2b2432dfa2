"""Linear-algebra ops: ``matmul`` (numpy semantics: batched, broadcasting, 1-D operands), ``gemm``
(``alpha * op(a) @ op(b) + beta * c``, kept whole because backends map it onto one kernel with a
fused epilogue) and ``einsum`` (the equation is a string attribute).

Integer matmuls (ONNX MatMulInteger) are not ops: the frontend writes cast/sub + ``matmul`` in i32.
Half-precision references accumulate in f32 since BLAS has no f16 path.
"""

from __future__ import annotations

import re

import numpy as np

from ..attrs import AttrKind, AttrSpec
from ..dtypes import NUMERIC_TYPES
from ..registry import InferContext, defop
from ..shape_rules import broadcast_shapes, check_dtype, same_dtype
from ..types import UNKNOWN, Dim, TensorType
from .conv import accumulator


def _match(ctx: InferContext, a: Dim, b: Dim, what: str) -> None:
    if isinstance(a, int) and isinstance(b, int) and a != b:
        raise ctx.fail(f"{what}: {a} != {b}")


def _matmul_infer(ctx: InferContext) -> list[TensorType]:
    dt = same_dtype(ctx, 0, 1)
    check_dtype(ctx, 0, NUMERIC_TYPES)
    a, b = ctx.types[0].shape, ctx.types[1].shape
    if a is None or b is None:
        return [TensorType(dt, None)]
    if not a or not b:
        raise ctx.fail("operands must have rank >= 1")
    a2 = (1,) + a if len(a) == 1 else a
    b2 = b + (1,) if len(b) == 1 else b
    _match(ctx, a2[-1], b2[-2], "contracted dims differ")
    batch = broadcast_shapes(a2[:-2], b2[:-2])
    out = list(batch) + ([a2[-2]] if len(a) > 1 else []) + ([b2[-1]] if len(b) > 1 else [])
    return [TensorType(dt, tuple(out))]


def _matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    acc = accumulator(a.dtype)
    return np.matmul(a.astype(acc, copy=False), b.astype(acc, copy=False)).astype(a.dtype, copy=False)


defop("matmul", operands=("a", "b"), infer=_matmul_infer, reference=_matmul,
      doc="numpy matmul: batch dims broadcast; a 1-D operand is a vector")


def _gemm_infer(ctx: InferContext) -> list[TensorType]:
    dt = same_dtype(ctx)
    check_dtype(ctx, 0, NUMERIC_TYPES)
    a, b = ctx.types[0].shape, ctx.types[1].shape
    for s in (a, b):
        if s is not None and len(s) != 2:
            raise ctx.fail("a and b must be matrices")
    m: Dim = UNKNOWN if a is None else a[1 if ctx.attrs["trans_a"] else 0]
    n: Dim = UNKNOWN if b is None else b[0 if ctx.attrs["trans_b"] else 1]
    if a is not None and b is not None:
        _match(ctx, a[0 if ctx.attrs["trans_a"] else 1], b[1 if ctx.attrs["trans_b"] else 0], "contracted dims differ")
    if len(ctx.types) > 2 and ctx.types[2].shape is not None:
        c = ctx.types[2].shape
        if len(c) > 2:
            raise ctx.fail(f"c of rank {len(c)} does not broadcast to a matrix")
        # c broadcasts one way only: into [m, n]
        c2 = (1,) * (2 - len(c)) + tuple(c)
        for want, got in zip((m, n), c2):
            if got != 1:
                _match(ctx, want, got, "c does not broadcast to the result")
    return [TensorType(dt, (m, n))]


def _gemm(a: np.ndarray, b: np.ndarray, c: np.ndarray | None = None, *, alpha: float, beta: float,
          trans_a: int, trans_b: int) -> np.ndarray:
    acc = accumulator(a.dtype)
    a2 = a.astype(acc, copy=False)
    b2 = b.astype(acc, copy=False)
    y = np.matmul(a2.T if trans_a else a2, b2.T if trans_b else b2)
    if alpha != 1.0:
        y = y * alpha
    if c is not None and beta != 0.0:
        y = y + (c.astype(acc) * beta if beta != 1.0 else c.astype(acc))
    return np.asarray(y).astype(a.dtype, copy=False)


defop("gemm", operands=("a", "b", "c?"), infer=_gemm_infer, reference=_gemm,
      attrs={"alpha": AttrSpec(AttrKind.FLOAT, 1.0), "beta": AttrSpec(AttrKind.FLOAT, 1.0),
             "trans_a": AttrSpec(AttrKind.INT, 0), "trans_b": AttrSpec(AttrKind.INT, 0)},
      doc="alpha * op(a) @ op(b) + beta * c, op = transpose when trans_*; c broadcasts to [M, N]")


# -- einsum ---------------------------------------------------------------------------------------

_TERM = re.compile(r"^(?:[A-Za-z]|\.\.\.)*$")


def parse_einsum(equation: str, n_operands: int) -> tuple[list[str], str]:
    """Input terms and the output term, with '...' written as '.' (one char per term position);
    the implicit output (no '->') is '...' then the labels used once, alphabetically."""
    eq = equation.replace(" ", "")
    lhs, arrow, rhs = eq.partition("->")
    terms = lhs.split(",")
    if len(terms) != n_operands:
        raise ValueError(f"equation {equation!r} names {len(terms)} operands, got {n_operands}")
    for t in terms + ([rhs] if arrow else []):
        if not _TERM.match(t):
            raise ValueError(f"bad einsum term {t!r} in {equation!r}")
    terms = [t.replace("...", ".") for t in terms]
    if arrow:
        out = rhs.replace("...", ".")
    else:
        letters = "".join(terms).replace(".", "")
        out = ("." if any("." in t for t in terms) else "") + "".join(
            sorted(c for c in set(letters) if letters.count(c) == 1))
    return terms, out


def _einsum_infer(ctx: InferContext) -> list[TensorType]:
    dt = same_dtype(ctx)
    check_dtype(ctx, 0, NUMERIC_TYPES)
    terms, out = parse_einsum(ctx.attrs["equation"], len(ctx.types))
    if any(t.shape is None for t in ctx.types):
        return [TensorType(dt, None) if "." in out else TensorType(dt, (UNKNOWN,) * len(out))]
    sizes: dict[str, Dim] = {}
    ell: list[tuple[Dim, ...]] = []
    for term, t in zip(terms, ctx.types):
        shape = t.shape
        n_ell = len(shape) - (len(term) - term.count("."))
        if n_ell < 0 or (n_ell and "." not in term):
            raise ctx.fail(f"term {term!r} does not fit operand {t}")
        pos = 0
        for ch in term:
            if ch == ".":
                ell.append(shape[pos:pos + n_ell])
                pos += n_ell
                continue
            d = shape[pos]
            pos += 1
            prev = sizes.get(ch)
            if prev is None or prev == 1:
                sizes[ch] = d
            elif d != 1:
                _match(ctx, prev, d, f"label {ch!r} has two sizes")
                if not isinstance(prev, int):
                    sizes[ch] = d
    ell_shape = broadcast_shapes(*ell) if ell else ()
    dims: list[Dim] = []
    for ch in out:
        if ch == ".":
            dims.extend(ell_shape)
        elif ch not in sizes:
            raise ctx.fail(f"output label {ch!r} is not in any input")
        else:
            dims.append(sizes[ch])
    return [TensorType(dt, tuple(dims))]


def _einsum(*xs: np.ndarray, equation: str) -> np.ndarray:
    acc = accumulator(xs[0].dtype)
    return np.asarray(np.einsum(equation, *(x.astype(acc, copy=False) for x in xs),
                                optimize=len(xs) > 2)).astype(xs[0].dtype, copy=False)


defop("einsum", operands=("xs*",), infer=_einsum_infer, reference=_einsum,
      attrs={"equation": AttrSpec(AttrKind.STR)},
      doc="Einstein summation over the operands, numpy's equation syntax (with '...')")

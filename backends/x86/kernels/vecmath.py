"""Vectorisable f32 transcendental math: exp, expm1, log, log1p, tanh, sigmoid, erf, erfc.

LLVM's math intrinsics (``llvm.exp`` ...) become scalar libm calls, which stop the loop vectoriser;
these are branch-free polynomial implementations built from fmuladd, selects and integer bit tricks
only, so a loop that calls them vectorises (AVX-512: 16 lanes). Each is emitted once per LLVM module
as a small internal ``alwaysinline`` function ``float(float)`` (``nnc.vm.exp`` ...); the inliner runs
before the vectoriser. Accuracy (checked against numpy over dense f32 sweeps in the tests) is a few
ulps across the whole range, with IEEE special values: overflow to inf, underflow to (sub)normals or
0, NaN in gives NaN out.

Coefficients: exp, log, tanh are Cephes' single-precision minimax polynomials; erf, log(erfc) on
[1, 3.92] (erf's division-free large branch) and the erfc tail are least-squares Chebyshev fits
(error ~1e-8 in f64) converted to monomials.
"""

from __future__ import annotations

from typing import Callable

from llvmlite import ir

from ..llvm_types import F32, I32

_MAGIC = 12582912.0  # 1.5 * 2**23: adding it rounds an f32 of magnitude < 2**22 to an integer
_LOG2E = 1.44269504088896341
_LN2_HI = 0.693359375  # few mantissa bits: n * _LN2_HI is exact for |n| < 2**15
_LN2_LO = -2.12194440e-4
_EXP_P = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
          5.0000001201e-1)
_LOG_P = (7.0376836292e-2, -1.1514610310e-1, 1.1676998740e-1, -1.2420140846e-1, 1.4249322787e-1,
          -1.6668057665e-1, 2.0000714765e-1, -2.4999993993e-1, 3.3333331174e-1)
_TANH_P = (-5.70498872745e-3, 2.06390887954e-2, -5.37397155531e-2, 1.33314422036e-1, -3.33332819422e-1)
# erf(x) / x as a polynomial in x^2 on [0, 1]
_ERF_P = (8.006874252129397e-05, -0.000805375115221978, 0.005192957871041935, -0.026856069570540427,
          0.11283634634373804, -0.3761262976709734, 1.128379166232648)
# log(erfc(x)) for x in [1, 3.92] as a polynomial in s = (x - 2.46) / 1.46 (s in [-1, 1]):
# erf(x) = 1 - exp(this) there, with no division (erf is 1 in f32 beyond 3.92)
_ERF_BIG_C, _ERF_BIG_H, _ERF_BIG_END = 2.46, 1.46, 3.92
_ERF_BIG = (-2.0382345217179443e-06, -1.767780062084225e-06, 3.906927445758569e-05, -0.00019131071893702594,
            0.0007807330486285258, -0.0029167262340081246, 0.010230527267934744, -0.034891554448935776,
            -2.0091815934824147, -7.704744009516835, -7.594217571992772)
# x * exp(x^2) * erfc(x) for x in [1, 10], a polynomial in s = 2.2222 / x - 1.2222 (s in [-1, 1])
_ERFC_S = (2.2222222222222223, -1.2222222222222223)

Emit = Callable[[ir.IRBuilder, ir.Value], ir.Value]
_BODIES: dict[str, Emit] = {}


def _f(v: float) -> ir.Constant:
    return ir.Constant(F32, v)


def _i(v: int) -> ir.Constant:
    return ir.Constant(I32, v)


def intrinsic(b: ir.IRBuilder, name: str, *args: ir.Value, ret: ir.Type | None = None,
              tys: list[ir.Type] | None = None) -> ir.Value:
    """Call the LLVM intrinsic ``name`` overloaded on ``tys`` (default: the first argument's type),
    declared with its real signature (llvmlite guesses ``T(T)`` for intrinsics it does not know)."""
    ret = ret or args[0].type
    fnty = ir.FunctionType(ret, [a.type for a in args])
    fn = b.module.declare_intrinsic(name, tys or [args[0].type], fnty)
    return b.call(fn, list(args))


def fmuladd(b: ir.IRBuilder, x: ir.Value, y: ir.Value, z: ir.Value) -> ir.Value:
    """x * y + z, fused where the target has FMA (llvm.fmuladd vectorises; llvm.fma without FMA
    hardware would be a libm call)."""
    return intrinsic(b, "llvm.fmuladd", x, y, z)


def horner(b: ir.IRBuilder, x: ir.Value, coefs: tuple[float, ...]) -> ir.Value:
    """coefs[0] * x^(n-1) + ... + coefs[-1], by Horner's rule."""
    acc = _f(coefs[0])
    for c in coefs[1:]:
        acc = fmuladd(b, acc, x, _f(c))
    return acc


def _sel(b: ir.IRBuilder, cond: ir.Value, x: ir.Value, y: ir.Value) -> ir.Value:
    return b.select(cond, x, y)


def _fabs(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return intrinsic(b, "llvm.fabs", x)


def _copysign(b: ir.IRBuilder, mag: ir.Value, sign: ir.Value) -> ir.Value:
    return intrinsic(b, "llvm.copysign", mag, sign)


def _isnan(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return b.fcmp_unordered("uno", x, x)


def _body(name: str):
    def register(fn: Emit) -> Emit:
        _BODIES[name] = fn
        return fn
    return register


def vm_function(module: ir.Module, name: str) -> ir.Function:
    """The module's ``float nnc.vm.<name>(float)``, emitted on first use."""
    full = f"nnc.vm.{name}"
    fn = module.globals.get(full)
    if fn is None:
        fn = ir.Function(module, ir.FunctionType(F32, [F32]), name=full)
        fn.linkage = "internal"
        fn.attributes.add("alwaysinline")
        fn.attributes.add("nounwind")
        b = ir.IRBuilder(fn.append_basic_block("entry"))
        b.ret(_BODIES[name](b, fn.args[0]))
    return fn


def call(b: ir.IRBuilder, name: str, x: ir.Value) -> ir.Value:
    """``nnc.vm.<name>(x)`` for an f32 ``x``."""
    return b.call(vm_function(b.module, name), [x])


FUNCTIONS = ("exp", "expm1", "log", "log1p", "tanh", "sigmoid", "erf", "erfc")


# -- exp --------------------------------------------------------------------------------------------
def use_scalef(module: ir.Module, on: bool) -> None:
    """Whether the functions of ``module`` scale by 2^n with ``llvm.ldexp`` (AVX-512 lowers it to one
    ``vscalefps``, which handles overflow and subnormal results itself) instead of two exponent-bit
    factors (6 integer ops and 2 multiplies; other targets would make ldexp a libm call per lane).
    The code generator sets it from the target: exp 187 -> 149 us, sigmoid 237 -> 206 us on 1.2M
    floats (1 thread, CPU time), with the same accuracy bounds (tests/backends/test_x86_math.py)."""
    module.nnc_scalef = on


def _ldexp(module: ir.Module) -> ir.Function:
    return module.globals.get("llvm.ldexp.f32.i32") or ir.Function(
        module, ir.FunctionType(F32, [F32, I32]), name="llvm.ldexp.f32.i32")


def _exp_core(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    # exp(x) = 2^n * exp(r), n = round(x / ln2), |r| <= ln2 / 2. Clamping to [-105, 89] keeps n in
    # [-152, 129]; 2^n is applied as two factors so both stay normal and the product rounds once
    # (correct subnormal results, overflow to inf). NaN fails both ordered compares and propagates.
    x = _sel(b, b.fcmp_ordered(">", x, _f(89.0)), _f(89.0), x)
    x = _sel(b, b.fcmp_ordered("<", x, _f(-105.0)), _f(-105.0), x)
    t = fmuladd(b, x, _f(_LOG2E), _f(_MAGIC))
    n = b.fsub(t, _f(_MAGIC))
    ni = b.sub(b.bitcast(t, I32), _i(0x4B400000))  # the integer n, from the bits of t
    r = fmuladd(b, n, _f(-_LN2_HI), x)
    r = fmuladd(b, n, _f(-_LN2_LO), r)
    p = horner(b, r, _EXP_P)
    y = fmuladd(b, p, b.fmul(r, r), b.fadd(r, _f(1.0)))
    if getattr(b.module, "nnc_scalef", False):  # one vscalefps: y * 2^n rounded once, subnormals too
        return b.call(_ldexp(b.module), [y, ni])
    n1 = b.ashr(ni, _i(1))
    n2 = b.sub(ni, n1)
    s1 = b.bitcast(b.shl(b.add(n1, _i(127)), _i(23)), F32)
    s2 = b.bitcast(b.shl(b.add(n2, _i(127)), _i(23)), F32)
    return b.fmul(b.fmul(y, s1), s2)


_body("exp")(_exp_core)


@_body("expm1")
def _expm1(b, x):
    # Taylor series through x^9 for |x| < 0.5 (relative error < 1e-8), exp(x) - 1 elsewhere
    ax = _fabs(b, x)
    coefs = tuple(1.0 / f for f in (362880.0, 40320.0, 5040.0, 720.0, 120.0, 24.0, 6.0, 2.0))
    small = fmuladd(b, b.fmul(horner(b, x, coefs), x), x, x)
    big = b.fsub(call(b, "exp", x), _f(1.0))
    return _sel(b, b.fcmp_ordered("<", ax, _f(0.5)), small, big)


# -- log --------------------------------------------------------------------------------------------
@_body("log")
def _log(b, x):
    # x = m * 2^e with m in [sqrt(1/2), sqrt(2)); log(x) = log1p(m - 1) + e * ln2 (Cephes logf).
    # Subnormal inputs are scaled by 2^23 first.
    den = b.fcmp_ordered("<", x, _f(1.1754943508222875e-38))
    xs = _sel(b, den, b.fmul(x, _f(8388608.0)), x)
    bits = b.bitcast(xs, I32)
    e = b.sub(b.and_(b.lshr(bits, _i(23)), _i(0xFF)), _i(126))
    e = _sel(b, den, b.sub(e, _i(23)), e)
    m = b.bitcast(b.or_(b.and_(bits, _i(0x807FFFFF)), _i(0x3F000000)), F32)  # [0.5, 1)
    lo = b.fcmp_ordered("<", m, _f(0.707106781186547524))
    e = b.sub(e, b.zext(lo, I32))
    m = _sel(b, lo, b.fsub(b.fadd(m, m), _f(1.0)), b.fsub(m, _f(1.0)))
    z = b.fmul(m, m)
    y = b.fmul(b.fmul(horner(b, m, _LOG_P), m), z)
    fe = b.sitofp(e, F32)
    y = fmuladd(b, fe, _f(_LN2_LO), y)
    y = fmuladd(b, z, _f(-0.5), y)
    r = fmuladd(b, fe, _f(_LN2_HI), b.fadd(m, y))
    inf = _f(float("inf"))
    r = _sel(b, b.fcmp_ordered("==", x, inf), inf, r)
    r = _sel(b, b.fcmp_ordered("==", x, _f(0.0)), _f(float("-inf")), r)
    bad = b.fcmp_unordered("<", x, _f(0.0))  # negative or NaN
    return _sel(b, bad, _f(float("nan")), r)


@_body("log1p")
def _log1p(b, x):
    # Goldberg: with u = 1 + x rounded, log1p(x) = log(u) * x / (u - 1), exact correction of the
    # rounding of u; u == 1 means |x| is below half an ulp of 1 and log1p(x) = x.
    u = b.fadd(x, _f(1.0))
    d = b.fsub(u, _f(1.0))
    r = b.fmul(call(b, "log", u), b.fdiv(x, d))
    r = _sel(b, b.fcmp_ordered("==", d, _f(0.0)), x, r)
    inf = _f(float("inf"))
    return _sel(b, b.fcmp_ordered("==", x, inf), inf, r)  # inf / inf would be NaN


# -- tanh, sigmoid ----------------------------------------------------------------------------------
@_body("tanh")
def _tanh(b, x):
    # |x| < 0.625: odd polynomial (Cephes tanhf); else 1 - 2 / (exp(2|x|) + 1), with the sign of x
    # (exp overflow for |x| > 44 gives exactly 1).
    ax = _fabs(b, x)
    z = b.fmul(x, x)
    small = fmuladd(b, b.fmul(horner(b, z, _TANH_P), z), x, x)
    e = call(b, "exp", b.fadd(ax, ax))
    big = b.fsub(_f(1.0), b.fdiv(_f(2.0), b.fadd(e, _f(1.0))))
    big = _copysign(b, big, x)
    return _sel(b, b.fcmp_ordered("<", ax, _f(0.625)), small, big)


@_body("sigmoid")
def _sigmoid(b, x):
    # e = exp(-|x|) never overflows; 1 / (1 + e) for x >= 0 and e / (1 + e) for x < 0 keep full
    # relative accuracy on both tails
    e = call(b, "exp", b.fneg(_fabs(b, x)))
    d = b.fadd(e, _f(1.0))
    neg = b.fcmp_ordered("<", x, _f(0.0))
    return b.fdiv(_sel(b, neg, e, _f(1.0)), d)


# -- erf, erfc --------------------------------------------------------------------------------------
def _exp_neg_square(b: ir.IRBuilder, t: ir.Value) -> ir.Value:
    """exp(-t*t) with t*t split exactly into hi + lo (Veltkamp), so the rounding of t*t (up to
    6e-6 absolute at t = 10) does not show in the result."""
    hi = b.fmul(t, t)
    c = b.fmul(t, _f(4097.0))
    th = b.fsub(c, b.fsub(c, t))
    tl = b.fsub(t, th)
    lo = b.fadd(b.fadd(b.fsub(b.fmul(th, th), hi), b.fmul(_f(2.0), b.fmul(th, tl))), b.fmul(tl, tl))
    return b.fmul(call(b, "exp", b.fneg(hi)), b.fsub(_f(1.0), lo))


def _erfc_tail(b: ir.IRBuilder, ax: ir.Value) -> ir.Value:
    """erfc(ax) for ax >= 1, relative error ~1e-7; 0 beyond 10.06, where erfc rounds to 0 in f32
    (the fit covers [1, 10], so ax is clamped to 10 first)."""
    t = _sel(b, b.fcmp_ordered(">", ax, _f(10.0)), _f(10.0), ax)
    u = b.fdiv(_f(1.0), t)
    s = fmuladd(b, u, _f(_ERFC_S[0]), _f(_ERFC_S[1]))
    tail = b.fmul(b.fmul(_exp_neg_square(b, t), horner(b, s, _ERFC_P)), u)
    return _sel(b, b.fcmp_ordered(">", ax, _f(10.06)), _f(0.0), tail)


def _erf_small(b: ir.IRBuilder, x: ir.Value) -> ir.Value:
    return b.fmul(horner(b, b.fmul(x, x), _ERF_P), x)


@_body("erf")
def _erf(b, x):
    # |x| >= 1: 1 - exp(log-erfc polynomial), clamped at 3.92 where it rounds to 1 (NaN passes the
    # ordered compares and comes out NaN); no division, unlike erfc's relative-accuracy tail
    ax = _fabs(b, x)
    t = _sel(b, b.fcmp_ordered(">", ax, _f(_ERF_BIG_END)), _f(_ERF_BIG_END), ax)
    s = b.fmul(b.fsub(t, _f(_ERF_BIG_C)), _f(1.0 / _ERF_BIG_H))
    big = _copysign(b, b.fsub(_f(1.0), call(b, "exp", horner(b, s, _ERF_BIG))), x)
    return _sel(b, b.fcmp_ordered("<", ax, _f(1.0)), _erf_small(b, x), big)


@_body("erfc")
def _erfc(b, x):
    # x >= 1: the tail directly (relative accuracy down to 1e-38); x <= -1: 2 - tail; else 1 - erf
    ax = _fabs(b, x)
    tail = _erfc_tail(b, ax)
    mid = fmuladd(b, b.fneg(x), horner(b, b.fmul(x, x), _ERF_P), _f(1.0))
    out = _sel(b, b.fcmp_ordered("<", x, _f(0.0)), b.fsub(_f(2.0), tail), tail)
    out = _sel(b, b.fcmp_ordered("<", ax, _f(1.0)), mid, out)
    return _sel(b, _isnan(b, x), x, out)


def _fit_erfc_tail() -> tuple[float, ...]:
    """Least-squares Chebyshev fit of x exp(x^2) erfc(x) on x in [1, 10] in s(1/x), degree 11."""
    import numpy as np
    from scipy.special import erfcx

    x = np.linspace(1.0, 10.0, 20001)
    u = 1.0 / x
    s = _ERFC_S[0] * u + _ERFC_S[1]
    cheb = np.polynomial.chebyshev.Chebyshev.fit(s, erfcx(x) * x, 11, domain=[-1, 1])
    return tuple(float(c) for c in cheb.convert(kind=np.polynomial.Polynomial).coef[::-1])


# The fit is deterministic; the constants are written out so the module does not need scipy.
_ERFC_P = (
    2.3909402037100643e-05, -1.438219927653285e-05, -8.749414971630599e-05, 0.00017305990256934105,
    -0.0002115473351159896, 8.388797995451213e-05, 0.000913943086858004, -0.003975319398827163,
    0.008963879283251068, -0.004123900954366283, -0.07651585154529955, 0.5023534257486968,
)

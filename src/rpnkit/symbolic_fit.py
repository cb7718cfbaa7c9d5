"""Fit one-dimensional functions with a library of primitives ``a·f(b·x + c) + d``.

Used by :func:`rpnkit.symbolic.to_sympy` (``fit="auto"``) for edges whose components have
no closed form (B-splines, RBFs): each sampled edge φ(u) is compared with every primitive
of :data:`PRIMITIVES`; the affine output parameters (a, d) are solved by least squares
for every (b, c) on a coarse grid, the best start is polished by a bounded least-squares
solve (scipy), and the primitive is chosen by ``log10(1 - R²) + penalty·complexity``
(the simplest primitive that explains the curve about as well as the best one).

:func:`snap` rounds the fitted constants of an expression to nearby simple numbers
(integers, small fractions, multiples of π) where that changes its values on the data by
less than a tolerance, so that ``sin(1.0002·x + 0.0003)`` becomes ``sin(x)``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import sympy

__all__ = ["PRIMITIVES", "Primitive", "EdgeFit", "fit_function", "snap", "r2_score", "evaluate",
           "refine_constants"]


@dataclass(frozen=True)
class Primitive:
    """f with its numpy and sympy forms and a complexity (simpler is preferred)."""

    name: str
    numpy: Callable[[np.ndarray], np.ndarray]
    sympy: Callable[[Any], Any]
    complexity: int
    #: fit ``a·f(x + c)`` with b = 1 (powers: b is absorbed by a)
    unit_scale: bool = False


def _safe(fn: Callable[[np.ndarray], np.ndarray]) -> Callable[[np.ndarray], np.ndarray]:
    def wrapped(z: np.ndarray) -> np.ndarray:
        with np.errstate(all="ignore"):
            return fn(z)

    return wrapped


#: the library, name → primitive; ``x`` and ``x^2`` are solved exactly (linear least squares)
PRIMITIVES: dict[str, Primitive] = {p.name: p for p in [
    Primitive("0", lambda z: np.zeros_like(z), lambda z: sympy.Integer(0), 0),
    Primitive("x", lambda z: z, lambda z: z, 1),
    Primitive("x^2", lambda z: z * z, lambda z: z**2, 2),
    Primitive("x^3", lambda z: z**3, lambda z: z**3, 3, unit_scale=True),
    Primitive("x^4", lambda z: z**4, lambda z: z**4, 3, unit_scale=True),
    Primitive("sqrt", _safe(np.sqrt), sympy.sqrt, 2),
    Primitive("1/x", _safe(lambda z: 1.0 / z), lambda z: 1 / z, 2, unit_scale=True),
    Primitive("1/x^2", _safe(lambda z: 1.0 / (z * z)), lambda z: 1 / z**2, 3, unit_scale=True),
    Primitive("exp", _safe(np.exp), sympy.exp, 2),
    Primitive("log", _safe(np.log), sympy.log, 2),
    Primitive("sin", np.sin, sympy.sin, 2),
    Primitive("cos", np.cos, sympy.cos, 2),
    Primitive("tanh", np.tanh, sympy.tanh, 3),
    Primitive("gaussian", lambda z: np.exp(-z * z), lambda z: sympy.exp(-z**2), 3),
    Primitive("arctan", np.arctan, sympy.atan, 3),
    Primitive("abs", np.abs, sympy.Abs, 3),
    # a fallback for edges no single primitive explains: c3·x³ + c2·x² + c1·x + c0 (exact
    # least squares; ``EdgeFit.poly`` holds the coefficients)
    Primitive("cubic", lambda z: z**3, lambda z: z**3, 5),
]}

DEFAULT_LIBRARY = ("x", "x^2", "x^3", "x^4", "sqrt", "1/x", "1/x^2", "exp", "log", "sin", "cos",
                   "tanh", "gaussian", "arctan", "cubic")


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    ss = float(np.sum((y - y.mean()) ** 2))
    res = float(np.sum((y - pred) ** 2))
    if not math.isfinite(res):
        return -math.inf
    if ss <= 1e-300:
        return 1.0 if res <= 1e-24 else 0.0
    return 1.0 - res / ss


@dataclass
class EdgeFit:
    """``a·f(b·x + c) + d`` fitted to samples, with its R² on them."""

    primitive: str
    a: float
    b: float
    c: float
    d: float
    r2: float
    complexity: int
    score: float = 0.0
    #: polynomial coefficients (c0, c1, ...) in x, for the ``cubic`` fallback
    poly: tuple[float, ...] | None = None

    def __call__(self, u: Any) -> np.ndarray:
        p = PRIMITIVES[self.primitive]
        u = np.asarray(u, dtype=np.float64)
        if self.poly is not None:
            return sum(c * u**k for k, c in enumerate(self.poly))
        return self.a * p.numpy(self.b * u + self.c) + self.d

    def expr(self, x: Any, constant: bool = True) -> Any:
        """The sympy expression in ``x`` (``constant=False`` leaves out d)."""
        p = PRIMITIVES[self.primitive]
        f = sympy.Float
        if self.poly is not None:
            return sum((f(c) * x**k for k, c in enumerate(self.poly) if k or constant),
                       sympy.Integer(0))
        inner = f(self.b) * x + f(self.c) if self.primitive != "0" else x
        e = f(self.a) * p.sympy(inner) if self.primitive != "0" else sympy.Integer(0)
        return e + f(self.d) if constant else e


def _affine_ls(g: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Least squares of y ≈ a·g + d along the last axis for a stack of g; (a, d, sse)."""
    gm = g.mean(-1, keepdims=True)
    ym = y.mean()
    gc = g - gm
    var = np.sum(gc * gc, -1)
    a = np.where(var > 1e-300, np.sum(gc * (y - ym), -1) / np.where(var > 1e-300, var, 1.0), 0.0)
    d = ym - a * gm[..., 0]
    sse = np.sum((a[..., None] * g + d[..., None] - y) ** 2, -1)
    return a, d, sse


_B_GRID = np.concatenate([-np.geomspace(0.2, 8.0, 14), np.geomspace(0.2, 8.0, 14)])
_C_GRID = np.linspace(-3.5, 3.5, 29)


def _fit_one(p: Primitive, u: np.ndarray, y: np.ndarray) -> EdgeFit:
    """Fit ``a·p(b·u + c) + d``; u is standardised inside and mapped back."""
    if p.name == "0":
        return EdgeFit("0", 0.0, 1.0, 0.0, float(y.mean()), r2_score(y, np.full_like(y, y.mean())),
                       p.complexity)
    mu, s = float(u.mean()), float(u.std()) or 1.0
    if p.unit_scale:  # b = 1 in the data's units: a·(u + c)^k, a/(u + c)
        s_data, s = s, 1.0
    z = (u - mu) / s
    if p.name == "x":
        a, d, _ = _affine_ls(z[None], y)
        b, c = 1.0 / s, -mu / s
        return EdgeFit("x", float(a[0]), b, c, float(d[0]), r2_score(y, a[0] * z + d[0]), 1)
    if p.name == "cubic":
        coef = np.polynomial.polynomial.polyfit(u, y, 3)
        pred = np.polynomial.polynomial.polyval(u, coef)
        return EdgeFit("cubic", 0.0, 1.0, 0.0, float(coef[0]), r2_score(y, pred), p.complexity,
                       poly=tuple(float(c) for c in coef))
    if p.name == "x^2":
        A = np.stack([z * z, z, np.ones_like(z)], 1)
        coef, *_ = np.linalg.lstsq(A, y, rcond=None)
        al, be, ga = (float(v) for v in coef)
        if abs(al) < 1e-14:
            al = 1e-14
        cz = be / (2 * al)  # al·(z + cz)² + ga - al·cz²
        # z = (u - mu)/s  →  al/s²·(u - mu + s·cz)²: a = al/s², b = 1, c = s·cz - mu
        return EdgeFit("x^2", al / s**2, 1.0, s * cz - mu, ga - al * cz**2,
                       r2_score(y, A @ coef), p.complexity)
    bs = np.array([1.0]) if p.unit_scale else _B_GRID
    cs = _C_GRID if not p.unit_scale else np.linspace(-5.0, 5.0, 101) * s_data
    arg = bs[:, None, None] * z[None, None, :] + cs[None, :, None]
    g = p.numpy(arg)
    finite = np.isfinite(g).all(-1)
    g = np.where(np.isfinite(g), g, 0.0)
    a, d, sse = _affine_ls(g, y)
    sse = np.where(finite & np.isfinite(sse), sse, np.inf)
    k = int(np.argmin(sse))
    if not np.isfinite(sse.flat[k]):
        return EdgeFit(p.name, 0.0, 1.0, 0.0, float(y.mean()), -math.inf, p.complexity)
    bi, ci = np.unravel_index(k, sse.shape)
    x0 = np.array([a[bi, ci], bs[bi], cs[ci], d[bi, ci]], dtype=np.float64)
    x0 = _polish(p, z, y, x0)
    a0, b0, c0, d0 = (float(v) for v in x0)
    pred = a0 * p.numpy(b0 * z + c0) + d0
    # z = (u - mu)/s: b0·z + c0 = (b0/s)·u + (c0 - b0·mu/s)
    fit = EdgeFit(p.name, a0, b0 / s, c0 - b0 * mu / s, d0, r2_score(y, pred), p.complexity)
    return _normalise(fit)


def _normalise(f: EdgeFit) -> EdgeFit:
    """Move a positive input scale b out of sqrt and log (a·√b·√(x + c/b), a·log(x + c/b) +
    a·log b), where it is redundant, so that constants come out simple."""
    if f.b > 0 and f.primitive in ("sqrt", "log"):
        if f.primitive == "sqrt":
            f.a *= math.sqrt(f.b)
        else:
            f.d += f.a * math.log(f.b)
        f.c /= f.b
        f.b = 1.0
    return f


def _no_scipy(what: str) -> None:
    """One warning (per call site, as warnings go) that ``what`` is skipped without scipy."""
    warnings.warn(f"symbolic fitting: {what} needs scipy, which is not installed "
                  "(pip install 'rpnkit[symbolic]'); skipped", RuntimeWarning, stacklevel=3)


def _polish(p: Primitive, z: np.ndarray, y: np.ndarray, x0: np.ndarray) -> np.ndarray:
    try:
        from scipy.optimize import least_squares
    except ImportError:
        _no_scipy("the least-squares polish of fit='auto'")
        return x0
    fixed_b = p.unit_scale

    def resid(v: np.ndarray) -> np.ndarray:
        a, b, c, d = v if not fixed_b else (v[0], 1.0, v[1], v[2])
        r = a * p.numpy(b * z + c) + d - y
        return np.where(np.isfinite(r), r, 1e6)

    start = x0 if not fixed_b else x0[[0, 2, 3]]
    try:
        sol = least_squares(resid, start, method="lm", max_nfev=400, xtol=1e-12, ftol=1e-12)
    except (ValueError, FloatingPointError):
        return x0
    v = sol.x
    if not np.all(np.isfinite(v)):
        return x0
    full = v if not fixed_b else np.array([v[0], 1.0, v[1], v[2]])
    base = np.sum(resid(start) ** 2)
    return full if np.sum(resid(v) ** 2) <= base else x0


def fit_function(
    u: Any,
    y: Any,
    library: Sequence[str] | None = None,
    penalty: float = 1.0,
    noise_floor: float = 1e-10,
) -> tuple[EdgeFit, list[EdgeFit]]:
    """The best ``a·f(b·u + c) + d`` for samples (u, y), and every candidate tried.

    Candidates are scored by ``log10(max(1 - R², noise_floor)) + penalty·complexity``; of
    those within 0.3 of the lowest score the simplest wins (then the library's order).
    """
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    if u.shape != y.shape or u.size < 4:
        raise ValueError("fit_function: u and y must be 1-D of the same length (>= 4)")
    names = list(library) if library is not None else list(DEFAULT_LIBRARY)
    unknown = [n for n in names if n not in PRIMITIVES]
    if unknown:
        raise ValueError(f"fit_function: unknown primitives {unknown}; known: {sorted(PRIMITIVES)}")
    fits = []
    for name in names:
        f = _fit_one(PRIMITIVES[name], u, y)
        loss = max(1.0 - f.r2, noise_floor) if math.isfinite(f.r2) else 1.0
        f.score = math.log10(loss) + penalty * f.complexity
        fits.append(f)
    top = min(f.score for f in fits)
    # near-ties (within 0.3, i.e. 1 − R² within a factor 2): the simpler primitive, then the
    # library's order (x² before a slow cosine that mimics it)
    near = [f for f in fits if f.score <= top + 0.3]
    best = min(near, key=lambda f: (f.complexity, names.index(f.primitive)))
    return best, fits


# -- constants -----------------------------------------------------------------------------
def _simple(v: float, tol: float) -> Any:
    """A simple number within ``tol`` (relative for large |v|) of v, or None."""
    cands: list[Any] = [sympy.Integer(round(v))]
    for q in (2, 3, 4):
        cands.append(sympy.Rational(round(v * q), q))
    for q in (1, 2, 3, 4, 6):
        k = round(v * q / math.pi)
        if k:
            cands.append(sympy.Rational(k, q) * sympy.pi)
    scale = max(1.0, abs(v))
    best = None
    for c in cands:
        err = abs(float(c) - v)
        if err <= tol * scale and (best is None or err < abs(float(best) - v) - 1e-15):
            best = c
    return best


def snap(expr: Any, tol: float = 1e-2) -> Any:
    """``expr`` with each float replaced by a nearby simple number (see module docstring);
    floats with |v| < tol become 0. A π already in ``expr`` is turned into a float first, so
    that products such as 0.3183·π are rounded as the number they are."""
    expr = expr.xreplace({sympy.pi: sympy.Float(math.pi)})
    repl = {}
    for f in expr.atoms(sympy.Float):
        v = float(f)
        if abs(v) < tol:
            repl[f] = sympy.Integer(0)
            continue
        s = _simple(v, tol)
        if s is not None:
            repl[f] = s
    return expr.xreplace(repl) if repl else expr


# -- numeric evaluation of a sympy expression (no lambdify: nothing is exec'd) ---------------
_FUNCS: dict[Any, Callable[[np.ndarray], np.ndarray]] = {
    sympy.sin: np.sin, sympy.cos: np.cos, sympy.tan: np.tan, sympy.exp: np.exp,
    sympy.log: np.log, sympy.tanh: np.tanh, sympy.atan: np.arctan, sympy.Abs: np.abs,
    sympy.asin: np.arcsin, sympy.acos: np.arccos, sympy.sinh: np.sinh, sympy.cosh: np.cosh,
    sympy.sign: np.sign,
}


def evaluate(expr: Any, symbols: Sequence[Any], x: Any) -> np.ndarray:
    """Values of ``expr`` on rows of ``x`` (column k holds ``symbols[k]``), in float64."""
    x = np.asarray(x, dtype=np.float64)
    env = {s: x[:, k] for k, s in enumerate(symbols)}
    shape = x.shape[0]

    def ev(e: Any) -> np.ndarray:
        if e in env:
            return env[e]
        if e.has(sympy.zoo, sympy.nan, sympy.oo, -sympy.oo) and not e.free_symbols:
            return np.full(shape, np.nan)  # a division by zero left by rounding
        if e.is_Number or e.is_NumberSymbol:
            return np.full(shape, float(e))
        if e.is_Add:
            return sum(ev(a) for a in e.args)
        if e.is_Mul:
            out = np.ones(shape)
            for a in e.args:
                out = out * ev(a)
            return out
        if e.is_Pow:
            base, ex = e.args
            return np.power(ev(base), float(ex)) if ex.is_Number else np.power(ev(base), ev(ex))
        if isinstance(e, sympy.Piecewise):
            out = np.full(shape, np.nan)
            done = np.zeros(shape, dtype=bool)
            for val, cond in e.args:
                c = np.ones(shape, dtype=bool) if cond is sympy.true else _cond(cond)
                take = c & ~done
                out = np.where(take, ev(val), out)
                done |= take
            return out
        fn = _FUNCS.get(e.func)
        if fn is None:
            raise ValueError(f"evaluate: cannot evaluate {e.func}")
        return fn(ev(e.args[0]))

    def _cond(c: Any) -> np.ndarray:
        ops = {sympy.StrictLessThan: np.less, sympy.LessThan: np.less_equal,
               sympy.StrictGreaterThan: np.greater, sympy.GreaterThan: np.greater_equal}
        if type(c) in ops:
            return ops[type(c)](ev(c.args[0]), ev(c.args[1]))
        raise ValueError(f"evaluate: cannot evaluate condition {c}")

    with np.errstate(all="ignore"):
        root = expr if isinstance(expr, sympy.Basic) else sympy.Float(float(expr))
        return np.asarray(ev(root), dtype=np.float64) * np.ones(shape)


def refine_constants(expr: Any, symbols: Sequence[Any], x: Any, y: Any,
                     max_nfev: int = 300, max_constants: int = 40) -> Any:
    """``expr`` with its float constants re-fitted to (x, y) by least squares (equal floats
    stay tied); returned unchanged when that does not lower the error, or when it has more
    than ``max_constants`` constants (the solve would be slow)."""
    try:
        from scipy.optimize import least_squares
    except ImportError:
        _no_scipy("refitting the constants")
        return expr
    floats = sorted(expr.atoms(sympy.Float), key=lambda f: float(f))
    if not floats or len(floats) > max_constants:
        return expr
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    params = [sympy.Dummy(f"p{k}") for k in range(len(floats))]
    template = expr.xreplace(dict(zip(floats, params)))
    names = list(symbols) + params

    def resid(v: np.ndarray) -> np.ndarray:
        cols = np.column_stack([x] + [np.full(x.shape[0], vi) for vi in v])
        r = evaluate(template, names, cols) - y
        return np.where(np.isfinite(r), r, 1e3)

    v0 = np.array([float(f) for f in floats])
    base = float(np.sum(resid(v0) ** 2))
    try:
        with np.errstate(all="ignore"):
            sol = least_squares(resid, v0, method="trf", max_nfev=max_nfev, x_scale="jac")
    except (ValueError, FloatingPointError):  # pragma: no cover - degenerate starts
        return expr
    if not np.all(np.isfinite(sol.x)) or float(np.sum(resid(sol.x) ** 2)) >= base:
        return expr
    return template.xreplace({p: sympy.Float(float(v)) for p, v in zip(params, sol.x)})

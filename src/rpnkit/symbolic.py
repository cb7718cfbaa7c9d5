"""Closed-form (sympy) export of RPN models: :func:`to_sympy`.

An RPN whose components all have closed forms is an explicit formula: every head is
``fuse_c(ψ(w^c) κ(x)) + b + π(x)`` with a known κ, the dense ψ(w) from
``reconcile(w, n, D)`` and a known π. :func:`to_sympy` writes that formula out, one
sympy expression per output. Each component gives its own closed form —
:meth:`Expansion.sympy <rpnkit.expansion.Expansion.sympy>` (κ's D expressions, pre/post-
processing included), :meth:`Remainder.sympy <rpnkit.remainder.Remainder.sympy>` (π's n
expressions) and :func:`rpnkit.modules.module_sympy` (the torch activation / normalisation
modules); this module only walks model → layers → heads → components and the fusions, and
reads fitted estimators and pipelines. Built in are

* expansions: identity, linear, reciprocal (as a ``Piecewise``), taylor (incl.
  symmetric), chebyshev, legendre, hermite, laguerre, jacobi, fourier, trigonometric,
  hyperbolic, arc_trigonometric, arc_hyperbolic, gaussian_rbf, inverse_quadratic_rbf,
  the naive_* log-densities, combinatorial, combinatorial_normal, nested and extended;
* any reconciliation (the dense reconciled matrix is used);
* remainders zero, constant, identity and linear (with an activation that has a
  closed form), and the KAN base remainder;
* bias, channel fusion (sum / mean), head fusion (sum / mean / concat / linear), deep
  chains, and pre/post-processing and output modules of known form (identity,
  dropout (eval), relu, silu, sigmoid, tanh, softplus, elu, leaky_relu, gelu,
  softmax, log_softmax, batch_norm in eval mode).

Fitted :class:`~rpnkit.sklearn.RPNRegressor` / :class:`~rpnkit.sklearn.RPNClassifier`
are accepted (their internal input standardisation and the regressor's target
scaling are folded in; the classifier gives one logit per class), and so is a scikit-learn ``Pipeline`` of ``StandardScaler``
/ ``MinMaxScaler`` / ``MaxAbsScaler`` steps followed by such an estimator: the formula
is then in the raw input features. The model is read as in eval mode.

A user-defined expansion exports when it overrides ``_sympy(xs)`` (or ``sympy(xs)``), a
user-defined remainder when it overrides ``sympy(xs, tol)``. Components without a closed
form (``bspline``, LayerNorm, ...) raise :class:`NoClosedFormError` (defined in
:mod:`rpnkit.errors`) naming the component and where it sits.

Models built on components without a closed form (KAN, RPN-Ext: B-splines) get a *fitted*
formula with ``to_sympy(model, fit="auto", x=X)`` or :func:`fit_formula`: heads with a
closed form stay exact; in the others every one-input edge φ_ji (:mod:`rpnkit.inspection`)
is fitted with a primitive ``a·f(b·x + c) + d`` (:mod:`rpnkit.symbolic_fit`), cross terms of
structured expansions (Taylor's x_i·x_j) enter as exact monomials, and the composed formula's
constants are rounded to simple numbers where that keeps its error (re-fitted to targets when
they are given). :class:`SymbolicFormula` reports each edge's R² and the formula's error.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

try:
    import sympy
except ImportError:  # pragma: no cover - exercised by the optional-dependency test
    raise ImportError(
        "rpnkit.symbolic needs sympy: pip install 'rpnkit[symbolic]' (or pip install sympy)"
    ) from None
import torch
from torch import nn

from .errors import ConfigurationError, NoClosedFormError
from .head import RPNHead
from .layer import RPNLayer
from .model import RPN
from .modules import float64_array, modules_sympy, sympy_affine, sympy_number

__all__ = ["to_sympy", "fit_formula", "SymbolicFormula", "EdgeRecord", "NoClosedFormError"]

Exprs = list[sympy.Expr]


# -- fitted edges for components without a closed form ------------------------------------
@dataclass
class EdgeRecord:
    """How one edge φ_ji of a head without closed form entered the formula."""

    layer: int
    head: int
    out: int
    inp: int
    importance: float
    fit: Any  # rpnkit.symbolic_fit.EdgeFit, or None when the edge was dropped
    dropped: bool = False

    @property
    def r2(self) -> float:
        return float(self.fit.r2) if self.fit is not None else float("nan")


@dataclass
class SymbolicFormula:
    """What :func:`fit_formula` returns.

    ``exprs``: one sympy expression per output (snapped constants when that kept the error
    within bounds, see ``snapped``); ``raw``: the same before snapping; ``edges``: each
    fitted or dropped edge with its R²; ``rmse``/``r2``: the formula against the model's
    own outputs on ``x``; ``rmse_target``/``r2_target`` against ``y`` when given.
    """

    exprs: list[Any]
    raw: list[Any]
    edges: list[EdgeRecord]
    symbols: list[Any]
    rmse: float
    r2: float
    snapped: bool
    rmse_target: float | None = None
    r2_target: float | None = None
    fitted_heads: int = 0

    @property
    def min_edge_r2(self) -> float:
        vals = [e.r2 for e in self.edges if not e.dropped]
        return min(vals) if vals else float("nan")


class _Fitter:
    """Fits the edges of heads without a closed form (see :mod:`rpnkit.inspection`)."""

    def __init__(self, view: Any, library: Any, penalty: float, threshold: float) -> None:
        self.view = view
        self.library = library
        self.penalty = penalty
        self.threshold = threshold
        self.records: list[EdgeRecord] = []
        self.heads = 0

    def head_exprs(self, layer: int, index: int, head: RPNHead, xs: Exprs, where: str) -> Exprs:
        from .symbolic_fit import fit_function

        self.heads += 1
        hv = self.view.layers[layer].heads[index]
        top = max((e.importance for e in hv.edges.values()), default=0.0)
        ys = []
        for j in range(hv.n):
            y = sympy_number(hv.constant[j])
            for i in range(hv.m):
                e = hv.edges[(j, i)]
                if e.importance <= self.threshold * top or e.importance == 0.0:
                    y = y + sympy_number(float(np.mean(e.data_values)))
                    self.records.append(EdgeRecord(layer, index, j, i, e.importance, None, True))
                    continue
                best, _ = fit_function(e.grid, e.values, self.library, self.penalty)
                y = y + best.expr(xs[i])
                self.records.append(EdgeRecord(layer, index, j, i, e.importance, best))
            for t in hv.interactions:
                if t.out != j:
                    continue
                if t.powers is None:
                    raise NoClosedFormError(
                        f"{where}: {t.label} of the expansion depends on inputs {t.inputs} and "
                        "has no closed form (only one-input columns can be fitted)"
                    )
                term = sympy_number(t.coef)
                for i, k in enumerate(t.powers):
                    if k:
                        term = term * xs[i] ** k
                y = y + term
            ys.append(y)
        return modules_sympy(head.output, ys, f"{where}: output")


def _refined(e: Any, syms: list, x: np.ndarray, y: np.ndarray, stol: float, tol: float,
             expand: bool) -> tuple[Any, bool]:
    """Constants re-fitted to y, then the most rounded formula that keeps the error."""
    from .symbolic_fit import evaluate, refine_constants
    from .symbolic_fit import snap as snap_expr

    def err(expr: Any) -> float:
        if expr.has(sympy.zoo, sympy.nan):
            return float("inf")
        r = float(np.sqrt(np.mean((evaluate(expr, syms, x) - y) ** 2)))
        return r if np.isfinite(r) else float("inf")

    fitted = refine_constants(e, syms, x, y)
    base = err(fitted)
    if not np.isfinite(base):
        fitted, base = e, err(e)
    if stol <= 0:
        return fitted, False
    bound = 1.1 * base + 1e-3 * float(np.std(y))
    best, done = fitted, False
    for t in (stol, max(stol, 5e-2), max(stol, 0.1)):
        cand = _prune(snap_expr(fitted, t), tol, expand)
        if cand.has(sympy.zoo, sympy.nan):  # rounding divided by zero
            continue
        cand = _prune(snap_expr(refine_constants(cand, syms, x, y), stol), tol, expand)
        if err(cand) <= bound:
            best, done = cand, True
    return best, done


def _model_units(steps: list, obj: Any, x: np.ndarray) -> np.ndarray:
    for _, step in steps:
        if step is not None and step != "passthrough":
            x = np.asarray(step.transform(x), dtype=np.float64)
    if getattr(obj, "standardize", False) and hasattr(obj, "x_mean_"):
        x = (x - np.asarray(obj.x_mean_)) / np.asarray(obj.x_scale_)
    return x


def _located(where: str, fn: Callable[..., Exprs], *args: Any) -> Exprs:
    """``fn(*args)``, with ``where`` (layer / head) put in front of a NoClosedFormError."""
    try:
        return list(fn(*args))
    except NoClosedFormError as exc:
        raise NoClosedFormError(f"{where}: {exc}") from None


# -- heads, layers, models ---------------------------------------------------------------
def _head_exprs(head: RPNHead, xs: Exprs, tol: float, where: str) -> Exprs:
    kx = _located(where, head.expansion.sympy, list(xs))
    with torch.no_grad():
        Ws = float64_array(head.reconciled_weights())  # (C, n, D)
    if len(kx) != Ws.shape[-1]:
        raise ConfigurationError(
            f"{where}: {type(head.expansion).__name__}.sympy gave {len(kx)} expressions, "
            f"expected D={Ws.shape[-1]} (one per column of κ(x))"
        )
    W = Ws.sum(axis=0)
    if head.channel_fusion == "mean":
        W = W / Ws.shape[0]
    b = float64_array(head.bias) if head.bias is not None else None
    y = sympy_affine(W, kx, b, tol)
    rem = _located(where, head.remainder.sympy, list(xs), tol)
    y = [a + r for a, r in zip(y, rem)]
    return modules_sympy(head.output, y, f"{where}: output")


def _layer_exprs(layer: RPNLayer, xs: Exprs, tol: float, where: str,
                 fitter: _Fitter | None = None, index: int = 0) -> Exprs:
    outs = []
    for i, h in enumerate(layer.heads):
        try:
            outs.append(_head_exprs(h, xs, tol, f"{where}, head {i}"))
        except NoClosedFormError:
            if fitter is None:
                raise
            outs.append(fitter.head_exprs(index, i, h, xs, f"{where}, head {i}"))
    if layer.fusion in ("sum", "mean"):
        y = [sympy.Add(*col) for col in zip(*outs)]
        if layer.fusion == "mean" and len(outs) > 1:
            y = [e / len(outs) for e in y]
    else:
        y = [e for o in outs for e in o]
        if layer.fusion_linear is not None:
            lin = layer.fusion_linear
            bias = float64_array(lin.bias) if lin.bias is not None else None
            y = sympy_affine(float64_array(lin.weight), y, bias, tol)
    return modules_sympy(layer.output, y, f"{where}: output")


def _module_exprs(module: nn.Module, xs: Exprs, tol: float, fitter: _Fitter | None = None) -> Exprs:
    if any(getattr(h, "xi", None) is not None for h in module.modules() if isinstance(h, RPNHead)):
        raise NoClosedFormError(
            "to_sympy: a head with an interdependence ξ relates the sites of one sample (tokens, "
            "nodes, pixels); a per-sample formula exists only for heads without ξ"
        )
    if isinstance(module, RPN):
        for i, layer in enumerate(module.layers):
            xs = _layer_exprs(layer, xs, tol, f"layer {i}", fitter, i)
        return xs
    if isinstance(module, RPNLayer):
        return _layer_exprs(module, xs, tol, "layer", fitter, 0)
    if isinstance(module, RPNHead):
        try:
            return _head_exprs(module, xs, tol, "head")
        except NoClosedFormError:
            if fitter is None:
                raise
            return fitter.head_exprs(0, 0, module, xs, "head")
    raise NoClosedFormError(
        f"to_sympy: cannot read a {type(module).__name__}; give an RPN, RPNLayer, RPNHead, a "
        "fitted RPNClassifier/RPNRegressor or a Pipeline ending in one"
    )


def _input_width(module: nn.Module) -> int:
    if isinstance(module, RPN):
        return module.layers[0].m
    return module.m


def _transformer_exprs(name: str, step: Any, xs: Exprs) -> Exprs:
    from sklearn.preprocessing import MaxAbsScaler, MinMaxScaler, StandardScaler

    if step is None or step == "passthrough":
        return xs
    if isinstance(step, StandardScaler):
        mean = step.mean_ if step.with_mean else np.zeros(len(xs))
        scale = step.scale_ if step.with_std and step.scale_ is not None else np.ones(len(xs))
        return [(x - sympy_number(mu)) / sympy_number(s) for x, mu, s in zip(xs, mean, scale)]
    if isinstance(step, MinMaxScaler):
        return [x * sympy_number(s) + sympy_number(mn) for x, s, mn in zip(xs, step.scale_, step.min_)]
    if isinstance(step, MaxAbsScaler):
        return [x / sympy_number(s) for x, s in zip(xs, step.scale_)]
    raise NoClosedFormError(
        f"pipeline step {name!r} ({type(step).__name__}) has no closed form supported by "
        "to_sympy (supported: StandardScaler, MinMaxScaler, MaxAbsScaler, 'passthrough')"
    )


def _prune(e: sympy.Expr, tol: float, expand: bool) -> sympy.Expr:
    if expand:
        e = sympy.expand(e)
    if tol <= 0:
        return e

    def small(term: sympy.Expr) -> bool:
        coeff, _ = term.as_coeff_Mul()
        return coeff.is_Number and abs(float(coeff)) < tol

    if e.is_Add:
        return sympy.Add(*[t for t in e.args if not small(t)])
    return sympy.Integer(0) if small(e) else e


def _symbols(names: Any, m: int, default: Sequence[str] | None) -> Exprs:
    if names is None:
        names = list(default) if default is not None else [f"x{i}" for i in range(m)]
    names = list(names)
    if len(names) != m:
        raise ValueError(f"to_sympy: got {len(names)} names for {m} input features")
    return [n if isinstance(n, sympy.Basic) else sympy.Symbol(str(n)) for n in names]


def _resolve(model_or_estimator: Any, names: Any) -> tuple:
    """(module, symbols, input expressions, pipeline steps, estimator, y scale, y shift)."""
    from sklearn.pipeline import Pipeline

    from .sklearn import RPNClassifier, RPNRegressor

    obj = model_or_estimator
    steps: list[tuple[str, Any]] = []
    if isinstance(obj, Pipeline):
        steps = list(obj.steps[:-1])
        obj = obj.steps[-1][1]
    default_names = None
    scale = shift = None
    if isinstance(obj, (RPNClassifier, RPNRegressor)):
        if not hasattr(obj, "model_"):
            raise ValueError(f"to_sympy: the {type(obj).__name__} is not fitted yet")
        if isinstance(obj, RPNRegressor):
            scale, shift = obj.y_scale_, obj.y_mean_
        module = obj.model_
    elif isinstance(obj, (RPN, RPNLayer, RPNHead)):
        module = obj
    else:
        raise NoClosedFormError(
            f"to_sympy: cannot read a {type(obj).__name__}; give an RPN model, layer or head, "
            "a fitted RPNClassifier/RPNRegressor or a Pipeline ending in one"
        )
    m = _input_width(module)
    source = model_or_estimator if steps else obj
    if hasattr(source, "feature_names_in_"):
        default_names = [str(s) for s in source.feature_names_in_]
    syms = _symbols(names, m, default_names)
    xs = list(syms)
    for name, step in steps:
        xs = _transformer_exprs(name, step, xs)
    if getattr(obj, "standardize", False) and hasattr(obj, "x_mean_"):
        xs = [(x - sympy_number(mu)) / sympy_number(sd) for x, mu, sd in zip(xs, obj.x_mean_, obj.x_scale_)]
    return module, syms, xs, steps, obj, scale, shift


def to_sympy(
    model_or_estimator: Any,
    names: Sequence[str | sympy.Symbol] | None = None,
    tol: float = 1e-6,
    expand: bool = True,
    fit: str | None = None,
    x: Any = None,
    **fit_options: Any,
) -> list[sympy.Expr]:
    """One sympy expression per output of an RPN.

    Args:
        model_or_estimator: an :class:`~rpnkit.RPN`, :class:`~rpnkit.RPNLayer`,
            :class:`~rpnkit.RPNHead`, a fitted :class:`~rpnkit.sklearn.RPNRegressor`
            (targets in original units) or :class:`~rpnkit.sklearn.RPNClassifier`
            (one logit per class; probabilities are their softmax), or a scikit-learn
            ``Pipeline`` of scalers ending in one of them (formula in raw features).
        names: input variable names or sympy symbols (default: the estimator's
            ``feature_names_in_`` if any, else ``x0, x1, ...``).
        tol: weights and final coefficients with absolute value below ``tol`` are dropped.
        expand: expand the result (``sympy.expand``) before dropping small terms.
        fit: ``None``/``"exact"`` (default): closed forms only. ``"auto"``: heads with a
            closed form stay exact; the one-input edges of the others (B-spline, ...) are
            fitted with primitives ``a·f(b·x + c) + d`` on the data ``x``
            (:func:`fit_formula`, whose options ``fit_options`` are passed on).
        x: samples in the raw input units (needed for ``fit="auto"``): they set each edge's
            range.

    Raises:
        NoClosedFormError: naming the component (and its layer / head) that has no
            closed form, e.g. a ``bspline`` expansion (with ``fit=None``).
    """
    if fit not in (None, "exact", "auto"):
        raise ConfigurationError(f"to_sympy: fit must be None, 'exact' or 'auto', got {fit!r}")
    if fit == "auto":
        if x is None:
            raise ValueError("to_sympy(fit='auto') needs samples x=... (they set the edge ranges)")
        return fit_formula(model_or_estimator, x, names=names, tol=tol, expand=expand,
                           **fit_options).exprs
    if fit_options:
        raise TypeError(f"to_sympy: unexpected options {sorted(fit_options)} (they need fit='auto')")
    module, _, xs, _, _, scale, shift = _resolve(model_or_estimator, names)
    return _exprs(module, xs, tol, expand, scale, shift, None)


def _exprs(module, xs, tol, expand, scale, shift, fitter) -> list:
    was_training = module.training
    module.eval()
    try:
        ys = _module_exprs(module, xs, tol, fitter)
    finally:
        module.train(was_training)
    if scale is not None:
        ys = [sympy_number(scale[i]) * y + sympy_number(shift[i]) for i, y in enumerate(ys)]
    return [_prune(y, tol, expand) for y in ys]


def fit_formula(
    model_or_estimator: Any,
    x: Any,
    y: Any = None,
    names: Sequence[str | sympy.Symbol] | None = None,
    tol: float = 1e-6,
    expand: bool = True,
    library: Sequence[str] | None = None,
    penalty: float = 1.0,
    threshold: float = 1e-2,
    snap: bool | float = 1e-2,
    refine: bool = True,
) -> SymbolicFormula:
    """A formula for a model whose components may lack a closed form, with its errors.

    Heads with a closed form are written out exactly (as :func:`to_sympy`); for the others
    every one-input edge φ_ji (:func:`rpnkit.inspect`) whose importance is above
    ``threshold`` × the head's largest is fitted with the primitive library
    (:func:`rpnkit.symbolic_fit.fit_function`); weaker edges become their mean. Cross terms
    of structured expansions (Taylor's x_i·x_j) are exact monomials.

    Args:
        x: samples in raw input units (B, m).
        y: optional targets, for the formula's error against the data.
        library, penalty: primitive names and complexity penalty (see ``fit_function``).
        snap: tolerance for rounding constants to simple numbers (:func:`~rpnkit.
            symbolic_fit.snap`); the rounded formula is kept when its error on ``x`` stays
            within 10% (+1e-3·std) of the unrounded one. ``False`` keeps raw constants.
        refine: with ``y``: re-fit the formula's constants to (x, y) by least squares
            (:func:`~rpnkit.symbolic_fit.refine_constants`), then snap with growing
            tolerances (``snap``, 5e-2, 0.1), re-fitting the constants left after each, and
            keep the most rounded formula whose error on y stays within 10% (+1e-3·std) of
            the re-fitted one (pykan's "fit again after auto_symbolic", on the formula).
    """
    from .inspection import inspect
    from .symbolic_fit import evaluate
    from .symbolic_fit import snap as snap_expr

    module, syms, xs, steps, obj, scale, shift = _resolve(model_or_estimator, names)
    xr = np.asarray(x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else x,
                    dtype=np.float64)
    if xr.ndim != 2 or xr.shape[1] != len(syms):
        raise ValueError(f"fit_formula: x must have shape (B, {len(syms)}), got {xr.shape}")
    xm = _model_units(steps, obj, xr)
    view = inspect(module, xm)
    fitter = _Fitter(view, library, penalty, threshold)
    raw = _exprs(module, xs, tol, expand, scale, shift, fitter)
    was_training = module.training
    module.eval()
    try:
        with torch.no_grad():
            p = next(module.parameters())
            ref = module(torch.as_tensor(xm, dtype=p.dtype, device=p.device))
            ref = ref.detach().to(torch.float64).cpu().numpy().reshape(xr.shape[0], -1)
    finally:
        module.train(was_training)
    if scale is not None:
        ref = ref * np.asarray(scale) + np.asarray(shift)

    def errors(exprs: list) -> tuple[float, float, np.ndarray]:
        pred = np.stack([evaluate(e, syms, xr) for e in exprs], 1)
        rmse = float(np.sqrt(np.mean((pred - ref) ** 2)))
        ss = float(np.sum((ref - ref.mean(0)) ** 2))
        r2 = 1.0 - float(np.sum((pred - ref) ** 2)) / ss if ss > 0 else float("nan")
        return rmse, r2, pred

    rmse, r2, pred = errors(raw)
    exprs, snapped = raw, False
    stol = 1e-2 if snap is True else float(snap)
    if y is not None and refine:
        yt = np.asarray(y, dtype=np.float64).reshape(xr.shape[0], -1)
        exprs, snapped = [], False
        for k, e in enumerate(raw):
            e, s_ok = _refined(e, syms, xr, yt[:, k], stol if snap else 0.0, tol, expand)
            exprs.append(e)
            snapped = snapped or s_ok
        rmse, r2, pred = errors(exprs)
    elif snap:
        cand = [_prune(snap_expr(e, stol), tol, expand) for e in raw]
        c_rmse, c_r2, c_pred = errors(cand)
        bound = 1.1 * rmse + 1e-3 * float(ref.std())
        if np.isfinite(c_rmse) and c_rmse <= bound:
            exprs, snapped, rmse, r2, pred = cand, True, c_rmse, c_r2, c_pred
    out = SymbolicFormula(exprs, raw, fitter.records, syms, rmse, r2, snapped,
                          fitted_heads=fitter.heads)
    if y is not None:
        yt = np.asarray(y, dtype=np.float64).reshape(xr.shape[0], -1)
        out.rmse_target = float(np.sqrt(np.mean((pred - yt) ** 2)))
        ss = float(np.sum((yt - yt.mean(0)) ** 2))
        out.r2_target = 1.0 - float(np.sum((pred - yt) ** 2)) / ss if ss > 0 else float("nan")
    return out

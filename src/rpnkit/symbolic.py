"""Closed-form (sympy) export of RPN models: :func:`to_sympy`.

An RPN whose components all have closed forms is an explicit formula: every head is
``fuse_c(ψ(w^c) κ(x)) + b + π(x)`` with a known κ, the dense ψ(w) from
``reconcile(w, n, D)`` and a known π. :func:`to_sympy` writes that formula out, one
sympy expression per output, for

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

Components without a closed form (``bspline``, LayerNorm, ...) raise
:class:`NoClosedFormError` naming the component and where it sits.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import sympy
import torch
from torch import nn

from . import expansion as E
from .errors import ConfigurationError
from .head import RPNHead
from .layer import RPNLayer
from .model import RPN
from .remainder.remainders import (
    ConstantRemainder,
    IdentityRemainder,
    LinearRemainder,
    ZeroRemainder,
)

__all__ = ["to_sympy", "NoClosedFormError"]

Exprs = list[sympy.Expr]


class NoClosedFormError(ConfigurationError):
    """A component of the model has no closed-form symbolic expression."""


def _num(v: float) -> sympy.Expr:
    v = float(v)
    if v == int(v) and abs(v) < 1e15:
        return sympy.Integer(int(v))
    return sympy.Float(v, 15)


def _affine(W: np.ndarray, xs: Exprs, b: np.ndarray | None, tol: float) -> Exprs:
    out = []
    for i in range(W.shape[0]):
        row = W[i]
        terms = [sympy.Float(float(row[j]), 15) * xs[j] for j in np.flatnonzero(np.abs(row) >= tol)]
        if b is not None and abs(b[i]) >= tol:
            terms.append(sympy.Float(float(b[i]), 15))
        out.append(sympy.Add(*terms))
    return out


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to("cpu", torch.float64).numpy()


def _sigmoid(e: sympy.Expr) -> sympy.Expr:
    return 1 / (1 + sympy.exp(-e))


# -- modules (activations, normalisation) ----------------------------------------------
def _apply_modules(mods: Sequence[nn.Module] | None, xs: Exprs, where: str) -> Exprs:
    for mod in mods or []:
        xs = _apply_module(mod, xs, where)
    return xs


def _apply_module(mod: nn.Module, xs: Exprs, where: str) -> Exprs:
    if isinstance(mod, (nn.Identity, nn.Dropout)):
        return xs
    if isinstance(mod, nn.ReLU):
        return [sympy.Max(0, e) for e in xs]
    if isinstance(mod, nn.SiLU):
        return [e * _sigmoid(e) for e in xs]
    if isinstance(mod, nn.Sigmoid):
        return [_sigmoid(e) for e in xs]
    if isinstance(mod, nn.Tanh):
        return [sympy.tanh(e) for e in xs]
    if isinstance(mod, nn.Softplus):
        beta = _num(mod.beta)
        return [sympy.log(1 + sympy.exp(beta * e)) / beta for e in xs]
    if isinstance(mod, nn.ELU):
        a = _num(mod.alpha)
        return [sympy.Piecewise((e, e > 0), (a * (sympy.exp(e) - 1), True)) for e in xs]
    if isinstance(mod, nn.LeakyReLU):
        s = _num(mod.negative_slope)
        return [sympy.Piecewise((e, e > 0), (s * e, True)) for e in xs]
    if isinstance(mod, nn.GELU):
        if mod.approximate == "tanh":
            c = sympy.sqrt(2 / sympy.pi)
            return [e / 2 * (1 + sympy.tanh(c * (e + sympy.Float(0.044715) * e**3))) for e in xs]
        return [e / 2 * (1 + sympy.erf(e / sympy.sqrt(2))) for e in xs]
    if isinstance(mod, (nn.Softmax, nn.LogSoftmax)) and mod.dim in (-1, 1, None):
        ex = [sympy.exp(e) for e in xs]
        s = sympy.Add(*ex)
        if isinstance(mod, nn.Softmax):
            return [v / s for v in ex]
        return [e - sympy.log(s) for e in xs]
    if isinstance(mod, nn.BatchNorm1d) and mod.track_running_stats and mod.running_mean is not None:
        mean, var = _np(mod.running_mean), _np(mod.running_var)
        scale = 1.0 / np.sqrt(var + mod.eps)
        if mod.affine:
            scale = scale * _np(mod.weight)
            shift = _np(mod.bias) - mean * scale
        else:
            shift = -mean * scale
        return [_num(scale[i]) * e + _num(shift[i]) for i, e in enumerate(xs)]
    raise NoClosedFormError(
        f"{where}: module {type(mod).__name__} has no closed form supported by to_sympy"
    )


# -- expansions --------------------------------------------------------------------------
def _orthogonal(kappa: Any, xs: Exprs) -> Exprs:
    out = []
    for x in xs:
        prev, cur = sympy.Integer(1), kappa.p1(x)
        polys = [cur]
        for k in range(2, kappa.d + 1):
            prev, cur = cur, kappa.step(k, x, cur, prev)
            polys.append(cur)
        out.extend(sympy.expand(p) for p in polys)
    return out


def _expand_core(kappa: E.Expansion, xs: Exprs, where: str) -> Exprs:
    m = len(xs)
    if isinstance(kappa, E.Identity):
        return list(xs)
    if isinstance(kappa, E.Linear):
        return [_num(kappa.c) * x for x in xs]
    if isinstance(kappa, E.Reciprocal):
        eps = _num(kappa.eps)
        return [
            sympy.Piecewise((1 / x, sympy.Abs(x) >= eps), (-1 / eps, x < 0), (1 / eps, True))
            for x in xs
        ]
    if isinstance(kappa, E.Taylor):
        blocks: Exprs = []
        if kappa.symmetric:
            for k in range(1, kappa.d + 1):
                for idx in itertools.combinations_with_replacement(range(m), k):
                    blocks.append(sympy.Mul(*[xs[i] for i in idx]))
            return blocks
        p = list(xs)
        blocks.extend(p)
        for _ in range(2, kappa.d + 1):
            p = [a * c for a in p for c in xs]
            blocks.extend(p)
        return blocks
    if isinstance(kappa, (E.Chebyshev, E.Legendre, E.Hermite, E.Laguerre, E.Jacobi)):
        return _orthogonal(kappa, xs)
    if isinstance(kappa, E.Fourier):
        out = []
        for j in range(1, kappa.N + 1):
            f = 2 * sympy.pi * j / _num(kappa.P)
            out.extend(sympy.cos(f * x) for x in xs)
            out.extend(sympy.sin(f * x) for x in xs)
        return out
    if isinstance(kappa, E.Trigonometric):
        return [*map(sympy.sin, xs), *map(sympy.cos, xs), *map(sympy.tan, xs)]
    if isinstance(kappa, E.Hyperbolic):
        return [*map(sympy.sinh, xs), *map(sympy.cosh, xs), *map(sympy.tanh, xs)]
    if isinstance(kappa, E.ArcTrigonometric):
        u = [_sigmoid(x) for x in xs]
        c = sympy.Float(0.99)
        return [*(sympy.asin(c * v) for v in u), *(sympy.acos(c * v) for v in u),
                *map(sympy.atan, u)]
    if isinstance(kappa, E.ArcHyperbolic):
        u = [_sigmoid(x) for x in xs]
        return [*map(sympy.asinh, u), *(sympy.acosh(v + sympy.Float(1.01)) for v in u),
                *(sympy.atanh(sympy.Float(0.99) * v) for v in u)]
    if isinstance(kappa, (E.GaussianRBF, E.InverseQuadraticRBF)):
        centres = _np(kappa.centres)
        eps = _num(kappa.eps)
        out = []
        for x in xs:
            for c in centres:
                z = eps * (x - _num(c))
                out.append(sympy.exp(-(z**2)) if isinstance(kappa, E.GaussianRBF) else 1 / (1 + z**2))
        return out
    if isinstance(kappa, E.NaiveNormal):
        s = _num(kappa.scale)
        const = _num(-math.log(kappa.scale) - 0.5 * math.log(2 * math.pi))
        return [-((x - _num(kappa.loc)) / s) ** 2 / 2 + const for x in xs]
    if isinstance(kappa, E.NaiveLaplace):
        return [-sympy.Abs(x - _num(kappa.loc)) / _num(kappa.scale) + _num(-math.log(2 * kappa.scale))
                for x in xs]
    if isinstance(kappa, E.NaiveCauchy):
        return [_num(-math.log(math.pi * kappa.scale))
                - sympy.log(1 + ((x - _num(kappa.loc)) / _num(kappa.scale)) ** 2) for x in xs]
    if isinstance(kappa, (E.NaiveGamma, E.NaiveExponential, E.NaiveChi2)):
        us = [sympy.Float(0.99) * _sigmoid(x) + sympy.Float(0.001) for x in xs]
        if isinstance(kappa, E.NaiveGamma):
            k, r = kappa.concentration, kappa.rate
            return [_num(k * math.log(r) - math.lgamma(k)) + _num(k - 1) * sympy.log(u) - _num(r) * u
                    for u in us]
        if isinstance(kappa, E.NaiveExponential):
            return [_num(math.log(kappa.rate)) - _num(kappa.rate) * u for u in us]
        h = kappa.df / 2
        return [_num(h - 1) * sympy.log(u) - u / 2 + _num(-h * math.log(2) - math.lgamma(h))
                for u in us]
    if isinstance(kappa, (E.Combinatorial, E.CombinatorialNormal)):
        out = []
        for r in range(1, min(kappa.d, m) + 1):
            for idx in itertools.combinations(range(m), r):
                if isinstance(kappa, E.Combinatorial):
                    out.append(sympy.Mul(*[xs[i] for i in idx]))
                else:
                    out.append(_num(-0.5 * r * math.log(2 * math.pi))
                               - sympy.Add(*[xs[i] ** 2 for i in idx]) / 2)
        return out
    if isinstance(kappa, E.Nested):
        for i, sub in enumerate(kappa.expansions):
            xs = _expansion_exprs(sub, xs, f"{where} > nested[{i}]")
        return xs
    if isinstance(kappa, E.Extended):
        out = []
        for i, sub in enumerate(kappa.expansions):
            out.extend(_expansion_exprs(sub, xs, f"{where} > extended[{i}]"))
        return out
    name = getattr(kappa, "registry_name", type(kappa).__name__)
    raise NoClosedFormError(
        f"{where}: expansion {name!r} ({type(kappa).__name__}) has no closed form; to_sympy "
        "supports identity, linear, reciprocal, taylor, the orthogonal polynomial families, "
        "fourier, trigonometric, hyperbolic, arc_*, gaussian/inverse_quadratic RBF, naive_*, "
        "combinatorial(_normal), nested and extended"
    )


def _expansion_exprs(kappa: E.Expansion, xs: Exprs, where: str) -> Exprs:
    xs = _apply_modules(kappa.preprocess, xs, f"{where} preprocess")
    out = _expand_core(kappa, xs, where)
    return _apply_modules(kappa.postprocess, out, f"{where} postprocess")


# -- heads, layers, models ---------------------------------------------------------------
def _remainder_exprs(pi: nn.Module, xs: Exprs, n: int, tol: float, where: str) -> Exprs:
    from .models.classic import KANBaseRemainder

    w = f"{where}: remainder"
    act = [pi.activation] if getattr(pi, "activation", None) is not None else []
    if isinstance(pi, ZeroRemainder):
        return [sympy.Integer(0)] * n
    if isinstance(pi, ConstantRemainder):
        return [_num(pi.c)] * n
    if isinstance(pi, IdentityRemainder):
        return _apply_modules(act, list(xs), w)
    if isinstance(pi, KANBaseRemainder):
        b = _np(pi.bias) if pi.bias is not None else None
        return _affine(_np(pi.weight), _apply_modules(act, list(xs), w), b, tol)
    if isinstance(pi, LinearRemainder):
        b = _np(pi.bias) if pi.bias is not None else None
        return _apply_modules(act, _affine(_np(pi.weight), xs, b, tol), w)
    name = getattr(pi, "registry_name", type(pi).__name__)
    raise NoClosedFormError(f"{w} {name!r} ({type(pi).__name__}) has no closed form")


def _head_exprs(head: RPNHead, xs: Exprs, tol: float, where: str) -> Exprs:
    kx = _expansion_exprs(head.expansion, xs, f"{where}: expansion")
    with torch.no_grad():
        Ws = _np(head.reconciled_weights())  # (C, n, D)
    W = Ws.sum(axis=0)
    if head.channel_fusion == "mean":
        W = W / Ws.shape[0]
    b = _np(head.bias) if head.bias is not None else None
    y = _affine(W, kx, b, tol)
    rem = _remainder_exprs(head.remainder, xs, head.n, tol, where)
    y = [a + r for a, r in zip(y, rem)]
    return _apply_modules(head.output, y, f"{where}: output")


def _layer_exprs(layer: RPNLayer, xs: Exprs, tol: float, where: str) -> Exprs:
    outs = [_head_exprs(h, xs, tol, f"{where}, head {i}") for i, h in enumerate(layer.heads)]
    if layer.fusion in ("sum", "mean"):
        y = [sympy.Add(*col) for col in zip(*outs)]
        if layer.fusion == "mean" and len(outs) > 1:
            y = [e / len(outs) for e in y]
    else:
        y = [e for o in outs for e in o]
        if layer.fusion_linear is not None:
            lin = layer.fusion_linear
            y = _affine(_np(lin.weight), y, _np(lin.bias) if lin.bias is not None else None, tol)
    return _apply_modules(layer.output, y, f"{where}: output")


def _module_exprs(module: nn.Module, xs: Exprs, tol: float) -> Exprs:
    if isinstance(module, RPN):
        for i, layer in enumerate(module.layers):
            xs = _layer_exprs(layer, xs, tol, f"layer {i}")
        return xs
    if isinstance(module, RPNLayer):
        return _layer_exprs(module, xs, tol, "layer")
    if isinstance(module, RPNHead):
        return _head_exprs(module, xs, tol, "head")
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
        return [(x - _num(mu)) / _num(s) for x, mu, s in zip(xs, mean, scale)]
    if isinstance(step, MinMaxScaler):
        return [x * _num(s) + _num(mn) for x, s, mn in zip(xs, step.scale_, step.min_)]
    if isinstance(step, MaxAbsScaler):
        return [x / _num(s) for x, s in zip(xs, step.scale_)]
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


def to_sympy(
    model_or_estimator: Any,
    names: Sequence[str | sympy.Symbol] | None = None,
    tol: float = 1e-6,
    expand: bool = True,
) -> list[sympy.Expr]:
    """One sympy expression per output of an RPN whose components have closed forms.

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

    Raises:
        NoClosedFormError: naming the component (and its layer / head) that has no
            closed form, e.g. a ``bspline`` expansion.
    """
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
    xs = _symbols(names, m, default_names)
    for name, step in steps:
        xs = _transformer_exprs(name, step, xs)
    if getattr(obj, "standardize", False) and hasattr(obj, "x_mean_"):
        xs = [(x - _num(mu)) / _num(sd) for x, mu, sd in zip(xs, obj.x_mean_, obj.x_scale_)]
    was_training = module.training
    module.eval()
    try:
        ys = _module_exprs(module, xs, tol)
    finally:
        module.train(was_training)
    if scale is not None:
        ys = [_num(scale[i]) * y + _num(shift[i]) for i, y in enumerate(ys)]
    return [_prune(y, tol, expand) for y in ys]

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
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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

__all__ = ["to_sympy", "NoClosedFormError"]

Exprs = list[sympy.Expr]


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
            bias = float64_array(lin.bias) if lin.bias is not None else None
            y = sympy_affine(float64_array(lin.weight), y, bias, tol)
    return modules_sympy(layer.output, y, f"{where}: output")


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
        xs = [(x - sympy_number(mu)) / sympy_number(sd) for x, mu, sd in zip(xs, obj.x_mean_, obj.x_scale_)]
    was_training = module.training
    module.eval()
    try:
        ys = _module_exprs(module, xs, tol)
    finally:
        module.train(was_training)
    if scale is not None:
        ys = [sympy_number(scale[i]) * y + sympy_number(shift[i]) for i, y in enumerate(ys)]
    return [_prune(y, tol, expand) for y in ys]

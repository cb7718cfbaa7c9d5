"""Symbolic fitting of non-closed-form components: primitives, formulas, to_sympy(fit=...)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import sympy
import torch

from rpnkit import RPN
from rpnkit.errors import ConfigurationError, NoClosedFormError
from rpnkit.models.classic import KAN
from rpnkit.symbolic import fit_formula, to_sympy
from rpnkit.symbolic_fit import evaluate, fit_function, snap
from rpnkit.training.engine import fit

pytestmark = pytest.mark.usefixtures("one_thread")

U = np.linspace(-2.5, 2.5, 200)
X = sympy.Symbol("x")


@pytest.mark.parametrize(("y", "want", "truth"), [
    (np.sin(U) + 0.5, "sin", sympy.sin(X) + sympy.Rational(1, 2)),
    (U**2 - 1, "x^2", X**2 - 1),
    (2 * np.exp(0.5 * U), "exp", 2 * sympy.exp(X / 2)),
    (np.tanh(2 * U), "tanh", sympy.tanh(2 * X)),
    (3 * U + 1, "x", 3 * X + 1),
    ((U - 0.5) ** 3, "x^3", (X - sympy.Rational(1, 2)) ** 3),
    (1 / (U + 4), "1/x", 1 / (X + 4)),
    (np.sqrt(U + 3), "sqrt", sympy.sqrt(X + 3)),
    (np.log(U + 3), "log", sympy.log(X + 3)),
])
def test_primitives_are_recovered(y, want, truth):
    noise = np.random.default_rng(0).normal(0, 1e-5, y.shape)
    best, fits = fit_function(U, y + noise)
    assert best.primitive == want
    assert best.r2 > 0.9999
    assert len(fits) > 10
    got = snap(best.expr(X))
    assert sympy.simplify(got - truth) == 0, got
    np.testing.assert_allclose(best(U), y, atol=1e-3)


def test_fit_function_input_checks():
    with pytest.raises(ValueError, match="same length"):
        fit_function([1, 2, 3], [1, 2])
    with pytest.raises(ValueError, match="unknown primitives"):
        fit_function(U, U, library=["x", "gamma"])


def test_snap_and_evaluate():
    x0, x1 = sympy.symbols("x0 x1")
    e = sympy.Float(1.0004) * sympy.sin(sympy.Float(3.1413) * x0 + sympy.Float(0.003)) \
        + sympy.Float(0.4999) * x1**2
    assert snap(e) == sympy.sin(sympy.pi * x0) + x1**2 / 2
    assert snap(sympy.Float(0.37) * x0) == sympy.Float(0.37) * x0  # not near a simple number
    pts = np.random.default_rng(0).uniform(-1, 1, (50, 2))
    expr = sympy.exp(x0) * sympy.cos(x1) + sympy.Abs(x0) ** sympy.Rational(3, 2) - 1 / (x1 + 3)
    want = np.exp(pts[:, 0]) * np.cos(pts[:, 1]) + np.abs(pts[:, 0]) ** 1.5 - 1 / (pts[:, 1] + 3)
    np.testing.assert_allclose(evaluate(expr, [x0, x1], pts), want, rtol=1e-12)


def _trained_kan_sin_x2():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = np.stack([rng.uniform(-3, 3, 600), rng.uniform(-2, 2, 600)], 1)
    y = (np.sin(x[:, 0]) + x[:, 1] ** 2)[:, None]
    model = KAN([2, 1], grid=12, grid_range=(-3.2, 3.2))
    cfg = {"epochs": 40, "optimizer": {"name": "lbfgs", "lr": 1, "line_search": "strong_wolfe"},
           "scheduler": None, "dtype": "float64"}
    fit(model, (x, y), cfg)
    return model, x, y


def test_sin_plus_square_is_recovered():
    """Acceptance: y = sin(x0) + x1² → edge R² > 0.999, formula sympy-equal to the truth."""
    t0 = time.perf_counter()
    model, x, y = _trained_kan_sin_x2()
    res = fit_formula(model, x, y, names=["x0", "x1"])
    x0, x1 = res.symbols
    assert [e.fit.primitive for e in res.edges] == ["sin", "x^2"]
    assert res.min_edge_r2 > 0.999
    assert res.snapped
    assert sympy.simplify(res.exprs[0] - (sympy.sin(x0) + x1**2)) == 0
    assert res.rmse < 0.01
    assert res.r2_target > 0.9999
    # the unsnapped formula is within tolerance of the truth too
    pts = np.random.default_rng(1).uniform([-3, -2], [3, 2], (200, 2))
    raw = evaluate(res.raw[0], res.symbols, pts)
    np.testing.assert_allclose(raw, np.sin(pts[:, 0]) + pts[:, 1] ** 2, atol=0.02)
    # to_sympy: the same formula, and the exact path still refuses splines without fit
    exprs = to_sympy(model, fit="auto", x=x)
    assert sympy.simplify(exprs[0] - (sympy.sin(x0) + x1**2)) == 0
    with pytest.raises(NoClosedFormError, match="bspline"):
        to_sympy(model)
    assert time.perf_counter() - t0 < 60


def test_to_sympy_fit_options_are_checked():
    model = KAN([2, 1])
    with pytest.raises(ConfigurationError, match="fit must be"):
        to_sympy(model, fit="magic", x=np.zeros((4, 2)))
    with pytest.raises(ValueError, match="needs samples"):
        to_sympy(model, fit="auto")
    with pytest.raises(TypeError, match="unexpected options"):
        to_sympy(model, library=["x"])


def test_closed_form_heads_stay_exact_in_fit_mode():
    """A model mixing a spline layer and a closed-form layer: only the spline is fitted."""
    torch.manual_seed(0)
    spline = RPN.from_dims([2, 2], expansion="bspline", reconciliation="identity",
                           remainder="zero").double()
    poly = RPN.from_dims([2, 1], expansion={"name": "taylor", "d": 2},
                         reconciliation="identity", remainder="zero").double()
    model = RPN(list(spline.layers) + list(poly.layers)).double()
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (300, 2))
    res = fit_formula(model, x, snap=False)
    assert res.fitted_heads == 1
    assert {r.layer for r in res.edges} == {0}
    # formula = exact closed form of layer 1 applied to the fitted layer 0
    first = fit_formula(RPN(list(spline.layers)), x, snap=False).exprs
    h0, h1 = sympy.symbols("h0 h1")
    second = to_sympy(RPN(list(poly.layers)), names=[h0, h1])[0]
    composed = second.subs({h0: first[0], h1: first[1]})
    syms = res.symbols
    np.testing.assert_allclose(evaluate(res.exprs[0], syms, x), evaluate(composed, syms, x),
                               rtol=1e-9, atol=1e-12)


def test_rpn_ext_cross_terms_are_exact_monomials():
    torch.manual_seed(0)
    model = RPN.from_dims([2, 1], expansion={"name": "extended", "expansions": [
        {"name": "bspline"}, {"name": "taylor", "d": 2}]}, reconciliation="identity",
        remainder="zero").double()
    x = np.random.default_rng(0).uniform(-0.9, 0.9, (300, 2))
    res = fit_formula(model, x, snap=False)
    x0, x1 = res.symbols
    assert sympy.expand(res.exprs[0]).coeff(x0 * x1) != 0  # the interaction term is there
    assert res.rmse < 0.1

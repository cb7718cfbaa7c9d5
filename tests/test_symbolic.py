"""rpnkit.symbolic.to_sympy: closed forms that evaluate like the model."""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch

import rpnkit
from rpnkit.models import KAN, MLP, NaiveBayes
from rpnkit.sklearn import RPNClassifier, RPNRegressor
from rpnkit.symbolic import NoClosedFormError, to_sympy


def _evaluate(exprs, x: np.ndarray, names=None) -> np.ndarray:
    m = x.shape[1]
    syms = [sympy.Symbol(n) for n in (names or [f"x{i}" for i in range(m)])]
    fns = [sympy.lambdify(syms, e, ["math", "mpmath"]) for e in exprs]
    return np.array([[float(f(*map(float, row))) for f in fns] for row in x])


def _check(model, x: np.ndarray, rtol=1e-7, atol=1e-9, **kw):
    model = model.double().eval()
    exprs = to_sympy(model, tol=0.0, **kw)
    with torch.no_grad():
        ref = model(torch.tensor(x)).numpy()
    assert len(exprs) == ref.shape[1]
    np.testing.assert_allclose(_evaluate(exprs, x), ref, rtol=rtol, atol=atol)
    return exprs


X3 = np.random.default_rng(0).uniform(-0.9, 0.9, size=(4, 3))

EXPANSIONS = [
    ("identity", {}),
    ("linear", {"c": 1.5}),
    ("reciprocal", {}),
    ("taylor", {"d": 3}),
    ("taylor", {"d": 2, "symmetric": True}),
    ("chebyshev", {"d": 4}),
    ("legendre", {"d": 4}),
    ("hermite", {"d": 3}),
    ("laguerre", {"d": 3}),
    ("jacobi", {"d": 3, "alpha": 0.5, "beta": 1.5}),
    ("fourier", {"P": 4.0, "N": 2}),
    ("trigonometric", {}),
    ("hyperbolic", {}),
    ("arc_trigonometric", {}),
    ("arc_hyperbolic", {}),
    ("gaussian_rbf", {"K": 3, "eps": 1.3}),
    ("inverse_quadratic_rbf", {"K": 3}),
    ("naive_normal", {"loc": 0.2, "scale": 1.5}),
    ("naive_laplace", {}),
    ("naive_cauchy", {}),
    ("naive_gamma", {}),
    ("naive_exponential", {}),
    ("naive_chi2", {"df": 3.0}),
    ("combinatorial", {"d": 3}),
    ("combinatorial_normal", {"d": 2}),
    ("nested", {"expansions": ["identity", {"name": "taylor", "d": 2}]}),
    ("extended", {"expansions": ["identity", {"name": "chebyshev", "d": 2}]}),
]


@pytest.mark.parametrize(("name", "params"), EXPANSIONS, ids=[e[0] for e in EXPANSIONS])
def test_expansions_closed_form(name, params):
    torch.manual_seed(0)
    model = rpnkit.RPN.from_dims([3, 2], expansion=name, expansion_params=params, bias=True)
    with torch.no_grad():
        model.layers[0].heads[0].bias.normal_()
    _check(model, X3)


@pytest.mark.parametrize(
    ("name", "params"),
    [
        ("lorr", {"r": 2}),
        ("hm", {"p": 2}),
        ("lphm", {"p": 2, "r": 1}),
        ("dual_lphm", {"p": 2, "r": 1}),
        ("masking", {"p": 0.5}),
        ("duplicated_padding", {"p": 2}),
        ("random_matrix_adaption", {"r": 2}),
        ("hypernet", {"l": 8, "hidden": 8}),
        ("constant_eye", {}),
    ],
)
def test_any_reconciliation(name, params):
    torch.manual_seed(1)
    model = rpnkit.RPN.from_dims(
        [3, 4], expansion="taylor", reconciliation=name, reconciliation_params=params
    )
    _check(model, X3)


@pytest.mark.parametrize(
    ("remainder", "params", "n"),
    [
        ("zero", {}, 2),
        ("constant", {"c": 0.7}, 2),
        ("identity", {"activation": "tanh"}, 3),
        ("linear", {"activation": "silu", "bias": True}, 2),
        ("linear", {"activation": "softplus"}, 2),
    ],
)
def test_remainders(remainder, params, n):
    torch.manual_seed(2)
    model = rpnkit.RPN.from_dims(
        [3, n], expansion="chebyshev", expansion_params={"d": 2},
        remainder=remainder, remainder_params=params,
    )
    _check(model, X3)


def test_channels_heads_fusions_processing_and_depth():
    torch.manual_seed(3)
    model = rpnkit.RPN.from_dims(
        [2, 2, 2, 2],
        expansion="taylor",
        expansion_params={"d": 2, "preprocess": "tanh", "postprocess": "sigmoid"},
        reconciliation="lorr",
        reconciliation_params={"r": 1},
        channels=2,
        channel_fusion="mean",
        heads=2,
        bias=True,
        activation="relu",
        layers=[
            {"head_fusion": "concat"},
            {"head_fusion": "linear", "expansion": "fourier", "expansion_params": {"N": 1}},
            {"head_fusion": "mean", "output": "softmax"},
        ],
    )
    exprs = _check(model, X3[:, :2], rtol=1e-6, expand=False)
    assert all(len(e.free_symbols) > 0 for e in exprs)


def test_mlp_with_gelu_and_leaky_relu():
    torch.manual_seed(4)
    _check(MLP([3, 5, 2], activation="gelu"), X3)
    _check(MLP([3, 5, 2], activation="leaky_relu"), X3)


def test_no_closed_form_names_component():
    with pytest.raises(NoClosedFormError, match=r"layer 0, head 0.*bspline"):
        to_sympy(KAN([2, 1]))
    model = rpnkit.RPN.from_dims([2, 2], layers=[{"output": "layer_norm"}])
    with pytest.raises(NoClosedFormError, match="LayerNorm"):
        to_sympy(model)


def test_tol_drops_small_coefficients_and_names():
    model = rpnkit.RPN.from_dims([2, 1], bias=True)
    head = model.layers[0].heads[0]
    with torch.no_grad():
        head.w.copy_(torch.tensor([[2.0, 1e-8]]))
        head.bias.fill_(0.5)
    a, b = sympy.symbols("a b")
    (e,) = to_sympy(model, names=["a", "b"])
    assert float(e.coeff(a)) == 2.0
    assert float(e.subs(a, 0)) == 0.5
    assert b not in e.free_symbols


def test_naive_bayes_formula_is_quadratic():
    model = NaiveBayes([2, 2], distribution="normal")
    exprs = to_sympy(model)
    x0 = sympy.Symbol("x0")
    assert all(sympy.Poly(e, x0).degree() == 2 for e in exprs)


def _poly_data(seed=0, n=500):
    rng = np.random.default_rng(seed)
    X = rng.uniform(-2, 2, size=(n, 2))
    y = 1.5 + 2 * X[:, 0] - 3 * X[:, 1] + 0.5 * X[:, 0] ** 2 - 1.2 * X[:, 0] * X[:, 1] + 0.8 * X[:, 1] ** 2
    return X, y


TRUE = {"1": 1.5, "x0": 2.0, "x1": -3.0, "x0**2": 0.5, "x0*x1": -1.2, "x1**2": 0.8}


def _coefficients(expr, syms):
    poly = sympy.Poly(expr, *syms)
    x0, x1 = syms
    return {
        "1": float(poly.coeff_monomial(1)),
        "x0": float(poly.coeff_monomial(x0)),
        "x1": float(poly.coeff_monomial(x1)),
        "x0**2": float(poly.coeff_monomial(x0**2)),
        "x0*x1": float(poly.coeff_monomial(x0 * x1)),
        "x1**2": float(poly.coeff_monomial(x1**2)),
    }


def test_regressor_reads_back_true_coefficients():
    X, y = _poly_data()
    reg = RPNRegressor(random_state=0).fit(X, y * 10 + 3)  # target scaling folded in
    (expr,) = to_sympy(reg, tol=1e-4)
    got = _coefficients(expr, sympy.symbols("x0 x1"))
    for k, v in TRUE.items():
        expected = 10 * v + (3 if k == "1" else 0)
        assert abs(got[k] - expected) < 0.05 * 10, (k, got[k], expected)
    (expr_u,) = to_sympy(RPNRegressor(random_state=0).fit(X, y), tol=1e-4)
    got = _coefficients(expr_u, sympy.symbols("x0 x1"))
    for k, v in TRUE.items():
        assert abs(got[k] - v) < 0.05, (k, got[k], v)


def test_pipeline_scaler_substituted():
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    X, y = _poly_data(1)
    Xs = X * np.array([3.0, 0.5]) + np.array([1.0, -2.0])  # raw features u = a x + c
    pipe = make_pipeline(StandardScaler(), RPNRegressor(random_state=0)).fit(Xs, y)
    (expr,) = to_sympy(pipe, tol=1e-5)
    u0, u1 = sympy.symbols("x0 x1")
    x0, x1 = sympy.symbols("x0 x1")
    back = sympy.expand(expr.subs({u0: 3 * x0 + 1, u1: 0.5 * x1 - 2}, simultaneous=True))
    got = _coefficients(back, (x0, x1))
    for k, v in TRUE.items():
        assert abs(got[k] - v) < 0.05, (k, got[k], v)
    np.testing.assert_allclose(_evaluate([expr], Xs[:5])[:, 0], pipe.predict(Xs[:5]), rtol=1e-6)


def test_classifier_logits_and_feature_names():
    pd = pytest.importorskip("pandas")
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    df = pd.DataFrame(X, columns=["sl", "sw", "pl", "pw"])
    clf = RPNClassifier(random_state=0, max_epochs=50).fit(df, y)
    exprs = to_sympy(clf, tol=0.0)
    assert len(exprs) == 3
    assert {s.name for e in exprs for s in e.free_symbols} <= {"sl", "sw", "pl", "pw"}
    logits = _evaluate(exprs, X[:10], names=["sl", "sw", "pl", "pw"])
    np.testing.assert_array_equal(clf.classes_[logits.argmax(1)], clf.predict(df.iloc[:10]))


def test_unfitted_and_unsupported_inputs():
    with pytest.raises(ValueError, match="not fitted"):
        to_sympy(RPNRegressor())
    with pytest.raises(NoClosedFormError):
        to_sympy(torch.nn.Linear(2, 2))
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import PolynomialFeatures

    X, y = _poly_data(n=50)
    pipe = make_pipeline(PolynomialFeatures(), RPNRegressor(max_epochs=5)).fit(X, y)
    with pytest.raises(NoClosedFormError, match="polynomialfeatures"):
        to_sympy(pipe)


def test_raw_unscaled_polynomial_recovery():
    """Offset, unscaled inputs: internal standardisation is folded back into the formula."""
    rng = np.random.default_rng(7)
    X = rng.uniform(0, 5, size=(500, 2))
    y = 1.5 + 2 * X[:, 0] - 3 * X[:, 1] + 0.5 * X[:, 0] ** 2 - 1.2 * X[:, 0] * X[:, 1] + 0.8 * X[:, 1] ** 2
    for params in ({}, {"expansion_params": {"d": 2}}):  # symmetric (default) and full Taylor
        (expr,) = to_sympy(RPNRegressor(random_state=0, **params).fit(X, y), tol=1e-4)
        got = _coefficients(expr, sympy.symbols("x0 x1"))
        for k, v in TRUE.items():
            assert abs(got[k] - v) < 0.05, (params, k, got[k], v)

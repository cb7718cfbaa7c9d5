"""Every expansion κ against an independent NumPy / SciPy reference (float64, random inputs)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
import torch
from scipy import special, stats
from scipy.interpolate import BSpline as ScipyBSpline

import rpnkit
from rpnkit import expansion as E

RTOL = 1e-10
ATOL = 1e-12


def _x(b: int = 7, m: int = 4, lo: float = -1.5, hi: float = 1.5, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).uniform(lo, hi, size=(b, m))


def _run(kappa, x: np.ndarray) -> np.ndarray:
    out = kappa(torch.from_numpy(x))
    assert out.dtype == torch.float64
    assert out.shape == (x.shape[0], kappa.calculate_D(x.shape[1]))
    return out.numpy()


def _close(got: np.ndarray, ref: np.ndarray, rtol: float = RTOL, atol: float = ATOL) -> None:
    assert got.shape == ref.shape
    np.testing.assert_allclose(got, ref, rtol=rtol, atol=atol)


# -- elementary ---------------------------------------------------------------------------


def test_identity():
    x = _x()
    _close(_run(rpnkit.build_expansion("identity"), x), x)


def test_linear_default_and_c():
    x = _x()
    _close(_run(rpnkit.build_expansion("linear"), x), x)
    _close(_run(rpnkit.build_expansion("linear", c=-2.5), x), -2.5 * x)


def test_reciprocal_formula_and_clamp():
    x = _x()
    x[0, 0], x[0, 1], x[0, 2], x[1, 0] = 0.0, 1e-9, -1e-9, -0.5
    kappa = rpnkit.build_expansion("reciprocal", eps=1e-3)
    got = _run(kappa, x)
    safe = np.where(np.abs(x) < 1e-3, np.where(x < 0, -1e-3, 1e-3), x)
    _close(got, 1.0 / safe)
    assert got[0, 0] == pytest.approx(1e3)
    assert got[0, 1] == pytest.approx(1e3)
    assert got[0, 2] == pytest.approx(-1e3)
    assert got[1, 0] == pytest.approx(-2.0)
    assert rpnkit.build_expansion("reciprocal").eps == 1e-6


def test_reciprocal_does_not_mutate_input():
    x = torch.tensor([[0.0, 1e-9, -1e-12, 2.0]], dtype=torch.float64)
    before = x.clone()
    out = rpnkit.build_expansion("reciprocal")(x)
    assert torch.equal(x, before)
    assert out.data_ptr() != x.data_ptr()
    assert torch.isfinite(out).all()


def test_fourier_block_major_by_frequency():
    x = _x(m=3)
    got = _run(rpnkit.build_expansion("fourier"), x)  # P = 10, N = 5
    blocks = []
    for j in range(1, 6):
        blocks += [np.cos(2 * np.pi * j * x / 10), np.sin(2 * np.pi * j * x / 10)]
    _close(got, np.concatenate(blocks, axis=1))
    got = _run(rpnkit.build_expansion("fourier", P=3.0, N=2), x)
    ref = [f(2 * np.pi * j * x / 3.0) for j in (1, 2) for f in (np.cos, np.sin)]
    _close(got, np.concatenate(ref, axis=1))


@pytest.mark.parametrize(
    ("name", "fns"),
    [
        ("trigonometric", (np.sin, np.cos, np.tan)),
        ("hyperbolic", (np.sinh, np.cosh, np.tanh)),
        (
            "arc_trigonometric",
            (
                lambda x: np.arcsin(0.99 * special.expit(x)),
                lambda x: np.arccos(0.99 * special.expit(x)),
                lambda x: np.arctan(special.expit(x)),
            ),
        ),
        (
            "arc_hyperbolic",
            (
                lambda x: np.arcsinh(special.expit(x)),
                lambda x: np.arccosh(special.expit(x) + 1.01),
                lambda x: np.arctanh(0.99 * special.expit(x)),
            ),
        ),
    ],
)
def test_three_block_families(name, fns):
    x = _x(lo=-3, hi=3)
    _close(_run(rpnkit.build_expansion(name), x), np.concatenate([f(x) for f in fns], axis=1))


# -- polynomial ---------------------------------------------------------------------------


def _taylor_ref(x: np.ndarray, d: int, symmetric: bool = False) -> np.ndarray:
    m = x.shape[1]
    cols = []
    for k in range(1, d + 1):
        tuples = (
            itertools.combinations_with_replacement(range(m), k)
            if symmetric
            else itertools.product(range(m), repeat=k)  # row-major ordered products
        )
        cols += [np.prod(x[:, list(t)], axis=1) for t in tuples]
    return np.stack(cols, axis=1)


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("symmetric", [False, True])
def test_taylor(d, symmetric):
    x = _x(m=3)
    kappa = rpnkit.build_expansion("taylor", d=d, symmetric=symmetric)
    _close(_run(kappa, x), _taylor_ref(x, d, symmetric))


def test_taylor_defaults_and_row_major_column_convention():
    kappa = rpnkit.build_expansion("taylor")
    assert (kappa.d, kappa.symmetric) == (2, False)
    x = torch.tensor([[2.0, 3.0, 5.0]], dtype=torch.float64)
    out = kappa(x)[0]
    m = 3
    for a in range(m):
        for c in range(m):
            assert out[m + a * m + c] == x[0, a] * x[0, c]  # column a·m + c of P_2
    assert out.tolist()[:3] == [2.0, 3.0, 5.0]


@pytest.mark.parametrize(
    ("name", "ref"),
    [
        ("chebyshev", lambda k, x: special.eval_chebyt(k, x)),
        ("legendre", lambda k, x: special.eval_legendre(k, x)),
        ("hermite", lambda k, x: special.eval_hermite(k, x)),
        ("laguerre", lambda k, x: special.eval_genlaguerre(k, 0.0, x)),
        ("jacobi", lambda k, x: special.eval_jacobi(k, 1.0, 1.0, x)),
    ],
)
@pytest.mark.parametrize("d", [1, 2, 5, 7])
def test_orthogonal_families_feature_major(name, ref, d):
    x = _x(m=4)
    got = _run(rpnkit.build_expansion(name, d=d), x)
    want = np.stack([ref(k, x) for k in range(1, d + 1)], axis=-1).reshape(x.shape[0], -1)
    _close(got, want, rtol=1e-10, atol=1e-9)


@pytest.mark.parametrize("name", ["chebyshev", "legendre", "hermite", "laguerre", "jacobi"])
def test_orthogonal_default_degree(name):
    assert rpnkit.build_expansion(name).d == 5
    assert rpnkit.build_expansion(name).calculate_D(3) == 15


@pytest.mark.parametrize(("alpha", "beta"), [(1.0, 1.0), (0.5, -0.5), (2.0, 0.0), (-0.7, 3.2)])
def test_jacobi_parameters(alpha, beta):
    x = _x(m=3)
    kappa = rpnkit.build_expansion("jacobi", d=6, alpha=alpha, beta=beta)
    want = np.stack([special.eval_jacobi(k, alpha, beta, x) for k in range(1, 7)], axis=-1)
    _close(_run(kappa, x), want.reshape(x.shape[0], -1), atol=1e-9)
    defaults = rpnkit.build_expansion("jacobi")
    assert (defaults.alpha, defaults.beta) == (1.0, 1.0)


# -- grids --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "phi"),
    [
        ("gaussian_rbf", lambda z: np.exp(-(z**2))),
        ("inverse_quadratic_rbf", lambda z: 1.0 / (1.0 + z**2)),
    ],
)
@pytest.mark.parametrize(("rng", "K", "eps"), [((-1.0, 1.0), 10, 1.0), ((0.0, 3.0), 4, 2.5)])
def test_rbf(name, phi, rng, K, eps):  # noqa: N803
    x = _x(m=3, lo=-2, hi=3)
    kappa = rpnkit.build_expansion(name, range=rng, K=K, eps=eps)
    centres = np.linspace(rng[0], rng[1], K)
    want = np.empty((x.shape[0], 3, K))
    for i in range(3):
        for k in range(K):
            want[:, i, k] = phi(eps * (x[:, i] - centres[k]))
    _close(_run(kappa, x), want.reshape(x.shape[0], -1))
    np.testing.assert_allclose(kappa.centres.numpy(), centres, rtol=0, atol=1e-15)


def test_rbf_defaults():
    for name in ("gaussian_rbf", "inverse_quadratic_rbf"):
        kappa = rpnkit.build_expansion(name)
        assert (tuple(kappa.range), kappa.K, kappa.eps) == ((-1.0, 1.0), 10, 1.0)
        assert kappa.calculate_D(3) == 30


def _cox_de_boor(knots: np.ndarray, i: int, p: int, x: float) -> float:
    """Scalar textbook recursion N_{i,p}(x) (independent of the vectorised version)."""
    if p == 0:
        return 1.0 if knots[i] <= x < knots[i + 1] else 0.0
    left = (x - knots[i]) / (knots[i + p] - knots[i]) * _cox_de_boor(knots, i, p - 1, x)
    right = (knots[i + p + 1] - x) / (knots[i + p + 1] - knots[i + 1])
    return left + right * _cox_de_boor(knots, i + 1, p - 1, x)


@pytest.mark.parametrize(("rng", "t", "d"), [((-1.0, 1.0), 5, 3), ((0.0, 2.0), 4, 2), ((-3.0, 1.0), 3, 1), ((-1.0, 1.0), 6, 0)])
def test_bspline_against_scipy_inside_the_range(rng, t, d):
    lo, hi = rng
    x = _x(b=9, m=3, lo=lo, hi=hi - 1e-9, seed=3)
    kappa = rpnkit.build_expansion("bspline", range=rng, t=t, d=d)
    h = (hi - lo) / t
    knots = lo + h * np.arange(-d, t + d + 1)
    np.testing.assert_allclose(kappa.knots.numpy(), knots, atol=1e-14)
    got = _run(kappa, x).reshape(x.shape[0], 3, t + d)
    spline = ScipyBSpline(knots, np.eye(t + d), d, extrapolate=False)
    for i in range(3):
        _close(got[:, i, :], spline(x[:, i]), atol=1e-12)
    np.testing.assert_allclose(got.sum(-1), 1.0, atol=1e-12)  # partition of unity in [lo, hi)


def test_bspline_outside_the_range_follows_the_extended_knots():
    t, d = 5, 3
    kappa = rpnkit.build_expansion("bspline")
    assert (tuple(kappa.range), kappa.t, kappa.d) == ((-1.0, 1.0), 5, 3)
    knots = -1.0 + 0.4 * np.arange(-d, t + d + 1)
    x = np.array([[-2.5, -1.7, -1.0, 0.999, 1.0, 1.3, 2.1, 9.0]]).T  # (8, 1)
    got = _run(kappa, x)
    want = np.array([[_cox_de_boor(knots, j, d, xv) for j in range(t + d)] for xv in x[:, 0]])
    _close(got, want, atol=1e-12)
    assert np.all(got[-1] == 0)
    assert np.all(got[0] == 0)


# -- probabilistic --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "dist"),
    [("naive_normal", stats.norm), ("naive_laplace", stats.laplace), ("naive_cauchy", stats.cauchy)],
)
def test_naive_location_scale(name, dist):
    x = _x(lo=-4, hi=4)
    _close(_run(rpnkit.build_expansion(name), x), dist.logpdf(x, loc=0.0, scale=1.0))
    kappa = rpnkit.build_expansion(name, loc=0.7, scale=2.5)
    _close(_run(kappa, x), dist.logpdf(x, loc=0.7, scale=2.5))


def _u(x):
    return 0.99 * special.expit(x) + 0.001


def test_naive_positive_support_defaults():
    x = _x(lo=-6, hi=6)
    u = _u(x)
    _close(_run(rpnkit.build_expansion("naive_gamma"), x), stats.gamma.logpdf(u, a=0.5, scale=1.0))
    _close(_run(rpnkit.build_expansion("naive_exponential"), x), stats.expon.logpdf(u, scale=2.0))
    _close(_run(rpnkit.build_expansion("naive_chi2"), x), stats.chi2.logpdf(u, df=1))


def test_naive_positive_support_parameters():
    x = _x(lo=-6, hi=6)
    u = _u(x)
    kappa = rpnkit.build_expansion("naive_gamma", concentration=2.5, rate=3.0)
    _close(_run(kappa, x), stats.gamma.logpdf(u, a=2.5, scale=1 / 3.0))
    kappa = rpnkit.build_expansion("naive_exponential", rate=4.0)
    _close(_run(kappa, x), stats.expon.logpdf(u, scale=0.25))
    kappa = rpnkit.build_expansion("naive_chi2", df=3.0)
    _close(_run(kappa, x), stats.chi2.logpdf(u, df=3.0))


@pytest.mark.parametrize("d", [1, 2, 3, 5])
def test_combinatorial_products_over_subsets(d):
    x = _x(m=4)
    cols = [
        np.prod(x[:, list(s)], axis=1)
        for r in range(1, d + 1)
        for s in itertools.combinations(range(4), r)
    ]
    _close(_run(rpnkit.build_expansion("combinatorial", d=d), x), np.stack(cols, axis=1))


@pytest.mark.parametrize("d", [1, 2, 3])
def test_combinatorial_normal_against_multivariate_normal(d):
    x = _x(m=4)
    cols = []
    for r in range(1, d + 1):
        for s in itertools.combinations(range(4), r):
            cols.append(stats.multivariate_normal(np.zeros(r), np.eye(r)).logpdf(x[:, list(s)]))
    _close(_run(rpnkit.build_expansion("combinatorial_normal", d=d), x), np.stack(cols, axis=1))
    assert rpnkit.build_expansion("combinatorial_normal").d == 2


# -- composite ------------------------------------------------------------------------------


def test_nested_is_composition_first_to_last():
    x = _x(m=2, lo=-0.9, hi=0.9)
    kappa = rpnkit.build_expansion(
        "nested", expansions=[{"name": "taylor", "d": 2}, "trigonometric"]
    )
    inner = _taylor_ref(x, 2)
    want = np.concatenate([np.sin(inner), np.cos(inner), np.tan(inner)], axis=1)
    _close(_run(kappa, x), want)
    assert kappa.calculate_D(2) == 3 * (2 + 4)


def test_extended_is_concatenation():
    x = _x(m=3, lo=-0.9, hi=0.9)
    kappa = rpnkit.build_expansion(
        "extended", expansions=["bspline", rpnkit.build_expansion("taylor", d=2)]
    )
    spline = ScipyBSpline(-1.0 + 0.4 * np.arange(-3, 9), np.eye(8), 3, extrapolate=False)
    bs = np.stack([spline(x[:, i]) for i in range(3)], axis=1).reshape(x.shape[0], -1)
    _close(_run(kappa, x), np.concatenate([bs, _taylor_ref(x, 2)], axis=1), atol=1e-12)
    assert kappa.calculate_D(3) == 3 * 8 + 3 + 9


def test_classes_are_exported_under_camel_case_names():
    assert isinstance(rpnkit.build_expansion("taylor"), E.Taylor)
    assert isinstance(rpnkit.build_expansion("bspline"), E.BSpline)
    assert isinstance(rpnkit.build_expansion("combinatorial_normal"), E.CombinatorialNormal)
    assert math.isclose(E.Fourier().P, 10.0)
    assert E.Fourier().N == 5


@pytest.mark.parametrize("d", [1, 2, 3])
def test_bspline_endpoints_match_scipy_closed_interval(d):
    """Continuity of the extended-knot recursion gives scipy's values at both ends (d ≥ 1)."""
    kappa = rpnkit.build_expansion("bspline", t=4, d=d)
    knots = -1.0 + 0.5 * np.arange(-d, 4 + d + 1)
    x = np.array([[-1.0], [1.0]])
    got = _run(kappa, x)
    _close(got, ScipyBSpline(knots, np.eye(4 + d), d, extrapolate=False)(x[:, 0]), atol=1e-12)
    np.testing.assert_allclose(got.sum(1), 1.0, atol=1e-12)

"""The reference toolkit's extra expansion families: Gegenbauer, Bessel, reverse Bessel,
Fibonacci, Lucas polynomials and the Meyer, Ricker, Shannon, Beta, Haar and DoG wavelet banks.

Values against independent references (scipy.special, explicit sums with math.comb, closed
forms, the wavelets' textbook formulas in numpy), float64 gradcheck / gradgradcheck, sympy
against the numbers, the declared layout, and the parameter checks.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.special as sps
import torch

import rpnkit
from rpnkit.errors import ConfigurationError

D64 = torch.float64
POLYS = ["gegenbauer", "bessel", "reverse_bessel", "fibonacci", "lucas"]
WAVELETS = ["meyer_wavelet", "ricker_wavelet", "shannon_wavelet", "beta_wavelet",
            "haar_wavelet", "dog_wavelet"]


def _x(b=7, m=3, lo=-1.5, hi=1.5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, m, generator=g, dtype=D64) * (hi - lo) + lo


def _feature_major(x: np.ndarray, fns) -> np.ndarray:
    """(B, m) -> (B, m·len(fns)): for each input i, f_1(x_i) .. f_K(x_i)."""
    return np.stack([np.stack([f(x[:, i]) for f in fns], axis=1) for i in range(x.shape[1])],
                    axis=1).reshape(x.shape[0], -1)


# -- polynomial references, independent of the recurrences in the library ---------------------
def bessel_ref(n, x):
    return sum(math.factorial(n + k) / (math.factorial(n - k) * math.factorial(k))
               * (x / 2) ** k for k in range(n + 1))


def reverse_bessel_ref(n, x):
    return sum(math.factorial(n + k) / (math.factorial(n - k) * math.factorial(k) * 2**k)
               * x ** (n - k) for k in range(n + 1))


def _phis(x):
    r = np.sqrt(x * x + 4)
    return (x + r) / 2, (x - r) / 2


def fibonacci_ref(n, x):
    p, q = _phis(x)
    return (p**n - q**n) / (p - q)


def fibonacci_sum(n, x):  # F_n(x) = Σ_k C(n-k-1, k) x^(n-2k-1)
    return sum(math.comb(n - k - 1, k) * x ** (n - 2 * k - 1) for k in range((n - 1) // 2 + 1))


def lucas_ref(n, x):
    p, q = _phis(x)
    return p**n + q**n


def poly_reference(name, params, x):
    d = params.get("d", 5)
    if name == "gegenbauer":
        a = params.get("alpha", 1.0)
        fns = [lambda v, n=n: sps.eval_gegenbauer(n, a, v) for n in range(1, d + 1)]
    else:
        ref = {"bessel": bessel_ref, "reverse_bessel": reverse_bessel_ref,
               "fibonacci": fibonacci_ref, "lucas": lucas_ref}[name]
        fns = [lambda v, n=n: ref(n, v) for n in range(1, d + 1)]
    return _feature_major(x, fns)


@pytest.mark.parametrize(("name", "params"), [
    ("gegenbauer", {}), ("gegenbauer", {"d": 7, "alpha": 0.3}), ("gegenbauer", {"alpha": -0.4}),
    ("gegenbauer", {"d": 9, "alpha": 2.5}), ("bessel", {}), ("bessel", {"d": 8}),
    ("reverse_bessel", {}), ("reverse_bessel", {"d": 8}), ("fibonacci", {}),
    ("fibonacci", {"d": 9}), ("lucas", {}), ("lucas", {"d": 9}), ("fibonacci", {"d": 1}),
])
def test_polynomials_match_independent_references(name, params):
    e = rpnkit.build_expansion(name, **params)
    x = _x()
    got = e(x).numpy()
    want = poly_reference(name, params, x.numpy())
    assert got.shape == (7, 3 * params.get("d", 5))
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


def test_fibonacci_closed_form_and_sum_agree_and_known_numbers():
    x = np.linspace(-2, 2, 11)
    for n in range(1, 12):
        np.testing.assert_allclose(fibonacci_ref(n, x), fibonacci_sum(n, x), rtol=1e-12,
                                   atol=1e-12)
    one = torch.ones(1, 1, dtype=D64)
    fib = rpnkit.build_expansion("fibonacci", d=10)(one)[0].tolist()
    luc = rpnkit.build_expansion("lucas", d=10)(one)[0].tolist()
    assert fib == [1, 1, 2, 3, 5, 8, 13, 21, 34, 55]
    assert luc == [1, 3, 4, 7, 11, 18, 29, 47, 76, 123]
    # y_n(1) = Σ (n+k)!/((n-k)! k! 2^k): 2, 7, 37, 266 (OEIS A001515)
    assert rpnkit.build_expansion("bessel", d=4)(one)[0].tolist() == [2, 7, 37, 266]


# -- wavelet references: textbook formulas in numpy -------------------------------------------
def _sinc(v):  # sin(πv)/(πv), written out
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.sin(np.pi * v) / (np.pi * v)
    return np.where(v == 0, 1.0, out)


def mother(name, p):
    if name == "haar_wavelet":
        return lambda u: np.where((u >= 0) & (u < 0.5), 1.0, np.where((u >= 0.5) & (u < 1), -1.0,
                                                                      0.0))
    if name == "ricker_wavelet":
        s = p.get("sigma", 1.0)
        return lambda u: (2 / (np.sqrt(3 * s) * np.pi**0.25)) * (1 - (u / s) ** 2) * \
            np.exp(-(u**2) / (2 * s**2))
    if name == "dog_wavelet":
        s1, s2 = p.get("sigma_1", 1.0), p.get("sigma_2", 2.0)
        return lambda u: (np.exp(-(u**2) / (2 * s1**2)) / np.sqrt(2 * np.pi * s1**2)
                          - np.exp(-(u**2) / (2 * s2**2)) / np.sqrt(2 * np.pi * s2**2))
    if name == "shannon_wavelet":
        return lambda u: 2 * _sinc(2 * u) - _sinc(u)  # (sin 2πu - sin πu)/(πu)
    if name == "beta_wavelet":
        al, be = p.get("alpha", 1.0), p.get("beta", 1.0)

        def beta(u):
            v = 1 / (1 + np.exp(-u))
            return v ** (al - 1) * (1 - v) ** (be - 1) / sps.beta(al, be)
        return beta
    if name == "meyer_wavelet":
        def meyer(u):
            u = np.asarray(u, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                out = (np.sin(2 * np.pi * u / 3) + 4 / 3 * u * np.cos(4 * np.pi * u / 3)) / \
                    (np.pi * u - 16 * np.pi / 9 * u**3)
            out = np.where(u == 0, 2 / 3 + 4 / (3 * np.pi), out)
            return np.where(np.abs(np.abs(u) - 0.75) == 0, 2 / (3 * np.pi), out)
        return meyer
    raise KeyError(name)


def wavelet_reference(name, p, x):
    s, t, a, b = p.get("s", 1), p.get("t", 1), p.get("a", 1.0), p.get("b", 1.0)
    psi = mother(name, p)
    fns = [lambda v, j=j, k=k: a ** (-j / 2) * psi(v / a**j - k * b)
           for j in range(s) for k in range(t)]
    return _feature_major(x, fns)


BANK = {"s": 3, "t": 2, "a": 2.0, "b": 0.5}
WAVELET_CASES = [(n, {}) for n in WAVELETS] + [(n, dict(BANK)) for n in WAVELETS] + [
    ("ricker_wavelet", {"sigma": 0.7, "t": 3, "b": 0.3}),
    ("dog_wavelet", {"sigma_1": 0.5, "sigma_2": 1.5, "s": 2, "a": 1.5}),
    ("beta_wavelet", {"alpha": 2.0, "beta": 3.5, **BANK}),
    ("beta_wavelet", {"alpha": 1.0, "beta": 2.0}),
]


@pytest.mark.parametrize(("name", "params"), WAVELET_CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(WAVELET_CASES)])
def test_wavelets_match_textbook_formulas(name, params):
    e = rpnkit.build_expansion(name, **params)
    x = _x(b=9, m=3, lo=-3, hi=3)
    got = e(x).numpy()
    want = wavelet_reference(name, params, x.numpy())
    per = params.get("s", 1) * params.get("t", 1)
    assert got.shape == (9, 3 * per) == (9, e.calculate_D(3))
    np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12)


def test_removable_singularities_are_exact_and_smooth():
    meyer = rpnkit.build_expansion("meyer_wavelet")
    sh = rpnkit.build_expansion("shannon_wavelet")
    pts = torch.tensor([[0.0], [0.75], [-0.75], [0.75 + 1e-9], [0.7505], [-0.7495], [1e-5],
                        [0.7511], [0.9]], dtype=D64)
    got = meyer(pts)[:, 0].numpy()
    # the quotient itself, in high precision (mpmath through sympy), away from exact zeros
    import sympy

    t = sympy.symbols("t")
    expr = meyer.psi_sympy(t)
    for v, g in zip(pts[:, 0].tolist(), got):
        if v in (0.0, 0.75, -0.75):
            want = float(sympy.limit(expr, t, sympy.Rational(v).limit_denominator(4)))
        else:
            want = float(expr.subs(t, sympy.Float(v, 40)).evalf(40))
        assert abs(g - want) < 1e-12, (v, g, want)
    assert float(sh(torch.zeros(1, 1, dtype=D64))) == 1.0
    # first and second derivatives stay finite (and continuous) through the windows
    x = torch.tensor([0.0, 0.75, -0.75, 0.7509, 0.7511, 5e-5, 2e-4], dtype=D64,
                     requires_grad=True).view(-1, 1)
    for e in (meyer, sh):
        (g,) = torch.autograd.grad(e(x).sum(), x, create_graph=True)
        (h,) = torch.autograd.grad(g.sum(), x)
        assert torch.isfinite(g).all()
        assert torch.isfinite(h).all()
    (g,) = torch.autograd.grad(meyer(x).sum(), x)
    d = sympy.diff(expr, t)
    assert abs(float(g[3]) - float(d.subs(t, sympy.Float(0.7509, 40)).evalf(30))) < 1e-6
    assert abs(float(g[4]) - float(d.subs(t, sympy.Float(0.7511, 40)).evalf(30))) < 1e-6


GRAD_CASES = [(n, {}) for n in POLYS] + [(n, dict(BANK)) for n in WAVELETS] + [
    ("gegenbauer", {"d": 6, "alpha": 0.7}), ("beta_wavelet", {"alpha": 2.5, "beta": 1.5})]


@pytest.mark.parametrize(("name", "params"), GRAD_CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(GRAD_CASES)])
def test_gradcheck_and_gradgradcheck_float64(name, params):
    e = rpnkit.build_expansion(name, **params)
    # inputs away from the Haar jumps (multiples of b/2 after dilation) and exact zeros
    x = (_x(b=3, m=2, lo=0.05, hi=0.2, seed=3) * torch.tensor([1.0, -1.0], dtype=D64) + 0.013)
    x.requires_grad_(True)
    assert torch.autograd.gradcheck(e, (x,))
    assert torch.autograd.gradgradcheck(e, (x,))


SYMPY_CASES = [(n, {}) for n in POLYS] + [("gegenbauer", {"d": 4, "alpha": 0.5})] + \
    [(n, dict(BANK)) for n in WAVELETS] + [("beta_wavelet", {"alpha": 2.0, "beta": 3.0})]


@pytest.mark.parametrize(("name", "params"), SYMPY_CASES,
                         ids=[f"{n}-{i}" for i, (n, _) in enumerate(SYMPY_CASES)])
def test_sympy_equals_the_numbers(name, params):
    import sympy

    e = rpnkit.build_expansion(name, **params)
    xs = sympy.symbols("x0:2")
    exprs = e.sympy(list(xs))
    assert len(exprs) == e.calculate_D(2)
    x = _x(b=4, m=2, lo=-1.3, hi=1.3, seed=5)
    got = e(x).numpy()
    for r in range(x.shape[0]):
        subs = {xs[i]: sympy.Float(float(x[r, i]), 30) for i in range(2)}
        want = [float(ex.subs(subs).evalf(25)) for ex in exprs]
        np.testing.assert_allclose(got[r], want, rtol=1e-11, atol=1e-12)
    if name in POLYS:  # polynomials: exact polynomials in each single input
        assert all(sympy.Poly(ex, *xs).total_degree() <= e.d for ex in exprs)


@pytest.mark.parametrize("name", POLYS + WAVELETS)
def test_declared_structure_and_float32(name):
    e = rpnkit.build_expansion(name)
    st = e.structure(4)
    assert e.calculate_D(4) == st.D
    assert st.elementwise
    (block,) = st.bases
    assert block.order == "feature"
    x = _x(b=5, m=4, lo=-0.9, hi=0.9)
    torch.testing.assert_close(e(x.float()), e(x).float(), rtol=1e-5, atol=1e-5)
    assert e(x[:0]).shape == (0, st.D)
    hp = e.hparams()
    again = rpnkit.build_expansion(name, **hp)
    assert again.hparams() == hp


def test_constant_columns_are_declared_input_free():
    fib = rpnkit.build_expansion("fibonacci", d=3).structure(2)
    assert fib.column_inputs() == [frozenset(), frozenset({0}), frozenset({0}), frozenset(),
                                   frozenset({1}), frozenset({1})]
    beta = rpnkit.build_expansion("beta_wavelet").structure(2)
    assert beta.column_inputs() == [frozenset(), frozenset()]
    beta2 = rpnkit.build_expansion("beta_wavelet", alpha=2.0).structure(2)
    assert beta2.column_inputs() == [frozenset({0}), frozenset({1})]


@pytest.mark.parametrize("name", POLYS)
def test_safe_abs_is_a_real_bound(name):
    for d in (3, 8):
        e = rpnkit.build_expansion(name, d=d)
        r = e.safe_abs(torch.float32)
        assert r is not None
        assert r > 1
        x = torch.tensor([[r, -r]], dtype=torch.float32)
        assert torch.isfinite(e(x)).all()
        assert e.safe_abs(torch.float64) > r
    # Bessel coefficients (2d-1)!! exceed float32 at d = 30: nothing is guaranteed safe
    assert rpnkit.build_expansion("bessel", d=30).safe_abs(torch.float32) == 0.0


@pytest.mark.parametrize("name", WAVELETS)
def test_wavelets_are_finite_everywhere(name):
    e = rpnkit.build_expansion(name, **BANK)
    assert e.safe_abs(torch.float32) is None
    x = torch.tensor([[-1e30, 1e30, 0.0, 0.25, 0.5, 0.75, -0.75, 1.5, 3.0, -3.0]],
                     dtype=torch.float32).T
    assert torch.isfinite(e(x)).all()


@pytest.mark.parametrize(("name", "params", "match"), [
    ("gegenbauer", {"alpha": -0.5}, r"alpha must be > -0.5 and non-zero, got -0.5"),
    ("gegenbauer", {"alpha": 0}, r"alpha must be > -0.5 and non-zero, got 0.0"),
    ("gegenbauer", {"alpha": float("nan")}, "alpha must be finite"),
    ("bessel", {"d": 101}, r"d \(degree\) must be at most 100, got 101"),
    ("lucas", {"d": 0}, r"d must be an integer >= 1, got 0"),
    ("fibonacci", {"d": 2.5}, r"d must be an integer >= 1, got 2.5"),
    ("haar_wavelet", {"s": 2048, "t": 1024}, r"s·t .* at most 1,048,576, got s=2,048 × t=1,024"),
    ("meyer_wavelet", {"a": 0.5}, r"a \(dilation factor\) must be >= 1, got 0.5"),
    ("meyer_wavelet", {"s": 3}, r"must be > 1 when s > 1 .*got a=1.0"),
    ("shannon_wavelet", {"b": -1}, r"b \(translation step\) must be >= 0, got -1.0"),
    ("shannon_wavelet", {"t": 2, "b": 0}, r"must be > 0 when t > 1"),
    ("ricker_wavelet", {"sigma": 0}, r"sigma must be > 0, got 0.0"),
    ("dog_wavelet", {"sigma_2": 1.0}, r"sigma_1 and sigma_2 must differ"),
    ("dog_wavelet", {"sigma_1": -1.0}, r"sigma_1 must be > 0, got -1.0"),
    ("beta_wavelet", {"alpha": 0.5}, r"alpha and beta must be >= 1, got alpha=0.5, beta=1.0"),
    ("beta_wavelet", {"s": 0}, r"s must be an integer >= 1, got 0"),
])
def test_parameter_errors_name_value_and_range(name, params, match):
    with pytest.raises(ConfigurationError, match=match):
        rpnkit.build_expansion(name, **params)


def test_reference_order_and_nested_powers():
    """Column order (feature, dilation, translation) and the reference's d > 1 as
    nested [wavelet, taylor d] (rows: the bank's tensor powers, previous index major)."""
    e = rpnkit.build_expansion("ricker_wavelet", s=2, t=3, a=2.0, b=0.5)
    x = _x(b=4, m=2)
    out = e(x).view(4, 2, 2, 3)
    psi = mother("ricker_wavelet", {})
    np.testing.assert_allclose(out[:, 1, 1, 2].numpy(),
                               2 ** -0.5 * psi(x[:, 1].numpy() / 2 - 2 * 0.5), rtol=1e-12)
    nested = rpnkit.build_expansion("nested", expansions=[
        {"name": "ricker_wavelet", "s": 2, "t": 3, "a": 2.0, "b": 0.5}, {"name": "taylor", "d": 2}])
    u = e(x)
    want = torch.cat([u, (u.unsqueeze(2) * u.unsqueeze(1)).flatten(1)], dim=1)
    torch.testing.assert_close(nested(x), want, rtol=1e-12, atol=1e-12)

"""Classic models as RPNs: each realises the equivalence its docstring states."""

from __future__ import annotations

import copy
import math
import pickle

import numpy as np
import pytest
import torch
from torch import nn

import rpnkit
from rpnkit.errors import ConfigurationError
from rpnkit.models import KAN, MLP, MODELS, PGM, KernelSVM, NaiveBayes, build_model


@pytest.mark.parametrize(
    ("name", "cls"),
    [("mlp", MLP), ("kan", KAN), ("kernel_svm", KernelSVM), ("naive_bayes", NaiveBayes), ("pgm", PGM)],
)
def test_registered_and_plain_modules(name, cls):
    model = build_model(name, dims=[4, 5, 3])
    assert isinstance(model, cls)
    assert isinstance(model, rpnkit.RPN)
    assert name in MODELS
    y = model(torch.randn(7, 4))
    assert y.shape == (7, 3)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
    clone = pickle.loads(pickle.dumps(model))
    x = torch.randn(3, 4)
    torch.testing.assert_close(clone(x), model(x))
    other = copy.deepcopy(model)
    other.load_state_dict(model.state_dict())
    torch.testing.assert_close(other(x), model(x))


def test_build_model_rejects_unknown_parameter():
    with pytest.raises(ConfigurationError, match="grdi"):
        build_model("kan", dims=[2, 3], grdi=4)
    with pytest.raises(ConfigurationError, match="dims"):
        MLP([3])


def test_mlp_equals_sequential_linear():
    torch.manual_seed(0)
    dims = [5, 7, 6, 3]
    model = MLP(dims, activation="tanh").double()
    seq = nn.Sequential(
        nn.Linear(5, 7), nn.Tanh(), nn.Linear(7, 6), nn.Tanh(), nn.Linear(6, 3)
    ).double()
    linears = [m for m in seq if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for layer, lin in zip(model.layers, linears):
            head = layer.heads[0]
            head.w.copy_(lin.weight.reshape(1, -1))
            head.bias.copy_(lin.bias)
    x = torch.randn(11, 5, dtype=torch.float64)
    torch.testing.assert_close(model(x), seq(x), rtol=1e-12, atol=1e-12)


def _bspline_ref(u: np.ndarray, lo: float, hi: float, t: int, d: int) -> np.ndarray:
    """Hand-written Cox–de Boor recursion on the extended uniform grid: (len(u), t+d)."""
    h = (hi - lo) / t
    knots = [lo + j * h for j in range(-d, t + d + 1)]

    def b(i: int, p: int, x: float) -> float:
        if p == 0:
            return 1.0 if knots[i] <= x < knots[i + 1] else 0.0
        left = (x - knots[i]) / (knots[i + p] - knots[i]) * b(i, p - 1, x)
        right = (knots[i + p + 1] - x) / (knots[i + p + 1] - knots[i + 1]) * b(i + 1, p - 1, x)
        return left + right

    return np.array([[b(i, d, x) for i in range(t + d)] for x in u])


def test_kan_layer_equals_handwritten_kan_formula():
    torch.manual_seed(1)
    m, n, grid, degree = 3, 2, 4, 3
    model = KAN([m, n], grid=grid, degree=degree, grid_range=(-1.5, 1.5)).double()
    head = model.layers[0].heads[0]
    with torch.no_grad():
        head.w.normal_()
    coef = head.w.detach().numpy().reshape(n, m, grid + degree)  # c[j, i, k]
    wb = head.remainder.weight.detach().numpy()  # w^b[j, i]
    x = np.random.default_rng(0).uniform(-1.4, 1.4, size=(9, m))
    expected = np.zeros((9, n))
    for j in range(n):
        for i in range(m):
            basis = _bspline_ref(x[:, i], -1.5, 1.5, grid, degree)
            silu = x[:, i] / (1 + np.exp(-x[:, i]))
            expected[:, j] += basis @ coef[j, i] + wb[j, i] * silu
    got = model(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-10, atol=1e-10)


def test_deep_kan_has_no_inter_layer_modules():
    model = KAN([2, 4, 1])
    assert all(len(layer.output) == 0 for layer in model.layers)
    assert model.layers[1].heads[0].expansion.t == 5


@pytest.mark.parametrize("kernel", ["gaussian_rbf", "inverse_quadratic_rbf", "linear"])
def test_kernel_svm_features_equal_rbf_kernel(kernel):
    torch.manual_seed(2)
    model = KernelSVM([3, 2], kernel=kernel, K=6, eps=0.7, range=(-2, 2)).double()
    head = model.layers[0].heads[0]
    x = np.random.default_rng(1).normal(size=(8, 3))
    feats = head.expansion(torch.tensor(x)).numpy()
    if kernel == "linear":
        ref = x
    else:
        from sklearn.metrics.pairwise import rbf_kernel

        centres = np.linspace(-2, 2, 6)
        blocks = []
        for i in range(3):
            if kernel == "gaussian_rbf":
                # rbf_kernel(u, c, gamma) = exp(-gamma |u - c|^2) with gamma = eps^2
                blocks.append(rbf_kernel(x[:, i : i + 1], centres[:, None], gamma=0.7**2))
            else:
                blocks.append(1 / (1 + (0.7 * (x[:, i : i + 1] - centres[None, :])) ** 2))
        ref = np.concatenate(blocks, axis=1)  # feature-major
    np.testing.assert_allclose(feats, ref, rtol=1e-12, atol=1e-12)
    W = head.reconciled_weights()[0].detach().numpy()
    out = model(torch.tensor(x)).detach().numpy()
    np.testing.assert_allclose(out, ref @ W.T + head.bias.detach().numpy(), rtol=1e-10)


def test_kernel_svm_rejects_unknown_kernel():
    with pytest.raises(ConfigurationError, match="kernel"):
        KernelSVM([2, 2], kernel="poly")
    assert KernelSVM([2, 2], kernel="rbf").kernel == "gaussian_rbf"


def test_gaussian_naive_bayes_equivalence():
    from sklearn.datasets import load_iris
    from sklearn.naive_bayes import GaussianNB

    X, y = load_iris(return_X_y=True)
    gnb = GaussianNB().fit(X, y)
    mu, var = gnb.theta_, gnb.var_  # (classes, features)
    model = NaiveBayes([4, 3], distribution="normal").double()
    head = model.layers[0].heads[0]
    log2pi = math.log(2 * math.pi)
    with torch.no_grad():
        # κ_i = -x_i²/2 - log(2π)/2; w = 1/σ², linear remainder W' = μ/σ²
        head.w.copy_(torch.tensor(1 / var).reshape(1, -1))
        head.remainder.weight.copy_(torch.tensor(mu / var))
        b = np.log(gnb.class_prior_) + (
            -0.5 * np.log(2 * np.pi * var) - mu**2 / (2 * var) + 0.5 * log2pi / var
        ).sum(axis=1)
        head.bias.copy_(torch.tensor(b))
    got = model(torch.tensor(X)).detach().numpy()
    np.testing.assert_allclose(got, gnb.predict_joint_log_proba(X), rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("dist", ["normal", "laplace", "cauchy", "gamma", "exponential", "chi2"])
def test_naive_bayes_logits_formula(dist):
    from scipy import stats

    torch.manual_seed(3)
    model = NaiveBayes([3, 2], distribution=dist, remainder="zero").double()
    head = model.layers[0].heads[0]
    with torch.no_grad():
        head.bias.normal_()
    x = np.random.default_rng(2).normal(size=(6, 3))
    u = 0.99 / (1 + np.exp(-x)) + 0.001
    logpdf = {
        "normal": stats.norm.logpdf(x),
        "laplace": stats.laplace.logpdf(x),
        "cauchy": stats.cauchy.logpdf(x),
        "gamma": stats.gamma.logpdf(u, a=0.5, scale=1.0),
        "exponential": stats.expon.logpdf(u, scale=2.0),
        "chi2": stats.chi2.logpdf(u, df=1),
    }[dist]
    W = head.reconciled_weights()[0].detach().numpy()
    expected = logpdf @ W.T + head.bias.detach().numpy()
    np.testing.assert_allclose(model(torch.tensor(x)).detach().numpy(), expected, rtol=1e-9)


def test_naive_bayes_rejects_unknown_distribution():
    with pytest.raises(ConfigurationError, match="distribution"):
        NaiveBayes([2, 2], distribution="poisson")


def test_pgm_pairwise_gaussian_factors():
    torch.manual_seed(4)
    m = 4
    model = PGM([m, 2]).double()
    head = model.layers[0].heads[0]
    x = np.random.default_rng(3).normal(size=(5, m))
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)]
    unary = [-0.5 * np.log(2 * np.pi) - 0.5 * x[:, i] ** 2 for i in range(m)]
    pair = [-np.log(2 * np.pi) - 0.5 * (x[:, i] ** 2 + x[:, j] ** 2) for i, j in pairs]
    feats = np.stack(unary + pair, axis=1)
    W = head.reconciled_weights()[0].detach().numpy()
    expected = feats @ W.T + x @ head.remainder.weight.detach().numpy().T + head.bias.detach().numpy()
    np.testing.assert_allclose(model(torch.tensor(x)).detach().numpy(), expected, rtol=1e-10)
    assert m + m * (m - 1) // 2 == head.D


@pytest.mark.parametrize("name", ["mlp", "kan", "kernel_svm", "naive_bayes", "pgm"])
def test_non_contiguous_input(name):
    torch.manual_seed(5)
    model = build_model(name, dims=[3, 4, 2]).double()
    x = torch.randn(3, 6, dtype=torch.float64).t()  # (6, 3), not contiguous
    torch.testing.assert_close(model(x), model(x.contiguous()))

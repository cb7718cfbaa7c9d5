"""Every reconciliation ψ against an independent NumPy reference (np.kron, explicit splits)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rpnkit
from rpnkit import reconciliation as R
from rpnkit.errors import ConfigurationError


def _w(ell: int, seed: int = 0) -> torch.Tensor:
    return torch.from_numpy(np.random.default_rng(seed).normal(size=ell))


def _psi(name, n, D, **kw):  # noqa: N803
    psi = rpnkit.build_reconciliation(name, **kw)
    psi.bind(n, D)  # size-dependent state (mask, random matrices) is made once, here
    ell = psi.calculate_l(n, D)
    w = _w(ell)
    W = psi.reconcile(w, n, D)  # noqa: N806
    assert W.shape == (n, D)
    assert W.dtype == torch.float64
    return psi, w.numpy(), W.numpy()


def _close(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)


def test_identity_is_row_major_reshape():
    psi, w, W = _psi("identity", 3, 5)  # noqa: N806
    assert psi.calculate_l(3, 5) == 15
    _close(W, w.reshape(3, 5))
    assert W[1, 2] == w[1 * 5 + 2]


def test_masking():
    psi, w, W = _psi("masking", 6, 8, p=0.3)  # noqa: N806
    assert psi.calculate_l(6, 8) == 48
    mask = psi.mask.numpy()
    assert set(np.unique(mask)) <= {0.0, 1.0}
    _close(W, mask * w.reshape(6, 8))
    assert rpnkit.build_reconciliation("masking").p == 0.5


def test_masking_keep_ratio_and_seed():
    big = rpnkit.build_reconciliation("masking", p=0.25, seed=3)
    big.bind(200, 300)
    assert abs(big.mask.mean().item() - 0.25) < 0.01
    same = rpnkit.build_reconciliation("masking", p=0.25, seed=3)
    same.bind(200, 300)
    assert torch.equal(big.mask, same.mask)  # seeded: drawn once, reproducibly
    other = rpnkit.build_reconciliation("masking", p=0.25, seed=7)
    other.bind(200, 300)
    assert not torch.equal(big.mask, other.mask)
    # no seed: drawn from torch's generator, so torch.manual_seed reproduces it
    masks = []
    for _ in range(2):
        torch.manual_seed(5)
        unseeded = rpnkit.build_reconciliation("masking", p=0.25)
        unseeded.bind(20, 30)
        masks.append(unseeded.mask)
    assert torch.equal(*masks)
    for p, value in ((0.0, 0.0), (1.0, 1.0)):
        psi = rpnkit.build_reconciliation("masking", p=p)
        psi.bind(4, 5)
        assert torch.all(psi.mask == value)


@pytest.mark.parametrize(("n", "D", "p", "q"), [(4, 6, 2, 2), (6, 6, 3, 2), (4, 9, 1, 3), (5, 7, 5, 7)])
def test_duplicated_padding(n, D, p, q):  # noqa: N803
    psi, w, W = _psi("duplicated_padding", n, D, p=p, q=q)  # noqa: N806
    s, t = n // p, D // q
    assert psi.calculate_l(n, D) == s * t
    _close(W, np.kron(np.ones((p, q)), w.reshape(s, t)))


@pytest.mark.parametrize(("n", "D", "p", "q"), [(4, 6, 2, 2), (6, 4, 3, 2), (4, 9, 4, 3), (6, 10, 2, 5)])
def test_hm_is_the_true_kronecker_product(n, D, p, q):  # noqa: N803
    psi, w, W = _psi("hm", n, D, p=p, q=q)  # noqa: N806
    s, t = n // p, D // q
    assert psi.calculate_l(n, D) == p * q + s * t
    A, B = w[: p * q].reshape(p, q), w[p * q :].reshape(s, t)  # noqa: N806
    _close(W, np.kron(A, B))
    # entry (i·s + j, a·t + c) = A[i, a] B[j, c]
    i, j, a, c = p - 1, s - 1, q - 1, 0
    assert W[i * s + j, a * t + c] == pytest.approx(A[i, a] * B[j, c])


@pytest.mark.parametrize(("n", "D", "p", "q", "r"), [(4, 6, 2, 2, 2), (6, 8, 3, 4, 1), (4, 9, 2, 3, 3)])
def test_lphm(n, D, p, q, r):  # noqa: N803
    psi, w, W = _psi("lphm", n, D, p=p, q=q, r=r)  # noqa: N806
    s, t = n // p, D // q
    assert psi.calculate_l(n, D) == p * q + r * (s + t)
    A = w[: p * q].reshape(p, q)  # noqa: N806
    S = w[p * q : p * q + s * r].reshape(s, r)  # noqa: N806
    T = w[p * q + s * r :].reshape(t, r)  # noqa: N806
    _close(W, np.kron(A, S @ T.T))


@pytest.mark.parametrize(("n", "D", "p", "q", "r"), [(4, 6, 2, 2, 2), (6, 8, 3, 4, 1), (8, 9, 4, 3, 3)])
def test_dual_lphm(n, D, p, q, r):  # noqa: N803
    psi, w, W = _psi("dual_lphm", n, D, p=p, q=q, r=r)  # noqa: N806
    s, t = n // p, D // q
    assert psi.calculate_l(n, D) == r * (p + q + s + t)
    o = np.cumsum([0, p * r, q * r, s * r, t * r])
    P, Q, S, T = (w[o[i] : o[i + 1]].reshape(-1, r) for i in range(4))  # noqa: N806
    assert (P.shape, Q.shape, S.shape, T.shape) == ((p, r), (q, r), (s, r), (t, r))
    _close(W, np.kron(P @ Q.T, S @ T.T))


@pytest.mark.parametrize("r", [1, 2, 4])
def test_lorr(r):
    n, D = 5, 7  # noqa: N806
    psi, w, W = _psi("lorr", n, D, r=r)  # noqa: N806
    assert psi.calculate_l(n, D) == r * (n + D)
    A, B = w[: n * r].reshape(n, r), w[n * r :].reshape(D, r)  # noqa: N806
    _close(W, A @ B.T)
    assert np.linalg.matrix_rank(W) == r
    assert rpnkit.build_reconciliation("lorr").r == 2


def test_random_matrix_adaption():
    n, D, r = 5, 7, 3  # noqa: N806
    psi, w, W = _psi("random_matrix_adaption", n, D, r=r)  # noqa: N806
    assert psi.calculate_l(n, D) == n + r
    A, B = psi.A.double().numpy(), psi.B.double().numpy()  # noqa: N806
    assert A.shape == (n, r)
    assert B.shape == (D, r)
    lam1, lam2 = w[:n], w[n:]
    _close(W, np.diag(lam1) @ A @ np.diag(lam2) @ B.T)
    assert rpnkit.build_reconciliation("random_matrix_adaption").r == 2


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_hypernet_is_linear_sigmoid_linear_on_the_code():
    n, D = 3, 4  # noqa: N806
    psi = rpnkit.build_reconciliation("hypernet", l=6, hidden=5)
    psi.bind(n, D)
    psi.double()
    assert psi.calculate_l(n, D) == 6
    w = _w(6)
    W = psi.reconcile(w, n, D).detach().numpy()  # noqa: N806
    lin1, lin2 = psi.net[0], psi.net[2]
    h = _sigmoid(lin1.weight.detach().numpy() @ w.numpy() + lin1.bias.detach().numpy())
    z = lin2.weight.detach().numpy() @ h + lin2.bias.detach().numpy()
    _close(W, z.reshape(n, D))
    defaults = rpnkit.build_reconciliation("hypernet")
    assert (defaults.l, defaults.hidden, defaults.frozen) == (64, 128, True)
    assert defaults.calculate_l(10, 20) == 64


def test_fixed_matrices():
    n, D = 3, 5  # noqa: N806
    w = torch.zeros(0, dtype=torch.float64)
    for name, want in [
        ("zero", np.zeros((n, D))),
        ("one", np.ones((n, D))),
        ("constant", np.ones((n, D))),
        ("constant_eye", np.eye(n, D)),
    ]:
        psi = rpnkit.build_reconciliation(name)
        assert psi.calculate_l(n, D) == 0
        W = psi.reconcile(w, n, D)  # noqa: N806
        assert W.dtype == torch.float64
        _close(W.numpy(), want)
    W = rpnkit.build_reconciliation("constant", c=-2.5).reconcile(w, n, D)  # noqa: N806
    _close(W.numpy(), np.full((n, D), -2.5))
    _close(rpnkit.build_reconciliation("constant_eye").reconcile(w, 5, 3).numpy(), np.eye(5, 3))


@pytest.mark.parametrize("name", ["duplicated_padding", "hm", "lphm", "dual_lphm"])
def test_kron_defaults(name):
    psi = rpnkit.build_reconciliation(name)
    assert (psi.p, psi.q) == (2, 2)
    psi = rpnkit.build_reconciliation(name, p=3)
    assert psi.q == 3  # q defaults to p
    if name in ("lphm", "dual_lphm"):
        assert psi.r == 2


@pytest.mark.parametrize("name", ["duplicated_padding", "hm", "lphm", "dual_lphm"])
def test_bad_divisors_name_the_numbers_and_suggest_factors(name):
    psi = rpnkit.build_reconciliation(name, p=3, q=2)
    with pytest.raises(ConfigurationError, match=r"p=3 must divide n=4.*\[1, 2, 4\]"):
        psi.calculate_l(4, 6)
    psi = rpnkit.build_reconciliation(name, p=2, q=4)
    with pytest.raises(ConfigurationError, match=r"q=4 must divide D=6.*\[1, 2, 3, 6\]"):
        psi.calculate_l(4, 6)
    with pytest.raises(ConfigurationError, match="q=4 must divide D=6"):
        rpnkit.RPNHead(6, 4, expansion="identity", reconciliation=name,
                       reconciliation_params={"p": 2, "q": 4})


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("lorr", {"r": 0}),
        ("hm", {"p": 0}),
        ("hm", {"q": 1.5}),
        ("lphm", {"r": -1}),
        ("dual_lphm", {"r": True}),
        ("masking", {"p": 1.5}),
        ("masking", {"p": "half"}),
        ("hypernet", {"l": 0}),
        ("hypernet", {"hidden": 0}),
        ("constant", {"c": "one"}),
        ("random_matrix_adaption", {"r": 0}),
    ],
)
def test_bad_hyperparameters(name, kwargs):
    with pytest.raises(ConfigurationError):
        rpnkit.build_reconciliation(name, **kwargs)


def test_wrong_w_shape_is_rejected():
    psi = rpnkit.build_reconciliation("lorr")
    with pytest.raises(ValueError, match=r"\(16,\)"):
        psi.reconcile(torch.zeros(15), 3, 5)
    with pytest.raises(ValueError):
        psi.reconcile(torch.zeros(2, 8), 3, 5)


def test_camel_case_classes():
    assert isinstance(rpnkit.build_reconciliation("dual_lphm", p=8, q=784, r=5), R.DualLPHM)
    assert isinstance(rpnkit.build_reconciliation("lorr"), R.LowRank)
    assert R.LoRR is R.LowRank
    assert isinstance(rpnkit.build_reconciliation("hm"), R.HM)
    assert isinstance(rpnkit.build_reconciliation("random_matrix_adaption"), R.RandomMatrixAdaption)


def test_hypernet_keeps_the_code_dtype():
    psi = rpnkit.build_reconciliation("hypernet", l=6, hidden=5)  # float32 net
    psi.bind(3, 4)
    assert psi.reconcile(_w(6), 3, 4).dtype == torch.float64
    assert psi.net[0].weight.dtype == torch.float32

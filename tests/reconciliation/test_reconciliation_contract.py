"""Contract shared by every reconciliation: apply == dense product, gradients, dtypes, state."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import rpnkit
from rpnkit.errors import ConfigurationError

SPEC_NAMES = [
    "identity", "masking", "duplicated_padding", "lorr", "hm", "lphm", "dual_lphm",
    "random_matrix_adaption", "hypernet", "constant", "zero", "one", "constant_eye",
]  # fmt: skip

BUILD = {"hypernet": {"l": 5, "hidden": 6}, "lphm": {"p": 2, "q": 3}, "dual_lphm": {"q": 3}}
N, D = 4, 6


def _bound(name: str, n: int = N, d: int = D):
    psi = rpnkit.build_reconciliation(name, **BUILD.get(name, {}))
    psi.bind(n, d)
    return psi


def _w(psi, n: int = N, d: int = D, dtype=torch.float64) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    return torch.randn(psi.calculate_l(n, d), generator=g, dtype=torch.float64).to(dtype)


#: registered beyond SPEC §3 (the reference toolkit's random-matrix hypernet, issue 24)
EXTRA_NAMES = ["random_matrix_hypernet"]


def test_every_spec_name_is_registered():
    assert sorted(rpnkit.list_components()["reconciliation"]) == sorted(SPEC_NAMES + EXTRA_NAMES)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_apply_equals_the_materialised_product(name):
    psi = _bound(name).double()
    w = _w(psi)
    kx = torch.randn(7, D, dtype=torch.float64)
    dense = kx @ psi.reconcile(w, N, D).T
    got = psi.apply(kx, w, N, D)
    assert got.shape == (7, N)
    torch.testing.assert_close(got, dense, rtol=1e-10, atol=1e-12)
    assert isinstance(psi.describe_apply(N, D), str)


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_forward_is_reconcile(name):
    psi = _bound(name).double()
    w = _w(psi)
    torch.testing.assert_close(psi(w, N, D), psi.reconcile(w, N, D))


@pytest.mark.parametrize("name", [n for n in SPEC_NAMES if n not in ("constant", "zero", "one", "constant_eye")])
def test_gradcheck_wrt_w(name):
    psi = _bound(name).double()
    w = _w(psi).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda v: psi.reconcile(v, N, D), (w,))
    kx = torch.randn(3, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k, v: psi.apply(k, v, N, D), (kx, w))


@pytest.mark.parametrize("name", ["constant", "zero", "one", "constant_eye"])
def test_fixed_matrices_pass_gradients_to_the_features(name):
    psi = _bound(name)
    w = torch.zeros(0, dtype=torch.float64)
    kx = torch.randn(3, D, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda k: psi.apply(k, w, N, D), (kx,))


@pytest.mark.parametrize("name", SPEC_NAMES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved_without_double(name, dtype):
    psi = _bound(name)  # buffers / hypernet in the default dtype
    w = _w(psi, dtype=dtype)
    assert psi.reconcile(w, N, D).dtype == dtype
    assert psi.apply(torch.randn(2, D, dtype=dtype), w, N, D).dtype == dtype


@pytest.mark.parametrize("name", ["masking", "random_matrix_adaption", "hypernet"])
def test_size_dependent_state_moves_with_double(name):
    psi = _bound(name)
    tensors = dict(psi.named_buffers()) | dict(psi.named_parameters())
    assert tensors, "size-dependent state must exist after bind"
    assert all(t.dtype == torch.float32 for t in tensors.values())
    psi.to(torch.float64)
    assert all(t.dtype == torch.float64 for t in psi.state_dict().values())


def test_size_dependent_state_is_buffers_or_submodules():
    masking = _bound("masking")
    assert set(dict(masking.named_buffers())) == {"mask"}
    assert masking.mask.shape == (N, D)
    rma = _bound("random_matrix_adaption")
    assert set(dict(rma.named_buffers())) == {"A", "B"}
    assert list(rma.parameters()) == []
    hyper = _bound("hypernet")
    assert isinstance(hyper.net, torch.nn.Sequential)
    assert [type(m).__name__ for m in hyper.net] == ["Linear", "Sigmoid", "Linear"]
    assert hyper.net[2].out_features == N * D
    assert all(not p.requires_grad for p in hyper.parameters())  # frozen by default
    trainable = rpnkit.build_reconciliation("hypernet", l=5, hidden=6, frozen=False)
    trainable.bind(N, D)
    assert all(p.requires_grad for p in trainable.parameters())


@pytest.mark.parametrize("name", ["masking", "random_matrix_adaption", "hypernet"])
def test_state_dict_round_trip_into_an_unbound_instance(name):
    psi = _bound(name)
    w = _w(psi, dtype=torch.float32)
    want = psi.reconcile(w, N, D)
    # a fresh, never-bound instance with another seed adopts the saved state
    fresh = rpnkit.build_reconciliation(name, **BUILD.get(name, {}), seed=11)
    fresh.load_state_dict(psi.state_dict())
    torch.testing.assert_close(fresh.reconcile(w, N, D), want, rtol=0, atol=0)
    # and a bound one with another seed has different state until it loads
    other = rpnkit.build_reconciliation(name, **BUILD.get(name, {}), seed=11)
    other.bind(N, D)
    assert not torch.equal(other.reconcile(w, N, D), want)
    other.load_state_dict(psi.state_dict())
    torch.testing.assert_close(other.reconcile(w, N, D), want, rtol=0, atol=0)


def test_rebinding_to_other_sizes_is_an_error():
    psi = _bound("masking")
    with pytest.raises(rpnkit.ConfigurationError, match="already bound"):
        psi.bind(N + 1, D)
    with pytest.raises(ValueError, match="bound to n=4, D=6"):
        psi.reconcile(torch.zeros((N + 1) * D), N + 1, D)


@pytest.mark.parametrize("name", ["masking", "random_matrix_adaption", "hypernet"])
def test_standalone_reconcile_never_binds_lazily(name):
    """Size-dependent state (and hypernet parameters) exists before any optimizer does."""
    psi = rpnkit.build_reconciliation(name, **BUILD.get(name, {}))
    w = _w(psi, 3, 4, dtype=torch.float32)
    with pytest.raises(ConfigurationError, match=r"bind\(n, D\)"):
        psi.reconcile(w, 3, 4)
    assert list(psi.parameters()) == []  # nothing created by the failed call
    psi.bind(3, 4)
    assert psi.reconcile(w, 3, 4).shape == (3, 4)


@pytest.mark.parametrize(
    ("name", "k"), [("identity", 1), ("masking", 1), ("duplicated_padding", 1), ("lorr", 2),
                    ("hm", 2), ("lphm", 3), ("dual_lphm", 4), ("random_matrix_adaption", 2)]
)
def test_homogeneity_degree(name, k):
    psi = _bound(name).double()
    w = _w(psi)
    assert psi.homogeneity == k
    torch.testing.assert_close(psi.reconcile(1.7 * w, N, D), 1.7**k * psi.reconcile(w, N, D))


@settings(max_examples=30, deadline=None)
@given(
    p=st.integers(1, 3), q=st.integers(1, 3), s=st.integers(1, 3), t=st.integers(1, 3),
    r=st.integers(1, 3), name=st.sampled_from(["duplicated_padding", "hm", "lphm", "dual_lphm"]),
)
def test_kronecker_forms_property(p, q, s, t, r, name):
    kw = {"p": p, "q": q} | ({"r": r} if name in ("lphm", "dual_lphm") else {})
    psi = rpnkit.build_reconciliation(name, **kw)
    n, d = p * s, q * t
    ell = {
        "duplicated_padding": s * t,
        "hm": p * q + s * t,
        "lphm": p * q + r * (s + t),
        "dual_lphm": r * (p + q + s + t),
    }[name]
    assert psi.calculate_l(n, d) == ell
    w = torch.randn(ell, dtype=torch.float64)
    W = psi.reconcile(w, n, d)  # noqa: N806
    assert W.shape == (n, d)
    kx = torch.randn(3, d, dtype=torch.float64)
    torch.testing.assert_close(psi.apply(kx, w, n, d), kx @ W.T, rtol=1e-10, atol=1e-12)


@settings(max_examples=20, deadline=None)
@given(n=st.integers(1, 6), d=st.integers(1, 6), r=st.integers(1, 3))
def test_l_formulas_property(n, d, r):
    b = rpnkit.build_reconciliation
    assert b("identity").calculate_l(n, d) == n * d
    assert b("masking").calculate_l(n, d) == n * d
    assert b("lorr", r=r).calculate_l(n, d) == r * (n + d)
    assert b("random_matrix_adaption", r=r).calculate_l(n, d) == n + r
    assert b("hypernet", l=r).calculate_l(n, d) == r
    for name in ("constant", "zero", "one", "constant_eye"):
        assert b(name).calculate_l(n, d) == 0
    assert b("hm", p=1, q=1).calculate_l(n, d) == 1 + n * d


@pytest.mark.parametrize("name", SPEC_NAMES)
def test_frobenius_norm_matches_the_dense_matrix(name):
    psi = _bound(name).double()
    w = _w(psi)
    dense = psi.reconcile(w, N, D).pow(2).sum()
    torch.testing.assert_close(psi.frobenius_sq(w, N, D), dense, rtol=1e-10, atol=1e-12)


def test_init_of_a_huge_factorised_head_never_builds_the_matrix(monkeypatch):
    psi = rpnkit.build_reconciliation("dual_lphm", p=8, q=784, r=5)

    def forbidden(*args, **kwargs):
        raise AssertionError("reconcile must not be called at init")

    monkeypatch.setattr(psi, "reconcile", forbidden)
    head = rpnkit.RPNHead(784, 64, expansion="taylor", reconciliation=psi)
    assert head.D == 784 + 784**2
    assert head.l == 5 * (8 + 784 + 8 + 785)
    monkeypatch.undo()
    pm, qm, sm, tm = psi.factors(head.w[0].detach(), 64, head.D)
    rms = ((pm.T @ pm) * (qm.T @ qm)).sum() * ((sm.T @ sm) * (tm.T @ tm)).sum()
    assert (rms / (64 * head.D)).sqrt().item() == pytest.approx(1 / (3 * head.D) ** 0.5, rel=1e-3)


@pytest.mark.parametrize("name", ["masking", "random_matrix_adaption", "hypernet"])
def test_bound_instances_refuse_other_sizes(name):
    psi = rpnkit.build_reconciliation(name, **BUILD.get(name, {}))
    head = rpnkit.RPNHead(3, 5, reconciliation=psi)
    assert (psi.n, psi.D) == (5, 3)
    with pytest.raises(ValueError, match="bound to n=5, D=3"):
        psi.reconcile(_w(psi, 2, 3, dtype=torch.float32), 2, 3)
    with pytest.raises(ConfigurationError, match="already bound"):
        psi.bind(2, 3)
    assert head(torch.randn(2, 3)).shape == (2, 5)

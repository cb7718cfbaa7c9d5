"""The reference toolkit's kernel interdependences (numerical and statistical), its hybrid
graph-bilinear interdependence: against scipy / numpy definitions written here, gradients in
float64, batch independence, meta init and errors."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.special
import scipy.stats
import torch
from scipy.spatial.distance import cdist

import rpnkit
from rpnkit.errors import ConfigurationError
from rpnkit.interdependence import InterdependentHead, build_interdependence

D64 = torch.float64
TOL = 1e-12


def _tanh(u, alpha=0.7, c=0.2):
    return np.tanh(alpha * u @ u.T + c)


def _pearson(u):
    p = len(u)
    return np.array([[scipy.stats.pearsonr(u[i], u[j])[0] for j in range(p)] for i in range(p)])


def _rv(u):
    """RV coefficient of single variables from its trace formula on centred columns."""
    c = u - u.mean(1, keepdims=True)
    p = len(u)
    out = np.zeros((p, p))
    for i in range(p):
        for j in range(p):
            si, sj = np.outer(c[i], c[i]), np.outer(c[j], c[j])  # X Xᵀ, Y Yᵀ
            out[i, j] = np.trace(si @ sj) / np.sqrt(np.trace(si @ si) * np.trace(sj @ sj))
    return out


def _mi(u):
    """Gaussian MI ½ log(σ_i² σ_j² / det Σ_ij) off the diagonal, 0 on it (the reference)."""
    p = len(u)
    out = np.zeros((p, p))
    for i in range(p):
        for j in range(p):
            if i != j:
                cov = np.cov(np.stack([u[i], u[j]]))
                out[i, j] = 0.5 * np.log(cov[0, 0] * cov[1, 1] / np.linalg.det(cov))
    return out


def _kl(u):
    p = scipy.special.softmax(u, axis=1)
    return np.array([[scipy.stats.entropy(p[i], p[j]) for j in range(len(u))] for i in range(len(u))])


#: name → (params, K(u) between the rows of u as numpy/scipy computes it)
REFERENCES = {
    "tanh": ({"alpha": 0.7, "c": 0.2}, _tanh),
    "exponential": ({"gamma": 0.3}, lambda u: np.exp(-0.3 * cdist(u, u, "sqeuclidean"))),
    "minkowski": ({"p": 3}, lambda u: np.exp(-cdist(u, u, "minkowski", p=3))),
    "manhattan": ({}, lambda u: np.exp(-cdist(u, u, "cityblock"))),
    "euclidean": ({}, lambda u: np.exp(-cdist(u, u, "euclidean"))),
    "chebyshev": ({}, lambda u: np.exp(-cdist(u, u, "chebyshev"))),
    "canberra": ({}, lambda u: np.exp(-cdist(u, u, "canberra"))),
    "laplacian": ({"sigma": 0.6}, lambda u: np.exp(-cdist(u, u, "cityblock") / 0.6)),
    "anisotropic_rbf": ({"a": 0.4}, lambda u: np.exp(-0.4 * cdist(u, u, "sqeuclidean"))),
    "pearson": ({}, _pearson),
    "rv_coefficient": ({}, _rv),
    "mutual_information": ({}, _mi),
    "kl_divergence": ({}, _kl),
}


def _x(*shape, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=D64)


@pytest.mark.parametrize("level", ["instance", "attribute"])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_matrix_against_scipy(name, level):
    params, ref = REFERENCES[name]
    xi = build_interdependence(name, level=level, **params)
    xi.bind(4, dtype=D64)
    x = _x(3, 6, 4)
    a = xi.matrix(x)
    for b in range(3):
        xb = x[b].numpy()
        if level == "instance":  # output i = Σ_j k(x_j, x_i) x_j: A = Kᵀ, ξ(X) = A X
            expect = ref(xb).T
            got_xi = a[b] @ x[b]
        else:  # attributes compared over the 6 positions: A = K, ξ(X) = X A
            expect = ref(xb.T)
            got_xi = x[b] @ a[b]
        np.testing.assert_allclose(a[b].numpy(), expect, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(xi(x)[b], got_xi, rtol=TOL, atol=TOL)


def test_rv_coefficient_is_squared_pearson_and_kl_is_asymmetric():
    x = _x(5, 7)
    rv = build_interdependence("rv_coefficient", level="instance").matrix(x)
    r = build_interdependence("pearson", level="instance").matrix(x)
    torch.testing.assert_close(rv, r ** 2, rtol=TOL, atol=TOL)
    kl = build_interdependence("kl_divergence", level="instance").matrix(x)
    assert (kl - kl.T).abs().max() > 1e-3
    assert torch.all(kl.diagonal() == 0) or kl.diagonal().abs().max() < 1e-15


@pytest.mark.parametrize("normalize", ["row", "softmax"])
def test_normalize_makes_each_output_a_weighted_mean(normalize):
    x = _x(2, 5, 3)
    for level in ("instance", "attribute"):
        xi = build_interdependence("euclidean", level=level, normalize=normalize)
        a = xi.matrix(x)
        sums = a.sum(-1) if level == "instance" else a.sum(-2)
        torch.testing.assert_close(sums, torch.ones_like(sums), rtol=TOL, atol=TOL)
    raw = build_interdependence("euclidean", level="instance").matrix(x)
    soft = build_interdependence("euclidean", level="instance", normalize="softmax").matrix(x)
    torch.testing.assert_close(soft, torch.softmax(raw, -1), rtol=TOL, atol=TOL)


def test_anisotropic_rbf_per_coordinate_scales():
    a = [0.5, 2.0, 0.1]
    xi = build_interdependence("anisotropic_rbf", a=a, level="instance")
    xi.bind(3, dtype=D64)
    x = _x(6, 3).numpy()
    expect = np.exp(-cdist(x, x, "sqeuclidean", w=np.array(a)))
    np.testing.assert_allclose(xi.matrix(torch.from_numpy(x)).numpy(), expect, rtol=1e-12)


@pytest.mark.parametrize("level", ["instance", "attribute"])
@pytest.mark.parametrize("name", list(REFERENCES))
def test_gradcheck_through_the_head(name, level):
    params, _ = REFERENCES[name]
    torch.manual_seed(0)
    head = InterdependentHead(3, 2, name, {"level": level, **params}, dtype=D64, bias=True)
    x = _x(2, 4, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda xx, *ps: head(xx), (x, *head.parameters()),
                                    eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", ["pearson", "kl_divergence", "exponential", "tanh"])
def test_gradgradcheck(name):
    params, _ = REFERENCES[name]
    xi = build_interdependence(name, level="instance", **params)
    xi.bind(3, dtype=D64)
    x = _x(4, 3).requires_grad_(True)
    assert torch.autograd.gradgradcheck(xi, (x,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", list(REFERENCES))
def test_samples_are_independent_and_two_d_is_refused(name):
    params, _ = REFERENCES[name]
    torch.manual_seed(0)
    head = InterdependentHead(3, 2, name, {"level": "instance", **params}, dtype=D64)
    x = _x(4, 5, 3)
    whole = head(x)
    for b in range(4):
        torch.testing.assert_close(head(x[b:b + 1])[0], whole[b], rtol=TOL, atol=TOL)
    assert head.xi.structure().couples_rows
    with pytest.raises(ValueError, match="would mix the rows of the batch"):
        head(x[0])


def test_anisotropic_rbf_meta_init_and_state_dict():
    ref = InterdependentHead(3, 2, "anisotropic_rbf", {"a": [0.5, 2.0, 0.1], "level": "instance"},
                             dtype=D64, seed=0)
    x = _x(2, 4, 3)
    meta = InterdependentHead(3, 2, "anisotropic_rbf", {"a": [0.5, 2.0, 0.1], "level": "instance"},
                              dtype=D64, seed=0, device="meta")
    meta.to_empty(device="cpu")
    meta.reset_parameters()
    meta.load_state_dict(ref.state_dict())
    torch.testing.assert_close(meta(x), ref(x), rtol=TOL, atol=TOL)
    assert "xi.scales" not in ref.state_dict()


def test_errors_name_the_bad_value():
    with pytest.raises(ConfigurationError, match="p must be a number >= 1 or inf, got 0.5"):
        build_interdependence("minkowski", p=0.5)
    with pytest.raises(ConfigurationError, match="gamma must be a finite number > 0, got -1"):
        build_interdependence("exponential", gamma=-1)
    with pytest.raises(ConfigurationError, match="a must be a number >= 0"):
        build_interdependence("anisotropic_rbf", a=[1.0, -2.0])
    with pytest.raises(ConfigurationError, match="2 scales a given for m = 3"):
        InterdependentHead(3, 2, "anisotropic_rbf", {"a": [1.0, 2.0], "level": "instance"})
    with pytest.raises(ConfigurationError, match="level must be one of instance, attribute"):
        build_interdependence("pearson", level="rows")
    xi = build_interdependence("anisotropic_rbf", a=[1.0, 2.0])  # attribute level: T = 2
    xi.bind(3)
    with pytest.raises(ValueError, match="2 scales a for vectors of 4 coordinates"):
        xi(torch.randn(1, 4, 3))


# -- hybrid ---------------------------------------------------------------------------------
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 4], [1, 5], [5, 6]])


def _hybrid_reference(x: np.ndarray, w: np.ndarray, edges: np.ndarray, n: int) -> np.ndarray:
    """The reference's definition: A = Â ⊙ (X W Xᵀ), Â = A + I; zeros masked; softmax over
    each column; ξ(X) = Aᵀ X."""
    adj = np.eye(n)
    for i, j in edges:
        adj[i, j] = adj[j, i] = 1.0
    a = adj * (x @ w @ x.T)
    out = np.zeros_like(a)
    for col in range(n):
        rows = np.nonzero(a[:, col])[0]
        e = np.exp(a[rows, col] - a[rows, col].max())
        out[rows, col] = e / e.sum()
    return out.T @ x


@pytest.mark.parametrize("rec", [("identity", {}), ("lorr", {"r": 3})])
def test_hybrid_against_the_reference_definition(rec):
    torch.manual_seed(0)
    xi = build_interdependence("hybrid", edges=EDGES, num_nodes=7, reconciliation=rec[0],
                               reconciliation_params=rec[1])
    xi.bind(3, dtype=D64)
    x = _x(7, 3)
    w = xi.bilinear().detach().numpy()
    np.testing.assert_allclose(xi(x).detach().numpy(), _hybrid_reference(x.numpy(), w, EDGES, 7),
                               rtol=1e-12, atol=1e-12)
    xb = _x(3, 7, 3, seed=2)
    torch.testing.assert_close(xi(xb), xi.matrix(xb) @ xb, rtol=TOL, atol=TOL)
    assert rec[0] in xi.form()


def test_hybrid_head_gradcheck_and_sparse_scale():
    torch.manual_seed(0)
    head = InterdependentHead(3, 2, "hybrid", {"edges": EDGES, "num_nodes": 7}, dtype=D64,
                              bias=True)
    assert "xi.w" in dict(head.named_parameters())
    x = _x(7, 3).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda xx, *ps: head(xx), (x, *head.parameters()),
                                    eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(lambda xx: head.xi(xx), (x,), eps=1e-6, atol=1e-6)
    n = 100_000  # a dense N×N would need 80 GB
    edges = np.stack([np.arange(n - 1), np.arange(1, n)], 1)
    big = InterdependentHead(2, 2, "hybrid", {"edges": edges, "num_nodes": n})
    y = big(torch.randn(n, 2))
    assert y.shape == (n, 2)
    assert torch.isfinite(y).all()


def test_hybrid_meta_init_and_errors():
    ref = InterdependentHead(3, 2, "hybrid", {"edges": EDGES, "num_nodes": 7}, dtype=D64, seed=0)
    meta = InterdependentHead(3, 2, "hybrid", {"edges": EDGES, "num_nodes": 7}, dtype=D64,
                              seed=0, device="meta")
    meta.to_empty(device="cpu")
    meta.reset_parameters()
    meta.load_state_dict(ref.state_dict())
    x = _x(7, 3)
    torch.testing.assert_close(meta(x), ref(x), rtol=TOL, atol=TOL)
    with pytest.raises(ValueError, match=r"expects input of shape \(\*, 7, d\)"):
        ref(_x(6, 3))
    with pytest.raises(ConfigurationError, match="edge endpoint 9 is outside the 7 nodes"):
        build_interdependence("hybrid", edges=[[0, 9]], num_nodes=7)
    assert rpnkit.list_components("interdependence", "hybrid") == ["hybrid"]


@pytest.mark.parametrize("name", ["graph", "graph_pagerank", "hybrid"])
def test_graph_edge_table_survives_meta_init(name):
    """to_empty() used to leave the (non-persistent) edge index uninitialised."""
    ref = InterdependentHead(3, 2, name, {"edges": EDGES, "num_nodes": 7}, dtype=D64, seed=0)
    meta = InterdependentHead(3, 2, name, {"edges": EDGES, "num_nodes": 7}, dtype=D64, seed=0,
                              device="meta")
    meta.to_empty(device="cpu")
    meta.load_state_dict(ref.state_dict())
    assert torch.equal(meta.xi.index, ref.xi.index)
    x = _x(7, 3)
    torch.testing.assert_close(meta(x), ref(x), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("key", ["hybrid", "canberra", "mutual_information"])
def test_compile_fullgraph(key):
    import torch._dynamo

    torch._dynamo.reset()
    params = ({"edges": EDGES, "num_nodes": 7} if key == "hybrid"
              else {"level": "instance", **REFERENCES[key][0]})
    torch.manual_seed(0)
    head = InterdependentHead(3, 2, key, params, expansion="taylor", expansion_params={"d": 2},
                              dtype=D64, bias=True)
    x = _x(2, 7, 3)
    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y1, y2 = head(x1), compiled(x2)
    torch.testing.assert_close(y2, y1, rtol=TOL, atol=TOL)
    g1 = torch.autograd.grad(y1.sum(), [x1, *head.parameters()])
    g2 = torch.autograd.grad(y2.sum(), [x2, *head.parameters()])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)
    torch._dynamo.reset()

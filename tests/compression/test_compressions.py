"""Compression functions κ: R^m -> R^d (d <= m) against scikit-learn, numpy and torch
references, and their own conformance checks (they are not in the expansion registry, so
the conformance matrix does not run them): head forward, export, meta init, state_dict."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812
from sklearn.decomposition import PCA as SkPCA  # noqa: N811
from sklearn.feature_selection import SelectKBest
from sklearn.manifold import Isomap, LocallyLinearEmbedding
from sklearn.random_projection import GaussianRandomProjection, SparseRandomProjection

import rpnkit
from rpnkit import RPNHead
from rpnkit.compression import Compression, FittedCompression
from rpnkit.errors import ConfigurationError, UnknownNameError
from rpnkit.expansion import Expansion
from rpnkit.registry import COMPRESSIONS, EXPANSIONS

D64 = torch.float64
NAMES = ["feature_selection", "isomap", "lle", "max_pooling", "mds", "mean_pooling",
         "naive_probabilistic", "pca", "random_projection", "spectral"]


def data(n: int = 80, m: int = 6, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    mix = torch.randn(m, m, generator=g, dtype=D64)
    return torch.randn(n, m, generator=g, dtype=D64) @ mix


def test_registry_listing_and_builders():
    assert rpnkit.list_components("compression") == NAMES
    assert "compression" in rpnkit.list_components()
    assert not set(NAMES) & set(EXPANSIONS.names())  # each kind listed once
    for name in NAMES:
        obj = rpnkit.build_compression(name)
        assert isinstance(obj, Compression)
        assert isinstance(obj, Expansion)
        assert type(obj).registry_name == name
    # a head's expansion option takes compression names (EXPANSIONS falls back to them)
    head = RPNHead(6, 2, expansion="random_projection", expansion_params={"d": 3, "seed": 0})
    assert head.D == 3
    with pytest.raises(UnknownNameError, match="did you mean 'pca'.*or a compression: "):
        EXPANSIONS.get("pcaa")
    with pytest.raises(ConfigurationError, match="d <= m, got d=9 for m=6"):
        RPNHead(6, 2, expansion="pca", expansion_params={"d": 9})


def test_listing_and_catalog_show_the_kind():
    from rpnkit.catalog import render_catalog
    from rpnkit.cli.listing import live

    sections = dict(live())
    assert [n for n, _ in sections["compressions (κ with d <= m)"]] == NAMES
    assert "| compression | `pca` | `rpnkit.compression.PCA` |" in render_catalog()


@pytest.mark.parametrize("whiten", [False, True])
def test_pca_matches_sklearn(whiten):
    x = data()
    pca = rpnkit.build_compression("pca", d=3, whiten=whiten).fit(x)
    sk = SkPCA(3, svd_solver="full", whiten=whiten).fit(x.numpy())
    comps = pca.components.numpy()
    signs = np.sign((comps * sk.components_).sum(1))  # components agree up to sign
    np.testing.assert_allclose(comps, signs[:, None] * sk.components_, atol=1e-12)
    np.testing.assert_allclose(pca.explained_variance.numpy(), sk.explained_variance_, rtol=1e-12)
    new = data(7, seed=1)
    np.testing.assert_allclose(pca(new).numpy(), sk.transform(new.numpy()) * signs, atol=1e-10)
    assert pca.structure().linear is False  # centring: affine
    assert rpnkit.build_compression("pca", d=2, center=False).fit(x).structure().linear


def test_pca_is_not_fitted_lazily_and_refuses_before_fit():
    pca = rpnkit.build_compression("pca", d=2)
    head = RPNHead(6, 2, expansion=pca, dtype=D64)
    assert head.expansion is pca
    with pytest.raises(ConfigurationError, match="'pca' is not fitted: call .fit"):
        head(data(4))
    pca.fit(data())
    assert head(data(4)).shape == (4, 2)
    with pytest.raises(ValueError, match="bound to m=6 features, fit got data with 5"):
        pca.fit(torch.randn(10, 5))
    with pytest.raises(ValueError, match="NaN or infinite"):
        rpnkit.build_compression("pca").fit(torch.full((5, 3), float("nan")))
    with pytest.raises(ValueError, match="at least max\\(2, d\\) = 3 samples"):
        rpnkit.build_compression("pca", d=3).fit(torch.randn(2, 4))


@pytest.mark.parametrize("kind", ["gaussian", "sparse"])
def test_random_projection_distribution_and_seed(kind):
    m, d = 400, 50
    rp = rpnkit.build_compression("random_projection", d=d, kind=kind, seed=3)
    rp.bind(m)
    r = rp.matrix.to(D64)
    again = rpnkit.build_compression("random_projection", d=d, kind=kind, seed=3)
    again.bind(m)
    assert torch.equal(again.matrix, rp.matrix)  # the seed decides R
    sk_cls = GaussianRandomProjection if kind == "gaussian" else SparseRandomProjection
    sk = sk_cls(d, random_state=0).fit(np.zeros((2, m)))
    skr = sk.components_.toarray() if hasattr(sk.components_, "toarray") else sk.components_
    assert r.shape == skr.shape == (d, m)
    # the same distribution as scikit-learn's: E R = 0, E R² = 1/d (so E|Rx|² = |x|²)
    assert abs(r.mean().item()) < 0.01
    assert abs(skr.mean()) < 0.01
    assert r.pow(2).mean().item() == pytest.approx(1 / d, rel=0.05)
    assert float((skr**2).mean()) == pytest.approx(1 / d, rel=0.05)
    if kind == "sparse":
        np.testing.assert_allclose(np.unique(r.numpy()), np.unique(skr), rtol=1e-6)  # ±v, 0
        assert (r != 0).double().mean().item() == pytest.approx(1 / np.sqrt(m), rel=0.1)
    x = torch.randn(5, m, dtype=D64)
    torch.testing.assert_close(rp.double()(x), x @ r.T)
    with pytest.raises(ConfigurationError, match="not bound to a width"):
        rpnkit.build_compression("random_projection")(x)
    assert rp.structure().linear


def test_feature_selection_matches_select_k_best():
    x = data(50, 8) * torch.linspace(0.5, 3.0, 8, dtype=D64)
    fs = rpnkit.build_compression("feature_selection", d=3).fit(x)
    sk = SelectKBest(lambda a, y: a.var(0), k=3).fit(x.numpy(), np.zeros(50))
    assert fs.index.tolist() == np.flatnonzero(sk.get_support()).tolist()
    np.testing.assert_array_equal(fs(x).numpy(), sk.transform(x.numpy()))
    st = fs.structure()
    assert st.linear
    assert st.columns == tuple(frozenset((i,)) for i in fs.index.tolist())


def numpy_pool(x, c, h, w, k, s, p, how):
    """Reference pooling over explicit windows (numpy, no torch)."""
    b = x.shape[0]
    g = x.reshape(b, c, h, w)
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    out = np.empty((b, c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            r0, c0 = i * s - p, j * s - p
            win = g[:, :, max(r0, 0):min(r0 + k, h), max(c0, 0):min(c0 + k, w)]
            out[:, :, i, j] = win.max((2, 3)) if how == "max" else win.mean((2, 3))
    return out.reshape(b, -1)


@pytest.mark.parametrize("how", ["max", "mean"])
@pytest.mark.parametrize(("k", "s", "p"), [(2, 2, 0), (3, 2, 1), (3, 1, 0)])
def test_pooling_matches_numpy_windows(how, k, s, p):
    c, h, w = 2, 5, 6
    pool = rpnkit.build_compression(f"{how}_pooling", height=h, width=w, channels=c, kernel=k,
                                    stride=s, padding=p)
    m = c * h * w
    x = torch.randn(4, m, dtype=D64)
    got = pool(x)
    assert got.shape == (4, pool.calculate_D(m))
    np.testing.assert_allclose(got.numpy(), numpy_pool(x.numpy(), c, h, w, k, s, p, how),
                               rtol=1e-14, atol=1e-14)
    st = pool.structure(m)
    assert st.linear is (how == "mean")
    # each output column depends exactly on its window: perturbing one input moves only them
    cols = st.columns
    for i in (0, m // 2, m - 1):
        bumped = x.clone()
        bumped[:, i] += 1.0
        moved = (pool(bumped) != got).any(0)
        assert {j for j in range(len(cols)) if moved[j]} <= {j for j, s_ in enumerate(cols)
                                                             if i in s_}
    with pytest.raises(ConfigurationError, match="must equal channels·height·width"):
        pool.calculate_D(m + 1)


def test_naive_probabilistic_sampling_and_eval():
    torch.manual_seed(0)
    x = torch.randn(3000, 5, dtype=D64)
    npc = rpnkit.build_compression("naive_probabilistic", d=2, distribution="normal")
    idx = npc.indices(x)  # training mode: sampled, ascending, no repeats
    assert idx.shape == (3000, 2)
    assert bool((idx[:, 1] > idx[:, 0]).all())
    # the first draw of Gumbel top-d is a draw ∝ p(u_i): check the single-draw law with d=1
    one = rpnkit.build_compression("naive_probabilistic", d=1, distribution="normal")
    row = torch.tensor([[-3.0, -1.0, 0.0, 1.0, 3.0]], dtype=D64)
    picks = one.indices(row.expand(20000, 5))[:, 0]
    u = 0.99 * torch.sigmoid(row[0]) + 0.001
    p = torch.exp(-0.5 * u**2)
    p = p / p.sum()
    freq = torch.bincount(picks, minlength=5).double() / 20000
    torch.testing.assert_close(freq, p, atol=0.015, rtol=0)
    npc.eval()  # eval: the d most probable inputs, deterministic
    u = 0.99 * torch.sigmoid(x) + 0.001
    want = torch.sort(torch.argsort(u**2, dim=1, stable=True)[:, :2], 1).values
    assert torch.equal(npc.indices(x), want)
    torch.testing.assert_close(npc(x), x.gather(1, want))
    with pytest.raises(ConfigurationError, match="unknown distribution 'poisson'"):
        rpnkit.build_compression("naive_probabilistic", distribution="poisson")


@pytest.mark.parametrize("name", ["isomap", "lle"])
def test_manifold_out_of_sample_matches_sklearn_transform(name):
    x, new = data(60), data(9, seed=2)
    comp = rpnkit.build_compression(name, d=2, n_neighbors=6).fit(x)
    est = (Isomap(n_neighbors=6, n_components=2) if name == "isomap"
           else LocallyLinearEmbedding(n_neighbors=6, n_components=2))
    emb = est.fit_transform(x.numpy())
    np.testing.assert_allclose(comp.embedding.numpy(), emb, atol=1e-10)
    np.testing.assert_allclose(comp(new).numpy(), est.transform(new.numpy()), atol=1e-9)
    # state dict into a fresh (unfitted, N = 0) instance: buffers resize to the fitted N
    fresh = rpnkit.build_compression(name, d=2, n_neighbors=6)
    fresh.bind(6)
    fresh.load_state_dict(comp.state_dict())
    assert fresh.is_fitted
    assert fresh.num_fitted == 60
    torch.testing.assert_close(fresh.double()(new), comp(new))


@pytest.mark.parametrize("name", ["mds", "spectral"])
def test_manifold_without_transform_embeds_and_refuses_forward(name):
    x = data(40)
    comp = rpnkit.build_compression(name, d=2, seed=0)
    emb = comp.fit_transform(x)
    assert emb.shape == (40, 2)
    assert torch.isfinite(emb).all()
    with pytest.raises(ConfigurationError, match=f"'{name}' has no out-of-sample transform"):
        comp(x)


# -- conformance: head forward, export, meta init, state_dict (their own small matrix) -----

def fitted(name: str, m: int):
    comp = rpnkit.build_compression(name, **fitted_params(name))
    comp.bind(m)
    comp.double()
    if isinstance(comp, FittedCompression):
        comp.fit(data(40, m))
    return comp


CONFORMING = [n for n in NAMES if n not in ("mds", "spectral")]


@pytest.mark.parametrize("name", CONFORMING)
def test_conformance_in_a_head(name):
    m, x = 8, data(5, 8, seed=3)
    comp = fitted(name, m)
    if name == "naive_probabilistic":
        comp.eval()
    torch.manual_seed(0)
    head = RPNHead(m, 2, expansion=comp, bias=True, dtype=D64).eval()
    ref = head.expansion(x) @ head.w.view(2, -1).T + head.bias
    torch.testing.assert_close(head(x), ref, rtol=1e-12, atol=1e-12)
    # batch independence: each row alone gives the same
    torch.testing.assert_close(torch.cat([head(x[i:i + 1]) for i in range(5)]), head(x))
    # state_dict round trip into a fresh head, and deepcopy
    fresh = RPNHead(m, 2, expansion=rpnkit.build_compression(name, **fitted_params(name)),
                    bias=True, dtype=D64).eval()
    fresh.load_state_dict(head.state_dict())
    torch.testing.assert_close(fresh(x), head(x), rtol=0, atol=0)
    torch.testing.assert_close(copy.deepcopy(head)(x), head(x), rtol=0, atol=0)
    # meta-device construction, to_empty, load
    meta = RPNHead(m, 2, expansion=rpnkit.build_compression(name, **fitted_params(name)),
                   bias=True, dtype=D64, device="meta")
    meta.to_empty(device="cpu")
    meta.load_state_dict(head.state_dict())
    torch.testing.assert_close(meta.eval()(x), head(x), rtol=0, atol=0)
    # torch.export, saved and loaded
    ep = torch.export.export(head, (x,))
    buf = io.BytesIO()
    torch.export.save(ep, buf)
    buf.seek(0)
    torch.testing.assert_close(torch.export.load(buf).module()(x), head(x), rtol=1e-12,
                               atol=1e-12)


def fitted_params(name: str) -> dict:
    params = {"max_pooling": {"height": 2, "width": 4}, "mean_pooling": {"height": 2, "width": 4},
              "random_projection": {"d": 3, "seed": 1}}.get(name, {"d": 3})
    if name in ("isomap", "lle"):
        params["n_neighbors"] = 5
    return params


@pytest.mark.parametrize("name", ["pca", "random_projection", "mean_pooling", "lle", "isomap"])
def test_gradients_through_the_compression(name):
    m = 8
    comp = fitted(name, m).double()
    x = data(3, 8, seed=5).requires_grad_(True)
    assert torch.autograd.gradcheck(comp, (x,))


def test_max_pooling_matches_torch_operator_on_an_image():
    x = torch.randn(2, 3, 6, 6, dtype=D64)
    pool = rpnkit.build_compression("max_pooling", height=6, width=6, channels=3, kernel=2)
    torch.testing.assert_close(pool(x.flatten(1)), F.max_pool2d(x, 2).flatten(1))


def test_registry_holds_the_classes():
    assert COMPRESSIONS.get("pca") is rpnkit.compression.PCA

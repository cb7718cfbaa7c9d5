"""Structured evaluation (issue 3): fast paths equal the dense definition Σ_c κ(X) ψ(w_c)ᵀ.

Every (expansion, reconciliation) pair of the catalog runs through ``head.expansion_product``
(whatever path ``head.plan()`` names) and through the materialised definition; outputs and
gradients (w.r.t. x and w) must agree to 1e-10 in float64. Targeted tests pin each fast
path by name and check that the big blocks are really never formed, so a silent fallback
to materialisation fails a test.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import rpnkit
from rpnkit import RPN, RPNHead
from rpnkit import contract as st
from rpnkit.contract import Contraction
from rpnkit.expansion.polynomial import Taylor

TOL = 1e-10
M, N = 3, 4

EXPANSION_PARAMS = {
    "taylor": {"d": 2},
    "extended": {"expansions": ["bspline", {"name": "taylor", "d": 2}]},
    "nested": {"expansions": ["linear", {"name": "taylor", "d": 2}]},
}


def divisor_near_sqrt(k: int) -> int:
    best = 1
    for i in range(1, int(math.isqrt(k)) + 1):
        if k % i == 0:
            best = i
    return best


def recon_params(name: str, d: int) -> dict:
    q = divisor_near_sqrt(d)
    if name in ("hm", "duplicated_padding"):
        return {"p": 2, "q": q}
    if name in ("lphm", "dual_lphm"):
        return {"p": 2, "q": q, "r": 2}
    if name in ("lorr", "random_matrix_adaption"):
        return {"r": 2}
    if name == "hypernet":
        return {"l": 5, "hidden": 7}
    return {}


def make_head(exp: str, rec: str, ep: dict | None = None, rp: dict | None = None, m: int = M,
              n: int = N, channels: int = 2, **kw) -> RPNHead:
    ep = dict(EXPANSION_PARAMS.get(exp, {})) if ep is None else ep
    kappa = rpnkit.build_expansion(exp, **ep)
    d = kappa.calculate_D(m)
    rp = recon_params(rec, d) if rp is None else rp
    torch.manual_seed(0)
    head = RPNHead(m, n, expansion=kappa, reconciliation=rec, reconciliation_params=rp,
                   channels=channels, **kw).double()
    with torch.no_grad():  # make every channel (and constant-free l=0 heads) non-trivial
        head.w.normal_()
    return head


def reference(head: RPNHead, x: torch.Tensor) -> torch.Tensor:
    """The dense definition, written out independently of rpnkit.structured."""
    kx = head.expansion(x)
    ws = head.reconciled_weights()
    parts = [kx @ ws[c].t() for c in range(head.channels)]
    y = sum(parts[1:], parts[0])
    return y / head.channels if head.channel_fusion == "mean" else y


def inputs(m: int = M, b: int = 5, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(b, m, generator=g, dtype=torch.float64) * 1.4 - 0.7
    x = x + 0.05 * torch.sign(x)  # keep away from 0 (reciprocal) and inside spline ranges
    return x.requires_grad_(True)


def rel(a: torch.Tensor | None, b: torch.Tensor | None) -> float:
    if a is None or b is None:
        a = torch.zeros(()) if a is None else a
        b = torch.zeros(()) if b is None else b
    # relative error; for (near-)zero references (e.g. d/dx of a B-spline row sum, which is
    # rounding noise around 0) an absolute floor of 1e-3 · tolerance applies
    scale = max(b.norm().item(), 1e-3)
    return (a - b).norm().item() / scale


def check_equal(head: RPNHead, x: torch.Tensor, tol: float = TOL) -> None:
    y = head.expansion_product(x)
    y0 = reference(head, x)
    assert y.dtype == y0.dtype
    assert y.shape == y0.shape
    assert rel(y, y0) <= tol, (head.plan(), rel(y, y0))
    proj = torch.randn(y0.shape, generator=torch.Generator().manual_seed(7), dtype=y0.dtype)
    targets = [x, head.w] if isinstance(head.w, nn.Parameter) else [x]  # l = 0: w is a buffer
    g = torch.autograd.grad((y * proj).sum(), targets, allow_unused=True)
    g0 = torch.autograd.grad((y0 * proj).sum(), targets, allow_unused=True)
    for a, b, what in zip(g, g0, ("x", "w")):
        assert rel(a, b) <= tol, (head.plan(), what, rel(a, b))


CATALOG = rpnkit.list_components()
PAIRS = [(e, r) for e in CATALOG["expansion"] for r in CATALOG["reconciliation"]]


@pytest.mark.parametrize(("exp", "rec"), PAIRS, ids=[f"{e}-{r}" for e, r in PAIRS])
def test_every_catalog_pair_matches_dense_definition(exp, rec):
    head = make_head(exp, rec)
    check_equal(head, inputs())


def test_catalog_pairs_cover_the_whole_catalog():
    assert len(PAIRS) == len(CATALOG["expansion"]) * len(CATALOG["reconciliation"])
    assert {"taylor", "extended", "nested"} <= set(CATALOG["expansion"])


# ------------------------------------------------------------------------------------------
# RPN 2: every interdependence ξ of the catalog around (κ, ψ) pairs. The head (its planned
# product, A(X)·⟨X, W⟩ reordering where κ is linear) must equal the definition
# κ(ξ(X)) Σ_c ψ(w_c)ᵀ with ξ applied first, for values and gradients (x, w, ξ's parameters).
# Default: every ξ meets every expansion, the reconciliations cycling so that every ξ also
# meets every reconciliation; all triples with ``pytest -m slow``.
# ------------------------------------------------------------------------------------------
XI_EDGES = [[0, 1], [1, 2], [2, 3], [0, 3], [3, 4]]
#: one small instance of every registered ξ: (parameters, input shape (*, sites, m) or (*, m))
XI_CASES = {
    "identity": ({}, (5, M)),
    "graph": ({"edges": XI_EDGES, "num_nodes": 5}, (2, 5, M)),
    "graph_pagerank": ({"edges": XI_EDGES, "num_nodes": 5, "hops": 3, "alpha": 0.2}, (2, 5, M)),
    "grid": ({"channels": 1, "height": 3, "width": 3, "kernel": 2}, (2, 9)),  # 4 patches of 4
    "chain": ({"length": 4, "hops": 2, "decay": 0.7, "normalize": True}, (2, 4, M)),
    "kernel": ({"kernel": "rbf", "gamma": 0.5}, (2, 4, M)),
    "parameterised": ({"reconciliation": "lorr", "out": 4}, (5, M)),  # m' = 4
    "attention": ({"rank": 2}, (2, 4, M)),
    "hybrid": ({"edges": XI_EDGES, "num_nodes": 5}, (2, 5, M)),
    **{name: ({"level": level}, (2, 4, M)) for name, level in (
        ("kl_divergence", "instance"), ("pearson", "attribute"), ("rv_coefficient", "instance"),
        ("mutual_information", "attribute"), ("tanh", "instance"), ("exponential", "attribute"),
        ("minkowski", "instance"), ("manhattan", "attribute"), ("euclidean", "instance"),
        ("chebyshev", "attribute"), ("canberra", "instance"), ("laplacian", "attribute"),
        ("anisotropic_rbf", "instance"))},
}
RECS = CATALOG["reconciliation"]
XI_TRIPLES = [(xi, e, r) for xi in XI_CASES for e in CATALOG["expansion"] for r in RECS]
XI_DEFAULT = [(xi, e, RECS[(j + k) % len(RECS)]) for k, xi in enumerate(XI_CASES)
              for j, e in enumerate(CATALOG["expansion"])]


def xi_inputs(shape: tuple[int, ...], seed: int = 1) -> torch.Tensor:
    """As :func:`inputs`, in any shape: away from 0 and inside the spline ranges."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(*shape, generator=g, dtype=torch.float64) * 1.4 - 0.7
    return (x + 0.05 * torch.sign(x)).requires_grad_(True)


def make_xi_head(xi: str, exp: str, rec: str, n: int = N, channels: int = 2, **kw):
    """An InterdependentHead with ξ = ``xi`` around make_head's (κ, ψ), float64, seeded, with
    w ~ N(0, 1) in every channel; returns (head, x)."""
    from rpnkit.interdependence import InterdependentHead

    params, shape = XI_CASES[xi]
    m = shape[-1]
    kappa = rpnkit.build_expansion(exp, **EXPANSION_PARAMS.get(exp, {}))
    m_xi = rpnkit.build_interdependence(xi, **params).calculate_m(m)
    torch.manual_seed(0)
    head = InterdependentHead(m, n, xi, params, expansion=kappa, reconciliation=rec,
                              reconciliation_params=recon_params(rec, kappa.calculate_D(m_xi)),
                              channels=channels, **kw).double()
    with torch.no_grad():
        head.w.normal_()
    return head, xi_inputs(shape)


def xi_reference(head, x: torch.Tensor) -> torch.Tensor:
    """κ(ξ(X)) Σ_c ψ(w_c)ᵀ (+ b + π(X)): ξ first, then :func:`reference` of every inner head."""
    z = head.xi(x)
    flat = z.reshape(-1, z.shape[-1])
    if head.channel_fuser is None:
        y = reference(head, flat)
    else:  # the fusion object over the C dense per-channel products
        kx, ws = head.expansion(flat), head.reconciled_weights()
        y = head.channel_fuser([kx @ ws[c].t() for c in range(head.channels)])
    y = y.reshape(*z.shape[:-1], -1)
    if head.bias is not None:
        y = y + head.bias
    if head.has_remainder:
        y = y + head.remainder(x.reshape(-1, head.m)).reshape(*x.shape[:-1], -1)
    return y


def check_xi_equal(head, x: torch.Tensor, tol: float = TOL) -> None:
    y, y0 = head(x), xi_reference(head, x)
    assert y.dtype == y0.dtype
    assert y.shape == y0.shape, (y.shape, y0.shape)
    assert rel(y, y0) <= tol, (head.plan(), rel(y, y0))
    proj = torch.randn(y0.shape, generator=torch.Generator().manual_seed(7), dtype=y0.dtype)
    targets = [x, *(p for p in head.parameters() if p.numel() and p.requires_grad)]
    g = torch.autograd.grad((y * proj).sum(), targets, allow_unused=True)
    g0 = torch.autograd.grad((y0 * proj).sum(), targets, allow_unused=True)
    for i, (a, b) in enumerate(zip(g, g0)):
        assert rel(a, b) <= tol, (head.plan(), "x" if i == 0 else tuple(targets[i].shape), rel(a, b))


@pytest.mark.parametrize(("xi", "exp", "rec"), XI_DEFAULT, ids=["-".join(t) for t in XI_DEFAULT])
def test_every_interdependence_with_catalog_pairs_matches_definition(xi, exp, rec):
    check_xi_equal(*make_xi_head(xi, exp, rec))


@pytest.mark.slow
@pytest.mark.parametrize(("xi", "exp", "rec"), XI_TRIPLES, ids=["-".join(t) for t in XI_TRIPLES])
def test_every_interdependence_with_every_catalog_pair_matches_definition(xi, exp, rec):
    check_xi_equal(*make_xi_head(xi, exp, rec))


@pytest.mark.parametrize("xi", ["identity", "graph", "chain", "kernel", "parameterised"])
@pytest.mark.parametrize("fusion", ["mean", "max", "learned"])
def test_interdependent_channel_fusions_and_remainder_match_definition(xi, fusion):
    head, x = make_xi_head(xi, "taylor", "lorr", channels=3, channel_fusion=fusion, bias=True,
                           remainder="linear")
    with torch.no_grad():
        head.bias.normal_()
    check_xi_equal(head, x)


def test_interdependence_cases_cover_the_catalog():
    assert set(XI_CASES) == set(CATALOG["interdependence"])
    covered = {xi: ({e for x, e, _ in XI_DEFAULT if x == xi}, {r for x, _, r in XI_DEFAULT if x == xi})
               for xi in XI_CASES}
    assert all(e == set(CATALOG["expansion"]) and r == set(RECS) for e, r in covered.values())


# ------------------------------------------------------------------------------------------
# targeted fast paths: each names its path and never forms the big blocks
# ------------------------------------------------------------------------------------------
@pytest.fixture
def no_materialisation(monkeypatch):
    """Forming x⊗x (dense Taylor, or a power segment's dense block) raises."""

    def boom(*args, **kwargs):
        raise AssertionError("the tensor-power block was materialised")

    monkeypatch.setattr(Taylor, "expand", boom)
    monkeypatch.setattr(st, "tensor_power", boom)
    return boom


def check_fast(head, path, x, no_materialisation_fixture, monkeypatch, tol=TOL):
    assert head.plan().splitlines()[0] == f"path: {path}"
    assert head.contraction.path == path
    y = head.expansion_product(x)  # must not materialise (fixture raises)
    monkeypatch.undo()
    y0 = reference(head, x)
    assert rel(y, y0) <= tol
    check_equal(head, x, tol)


TAYLOR_FAST = [
    ("identity", {}, "dense-bilinear"),
    ("masking", {"p": 0.7}, "dense-bilinear"),
    ("hypernet", {"l": 3, "hidden": 5}, "dense-bilinear"),
    ("lorr", {"r": 3}, "lowrank-bilinear"),
    ("random_matrix_adaption", {"r": 2}, "lowrank-bilinear"),
    ("hm", {"p": 2, "q": 6}, "kron-structured"),  # q = m+1: rank one
    ("hm", {"p": 2, "q": 5}, "kron-structured"),  # straddles the degree blocks
    ("lphm", {"p": 4, "q": 3, "r": 2}, "kron-structured"),
    ("dual_lphm", {"p": 2, "q": 6, "r": 2}, "kron-structured"),
    ("dual_lphm", {"p": 2, "q": 10, "r": 3}, "kron-structured"),
    ("duplicated_padding", {"p": 2, "q": 6}, "kron-structured"),
    ("duplicated_padding", {"p": 4, "q": 2}, "kron-structured"),
    ("one", {}, "rowsum"),
    ("constant", {"c": -0.5}, "rowsum"),
    ("zero", {}, "zero"),
    ("constant_eye", {}, "eye-prefix"),
]


@pytest.mark.parametrize(("rec", "rp", "path"), TAYLOR_FAST,
                         ids=[f"{r}-{p.get('q', '')}" for r, p, _ in TAYLOR_FAST])
def test_taylor_d2_fast_paths_never_materialise(rec, rp, path, no_materialisation, monkeypatch):
    head = make_head("taylor", rec, {"d": 2}, rp, m=5, n=4)
    check_fast(head, path, inputs(5), no_materialisation, monkeypatch)


@pytest.mark.parametrize("rec", ["identity", "lorr", "one"])
def test_taylor_d3_and_d4_ordered(rec, no_materialisation, monkeypatch):
    for d in (3, 4):
        head = make_head("taylor", rec, {"d": d}, None, m=3, n=2, channels=1)
        path = {"identity": "dense-bilinear", "lorr": "lowrank-bilinear", "one": "rowsum"}[rec]
        check_fast(head, path, inputs(3), no_materialisation, monkeypatch)


def test_kron_rank_one_plan_and_value(no_materialisation, monkeypatch):
    m = 6
    head = make_head("taylor", "dual_lphm", {"d": 2}, {"p": 2, "q": m + 1, "r": 2}, m=m, n=4)
    assert "rank one per sample" in head.plan()
    assert head.contraction.kron["rank_one"]
    check_fast(head, "kron-structured", inputs(m), no_materialisation, monkeypatch)


@pytest.mark.parametrize("force", [True, False])
@pytest.mark.parametrize(("rec", "q"), [("hm", 7), ("lphm", 6), ("dual_lphm", 3), ("hm", 2)])
def test_kron_correlation_fft_and_direct(rec, q, force, monkeypatch):
    m = 6  # D = 42
    rp = {"p": 2, "q": q} if rec == "hm" else {"p": 2, "q": q, "r": 2}
    head = make_head("taylor", rec, {"d": 2}, rp, m=m, n=4, fft=force)
    assert head.plan().splitlines()[0] == "path: kron-structured"
    assert head.contraction.kron_method in (("rank-one",) if q == 7 else
                                            ("fft",) if force else ("gemm",))
    with monkeypatch.context() as mp:
        mp.setattr(st, "tensor_power", None)  # calling it would fail
        mp.setattr(Taylor, "expand", None)
        y = head.expansion_product(inputs(m))
    assert rel(y, reference(head, inputs(m))) <= TOL
    check_equal(head, inputs(m))


def test_fft_is_chosen_for_mnist_shapes():
    assert st.use_fft(64, 784, 785, 1568, 5)[0]
    assert not st.use_fft(64, 784, 784, 1, 5)[0]


@pytest.mark.parametrize(("rec", "rp", "path"), [
    ("lorr", {"r": 2}, "lowrank-bilinear"),
    ("random_matrix_adaption", {"r": 3}, "lowrank-bilinear"),
    ("one", {}, "rowsum"),
])
def test_symmetric_taylor_fast_paths(rec, rp, path, monkeypatch):
    for d in (2, 3):
        head = make_head("taylor", rec, {"d": d, "symmetric": True}, rp, m=4, n=3)
        assert sum(math.comb(4 + k - 1, k) for k in range(1, d + 1)) == head.D
        assert head.contraction.path == path
        def no_gather(self, i, v, dense=Contraction._dense):
            assert self.segs[i][0] != "sympower", "gathered the symmetric monomials"
            return dense(self, i, v)

        monkeypatch.setattr(Contraction, "_dense", no_gather)
        if rec != "one":
            head.expansion_product(inputs(4))  # lorr scatters B, never gathers monomials
        monkeypatch.undo()
        check_equal(head, inputs(4))


def test_symmetric_identity_gathers_unique_monomials():
    head = make_head("taylor", "identity", {"d": 2, "symmetric": True}, {}, m=5, n=3)
    plan = head.plan()
    assert plan.startswith("path: materialised-κ")
    assert "symmetric monomials" in plan
    check_equal(head, inputs(5))
    x = inputs(5).detach()
    c = head.contraction
    assert torch.equal(c.materialise(head.expansion.segment_inputs(x)), head.expansion(x))
    e3 = rpnkit.build_expansion("taylor", d=3, symmetric=True)
    head3 = RPNHead(5, 3, expansion=e3, reconciliation="identity").double()
    assert torch.allclose(head3.contraction.materialise(e3.segment_inputs(x)), e3(x))


@pytest.mark.parametrize("rec", ["identity", "lorr", "hm", "dual_lphm", "constant_eye"])
def test_taylor_inside_extended_and_nested(rec, no_materialisation, monkeypatch):
    ext = {"expansions": ["bspline", {"name": "taylor", "d": 2}, "identity"]}
    nest = {"expansions": ["linear", {"name": "taylor", "d": 2}]}
    for exp, ep in (("extended", ext), ("nested", nest)):
        kappa = rpnkit.build_expansion(exp, **ep)
        d = kappa.calculate_D(4)
        rp = {"hm": {"p": 2, "q": divisor_near_sqrt(d)},
              "dual_lphm": {"p": 2, "q": divisor_near_sqrt(d), "r": 2}}.get(rec, {})
        head = make_head(exp, rec, ep, rp, m=4, n=2)
        path = {"identity": "dense-bilinear", "lorr": "lowrank-bilinear",
                "constant_eye": "eye-prefix"}.get(rec, "kron-structured")
        if rec == "constant_eye":  # the prefix of extended is the bspline block
            monkeypatch.undo()
            assert head.contraction.path == path
            check_equal(head, inputs(4))
            continue
        check_fast(head, path, inputs(4), no_materialisation, monkeypatch)
        monkeypatch.setattr(Taylor, "expand", no_materialisation)
        monkeypatch.setattr(st, "tensor_power", no_materialisation)


def test_preprocess_keeps_structure_postprocess_falls_back():
    pre = rpnkit.build_expansion("taylor", d=2, preprocess=nn.Tanh())
    head = RPNHead(4, 3, expansion=pre, reconciliation="lorr").double()
    assert head.contraction.path == "lowrank-bilinear"
    check_equal(head, inputs(4))
    post = rpnkit.build_expansion("taylor", d=2, postprocess=nn.Tanh())
    head = RPNHead(4, 3, expansion=post, reconciliation="lorr").double()
    plan = head.plan()
    assert plan.startswith("path: materialised-κ")
    assert "postprocess" in plan
    check_equal(head, inputs(4))
    ext = rpnkit.build_expansion("extended", expansions=[post, "identity"])
    head = RPNHead(4, 3, expansion=ext, reconciliation="identity").double()
    assert head.contraction.path == "materialised-κ"
    check_equal(head, inputs(4))


def test_plan_explains_fallback_for_unstructured_expansions():
    head = make_head("bspline", "lorr", {}, {"r": 2})
    plan = head.plan()
    assert plan.startswith("path: materialised-κ")
    assert "lorr" in plan
    assert "channel" in plan
    assert head.explain() == plan


def test_reconciliation_subclass_inherits_the_fast_path(no_materialisation, monkeypatch):
    from rpnkit.reconciliation import LowRank

    class Tagged(LowRank):  # same maths, another class: inherits LowRank's form
        """A user's LowRank subclass."""

    head = RPNHead(3, 2, expansion="taylor", reconciliation=Tagged(r=2)).double()
    check_fast(head, "lowrank-bilinear", inputs(3), no_materialisation, monkeypatch)


def test_subclass_that_changes_the_maths_declares_an_opaque_form():
    from rpnkit.reconciliation import LowRank
    from rpnkit.reconciliation.forms import Opaque

    class Scaled(LowRank):
        def form(self):
            return Opaque()

        def reconcile(self, w, n, D):  # noqa: N803
            return 2.0 * super().reconcile(w, n, D)

        def apply(self, kx, w, n, D):  # noqa: N803
            return 2.0 * super().apply(kx, w, n, D)

    head = RPNHead(3, 2, expansion="taylor", reconciliation=Scaled(r=2)).double()
    assert head.contraction.path == "materialised-κ"
    check_equal(head, inputs(3))


def test_reconciliation_defined_outside_the_package_declares_low_rank(no_materialisation,
                                                                     monkeypatch):
    """A test-local ψ (not a subclass of any rpnkit ψ) gets the fast path by its form."""
    from rpnkit.reconciliation import Reconciliation, forms

    class Outer(Reconciliation):
        """W = U Vᵀ with w = [vec V, vec U] (factors listed right first)."""

        homogeneity = 2

        def calculate_l(self, n, D):  # noqa: N803
            return 3 * (n + D)

        def factor_shapes(self, n, D):  # noqa: N803
            return [(D, 3), (n, 3)]

        def form(self):
            return forms.LowRank(left=1, right=0)

        def reconcile(self, w, n, D):  # noqa: N803
            v, u = self.factors(w, n, D)
            return u @ v.t()

    for exp, ep in (("taylor", {"d": 3}), ("taylor", {"d": 2, "symmetric": True}),
                    ("bspline", {})):
        kappa = rpnkit.build_expansion(exp, **ep)
        head = RPNHead(3, 2, expansion=kappa, reconciliation=Outer()).double()
        path = "materialised-κ" if exp == "bspline" else "lowrank-bilinear"
        if exp == "taylor" and ep["d"] == 3:
            check_fast(head, path, inputs(3), no_materialisation, monkeypatch)
            monkeypatch.setattr(Taylor, "expand", no_materialisation)
            monkeypatch.setattr(st, "tensor_power", no_materialisation)
        else:
            monkeypatch.undo()
            assert head.contraction.path == path
            check_equal(head, inputs(3))
    monkeypatch.undo()


def test_channels_mean_fusion_and_bias_remainder():
    head = make_head("taylor", "lorr", {"d": 2}, {"r": 2}, m=4, n=4, channels=3,
                     channel_fusion="mean", bias=True, remainder="linear")
    check_equal(head, inputs(4))
    x = inputs(4)
    full = head(x)
    y0 = reference(head, x) + head.bias + head.remainder(x)
    assert rel(full, y0) <= TOL


def test_dtype_policy_parameters_decide():
    head = RPNHead(5, 3, expansion="taylor", reconciliation="hm",
                   reconciliation_params={"p": 3, "q": 6})
    x32 = torch.rand(4, 5)
    y32 = head(x32)
    assert y32.dtype == torch.float32
    with torch.no_grad():
        y0 = st.materialised_product(head, x32)
    assert rel(y32.detach(), y0) <= 1e-5
    assert head(x32.double()).dtype == torch.float32  # cast once at entry
    head.double()
    assert head(x32).dtype == torch.float64


def test_float32_accuracy_at_mnist_like_width():
    torch.manual_seed(0)
    x = torch.rand(8, 60)
    for rec, rp in (("identity", {}), ("lorr", {"r": 2}), ("hm", {"p": 8, "q": 61}),
                    ("dual_lphm", {"p": 8, "q": 60, "r": 5}),
                    ("lphm", {"p": 8, "q": 60, "r": 5})):
        head = RPNHead(60, 16, expansion="taylor", reconciliation=rec, reconciliation_params=rp)
        with torch.no_grad():
            assert rel(head(x), st.materialised_product(head, x)) <= 1e-4, rec


def test_whole_model_gradients_match():
    torch.manual_seed(0)
    model = RPN.from_dims([6, 5, 2], expansion="taylor", expansion_params={"d": 2},
                          reconciliation="dual_lphm", activation="tanh",
                          layers=[{"reconciliation_params": {"p": 5, "q": 7, "r": 2}},
                                  {"reconciliation_params": {"p": 2, "q": 5, "r": 2}}]).double()
    x = inputs(6)
    y = model(x)
    gs = torch.autograd.grad(y.square().sum(), [x, *model.parameters()])
    orig = RPNHead.expansion_product
    RPNHead.expansion_product = lambda self, x: reference(self, x)
    try:
        y0 = model(x)
        g0 = torch.autograd.grad(y0.square().sum(), [x, *model.parameters()])
    finally:
        RPNHead.expansion_product = orig
    assert rel(y, y0) <= TOL
    for a, b in zip(gs, g0):
        assert rel(a, b) <= TOL


class _Count(nn.Module):
    def __init__(self):
        super().__init__()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return x


@pytest.mark.parametrize(("exp", "rec"), [("taylor", "lorr"), ("bspline", "identity"),
                                          ("extended", "hm"), ("gaussian_rbf", "lorr")])
def test_preprocess_runs_once_per_forward(exp, rec):
    counter = _Count()
    params = dict(EXPANSION_PARAMS.get(exp, {}))
    kappa = rpnkit.build_expansion(exp, preprocess=counter, **params)
    d = kappa.calculate_D(3)
    head = RPNHead(3, 4, expansion=kappa, reconciliation=rec,
                   reconciliation_params=recon_params(rec, d)).double()
    head(inputs())
    assert counter.calls == 1


@pytest.mark.parametrize("d", [1, 2, 3, 4])
@pytest.mark.parametrize("t", [1, 5])
def test_bspline_local_basis_equals_cox_de_boor(d, t):
    e = rpnkit.build_expansion("bspline", t=t, d=d, range=(-1.5, 2.0))
    h = 3.5 / t
    x = torch.rand(40, 6, generator=torch.Generator().manual_seed(d * 10 + t),
                   dtype=torch.float64) * 10 - 5
    special = [-1.5, 2.0, -1.5 - d * h, 2.0 + d * h, -1.5 + h, 2.0 + (d - 0.5) * h]
    x[0] = torch.tensor(special, dtype=torch.float64)  # knots, support ends, outside
    assert torch.allclose(e.local_basis(x), e(x), rtol=0, atol=1e-13)
    x32 = x.float()
    assert torch.allclose(e.local_basis(x32), e(x32), rtol=0, atol=1e-5)
    head = RPNHead(6, 2, expansion=e, reconciliation="identity")
    assert "bspline (local" in head.plan()


def test_bspline_degree_zero_uses_the_definition():
    head = make_head("bspline", "identity", {"t": 4, "d": 0}, {})
    assert "local" not in head.plan()
    check_equal(head, inputs())


def test_dense_weight_materialises_when_n_is_not_below_m():
    head = make_head("taylor", "identity", {"d": 2}, {}, m=4, n=4)
    plan = head.plan()
    assert plan.startswith("path: materialised-κ")
    assert "n=4 >= m=4" in plan
    check_equal(head, inputs(4))
    assert make_head("taylor", "identity", {"d": 2}, {}, m=5, n=4).contraction.path == (
        "dense-bilinear"
    )


@pytest.mark.parametrize("force", [True, None])
def test_low_precision_inputs_take_the_direct_correlation(force, monkeypatch):
    head = RPNHead(6, 4, expansion="taylor", reconciliation="hm",
                   reconciliation_params={"p": 2, "q": 7}, fft=force).to(torch.bfloat16)
    x = torch.rand(3, 6, dtype=torch.bfloat16)
    y = head(x)
    assert y.dtype == torch.bfloat16
    with torch.no_grad():
        y0 = st.materialised_product(head.double(), x.double())
    assert rel(y.double().detach(), y0) <= 3e-2


@pytest.mark.parametrize("declared", ["lowrank", "attr"])
def test_form_may_be_declared_as_an_attribute_or_a_name(declared):
    from rpnkit.reconciliation import LowRank, forms

    class ByName(LowRank):
        form = "lowrank" if declared == "lowrank" else forms.LowRank(0, 1)

    head = RPNHead(3, 2, expansion="taylor", reconciliation=ByName(r=2)).double()
    assert head.contraction.path == "lowrank-bilinear"
    check_equal(head, inputs(3))

    class Bad(LowRank):
        form = "triangular"

    with pytest.raises(TypeError, match="triangular"):
        RPNHead(3, 2, expansion="taylor", reconciliation=Bad(r=2))


@pytest.mark.parametrize(("exp", "rec"), PAIRS, ids=[f"{e}-{r}" for e, r in PAIRS])
def test_every_catalog_pair_takes_an_empty_batch(exp, rec):
    head = make_head(exp, rec)
    x = torch.zeros(0, head.m, dtype=torch.float64, requires_grad=True)
    y = head(x)
    assert y.shape == (0, head.n)
    y.sum().backward()


@pytest.mark.parametrize(("exp", "rec"), PAIRS, ids=[f"{e}-{r}" for e, r in PAIRS])
def test_non_finite_inputs_are_never_hidden_by_a_fast_path(exp, rec):
    """NaN/±inf in one feature: the same outputs are non-finite as in the dense definition."""
    head = make_head(exp, rec)
    for bad in (float("nan"), float("inf"), -float("inf")):
        x = inputs(head.m).detach().clone()
        x[1, 0] = bad
        with torch.no_grad():
            y, y0 = head.expansion_product(x), reference(head, x)
        assert torch.equal(torch.isfinite(y), torch.isfinite(y0)), bad
        assert torch.isfinite(y[[0, 2, 3, 4]]).all()

"""Interdependence components: every ξ with expansions × reconciliations equals its dense
definition κ(A X) ψ(w)ᵀ (+ π(X)); gradients, dtype / state_dict round trips, fusion
objects, torch.compile(fullgraph=True) and errors."""

from __future__ import annotations

import copy
import io

import numpy as np
import pytest
import torch
import torch._dynamo

import rpnkit
from rpnkit.errors import ConfigurationError, UnknownNameError
from rpnkit.fusion import FUSIONS, build_fusion
from rpnkit.interdependence import INTERDEPENDENCES, InterdependentHead, InterdependentLayer

D64 = torch.float64
TOL = 1e-10
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 4], [1, 5], [5, 6]])

#: (ξ name, params, input shape, m) – small, float64
XIS = {
    "identity": ({}, (4, 3), 3),
    "identity_instance": ({"name": "identity", "level": "instance"}, (4, 3), 3),
    "graph": ({"edges": EDGES, "num_nodes": 7}, (7, 3), 3),
    "graph_pagerank": ({"edges": EDGES, "num_nodes": 7, "hops": 3}, (7, 3), 3),
    "grid": ({"channels": 1, "height": 4, "width": 4, "kernel": 3, "padding": 1}, (2, 16), 16),
    "chain": ({"length": 5, "hops": 2, "decay": 0.7}, (2, 5, 3), 3),
    "kernel": ({"kernel": "rbf", "gamma": 0.5}, (2, 6, 3), 3),
    "kernel_attribute": ({"name": "kernel", "kernel": "cosine", "level": "attribute",
                          "normalize": "none"}, (2, 6, 3), 3),
    "parameterised": ({"reconciliation": "lorr", "out": 4}, (4, 3), 3),
    "attention": ({"rank": 2}, (2, 5, 3), 3),
    "hybrid": ({"edges": EDGES, "num_nodes": 7}, (7, 3), 3),
    "hybrid_lorr": ({"name": "hybrid", "edges": EDGES, "num_nodes": 7, "reconciliation": "lorr",
                     "reconciliation_params": {"r": 2}}, (2, 7, 3), 3),
    **{name: ({"level": level}, (2, 5, 3), 3) for name, level in (
        ("kl_divergence", "instance"), ("pearson", "attribute"), ("rv_coefficient", "instance"),
        ("mutual_information", "attribute"), ("tanh", "instance"), ("exponential", "attribute"),
        ("minkowski", "instance"), ("manhattan", "attribute"), ("euclidean", "instance"),
        ("chebyshev", "attribute"), ("canberra", "instance"), ("laplacian", "attribute"),
        ("anisotropic_rbf", "instance"))},
}
#: (κ, κ params, ψ, ψ params)
PAIRS = [
    ("identity", {}, "identity", {}),
    ("taylor", {"d": 2}, "lorr", {"r": 2}),
    ("bspline", {}, "dual_lphm", {"p": 1, "q": 1, "r": 1}),
    ("trigonometric", {}, "masking", {"p": 0.5}),
]


def xi_spec(key: str):
    params, shape, m = XIS[key]
    params = dict(params)
    name = params.pop("name", key)
    return name, params, shape, m


def make(key: str, pair=PAIRS[0], **kw) -> tuple[InterdependentHead, torch.Tensor]:
    name, params, shape, m = xi_spec(key)
    exp, ep, rec, rp = pair
    torch.manual_seed(0)
    head = InterdependentHead(m, 2, name, params, expansion=exp, expansion_params=ep,
                              reconciliation=rec, reconciliation_params=rp, dtype=D64, **kw)
    x = torch.randn(*shape, dtype=D64)
    return head, x


def definition(head: InterdependentHead, x: torch.Tensor) -> torch.Tensor:
    """κ(ξ(X)) ψ(w)ᵀ with ξ applied first and the dense ψ (no fast path, no reordering)."""
    z = head.xi(x)
    kz = head.expansion(z.reshape(-1, z.shape[-1]))
    w = head.reconciled_weights().sum(0)
    y = (kz @ w.T).reshape(*z.shape[:-1], -1)
    if head.bias is not None:
        y = y + head.bias
    if head.has_remainder:
        y = y + head.remainder(x.reshape(-1, head.m)).reshape(*x.shape[:-1], -1)
    return y


def test_registry_names():
    assert sorted(INTERDEPENDENCES.names()) == sorted(
        ["identity", "graph", "graph_pagerank", "grid", "chain", "kernel", "parameterised",
         "attention", "hybrid", "kl_divergence", "pearson", "rv_coefficient",
         "mutual_information", "tanh", "exponential", "minkowski", "manhattan", "euclidean",
         "chebyshev", "canberra", "laplacian", "anisotropic_rbf"])
    assert sorted(FUSIONS.names()) == sorted(
        ["sum", "mean", "max", "concat", "weighted", "learned", "linear", "min", "prod",
         "median", "parameterised_concat"])
    for name in INTERDEPENDENCES.names():
        assert INTERDEPENDENCES.describe(name)


@pytest.mark.parametrize("pair", PAIRS, ids=lambda p: f"{p[0]}-{p[2]}")
@pytest.mark.parametrize("key", list(XIS))
def test_head_equals_dense_definition(key, pair):
    head, x = make(key, pair, bias=True)
    with torch.no_grad():
        head.bias.normal_()
    torch.testing.assert_close(head(x), definition(head, x), rtol=TOL, atol=TOL)


@pytest.mark.parametrize("key", ["graph", "chain", "kernel", "identity_instance"])
def test_left_multiplying_xi_matrix_is_its_definition(key):
    head, x = make(key)
    a = head.xi.matrix(x)
    torch.testing.assert_close(head.xi(x), a @ x, rtol=TOL, atol=TOL)


def test_remainder_acts_on_the_input():
    head, x = make("graph", remainder="linear")
    y = head(x)
    torch.testing.assert_close(y, definition(head, x), rtol=TOL, atol=TOL)
    with pytest.raises(ConfigurationError, match="remainder 'linear' acts on X"):
        make("grid", remainder="linear")


@pytest.mark.parametrize("key", ["graph", "grid", "chain", "attention", "parameterised"])
def test_gradcheck(key):
    head, x = make(key, PAIRS[0] if key in ("grid", "attention") else PAIRS[1], bias=True)
    x.requires_grad_(True)
    params = list(head.parameters())
    assert torch.autograd.gradcheck(lambda xx, *ps: head(xx), (x, *params), eps=1e-6,
                                    atol=1e-6)


@pytest.mark.parametrize("key", ["graph", "grid", "chain", "attention", "parameterised", "hybrid",
                                 "anisotropic_rbf", "kl_divergence"])
def test_double_and_state_dict_round_trip(key):
    name, params, shape, m = xi_spec(key)
    torch.manual_seed(0)
    head = InterdependentHead(m, 2, name, params, expansion="taylor", expansion_params={"d": 2},
                              bias=True)
    x = torch.randn(*shape)
    y32 = head(x)
    head64 = copy.deepcopy(head).double()
    assert all(p.dtype == D64 for p in head64.parameters())
    assert all(b.dtype in (D64, torch.int64) for b in head64.buffers())
    torch.testing.assert_close(head64(x.double()).float(), y32, rtol=1e-4, atol=1e-5)
    buf = io.BytesIO()
    torch.save(head.state_dict(), buf)
    torch.manual_seed(1)
    other = InterdependentHead(m, 2, name, params, expansion="taylor", expansion_params={"d": 2},
                               bias=True)
    other.load_state_dict(torch.load(io.BytesIO(buf.getvalue()), weights_only=True))
    torch.testing.assert_close(other(x), y32)
    head.reset_parameters()  # covers every parameter kind


@pytest.mark.parametrize(("name", "params", "expect"), [
    ("sum", {}, lambda a, b: a + b),
    ("mean", {}, lambda a, b: (a + b) / 2),
    ("max", {}, torch.maximum),
    ("concat", {}, lambda a, b: torch.cat([a, b], -1)),
    ("weighted", {"weights": [0.25, 2.0]}, lambda a, b: 0.25 * a + 2 * b),
    ("learned", {}, lambda a, b: (a + b) / 2),
    ("linear", {}, lambda a, b: (a + b) / 2),
])
def test_fusions(name, params, expect):
    f = build_fusion(name, **params)
    n = f.bind([3, 3], dtype=D64)
    a, b = torch.randn(4, 3, dtype=D64), torch.randn(4, 3, dtype=D64)
    out = f([a, b])
    assert out.shape[-1] == n
    torch.testing.assert_close(out, expect(a, b), rtol=TOL, atol=TOL)


def test_channel_fusion_beyond_sum_and_layer_fusion():
    torch.manual_seed(0)
    head = InterdependentHead(3, 2, "chain", {"length": 4}, channels=3, channel_fusion="max",
                              dtype=D64)
    x = torch.randn(2, 4, 3, dtype=D64)
    z = head.xi(x)
    parts = [head.expansion(z.reshape(-1, 3)).reshape(2, 4, 3) @ w.T
             for w in head.reconciled_weights()]
    torch.testing.assert_close(head(x), torch.stack(parts).amax(0), rtol=TOL, atol=TOL)
    layer = InterdependentLayer(3, 2, fusion="learned", num_heads=2, interdependence="chain",
                                interdependence_params={"length": 4}, dtype=D64)
    assert layer(x).shape == (2, 4, 2)
    assert [n for n, _ in layer.named_parameters()].count("fuser.logits") == 1


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("key", ["graph", "grid", "attention",
                                 pytest.param("chain", marks=pytest.mark.slow),
                                 pytest.param("kernel", marks=pytest.mark.slow)])
def test_compile_fullgraph(key, fresh_dynamo):
    head, x = make(key, PAIRS[1], bias=True)
    compiled = torch.compile(head, fullgraph=True, backend="aot_eager")
    x1, x2 = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    y_eager, y_comp = head(x1), compiled(x2)
    torch.testing.assert_close(y_comp, y_eager, rtol=TOL, atol=TOL)
    proj = torch.randn_like(y_eager)
    g1 = torch.autograd.grad((y_eager * proj).sum(), [x1, *head.parameters()])
    g2 = torch.autograd.grad((y_comp * proj).sum(), [x2, *head.parameters()])
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, rtol=TOL, atol=TOL)


def test_errors_name_the_bad_value():
    with pytest.raises(UnknownNameError, match="did you mean 'graph'"):
        InterdependentHead(3, 2, "grpah")
    with pytest.raises(ConfigurationError, match="edge endpoint 9 is outside the 7 nodes"):
        InterdependentHead(3, 2, "graph", {"edges": [[0, 9]], "num_nodes": 7})
    with pytest.raises(ConfigurationError, match="needs m = 16 attributes, got m = 15"):
        InterdependentHead(15, 2, "grid", {"height": 4, "width": 4})
    with pytest.raises(ConfigurationError, match="shape must be one of cuboid"):
        InterdependentHead(16, 2, "grid", {"height": 4, "width": 4, "shape": "cube"})
    with pytest.raises(ConfigurationError, match="kernel must be one of"):
        InterdependentHead(3, 2, "kernel", {"kernel": "rbff"})
    with pytest.raises(ValueError, match=r"expects input of shape \(\*, 7, d\)"):
        InterdependentHead(3, 2, "graph", {"edges": EDGES, "num_nodes": 7})(torch.randn(6, 3))
    with pytest.raises(ConfigurationError, match="unknown parameter 'hop'"):
        rpnkit.interdependence.build_interdependence("chain", hop=2)


def test_graph_never_forms_a_dense_adjacency():
    n = 200_000  # a dense N×N would need 320 GB
    edges = np.stack([np.arange(n - 1), np.arange(1, n)], 1)
    head = InterdependentHead(2, 2, "graph", {"edges": edges, "num_nodes": n})
    assert head.xi.num_edges == 3 * n - 2
    y = head(torch.randn(n, 2))
    assert y.shape == (n, 2)
    assert torch.isfinite(y).all()
    assert "sparse" in head.plan()

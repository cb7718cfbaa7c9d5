"""RPN 2 equivalences against PyTorch's own operators (float64).

* graph head with identity κ/ψ = Â X W (+ b), Â built here from the edge list;
* grid head = F.conv2d with the copied kernel (cuboid), and with the masked kernel
  (cylinder / sphere);
* chain head = the hand-written recurrence h_t = x_t W + α h_{t-1};
* attention head = F.scaled_dot_product_attention with copied projections.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from rpnkit.interdependence import InterdependentHead, InterdependentLayer
from rpnkit.interdependence.grid import GridInterdependence

D64 = torch.float64
TOL = 1e-12


def weight(head: InterdependentHead) -> torch.Tensor:
    return head.w.detach().view(head.n, head.m_xi)  # identity ψ: w = vec(W) row-major


def random_graph(n: int = 9, e: int = 14, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pairs = set()
    while len(pairs) < e:
        u, v = rng.integers(0, n, 2)
        if u != v:
            pairs.add((int(min(u, v)), int(max(u, v))))
    return np.array(sorted(pairs))


def gcn_adjacency(edges: np.ndarray, n: int) -> torch.Tensor:
    a = torch.zeros(n, n, dtype=D64)
    a[edges[:, 0], edges[:, 1]] = 1
    a[edges[:, 1], edges[:, 0]] = 1
    a = a + torch.eye(n, dtype=D64)
    d = a.sum(1).rsqrt()
    return d[:, None] * a * d[None, :]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("reorder", [True, False])
def test_graph_head_equals_gcn_layer(bias, reorder):
    edges, n = random_graph(), 9
    torch.manual_seed(0)
    head = InterdependentHead(5, 3, "graph", {"edges": edges, "num_nodes": n}, bias=bias,
                              reorder=reorder, dtype=D64)
    assert head.reorder is reorder
    if bias:
        with torch.no_grad():
            head.bias.normal_()
    x = torch.randn(n, 5, dtype=D64)
    expected = gcn_adjacency(edges, n) @ x @ weight(head).T
    if bias:
        expected = expected + head.bias
    torch.testing.assert_close(head(x), expected, rtol=TOL, atol=TOL)
    torch.testing.assert_close(head.xi.matrix(), gcn_adjacency(edges, n), rtol=TOL, atol=TOL)


def test_graph_multi_hop_and_pagerank_match_dense_powers():
    edges, n = random_graph(), 9
    a = gcn_adjacency(edges, n)
    x = torch.randn(2, n, 4, dtype=D64)  # leading dims are carried through
    for params, dense in [
        ({"hops": 3}, a @ a @ a),
        ({"hops": 2, "accumulate": "sum"}, a + a @ a),
        ({"hops": 2, "accumulate": "mean"}, (a + a @ a) / 2),
    ]:
        head = InterdependentHead(4, 4, "graph", {"edges": edges, "num_nodes": n, **params},
                                  dtype=D64)
        torch.testing.assert_close(head.xi(x), dense @ x, rtol=TOL, atol=TOL)
    ppr = InterdependentHead(4, 4, "graph_pagerank", {"edges": edges, "num_nodes": n,
                                                       "alpha": 0.2, "hops": 4}, dtype=D64)
    h, eye = torch.eye(n, dtype=D64), torch.eye(n, dtype=D64)
    for _ in range(4):
        h = 0.8 * a @ h + 0.2 * eye
    torch.testing.assert_close(ppr.xi(x), h @ x, rtol=TOL, atol=TOL)
    torch.testing.assert_close(ppr.xi.matrix(), h, rtol=TOL, atol=TOL)


@pytest.mark.parametrize(("stride", "padding"), [(1, 0), (1, 1), (2, 1)])
def test_grid_head_equals_conv2d(stride, padding):
    torch.manual_seed(1)
    c, h, w, k, out = 2, 7, 6, 3, 4
    xi = GridInterdependence(c, h, w, k, stride, padding)
    head = InterdependentHead(c * h * w, out, xi, bias=True, dtype=D64)
    with torch.no_grad():
        head.bias.normal_()
    x = torch.randn(3, c, h, w, dtype=D64)
    kernel = weight(head).view(out, c, k, k)
    expected = F.conv2d(x, kernel, head.bias, stride=stride, padding=padding)
    got = head(x.flatten(1))  # (B, P, out)
    assert got.shape == (3, xi.out_height * xi.out_width, out)
    torch.testing.assert_close(got.transpose(1, 2).reshape(expected.shape), expected,
                               rtol=TOL, atol=TOL)


@pytest.mark.parametrize("shape", ["cylinder", "sphere"])
def test_masked_patch_shapes_equal_conv_with_masked_kernel(shape):
    torch.manual_seed(2)
    c, h, w, k = 3, 6, 6, 5
    xi = GridInterdependence(c, h, w, k, 1, 2, shape)
    head = InterdependentHead(c * h * w, 2, xi, dtype=D64)
    keep = torch.zeros(c * k * k, dtype=torch.bool)
    keep[xi.keep] = True
    assert 0 < int(keep.sum()) < c * k * k
    kernel = torch.zeros(2, c * k * k, dtype=D64)
    kernel[:, keep] = weight(head)
    x = torch.randn(2, c, h, w, dtype=D64)
    expected = F.conv2d(x, kernel.view(2, c, k, k), padding=2)
    torch.testing.assert_close(head(x.flatten(1)).transpose(1, 2).reshape(expected.shape),
                               expected, rtol=TOL, atol=TOL)


@pytest.mark.parametrize("decay", [0.5, 0.9, 1.0])
def test_chain_head_equals_recurrence(decay):
    torch.manual_seed(3)
    t, m, n = 7, 4, 3
    head = InterdependentHead(m, n, "chain", {"length": t, "decay": decay}, bias=True,
                              dtype=D64)
    with torch.no_grad():
        head.bias.normal_()
    x = torch.randn(5, t, m, dtype=D64)
    w = weight(head)
    hs, h = [], torch.zeros(5, n, dtype=D64)
    for step in range(t):  # the hand-written recurrence
        h = x[:, step] @ w.T + decay * h
        hs.append(h + head.bias)
    torch.testing.assert_close(head(x), torch.stack(hs, 1), rtol=TOL, atol=TOL)


def test_chain_band_and_direction():
    xi = InterdependentHead(2, 2, "chain", {"length": 5, "hops": 1, "direction": "both",
                                            "normalize": True}, dtype=D64).xi
    a = xi.matrix()
    assert torch.equal(a != 0, (torch.arange(5)[:, None] - torch.arange(5)).abs() <= 1)
    torch.testing.assert_close(a.sum(1), torch.ones(5, dtype=D64))


@pytest.mark.parametrize("causal", [False, True])
def test_attention_head_equals_sdpa(causal):
    torch.manual_seed(4)
    m, n, r, t = 6, 5, 4, 7
    head = InterdependentHead(m, n, "attention", {"rank": r, "causal": causal}, dtype=D64)
    x = torch.randn(3, t, m, dtype=D64)
    q, k = head.xi.query(x), head.xi.key(x)
    v = x @ weight(head).T
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    torch.testing.assert_close(head(x), expected, rtol=1e-10, atol=1e-12)
    # multi-head attention: heads fused by concat, each with its own ξ and ψ
    layer = InterdependentLayer(m, 8, fusion="concat", num_heads=2, interdependence="attention",
                                interdependence_params={"rank": r, "causal": causal}, dtype=D64)
    parts = []
    for hd in layer.heads:
        parts.append(F.scaled_dot_product_attention(hd.xi.query(x), hd.xi.key(x),
                                                    x @ weight(hd).T, is_causal=causal))
    torch.testing.assert_close(layer(x), torch.cat(parts, -1), rtol=1e-10, atol=1e-12)

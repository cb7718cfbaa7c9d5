"""The reference toolkit's model names (gcn, gat, cnn, rnn, regression_rnn, transformer),
each against PyTorch's operators or a hand-written reference in float64."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F  # noqa: N812

from rpnkit.errors import ConfigurationError
from rpnkit.models import MODELS, build_model

D64 = torch.float64
TOL = {"rtol": 1e-10, "atol": 1e-12}
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [4, 5], [0, 5], [1, 4]])


def weight(head) -> torch.Tensor:
    return head.w.detach().view(head.n, -1)  # identity ψ: w = vec(W) row-major


def adjacency() -> torch.Tensor:
    a = torch.zeros(6, 6, dtype=D64)
    a[EDGES[:, 0], EDGES[:, 1]] = 1
    return a + a.T + torch.eye(6, dtype=D64)


def test_names_are_registered():
    for name in ("gcn", "gat", "cnn", "rnn", "regression_rnn", "transformer"):
        assert name in MODELS.names()
        assert MODELS.describe(name)


def test_gcn_equals_hand_written_two_layer_gcn_without_bias():
    torch.manual_seed(0)
    model = build_model("gcn", dims=[4, 5, 3], graph=None, edges=EDGES, num_nodes=6).double()
    assert all(h.bias is None for layer in model.layers for h in layer.heads)  # reference default
    a = adjacency()
    d = a.sum(1).rsqrt()
    a = d[:, None] * a * d[None, :]
    x = torch.randn(6, 4, dtype=D64)
    (h1,), (h2,) = model.layers[0].heads, model.layers[1].heads
    expected = a @ torch.relu(a @ x @ weight(h1).T) @ weight(h2).T
    torch.testing.assert_close(model(x), expected, **TOL)


def test_gat_equals_sdpa_with_the_graph_as_mask():
    torch.manual_seed(1)
    model = build_model("gat", dims=[4, 5, 3], graph=None, edges=EDGES, num_nodes=6).double()
    x = torch.randn(6, 4, dtype=D64)
    mask = torch.where(adjacency() > 0, 0.0, float("-inf")).to(D64)
    h = x
    for i, layer in enumerate(model.layers):
        (head,) = layer.heads
        wb = head.xi.bilinear().detach()  # score_ij = x_j W_b x_iᵀ over the edges
        att = F.scaled_dot_product_attention(h @ wb.T, h, h, attn_mask=mask, scale=1.0)
        h = att @ weight(head).T
        if i == 0:
            h = torch.relu(h)
    torch.testing.assert_close(model(x), h, **TOL)


def test_cnn_equals_conv_relu_pool_linear():
    torch.manual_seed(2)
    model = build_model("cnn", dims=[1 * 8 * 8, 3, 4, 10], image=(1, 8, 8)).double().eval()
    assert model.dropout.p == 0.5  # the reference's p_fc
    x = torch.randn(2, 1, 8, 8, dtype=D64)
    y = x
    for head, c_in in zip(model.grid_layers, (1, 3)):
        kernel = head.w.detach().view(-1, c_in, 3, 3)
        y = F.max_pool2d(torch.relu(F.conv2d(y, kernel, head.bias, padding=1)), 2)
    (fc,) = model.classifier
    expected = F.linear(y.flatten(1), weight(fc), fc.bias)
    torch.testing.assert_close(model(x.flatten(1)), expected, **TOL)


def rnn_reference(model, x, decay=1.0, hops=1):
    """Hand-written loop over time: token layer, chain recurrence over ``hops`` past steps."""
    b, t = x.shape[0], model.length
    h = x.reshape(b, t, -1)
    for token, chain in zip(model.tokens, model.chains):
        h = torch.relu(h @ weight(token).T)
        mixed = []
        for s in range(t):
            acc = torch.zeros_like(h[:, 0])
            for lag in range(s + 1 if hops is None else min(hops, s) + 1):
                acc = acc + decay**lag * h[:, s - lag]
            mixed.append(acc)
        h = torch.relu(torch.stack(mixed, 1) @ weight(chain).T)
    return h


@pytest.mark.parametrize(("decay", "hops"), [(1.0, 1), (0.7, None)])
def test_rnn_equals_hand_written_recurrence(decay, hops):
    torch.manual_seed(3)
    model = build_model("rnn", dims=[3, 5, 4, 2], length=6, decay=decay, hops=hops).double()
    x = torch.randn(4, 6 * 3, dtype=D64)
    h = rnn_reference(model, x, decay, hops)
    torch.testing.assert_close(model(x), h.mean(1) @ weight(model.output).T, **TOL)
    torch.testing.assert_close(model(x.view(4, 6, 3)), model(x))
    with pytest.raises(ValueError, match=r"expects \(B, 18\) or \(B, 6, 3\)"):
        model(torch.randn(4, 17, dtype=D64))
    with pytest.raises(ConfigurationError, match="at least \\[features, hidden, outputs\\]"):
        build_model("rnn", dims=[3, 2], length=4)


def test_regression_rnn_reads_every_step():
    torch.manual_seed(4)
    model = build_model("regression_rnn", dims=[2, 5, 1], length=4).double()
    assert model.output.m == 4 * 5
    x = torch.randn(3, 8, dtype=D64)
    h = rnn_reference(model, x)
    torch.testing.assert_close(model(x), h.flatten(1) @ weight(model.output).T, **TOL)


def test_transformer_equals_sdpa_layers_by_hand():
    torch.manual_seed(5)
    model = build_model("transformer", dims=[5, 8, 3], vocab_size=11, embed_dim=8,
                        heads=2).double().eval()
    assert model.attn[0].heads[0].xi.rank == 3  # the reference's r_interdependence
    ids = torch.tensor([[3, 4, 5, 0, 0], [7, 1, 2, 9, 6]])
    h = model.embedding.weight[ids] + model.position
    for att, ff, (n1, n2) in zip(model.attn, model.ff, model.norms):
        parts = [F.scaled_dot_product_attention(hd.xi.query(h), hd.xi.key(h), h @ weight(hd).T)
                 for hd in att.heads]
        a = torch.cat(parts, -1)
        h = F.layer_norm(a + h, (8,), n1.weight, n1.bias, n1.eps)
        f = torch.relu(h @ weight(ff).T + ff.bias)
        h = F.layer_norm(h + f, (8,), n2.weight, n2.bias, n2.eps)
    mask = (ids > 0).to(D64).unsqueeze(-1)
    pooled = (h * mask).sum(1) / mask.sum(1)
    expected = pooled @ weight(model.head).T + model.head.bias
    torch.testing.assert_close(model(ids), expected, **TOL)

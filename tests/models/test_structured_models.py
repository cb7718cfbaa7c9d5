"""Structured RPN 2 models by registry name: shapes, equivalences, configs, Cora training."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import torch._dynamo
import torch.nn.functional as F  # noqa: N812

from rpnkit.config import parse_config
from rpnkit.data.structured import load_graph
from rpnkit.errors import ConfigurationError
from rpnkit.models import MODELS, AttentionRPN, ChainRPN, GraphRPN, GridRPN, build_model
from rpnkit.training import fit
from rpnkit.training.run import prepare, train_run

D64 = torch.float64
EDGES = np.array([[0, 1], [1, 2], [2, 3], [3, 4], [0, 4], [1, 5]])


def test_registered_by_name():
    for name in ("graph_rpn", "grid_rpn", "chain_rpn", "attention_rpn"):
        assert name in MODELS
    assert isinstance(build_model("graph_rpn", dims=[4, 8, 3], graph=None, edges=EDGES,
                                  num_nodes=6), GraphRPN)


def test_generic_interdependent_rpn_from_a_config_mapping():
    cfg = parse_config({"data": {"name": "iris"}, "model": {
        "name": "interdependent_rpn", "dims": [4, 6, 3], "activation": "relu",
        "interdependence": {"name": "kernel", "kernel": "rbf", "gamma": 0.5},
        "expansion": {"name": "taylor", "d": 2}, "reconciliation": {"name": "lorr", "r": 1}}})
    model = build_model(cfg.model.name, **cfg.model.build_kwargs())
    assert model(torch.randn(5, 2, 4)).shape == (5, 2, 3)  # 5 samples of 2 instances each
    assert "kernel" in model.plan()
    with pytest.raises(ValueError, match="would mix the rows of the batch"):
        model(torch.randn(5, 4))  # a bare batch: the kernel would relate different samples


def test_graph_rpn_equals_two_layer_gcn():
    torch.manual_seed(0)
    model = GraphRPN([4, 5, 3], graph=None, edges=EDGES, num_nodes=6, dropout=0.0).double()
    x = torch.randn(6, 4, dtype=D64)
    a = torch.zeros(6, 6, dtype=D64)
    a[EDGES[:, 0], EDGES[:, 1]] = 1
    a = a + a.T + torch.eye(6, dtype=D64)
    d = a.sum(1).rsqrt()
    a = d[:, None] * a * d[None, :]
    (h1,), (h2,) = model.layers[0].heads, model.layers[1].heads
    w1 = h1.w.view(5, 4)
    w2 = h2.w.view(3, 5)
    expected = a @ torch.relu(a @ x @ w1.T + h1.bias) @ w2.T + h2.bias
    torch.testing.assert_close(model(x), expected, rtol=1e-12, atol=1e-12)


def test_graph_rpn_node_ids_use_the_stored_graph():
    g = load_graph("cora")
    torch.manual_seed(0)
    model = GraphRPN([g.num_features, 8, g.num_classes], graph="cora", dropout=0.0).eval()
    ids = torch.tensor([[0.0], [5.0], [2707.0]])
    full = model.propagate(model.features)
    torch.testing.assert_close(model(ids), full[[0, 5, 2707]])
    with pytest.raises(ConfigurationError, match="dims\\[0\\] = 10 but the graph's nodes have 1433"):
        GraphRPN([10, 4, 7], graph="cora")
    with pytest.raises(ValueError, match="node ids"):
        model(torch.randn(3, 5))


def test_grid_rpn_layer_equals_conv2d_and_shapes():
    torch.manual_seed(0)
    model = GridRPN([1 * 8 * 8, 3, 4, 10], image=(1, 8, 8), kernel=3, padding=1, pool=2).double()
    x = torch.randn(2, 1, 8, 8, dtype=D64)
    head = model.grid_layers[0]
    kernel = head.w.view(3, 1, 3, 3)
    y = torch.relu(F.conv2d(x, kernel, head.bias, padding=1))
    got = torch.relu(head(x.flatten(1))).transpose(1, 2).reshape(y.shape)
    torch.testing.assert_close(got, y, rtol=1e-12, atol=1e-12)
    assert model(x).shape == (2, 10)
    with pytest.raises(ConfigurationError, match="must hold dims\\[0\\] = 63"):
        GridRPN([63, 3, 10], image=(1, 8, 8))


def test_sequence_models_shapes_and_padding():
    torch.manual_seed(0)
    ids = torch.tensor([[3, 4, 5, 0, 0], [7, 1, 2, 9, 6]], dtype=torch.float64)
    chain = ChainRPN([5, 8, 2], vocab_size=10, embed_dim=6, decays=[0.5, 0.9])
    att = AttentionRPN([5, 8, 3], vocab_size=10, embed_dim=8, heads=2)
    assert chain(ids).shape == (2, 2)
    assert att(ids).shape == (2, 3)
    with pytest.raises(ValueError, match="token ids of shape"):
        chain(torch.zeros(2, 4))
    with pytest.raises(ConfigurationError, match="divisible by the 2 decays"):
        ChainRPN([5, 7, 2], vocab_size=10, decays=[0.5, 0.9])


@pytest.fixture
def fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


@pytest.mark.parametrize("which", [0, 1, pytest.param(2, marks=pytest.mark.slow),
                                   pytest.param(3, marks=pytest.mark.slow)])
def test_models_compile_fullgraph(which, fresh_dynamo):
    torch.manual_seed(0)
    cases = [
        (GraphRPN([4, 5, 3], graph=None, edges=EDGES, num_nodes=6, dropout=0.0),
         torch.randn(6, 4)),
        (GridRPN([64, 2, 10], image=(1, 8, 8)), torch.randn(2, 64)),
        (ChainRPN([5, 4, 2], vocab_size=10, embed_dim=4), torch.randint(0, 10, (2, 5)).float()),
        (AttentionRPN([5, 4, 2], vocab_size=10, embed_dim=4, heads=2),
         torch.randint(0, 10, (2, 5)).float()),
    ]
    for model, x in cases[which:which + 1]:
        model = model.double().eval()
        x = x.double()
        compiled = torch.compile(model, fullgraph=True, backend="aot_eager")
        torch.testing.assert_close(compiled(x), model(x), rtol=1e-10, atol=1e-12)


CORA_CONFIG = {
    "seed": 0,
    "data": {"name": "cora", "view": "nodes"},
    "model": {"name": "graph_rpn", "dims": [1433, 16, 7], "graph": "cora"},
    "train": {"epochs": 30, "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 5e-4},
              "scheduler": "none", "monitor": "accuracy"},
}


def test_cora_through_a_config(tmp_path):
    torch.set_num_threads(1)
    cfg = parse_config(CORA_CONFIG)
    prep = prepare(cfg)
    assert prep.bundle.size("train") == 140
    assert prep.bundle.size("test") == 1000
    res = train_run(prep, tmp_path / "run")
    assert res.final["test"]["accuracy"] > 0.6
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["final"]


@pytest.mark.slow
def test_cora_reaches_published_gcn_range():
    from rpnkit.data import load_data

    torch.set_num_threads(1)
    bundle = load_data("cora", {"view": "nodes"})
    accs = []
    for seed in range(3):
        torch.manual_seed(seed)
        model = build_model("graph_rpn", dims=[1433, 16, 7], graph="cora")
        res = fit(model, bundle, {"epochs": 200, "scheduler": "none", "monitor": "accuracy",
                                  "optimizer": {"name": "adam", "lr": 0.01, "weight_decay": 5e-4}},
                  seed=seed)
        accs.append(res.final["test"]["accuracy"])
    assert np.mean(accs) >= 0.80, accs

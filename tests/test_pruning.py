"""Sparsity regularisation and pruning: masked edges stay exactly zero."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rpnkit
from rpnkit import RPN
from rpnkit.errors import ConfigurationError
from rpnkit.models.classic import KAN
from rpnkit.pruning import Regularizer, apply_masks, prune
from rpnkit.training.engine import fit

pytestmark = pytest.mark.usefixtures("one_thread")


def _data(seed=0, n=300):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (n, 3))
    y = (np.sin(2 * x[:, 0]) + x[:, 1] ** 2)[:, None]  # x2 is unused
    return x, y


CFG = {"epochs": 60, "optimizer": {"name": "adam", "lr": 0.03}, "dtype": "float64"}


def test_pruned_edges_stay_zero_after_more_training():
    x, y = _data()
    torch.manual_seed(0)
    model = KAN([3, 3, 1])
    fit(model, (x, y), {**CFG, "reg_l1": 3e-2, "reg_entropy": 3e-2})
    report = rpnkit.prune(model, x, threshold=0.1, y=y)
    assert report.pruned
    assert not report.unmasked
    assert report.loss_before is not None
    assert report.loss_after is not None
    assert report.kept + len(report.pruned) == report.total
    pruned = set(report.pruned)
    fit(model, (x, y), CFG)  # more training, through the engine (masks re-applied)
    view = rpnkit.inspect(model, x)
    for layer, out, inp in pruned:
        e = view.edge(layer, out, inp)
        assert e.importance == 0.0
        assert np.all(e.values == 0.0)
    # a loop of one's own: apply_masks after each step
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(20):
        opt.zero_grad()
        ((model(xt) - yt) ** 2).mean().backward()
        opt.step()
        apply_masks(model)
    view = rpnkit.inspect(model, x)
    assert all(view.edge(*e).importance == 0.0 for e in pruned)


def test_unused_input_is_removed():
    x, y = _data()
    torch.manual_seed(0)
    model = KAN([3, 1])
    fit(model, (x, y), {**CFG, "epochs": 80, "reg_l1": 3e-3})
    report = prune(model, x, threshold=0.1, y=y)
    assert report.removed_inputs == [2]
    assert (0, 0, 2) in report.pruned
    # the pruned edge's mean is gone with it (KAN has no bias to take it); training on
    # restores the accuracy
    fit(model, (x, y), {**CFG, "epochs": 40})
    out = model(torch.as_tensor(x)).detach().numpy()
    assert float(np.mean((out - y) ** 2)) < min(report.loss_after, 0.05)


def test_hidden_node_without_outputs_goes():
    torch.manual_seed(0)
    model = KAN([2, 3, 1]).double()
    with torch.no_grad():  # hidden node 1 feeds nothing forward
        head = model.layers[1].heads[0]
        head.w.view(1, 3, -1)[:, 1] = 0.0
        head.remainder.weight[:, 1] = 0.0
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    report = prune(model, x, threshold=1e-3)
    assert (1, 1) in report.removed_nodes
    assert {(0, 1, 0), (0, 1, 1)} <= set(report.pruned)


def test_low_rank_edges_share_parameters():
    """lorr: an edge alone cannot be masked (its factor serves others), a whole input can."""
    torch.manual_seed(0)
    model = RPN.from_dims([3, 1], expansion={"name": "extended", "expansions": [
        {"name": "bspline"}, {"name": "chebyshev"}]}, reconciliation={"name": "lorr", "r": 1},
        remainder="zero").double()
    x = torch.rand(200, 3, dtype=torch.float64) * 2 - 1
    imp = rpnkit.inspect(model, x).layers[0].importance()
    thr = float(np.sort(imp[0])[0] / imp.max()) + 1e-6  # just above the weakest edge
    report = prune(model, x, threshold=thr)
    weakest = int(np.argmin(imp[0]))
    assert report.pruned == [(0, 0, weakest)]  # n = 1: its B rows serve only this edge
    assert rpnkit.inspect(model, x).layers[0].importance()[0, weakest] == 0.0


def test_regularizer_and_checks():
    torch.manual_seed(0)
    model = KAN([2, 2, 1]).double()
    x = torch.rand(100, 2, dtype=torch.float64)
    reg = Regularizer(model, x, l1=1.0, entropy=0.5)
    value = reg()
    value.backward()
    assert value.item() > 0
    assert model.layers[0].heads[0].w.grad is not None
    assert model.layers[0].heads[0].remainder.weight.grad is not None
    mags = reg.edge_magnitudes()
    assert [a.shape for a in mags] == [(4,), (2,)]
    with pytest.raises(ConfigurationError):
        Regularizer(model, x, l1=-1.0)
    with pytest.raises(ConfigurationError, match="threshold"):
        prune(model, x, threshold=2.0)
    with pytest.raises(Exception, match="reg_l1"):
        rpnkit.config.TrainConfig(reg_l1=float("nan"))


def test_pruned_edge_mean_moves_to_the_bias():
    torch.manual_seed(0)
    model = RPN.from_dims([2, 1], expansion="bspline", reconciliation="identity",
                          remainder="zero", bias=True).double()
    x = torch.rand(200, 2, dtype=torch.float64) * 2 - 1
    with torch.no_grad():  # edge of x1: almost constant (0.5 plus a tiny wiggle)
        w = model.layers[0].heads[0].w.view(2, -1)
        w[1] = 0.5 + 1e-4 * torch.arange(w.shape[1], dtype=torch.float64)
    before = model(x).detach()
    report = prune(model, x, threshold=0.01)
    assert report.pruned == [(0, 0, 1)]
    assert float((model(x).detach() - before).abs().max()) < 1e-3

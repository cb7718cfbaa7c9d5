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


def _trained_and_pruned(seed=0):
    x, y = _data(seed)
    torch.manual_seed(0)
    model = KAN([3, 2, 1]).double()
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    opt = torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(40):
        opt.zero_grad()
        ((model(xt) - yt) ** 2).mean().backward()
        opt.step()
    report = prune(model, x, threshold=0.2)
    assert report.pruned
    return model, opt, xt, yt, report


def _masked_max(model):
    """Largest |entry| of a masked parameter entry, over the whole model."""
    params = dict(model.named_parameters())
    out = 0.0
    for name, keep in rpnkit.pruning.masks(model).items():
        out = max(out, float((params[name].detach() * ~keep).abs().max()))
    return out


def _plain_loop(model, xt, yt, opt=None, steps=15):
    opt = opt or torch.optim.Adam(model.parameters(), lr=0.03)
    for _ in range(steps):
        opt.zero_grad()
        ((model(xt) - yt) ** 2).mean().backward()
        opt.step()  # no apply_masks: the masks are part of the modules


def test_plain_loop_keeps_pruned_edges_exactly_zero():
    """Before: masks were re-applied only by the engine, so a loop of one's own (here with
    the optimiser from before pruning, whose Adam moments push the entries) regrew them."""
    model, opt, xt, yt, report = _trained_and_pruned()
    _plain_loop(model, xt, yt, opt)
    assert _masked_max(model) == 0.0
    view = rpnkit.inspect(model, xt)
    assert all(view.edge(*e).importance == 0.0 for e in report.pruned)
    _plain_loop(model, xt, yt, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9))
    assert _masked_max(model) == 0.0
    # the gradient of a masked entry is zero too (LBFGS and friends see a flat direction)
    model.zero_grad()
    ((model(xt) - yt) ** 2).mean().backward()
    for name, p in model.named_parameters():
        keep = rpnkit.pruning.masks(model).get(name)
        if keep is not None:
            assert float((p.grad * ~keep).abs().max()) == 0.0


def test_masks_are_in_the_state_dict_and_load_into_a_fresh_model():
    model, _, xt, yt, _ = _trained_and_pruned()
    sd = model.state_dict()
    keys = [k for k in sd if k.endswith("_prune_mask")]
    assert "layers.0.heads.0.w_prune_mask" in keys
    assert "layers.0.heads.0.remainder.weight_prune_mask" in keys
    assert sd["layers.0.heads.0.w_prune_mask"].dtype == torch.bool
    fresh = KAN([3, 2, 1]).double()  # unpruned: learns its masks from the state dict
    fresh.load_state_dict(sd)
    assert set(rpnkit.pruning.masks(fresh)) == set(rpnkit.pruning.masks(model))
    for name, keep in rpnkit.pruning.masks(model).items():
        assert torch.equal(rpnkit.pruning.masks(fresh)[name], keep)
    torch.testing.assert_close(fresh(xt), model(xt), rtol=0, atol=0)
    _plain_loop(fresh, xt, yt)
    assert _masked_max(fresh) == 0.0
    # copies keep them as well
    import copy
    import pickle

    for twin in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        _plain_loop(twin, xt, yt, torch.optim.SGD(twin.parameters(), lr=0.1))
        assert _masked_max(twin) == 0.0
    # a mask of the wrong size is refused with the key and both sizes
    bad = dict(sd)
    bad["layers.0.heads.0.w_prune_mask"] = torch.ones(3, dtype=torch.bool)
    with pytest.raises(ConfigurationError, match=r"w_prune_mask.*3"):
        KAN([3, 2, 1]).double().load_state_dict(bad)


def test_masks_per_head_and_channel_are_their_own():
    """Head 0 channel 1 and head 1 channel 0 carry separate masks (same shapes, different
    entries): training keeps each one's masked entries zero and the other's free."""
    from rpnkit.pruning import set_mask

    torch.manual_seed(0)
    model = RPN.from_dims([2, 1], expansion="bspline", reconciliation="identity",
                          remainder="zero", heads=2, channels=2).double()
    h0, h1 = model.layers[0].heads
    keep0 = torch.ones_like(h0.w, dtype=torch.bool)
    keep0[1, :4] = False  # head 0, channel 1
    keep1 = torch.ones_like(h1.w, dtype=torch.bool)
    keep1[0, 4:8] = False  # head 1, channel 0
    set_mask(h0, "w", keep0)
    set_mask(h1, "w", keep1)
    masks = rpnkit.pruning.masks(model)
    assert torch.equal(masks["layers.0.heads.0.w"], keep0)
    assert torch.equal(masks["layers.0.heads.1.w"], keep1)
    x = torch.rand(100, 2, dtype=torch.float64) * 2 - 1
    y = torch.sin(3 * x[:, :1])
    _plain_loop(model, x, y, torch.optim.SGD(model.parameters(), lr=0.5), steps=5)
    w0, w1 = h0.w.detach(), h1.w.detach()
    assert float(w0[1, :4].abs().max()) == 0.0
    assert float(w1[0, 4:8].abs().max()) == 0.0
    assert float(w0[0, :4].abs().min()) > 0.0  # head 0 channel 0 is free there
    assert float(w1[0, :4].abs().min()) > 0.0  # head 1 channel 0 is free there
    assert float(w0[1, 4:8].abs().min()) > 0.0  # head 0 channel 1 is free there
    set_mask(h0, "w", ~keep0 | keep0)  # intersected with the existing mask: still masked
    assert torch.equal(rpnkit.pruning.masks(model)["layers.0.heads.0.w"], keep0)
    with pytest.raises(ConfigurationError, match=r"needs 32 entries \(shape \(2, 16\)\), got 2"):
        set_mask(h0, "w", torch.ones(2))
    with pytest.raises(ConfigurationError, match="no parameter 'v'"):
        set_mask(h0, "v", torch.ones(2))

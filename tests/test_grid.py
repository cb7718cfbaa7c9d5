"""update_grid / refine_grid: grids follow the data, the function is preserved."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import rpnkit
from rpnkit import RPN
from rpnkit.errors import ConfigurationError
from rpnkit.grid import grid_components, refine_grid, update_grid
from rpnkit.models.classic import KAN
from rpnkit.training.engine import fit

pytestmark = pytest.mark.usefixtures("one_thread")

EXT = {"name": "extended", "expansions": [{"name": "bspline", "t": 8}, {"name": "taylor", "d": 2}]}


def _x(m=2, b=400, lo=-0.6, hi=0.8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return lo + (hi - lo) * torch.rand(b, m, generator=g, dtype=torch.float64)


def _smooth_kan(dims, grid=10):
    """A KAN with smooth spline coefficients (what training gives), so that a coarser or
    moved grid can represent it."""
    torch.manual_seed(0)
    model = KAN(dims, grid=grid).double()
    for layer in model.layers:
        head = layer.heads[0]
        with torch.no_grad():
            k = torch.arange(head.D // head.m, dtype=torch.float64)
            c = 0.3 * torch.randn(head.n, head.m, 1, dtype=torch.float64)
            head.w.copy_((c * torch.sin(0.4 * k)).reshape(1, -1))
            head.remainder.weight.mul_(0.3)  # hidden values stay inside the initial grid
    return model


def test_update_grid_keeps_the_output_on_the_data():
    model = _smooth_kan([2, 3, 1])
    x = _x()
    before = model(x).detach()
    info = update_grid(model, x)
    assert info["heads"] == 2
    after = model(x).detach()
    assert float((after - before).abs().max()) < 1e-3 * float(before.abs().max())
    spline = grid_components(model.layers[0].heads[0])[0]
    k = spline.knots
    d = spline.d
    # the grid now spans the data (plus the 1% margin), uniformly: fast local path kept
    assert float(k[d]) == pytest.approx(float(x.min()) - 0.01 * float(x.max() - x.min()), abs=1e-6)
    assert float(k[-1 - d]) == pytest.approx(float(x.max()) + 0.01 * float(x.max() - x.min()),
                                             abs=1e-6)
    assert getattr(spline, "uniform", True)
    assert spline.range == pytest.approx((float(k[d]), float(k[-1 - d])))


def test_update_grid_quantiles_and_low_rank():
    model = _smooth_kan([2, 1])
    x = torch.cat([_x(b=300, lo=-0.7, hi=-0.3), _x(b=60, lo=0.2, hi=0.7, seed=1)])
    before = model(x).detach()
    update_grid(model, x, grid_eps=0.3)
    k = grid_components(model.layers[0].heads[0])[0].knots
    gaps = k[1:] - k[:-1]
    assert float(gaps.max() - gaps.min()) > 1e-3  # non-uniform: follows the data
    assert float((model(x).detach() - before).abs().max()) < 1e-2 * float(before.abs().max())
    torch.manual_seed(0)
    ext = RPN.from_dims([2, 2, 1], expansion=EXT, reconciliation={"name": "lorr", "r": 2},
                        remainder="zero").double()
    xe = _x()
    ye = torch.sin(2 * xe[:, :1]) + xe[:, 1:] ** 2
    opt = torch.optim.Adam(ext.parameters(), lr=0.02)
    for _ in range(150):  # trained weights are smooth: a moved grid can represent them
        opt.zero_grad()
        ((ext(xe) - ye) ** 2).mean().backward()
        opt.step()
    before = ext(xe).detach()
    assert update_grid(ext, xe)["heads"] == 2
    # low rank: the refit is an L-BFGS solve of a bilinear problem (close, not exact)
    assert float((ext(xe).detach() - before).abs().max()) < 0.25 * float(before.std())


def test_refine_grid_same_function_more_intervals():
    model = _smooth_kan([2, 2, 1], grid=5)
    x = _x()
    fine = refine_grid(model, x, 20)
    assert grid_components(fine.layers[0].heads[0])[0].t == 20
    assert fine.layers[0].heads[0].D == 2 * 23
    err = float((fine(x) - model(x)).detach().abs().max())
    assert err < 1e-3 * float(model(x).detach().abs().max())
    assert grid_components(model.layers[0].heads[0])[0].t == 5  # the original is untouched
    with pytest.raises(ConfigurationError):
        refine_grid(model, x, 0)


def test_grid_update_callback_in_training():
    rng = np.random.default_rng(0)
    x = rng.uniform(-2, 2, (300, 2))
    y = (np.sin(x[:, 0]) + x[:, 1] ** 2)[:, None]
    torch.manual_seed(0)
    model = KAN([2, 1])  # grid_range (-1, 1): the data is wider
    cfg = {"epochs": 6, "optimizer": {"name": "adam", "lr": 0.02}, "dtype": "float64",
           "grid_update_every": 3}
    fit(model, (x, y), cfg)
    k = grid_components(model.layers[0].heads[0])[0].knots
    assert float(k[3]) < -1.9
    assert float(k[-4]) > 1.9
    with pytest.raises(Exception, match="grid_update_every"):
        rpnkit.config.TrainConfig(grid_update_every=-1)


def _with_smooth_weights(model):
    with torch.no_grad():
        for layer in model.layers:
            head = layer.heads[0]
            k = torch.arange(head.D, dtype=torch.float64)
            head.w.copy_((0.3 * torch.sin(0.4 * k)).reshape(1, -1).expand_as(head.w))
    return model


@pytest.mark.parametrize("kind", ["extended", "nested"])
def test_update_grid_fits_the_values_the_spline_sees(kind):
    """The knots follow the whole chain from the head's input to the spline (the parent
    composite's preprocess, a nested expansion before it, the spline's own preprocess), and
    the function is kept as for KAN. Before: the knots were fitted to the raw inputs
    ([-9.6, 8.7] while the spline sees (-1, 1)) and the output moved by 0.5%."""
    if kind == "extended":
        exp = EXT
        params = {"preprocess": ["tanh"]}
        sees = torch.tanh
    else:  # sigmoid (parent) -> identity with its own tanh -> spline with its own tanh
        exp = {"name": "nested", "expansions": [
            {"name": "identity", "preprocess": ["tanh"]},
            {"name": "bspline", "t": 8, "preprocess": ["tanh"]}]}
        params = {"preprocess": ["sigmoid"]}

        def sees(v):
            return torch.tanh(torch.tanh(torch.sigmoid(v)))
    torch.manual_seed(0)
    model = RPN.from_dims([2, 1], expansion=exp, expansion_params=params,
                          reconciliation="identity", remainder="zero").double()
    _with_smooth_weights(model)
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(400, 2, generator=g, dtype=torch.float64)
    before = model(x).detach()
    assert update_grid(model, x)["heads"] == 1
    after = model(x).detach()
    assert float((after - before).abs().max()) < 1e-3 * float(before.abs().max())
    (spline,) = grid_components(model.layers[0].heads[0])
    u = sees(x)
    lo, hi = float(u.min()), float(u.max())
    pad = 0.01 * (hi - lo)
    k, d = spline.knots, spline.d
    assert float(k[d]) == pytest.approx(lo - pad, abs=1e-9)
    assert float(k[-1 - d]) == pytest.approx(hi + pad, abs=1e-9)
    assert spline.range == pytest.approx((lo - pad, hi + pad))


def test_grid_leaves_declare_the_chain():
    exp = rpnkit.build_expansion("nested", expansions=[
        {"name": "taylor", "d": 2}, {"name": "bspline", "t": 4, "preprocess": ["tanh"]}],
        preprocess=["sigmoid"])
    exp.bind(2)
    (leaf,) = [b for b in exp.structure().bases if b.grid is not None]
    assert leaf.leaf is exp.expansions[1]
    assert [type(mod).__name__ for mod in leaf.chain] == ["Sigmoid", "Taylor", "Tanh"]
    assert leaf.grid is exp.expansions[1].knots
    x = torch.randn(5, 2, dtype=torch.float64)
    want = torch.tanh(exp.expansions[0](torch.sigmoid(x)))
    torch.testing.assert_close(leaf.inputs(x), want, rtol=0, atol=0)
    assert leaf.leaf.grid_layout() == (4, 3)
    with pytest.raises(ConfigurationError, match="knots"):
        leaf.leaf.set_grid(torch.zeros(3, dtype=torch.float64))
    assert leaf.offset == 0  # the last expansion of a nested one: its basis is κ itself
    assert rpnkit.build_expansion("taylor", d=2).structure(2).bases == ()

"""rpnkit.inspect / model_view / `rpnkit plot`: edge functions of elementwise heads."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import rpnkit
from rpnkit import RPN, RPNHead, RPNLayer
from rpnkit.cli import main
from rpnkit.errors import ConfigurationError
from rpnkit.models.classic import KAN

pytestmark = pytest.mark.usefixtures("one_thread")

EXT = {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]}


def _x(m: int = 2, b: int = 300, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(b, m, generator=g, dtype=torch.float64) * 2 - 1) * 0.9


def _png_size(path: Path) -> tuple[int, int]:
    head = path.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", head[16:24])


def _reassemble(lv, x: np.ndarray) -> np.ndarray:
    """Σ_i φ_ji(x_i) + c_j + interaction terms, from the view alone."""
    out = np.tile(lv.constant, (x.shape[0], 1))
    for (j, i), e in lv.edges.items():
        out[:, j] += e(x[:, i])
    for t in lv.interactions:
        assert t.powers is not None
        out[:, t.out] += t.coef * np.prod([x[:, i] ** k for i, k in enumerate(t.powers)], 0)
    return out


@pytest.mark.parametrize("kind", ["kan", "rpn_ext", "fourier_mean", "chebyshev_concat"])
def test_edges_add_up_to_each_layer(kind):
    torch.manual_seed(0)
    if kind == "kan":
        model = KAN([2, 3, 1]).double()
    elif kind == "rpn_ext":
        model = RPN.from_dims([2, 2, 1], expansion=EXT, reconciliation={"name": "lorr", "r": 1},
                              remainder="zero").double()
    elif kind == "fourier_mean":
        heads = [RPNHead(2, 2, "fourier", "identity", "linear", bias=True) for _ in range(2)]
        model = RPN([RPNLayer(2, 2, heads=heads, fusion="mean")]).double()
    else:
        heads = [RPNHead(2, 1, "chebyshev", "identity", "zero", channels=2) for _ in range(2)]
        model = RPN([RPNLayer(2, 2, heads=heads, fusion="concat")]).double()
    x = _x()
    view = rpnkit.inspect(model, x)
    h = x
    for layer, lv in zip(model.layers, view.layers):
        want = layer(h).detach().numpy()
        got = _reassemble(lv, h.numpy())
        np.testing.assert_allclose(got, want, atol=1e-10)
        h = layer(h).detach()
        assert lv.importance().shape == (layer.n, layer.m)
        for e in lv.edges.values():
            assert e.grid.shape == e.values.shape == (200,)
            assert e.lo <= e.hi
            assert e.importance >= 0
    if kind == "rpn_ext":  # the Taylor cross terms x0·x1 are reported, not hidden
        labels = {t.label for t in view.layers[0].interactions}
        assert labels == {"x0·x1"}


def test_unused_input_has_zero_importance():
    torch.manual_seed(0)
    model = KAN([3, 1]).double()
    with torch.no_grad():
        model.layers[0].heads[0].w.view(1, 3, -1)[:, 2] = 0.0
        model.layers[0].heads[0].remainder.weight[:, 2] = 0.0
    imp = rpnkit.inspect(model, _x(3)).layers[0].importance()
    assert imp[0, 2] == 0.0
    assert imp[0, 0] > 0
    assert imp[0, 1] > 0


def test_mixing_components_are_refused():
    head = RPNHead(2, 1, "bspline", "identity", {"name": "linear", "activation": "tanh"})
    with pytest.raises(ConfigurationError, match="not a sum of one-input"):
        rpnkit.inspect(RPN([RPNLayer(2, 1, heads=[head])]).double(), _x())
    with pytest.raises(ValueError, match="shape"):
        rpnkit.inspect(KAN([2, 1]), torch.zeros(5, 3))


def test_non_elementwise_columns_are_interactions():
    # a layer-norm pre-processing mixes the inputs: no one-input columns are left
    head = RPNHead(2, 1, {"name": "chebyshev", "preprocess": ["layer_norm"]}, "identity", "zero")
    model = RPN([RPNLayer(2, 1, heads=[head])]).double()
    lv = rpnkit.inspect(model, _x()).layers[0]
    assert all(len(s) == 2 for s in lv.heads[0].columns)
    assert lv.interactions
    assert all(t.powers is None for t in lv.interactions)


@pytest.mark.parametrize("fmt", ["png", "svg"])
def test_model_view_files(tmp_path, fmt):
    torch.manual_seed(0)
    model = KAN([2, 3, 1]).double()
    path = rpnkit.model_view(model, tmp_path / f"kan.{fmt}", x=_x())
    assert path.is_file()
    assert path.stat().st_size > 1000
    if fmt == "png":
        w, h = _png_size(path)
        assert 300 <= w <= 4000
        assert 300 <= h <= 4000
    else:
        text = path.read_text()
        assert text.lstrip().startswith("<?xml")
        assert "<svg" in text


def test_model_view_wide_model_stays_bounded(tmp_path):
    torch.manual_seed(0)
    model = KAN([10, 10, 1]).double()
    path = rpnkit.inspection.model_view(rpnkit.inspect(model, _x(10, 200)), tmp_path / "w.png",
                                        dpi=60)
    w, h = _png_size(path)
    assert w <= 30 * 60 + 10
    assert h >= 200
    with pytest.raises(ConfigurationError, match="png or .svg"):
        rpnkit.model_view(model, tmp_path / "w.pdf", x=_x(10, 50))


CFG = {
    "seed": 0,
    "device": "cpu",
    "data": {"name": "function", "expression": "sin(3*x0) + x1**2",
             "ranges": [[-1, 1], [-1, 1]], "n_samples": 300},
    "train": {"epochs": 3, "optimizer": {"name": "adam", "lr": 0.02}},
}


@pytest.mark.parametrize("model", [
    {"name": "kan", "dims": [2, 2, 1]},
    {"name": "rpn", "dims": [2, 2, 1], "expansion": EXT,
     "reconciliation": {"name": "lorr", "r": 1}, "remainder": "zero"},
])
def test_plot_command(tmp_path, capsys, model):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump({**CFG, "model": model}))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--out", str(run), "--quiet"]) == 0
    assert main(["plot", str(run)]) == 0
    png = run / "model_view.png"
    assert png.is_file()
    assert min(_png_size(png)) > 200
    assert main(["plot", str(run), "--out", str(tmp_path / "v.svg")]) == 0
    assert (tmp_path / "v.svg").stat().st_size > 1000
    capsys.readouterr()
    assert main(["plot", str(run), "--out", str(tmp_path / "v.pdf")]) == 2
    assert main(["plot", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    assert "rpnkit: error:" in err


def test_interdependent_layers_are_refused_clearly():
    m = RPN.from_dims([3, 4, 1], expansion="bspline", interdependence={"name": "chain"})
    x = torch.rand(10, 3)
    with pytest.raises(ConfigurationError, match="layer 0 is a InterdependentLayer"):
        rpnkit.inspect(m, x)
    with pytest.raises(ConfigurationError, match="update_grid: layer 0"):
        rpnkit.update_grid(m, x)

"""RPN: chained layers, dimension checks, from_dims and per-layer overrides."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rpnkit
from rpnkit.errors import ConfigurationError


def _x(b: int = 4, m: int = 5, dtype=torch.float32) -> torch.Tensor:
    return torch.rand(b, m, generator=torch.Generator().manual_seed(0), dtype=dtype) * 2 - 1


def test_chain_applies_layers_in_order_with_nothing_in_between():
    l1 = rpnkit.RPNLayer(5, 3, num_heads=2, expansion="taylor", reconciliation="lorr")
    l2 = rpnkit.RPNLayer(3, 2, expansion="bspline", remainder="linear")
    model = rpnkit.RPN([l1, l2])
    x = _x()
    torch.testing.assert_close(model(x), l2(l1(x)))
    assert model.dims == [5, 3, 2]
    assert list(model.layers) == [l1, l2]


def test_dims_mismatch_names_both_layers():
    l1 = rpnkit.RPNLayer(5, 3)
    l2 = rpnkit.RPNLayer(4, 2)
    with pytest.raises(ConfigurationError, match=r"layer 0 outputs n=3.*layer 1 expects m=4"):
        rpnkit.RPN([l1, l2])
    with pytest.raises(ConfigurationError, match="at least one layer"):
        rpnkit.RPN([])
    with pytest.raises(ConfigurationError, match="expected RPNLayer"):
        rpnkit.RPN([nn.Linear(3, 3)])


def test_from_dims_spec_example():
    model = rpnkit.RPN.from_dims(
        [784, 64, 64, 10], expansion="taylor", reconciliation="lorr", remainder="zero",
        expansion_params={"d": 2}, reconciliation_params={"r": 2},
    )  # fmt: skip
    assert model.dims == [784, 64, 64, 10]
    h0 = model.layers[0].heads[0]
    assert h0.D == 784 + 784**2
    assert h0.w.shape == (1, 2 * (64 + h0.D))
    assert isinstance(h0.reconciliation, rpnkit.reconciliation.LowRank)
    assert model(torch.randn(2, 1, 28, 28)).shape == (2, 10)  # images are flattened


def test_from_dims_is_the_same_as_building_by_hand():
    torch.manual_seed(0)
    model = rpnkit.RPN.from_dims([5, 4, 2], expansion="chebyshev", reconciliation="hm",
                                 reconciliation_params={"p": 2, "q": 5}, remainder="linear",
                                 heads=2, channels=2, bias=True)
    x = _x()
    h = x
    for layer in model.layers:
        assert len(layer.heads) == 2
        assert layer.fusion == "sum"
        assert all(hd.channels == 2 and hd.bias is not None for hd in layer.heads)
        assert all(isinstance(hd.remainder, rpnkit.remainder.LinearRemainder) for hd in layer.heads)
        h = sum(hd(h) for hd in layer.heads)
    torch.testing.assert_close(model(x), h)


def test_from_dims_activation_between_layers_only():
    model = rpnkit.RPN.from_dims([5, 4, 3, 2], activation="relu")
    assert [len(layer.output) for layer in model.layers] == [1, 1, 0]
    assert isinstance(model.layers[0].output[0], nn.ReLU)
    plain = rpnkit.RPN.from_dims([5, 4, 2])
    assert all(len(layer.output) == 0 for layer in plain.layers)


def test_from_dims_per_layer_overrides():
    model = rpnkit.RPN.from_dims(
        [5, 4, 3],
        expansion="taylor", expansion_params={"d": 3},
        reconciliation="lorr", reconciliation_params={"r": 3},
        layers=[None, {"expansion": "bspline", "reconciliation_params": {"r": 1},
                       "heads": 3, "head_fusion": "mean", "output": "tanh"}],
    )  # fmt: skip
    first, second = model.layers
    assert first.heads[0].expansion.d == 3
    assert first.heads[0].reconciliation.r == 3
    assert isinstance(second.heads[0].expansion, rpnkit.expansion.BSpline)
    assert second.heads[0].expansion.t == 5  # params reset when the component changes
    assert second.heads[0].reconciliation.r == 1
    assert len(second.heads) == 3
    assert second.fusion == "mean"
    assert isinstance(second.output[0], nn.Tanh)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dims": [5]}, "at least two"),
        ({"dims": [5, 0]}, "positive"),
        ({"dims": [5, 2.5]}, "positive"),
        ({"layers": [None, None, None]}, "3 layer overrides given for 2 layers"),
        ({"layers": [{"expansoin": "taylor"}]}, "did you mean 'expansion'"),
        ({"expansion": "tayler"}, "did you mean 'taylor'"),
        ({"expansion_params": {"dd": 2}, "expansion": "taylor"}, "unknown parameter 'dd'"),
        ({"head_fusion": "prod"}, "fusion"),
        ({"reconciliation": "hm", "reconciliation_params": {"p": 3}}, "p=3 must divide n=4"),
        ({"remainder": "identity"}, "needs m == n"),
    ],
)
def test_from_dims_errors(kwargs, match):
    args = {"dims": [5, 4, 2]} | kwargs
    with pytest.raises(ConfigurationError, match=match):
        rpnkit.RPN.from_dims(**args)


def test_state_dict_round_trip_and_device_dtype_moves(tmp_path):
    make = lambda: rpnkit.RPN.from_dims(  # noqa: E731
        [5, 4, 2], expansion="taylor", reconciliation="masking", remainder="linear",
        layers=[{"reconciliation": "random_matrix_adaption"}, {"reconciliation": "hypernet",
                                                               "reconciliation_params": {"l": 4}}],
    )  # fmt: skip
    model = make()
    torch.save(model.state_dict(), tmp_path / "m.pt")
    fresh = make()
    fresh.load_state_dict(torch.load(tmp_path / "m.pt"))
    x = _x()
    torch.testing.assert_close(fresh(x), model(x), rtol=0, atol=0)
    model.double()
    assert all(t.dtype == torch.float64 for t in model.state_dict().values())
    torch.testing.assert_close(model(x.double()), fresh(x).double(), rtol=1e-5, atol=1e-6)


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    x = torch.rand(128, 2) * 2 - 1
    y = (x[:, :1] * x[:, 1:]) + torch.sin(x[:, :1])
    model = rpnkit.RPN.from_dims([2, 3, 1], expansion="taylor", reconciliation="lorr",
                                 reconciliation_params={"r": 1})
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    first = None
    for _ in range(60):
        opt.zero_grad()
        loss = nn.functional.mse_loss(model(x), y)
        first = loss.item() if first is None else first
        loss.backward()
        opt.step()
    assert loss.item() < 0.1 * first


def test_eval_mode_propagates_everywhere():
    model = rpnkit.RPN.from_dims([5, 4, 2], activation="dropout",
                                 expansion_params={"postprocess": [nn.Dropout(0.3)]})
    model.eval()
    assert all(not m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_from_dims_keeps_its_positional_order():
    model = rpnkit.RPN.from_dims([3, 4, 2], "taylor", "lorr", "zero", None, {"r": 3})
    head = model.layers[0].heads[0]
    assert head.reconciliation.r == 3
    assert head.expansion.registry_name == "taylor"
    with pytest.raises(TypeError, match="multiple values"):
        rpnkit.RPN.from_dims([3, 2], "taylor", expansion="identity")

"""RPNLayer: head fusion sum / mean / concat / linear, output modules, checks."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rpnkit
from rpnkit.errors import ConfigurationError


def _x(b: int = 5, m: int = 3, dtype=torch.float64) -> torch.Tensor:
    return torch.rand(b, m, generator=torch.Generator().manual_seed(0), dtype=dtype) * 2 - 1


def _heads(n_heads: int = 3, m: int = 3, n: int = 2, widths=None):
    widths = widths or [n] * n_heads
    specs = [("taylor", "lorr", "zero"), ("bspline", "identity", "linear"), ("chebyshev", "hm", "zero")]
    out = []
    for i, w in enumerate(widths):
        e, r, p = specs[i % 3]
        params = {"p": 1, "q": 3} if r == "hm" else {}
        out.append(rpnkit.RPNHead(m, w, expansion=e, reconciliation=r, remainder=p,
                                  reconciliation_params=params, bias=True).double())
    return out


def test_sum_is_default_and_adds_heads():
    heads = _heads()
    layer = rpnkit.RPNLayer(3, 2, heads=heads)
    assert layer.fusion == "sum"
    x = _x()
    torch.testing.assert_close(layer(x), sum(h(x) for h in heads))
    assert all(a is b for a, b in zip(layer.heads, heads))


def test_mean():
    heads = _heads()
    layer = rpnkit.RPNLayer(3, 2, heads=heads, fusion="mean")
    x = _x()
    torch.testing.assert_close(layer(x), sum(h(x) for h in heads) / 3)


def test_concat_with_unequal_widths():
    heads = _heads(widths=[1, 3, 2])
    layer = rpnkit.RPNLayer(3, 6, heads=heads, fusion="concat")
    x = _x()
    torch.testing.assert_close(layer(x), torch.cat([h(x) for h in heads], dim=1))


def test_linear_fusion_is_learned_and_starts_as_the_mean():
    heads = _heads()
    layer = rpnkit.RPNLayer(3, 2, heads=heads, fusion="linear").double()
    x = _x()
    assert layer.fusion_linear.weight.shape == (2, 6)
    assert layer.fusion_linear.weight.requires_grad
    torch.testing.assert_close(layer(x), sum(h(x) for h in heads) / 3)
    with torch.no_grad():
        layer.fusion_linear.weight.normal_()
    cat = torch.cat([h(x) for h in heads], dim=1)
    torch.testing.assert_close(layer(x), cat @ layer.fusion_linear.weight.T)
    assert "fusion_linear.weight" in layer.state_dict()


def test_linear_fusion_of_unequal_widths():
    heads = _heads(widths=[1, 4])
    layer = rpnkit.RPNLayer(3, 2, heads=heads, fusion="linear").double()
    x = _x()
    cat = torch.cat([h(x) for h in heads], dim=1)
    torch.testing.assert_close(layer(x), cat @ layer.fusion_linear.weight.T)


def test_auto_built_heads_are_independent():
    layer = rpnkit.RPNLayer(4, 6, num_heads=3, expansion="taylor", reconciliation="masking",
                            reconciliation_params={"p": 0.5}, remainder="linear", channels=2)
    assert len(layer.heads) == 3
    comps = [(h.expansion, h.reconciliation, h.remainder) for h in layer.heads]
    assert len({id(c) for trio in comps for c in trio}) == 9
    assert all(h.w.shape == (2, 6 * 20) for h in layer.heads)
    assert not torch.equal(layer.heads[0].w, layer.heads[1].w)


def test_auto_built_concat_splits_the_width():
    layer = rpnkit.RPNLayer(3, 6, num_heads=3, fusion="concat")
    assert [h.n for h in layer.heads] == [2, 2, 2]
    assert layer(_x(dtype=torch.float32)).shape == (5, 6)
    with pytest.raises(ConfigurationError, match="divisible"):
        rpnkit.RPNLayer(3, 7, num_heads=3, fusion="concat")


def test_module_given_as_head_option_is_copied_per_head():
    psi = rpnkit.build_reconciliation("lorr")
    layer = rpnkit.RPNLayer(3, 2, num_heads=2, reconciliation=psi)
    assert layer.heads[0].reconciliation is not layer.heads[1].reconciliation


def test_output_and_head_output_modules_are_registered():
    drop = nn.Dropout(0.5)
    layer = rpnkit.RPNLayer(3, 4, num_heads=2, output=["layer_norm", drop],
                            head_output="tanh")
    assert isinstance(layer.output[0], nn.LayerNorm)
    assert layer.output[0].normalized_shape == (4,)
    assert {"output.0.weight", "output.0.bias"} <= set(layer.state_dict())
    assert all(isinstance(h.output[0], nn.Tanh) for h in layer.heads)
    layer.eval()
    assert not drop.training
    x = _x(dtype=torch.float32)
    s = sum(torch.tanh(x @ h.w.detach().reshape(4, 3).T) for h in layer.heads)
    torch.testing.assert_close(layer(x), layer.output[0](s))


def test_gradients_reach_every_head():
    layer = rpnkit.RPNLayer(3, 2, num_heads=2, fusion="linear", reconciliation="lorr",
                            remainder="linear")
    layer(_x(dtype=torch.float32)).sum().backward()
    for p in layer.parameters():
        assert p.grad is not None


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fusion": "max"}, "fusion must be one of"),
        ({"heads": []}, "at least one head"),
        ({"heads": [nn.Linear(3, 2)]}, "expected RPNHead"),
        ({"heads": [rpnkit.RPNHead(4, 2)]}, r"head 0 takes m=4.*m=3"),
        ({"heads": [rpnkit.RPNHead(3, 2), rpnkit.RPNHead(3, 3)]}, r"head widths \[2, 3\]"),
        ({"heads": [rpnkit.RPNHead(3, 1)], "fusion": "concat"}, r"sum 1\); pass n=1"),
        ({"heads": [rpnkit.RPNHead(3, 2)], "channels": 2}, "given together with built heads"),
        ({"chanels": 2}, "did you mean 'channels'"),
        ({"num_heads": 0}, "num_heads"),
        ({"m": 0}, "m must be a positive integer"),
    ],
)
def test_construction_errors(kwargs, match):
    args = {"m": 3, "n": 2} | kwargs
    with pytest.raises(ConfigurationError, match=match):
        rpnkit.RPNLayer(**args)


def test_dtype_and_state_dict_round_trip():
    make = lambda: rpnkit.RPNLayer(3, 2, num_heads=2, fusion="linear",  # noqa: E731
                                   expansion="taylor", reconciliation="masking",
                                   remainder="linear")
    layer = make()
    x = _x()
    assert layer(x).dtype == torch.float32  # the parameters decide
    assert layer.double()(x.float()).dtype == torch.float64
    fresh = make().double()
    fresh.load_state_dict(layer.state_dict())
    torch.testing.assert_close(fresh(x), layer(x))
    assert isinstance(layer.plan(), str)


def test_concat_n_is_always_the_layer_output_width():
    heads = _heads()  # three heads of width 2
    layer = rpnkit.RPNLayer(3, 6, heads=heads, fusion="concat", output="layer_norm").double()
    assert layer.n == 6
    assert layer.output[0].normalized_shape == (6,)
    x = _x()
    assert layer(x).shape == (5, 6)
    nxt = rpnkit.RPNLayer(6, 1)
    assert rpnkit.RPN([layer, nxt]).dims == [3, 6, 1]
    with pytest.raises(ConfigurationError, match=r"heads are \[2, 2, 2\] wide \(sum 6\); pass n=6"):
        rpnkit.RPNLayer(3, 2, heads=_heads(), fusion="concat")
    built = rpnkit.RPNLayer(3, 6, num_heads=3, fusion="concat")  # built heads split n
    assert [h.n for h in built.heads] == [2, 2, 2]
    assert built.n == 6

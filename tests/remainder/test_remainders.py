"""Remainders π: formulas, binding, gradients, dtypes, state_dict, errors."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import rpnkit
from rpnkit.errors import ConfigurationError


def _bound(name: str, m: int = 3, n: int = 3, **kw):
    pi = rpnkit.build_remainder(name, **kw)
    pi.bind(m, n)
    return pi


def _x(b: int = 5, m: int = 3, dtype=torch.float64):
    return torch.randn(b, m, generator=torch.Generator().manual_seed(0), dtype=torch.float64).to(dtype)


def test_every_spec_name_is_registered():
    assert sorted(rpnkit.list_components()["remainder"]) == ["constant", "identity", "linear", "zero"]


def test_zero():
    y = _bound("zero", 3, 4)(_x())
    assert y.shape == (5, 4)
    assert torch.all(y == 0)
    assert y.dtype == torch.float64


def test_constant():
    torch.testing.assert_close(_bound("constant", 3, 2, c=2.5)(_x()), torch.full((5, 2), 2.5, dtype=torch.float64))
    assert rpnkit.build_remainder("constant").c == 1.0


def test_identity_with_and_without_activation():
    x = _x()
    torch.testing.assert_close(_bound("identity")(x), x)
    torch.testing.assert_close(_bound("identity", activation="silu")(x), x * torch.sigmoid(x))
    torch.testing.assert_close(rpnkit.build_remainder("identity", activation=nn.Tanh())(x), torch.tanh(x))


def test_identity_needs_square_sizes():
    with pytest.raises(ConfigurationError, match=r"m == n.*m=3, n=4"):
        _bound("identity", 3, 4)
    with pytest.raises(ConfigurationError, match="needs m == n"):
        rpnkit.RPNHead(3, 4, remainder="identity")


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("activation", [None, "silu"])
def test_linear(bias, activation):
    pi = _bound("linear", 3, 2, bias=bias, activation=activation).double()
    assert pi.weight.shape == (2, 3)
    assert (pi.bias is not None) == bias
    if bias:
        with torch.no_grad():
            pi.bias.copy_(torch.tensor([0.5, -1.0]))
    x = _x()
    z = x @ pi.weight.detach().T + (pi.bias.detach() if bias else 0)
    want = z * torch.sigmoid(z) if activation else z
    torch.testing.assert_close(pi(x), want)
    names = {n for n, _ in pi.named_parameters()}
    assert names == ({"weight", "bias"} if bias else {"weight"})


def test_linear_init_is_fan_in_uniform():
    pi = _bound("linear", 400, 300)
    bound = 1 / 400**0.5
    assert pi.weight.abs().max() <= bound
    assert pi.weight.std().item() == pytest.approx(bound / 3**0.5, rel=0.05)


@pytest.mark.parametrize(("name", "kw"), [("identity", {"activation": "tanh"}), ("linear", {"bias": True, "activation": "silu"}), ("constant", {}), ("zero", {})])
def test_gradcheck(name, kw):
    pi = _bound(name, **kw).double()
    x = _x().requires_grad_(True)
    if name in ("constant", "zero"):
        y = pi(x)
        assert not y.requires_grad or torch.autograd.grad(y.sum(), x, allow_unused=True)[0] is None
        return
    assert torch.autograd.gradcheck(pi, (x,))
    if name == "linear":
        assert torch.autograd.gradcheck(lambda wt: torch.nn.functional.silu(x @ wt.T + pi.bias), (pi.weight,))


@pytest.mark.parametrize("name", ["zero", "constant", "identity", "linear"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_dtype_preserved_without_double(name, dtype):
    pi = _bound(name, bias=True) if name == "linear" else _bound(name)
    assert pi(_x(dtype=dtype)).dtype == dtype


def test_linear_state_dict_into_a_fresh_head():
    head = rpnkit.RPNHead(3, 2, remainder="linear", remainder_params={"bias": True})
    with torch.no_grad():
        head.remainder.bias.fill_(0.25)
    sd = head.state_dict()
    assert {"remainder.weight", "remainder.bias"} <= set(sd)
    fresh = rpnkit.RPNHead(3, 2, remainder="linear", remainder_params={"bias": True})
    assert not torch.equal(fresh.remainder.weight, head.remainder.weight)
    fresh.load_state_dict(sd)
    x = _x(dtype=torch.float32)
    torch.testing.assert_close(fresh(x), head(x))
    torch.testing.assert_close(fresh.remainder(x), head.remainder(x))
    # an unbound remainder adopts the saved sizes
    pi = rpnkit.build_remainder("linear", bias=True)
    pi.load_state_dict({"weight": sd["remainder.weight"], "bias": sd["remainder.bias"]})
    assert (pi.m, pi.n) == (3, 2)
    torch.testing.assert_close(pi(x), head.remainder(x))


def test_linear_parameters_exist_at_head_construction_and_reach_the_optimizer():
    head = rpnkit.RPNHead(3, 2, remainder="linear")
    params = {id(p) for p in head.parameters()}
    assert id(head.remainder.weight) in params
    opt = torch.optim.SGD(head.parameters(), lr=0.1)
    before = head.remainder.weight.detach().clone()
    head(_x(dtype=torch.float32)).pow(2).sum().backward()
    opt.step()
    assert not torch.equal(before, head.remainder.weight)


def test_errors():
    with pytest.raises(RuntimeError, match="not bound"):
        rpnkit.build_remainder("linear")(_x())
    with pytest.raises(ValueError, match=r"\(batch, 3\)"):
        _bound("linear", 3, 2)(torch.zeros(2, 4))
    with pytest.raises(ConfigurationError, match="already bound"):
        _bound("linear", 3, 2).bind(4, 2)
    with pytest.raises(ConfigurationError):
        rpnkit.build_remainder("constant", c=float("inf"))
    with pytest.raises(rpnkit.UnknownNameError, match="did you mean 'silu'"):
        rpnkit.build_remainder("linear", activation="slu")
    with pytest.raises(ConfigurationError, match="unknown parameter 'activation'"):
        rpnkit.build_remainder("zero", activation="relu")

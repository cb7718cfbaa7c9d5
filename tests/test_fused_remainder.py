"""KAN's base branch folded into the fused small-head product (rpnkit.fused_remainder):
the same values and gradients as the head's planned path plus the remainder module, in
float64 (gradcheck, gradgradcheck), inputs on the knots and outside the grid included, and
the unfused path wherever the fused node would skip something (hooks, autocast, compile)."""

from __future__ import annotations

import pytest
import torch

import rpnkit
from rpnkit.fused_remainder import FusedBaseProduct
from rpnkit.models.classic import KANBaseRemainder


def _x(rows: int, m: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(rows, m, generator=g, dtype=torch.float64) * 3.2 - 1.6  # beyond [-1, 1]
    knots = -1 + 0.4 * torch.arange(-3, 9, dtype=torch.float64)
    x[: min(rows, knots.numel()), 0] = knots[: min(rows, knots.numel())]  # exactly on knots
    return x


def _reference(head, x):
    """The head without the fold: the planned path (+ bias) plus the remainder module."""
    return head._planned(x, head.w, head.bias) + head.remainder(x)


def _heads(model):
    return [h for layer in model.layers for h in layer.heads]


def test_kan_heads_fold_their_base_branch():
    model = rpnkit.models.KAN([2, 5, 1])
    for h in _heads(model):
        assert isinstance(h.fused, FusedBaseProduct)
        assert h.fused_folds_remainder
        assert "folded" in h.plan()
    # a bigger head (D > 256) keeps the planned path and its separate remainder
    big = rpnkit.models.KAN([40, 3])
    assert big.layers[0].heads[0].fused is None
    assert not big.layers[0].heads[0].fused_folds_remainder


@pytest.mark.parametrize("act", ["silu", None])
@pytest.mark.parametrize("bias", [False, True])
def test_values_and_gradients_equal_the_unfused_head(act, bias):
    torch.manual_seed(0)
    head = rpnkit.RPNHead(3, 4, expansion="bspline",
                          reconciliation="identity",
                          remainder=KANBaseRemainder(activation=act, bias=bias)).double()
    assert isinstance(head.fused, FusedBaseProduct)
    with torch.no_grad():
        for p in head.parameters():
            p.copy_(torch.randn_like(p))
    x = _x(11, 3).requires_grad_()
    y = head(x)
    assert type(y.grad_fn).__name__ == "_FusedHeadBackward"
    ref = _reference(head, x)
    torch.testing.assert_close(y, ref, rtol=0, atol=1e-12)
    g = torch.randn_like(y)
    params = [x, *head.parameters()]
    got = torch.autograd.grad(y, params, g)
    want = torch.autograd.grad(ref, params, g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-11)


def test_gradcheck_and_gradgradcheck_through_the_folded_kan():
    torch.manual_seed(1)
    model = rpnkit.models.KAN([2, 3, 1]).double()
    x = (torch.rand(6, 2, dtype=torch.float64) * 2.4 - 1.2).requires_grad_()
    params = tuple(model.parameters())

    def fn(x, *ps):
        return torch.func.functional_call(model, dict(zip(
            [n for n, _ in model.named_parameters()], ps)), (x,))

    # functional_call keeps eager autograd (no functorch transform): the fused nodes run, the
    # model's two layers as one chain node (rpnkit.fused_chain)
    assert type(fn(x, *params).grad_fn).__name__ == "_FusedChainBackward"
    assert torch.autograd.gradcheck(fn, (x, *params), eps=1e-6, atol=1e-6)
    assert torch.autograd.gradgradcheck(fn, (x, *params), eps=1e-6, atol=1e-5)


def test_kan_training_step_matches_the_unfused_kan():
    torch.manual_seed(2)
    a = rpnkit.models.KAN([2, 5, 1]).double()
    b = rpnkit.models.KAN([2, 5, 1]).double()
    b.load_state_dict(a.state_dict())
    for h in _heads(b):  # unfold: the head adds the remainder module itself
        f = h.fused
        h.fused = rpnkit.contract.FusedHeadProduct(f.part, f.n, f.D, f.rank)
        h.fused_folds_remainder = False
    x, y = _x(64, 2, 3), torch.rand(64, 1, dtype=torch.float64)
    for model in (a, b):
        opt = torch.optim.AdamW(model.parameters(), 1e-2)
        for _ in range(3):
            opt.zero_grad()
            (model(x) - y).square().mean().backward()
            opt.step()
    for p, q in zip(a.parameters(), b.parameters()):
        torch.testing.assert_close(p, q, rtol=0, atol=1e-12)


def test_a_hooked_remainder_takes_the_unfused_path():
    model = rpnkit.models.KAN([2, 3, 1]).double()
    head = model.layers[0].heads[0]
    seen = []
    handle = head.remainder.register_forward_hook(lambda mod, inp, out: seen.append(out.shape))
    x = _x(5, 2)
    y = head(x)
    assert seen == [torch.Size([5, 3])]
    torch.testing.assert_close(y, _reference(head, x), rtol=0, atol=1e-12)
    handle.remove()
    head(x)
    assert len(seen) == 2  # the one call inside _reference; the fused call ran no hook


def test_a_replaced_activation_takes_the_unfused_path():
    model = rpnkit.models.KAN([2, 3, 1]).double()
    head = model.layers[0].heads[0]
    head.remainder.activation = torch.nn.Tanh()
    assert head.remainder.fused_input_activation() is None
    x = _x(5, 2)
    assert not head.fused.available(x)
    torch.testing.assert_close(head(x), _reference(head, x), rtol=0, atol=1e-12)
    torch.testing.assert_close(
        head.remainder(x), torch.tanh(x) @ head.remainder.weight.t(), rtol=0, atol=1e-12)

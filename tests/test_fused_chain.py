"""A chain of fused small heads as one autograd node (rpnkit.fused_chain): equal to the
layers run one by one, in float64, values and gradients; falls back where it must."""

from __future__ import annotations

import pytest
import torch

import rpnkit
from rpnkit.models import KAN

D64 = torch.float64


def _ext(dims):
    return rpnkit.RPN.from_dims(
        list(dims), expansion={"name": "extended",
                               "expansions": ["bspline", {"name": "taylor", "d": 2}]},
        reconciliation="lorr", reconciliation_params={"r": 1}, remainder="zero")


MODELS = {
    "ext_221": lambda: _ext((2, 2, 1)),
    "ext_2221": lambda: _ext((2, 2, 2, 1)),
    "ext_31": lambda: _ext((3, 1)),
    "kan_231": lambda: KAN([2, 3, 1]),
    "taylor_identity_bias": lambda: rpnkit.RPN.from_dims(
        [3, 4, 2], expansion={"name": "taylor", "d": 2}, reconciliation="identity",
        remainder="zero", bias=True),
}


def _model(name):
    torch.manual_seed(4)
    model = MODELS[name]().to(D64)
    with torch.no_grad():  # non-trivial weights everywhere
        g = torch.Generator().manual_seed(9)
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=D64) * 0.5)
    return model


def _inputs(m, b=7):
    g = torch.Generator().manual_seed(2)
    x = torch.rand(b, m, generator=g, dtype=D64) * 2.4 - 1.2  # also outside the grid
    x[0, 0] = 0.5  # a knot
    return x


def _layer_by_layer(model, x):
    for layer in model.layers:
        x = layer(x)
    return x


@pytest.mark.parametrize("name", list(MODELS))
def test_chain_equals_layers_one_by_one(name):
    model = _model(name)
    x = _inputs(model.layers[0].m).requires_grad_()
    y = model(x)
    assert type(y.grad_fn).__name__ == "_FusedChainBackward"
    xr = x.detach().clone().requires_grad_()
    ref = _layer_by_layer(model, xr)
    assert type(ref.grad_fn).__name__ != "_FusedChainBackward"
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-13)
    r = torch.randn(y.shape, generator=torch.Generator().manual_seed(1), dtype=D64)
    params = list(model.parameters())
    got = torch.autograd.grad((y * r).sum(), [x, *params])
    want = torch.autograd.grad((ref * r).sum(), [xr, *params])
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", ["ext_221", "kan_231", "taylor_identity_bias"])
def test_chain_gradcheck_and_gradgradcheck(name):
    model = _model(name)
    names = [n for n, _ in model.named_parameters()]
    x = (_inputs(model.layers[0].m, b=4) * 0.9).requires_grad_()

    def fn(x, *ps):
        return torch.func.functional_call(model, dict(zip(names, ps)), (x,))

    ps = tuple(model.parameters())
    assert type(fn(x, *ps).grad_fn).__name__ == "_FusedChainBackward"
    assert torch.autograd.gradcheck(fn, (x, *ps))
    assert torch.autograd.gradgradcheck(fn, (x, *ps))


@pytest.mark.parametrize("frozen", [0, 1])
def test_frozen_layers_and_input_without_grad(frozen):
    """Only what needs a gradient gets one; the backward stops below the last trainable
    layer, and the trainable layers' gradients are still exact."""
    model = _model("ext_2221")
    for p in model.layers[frozen].parameters():
        p.requires_grad_(False)
    x = _inputs(2)
    y = model(x)
    assert type(y.grad_fn).__name__ == "_FusedChainBackward"
    train = [p for p in model.parameters() if p.requires_grad]
    got = torch.autograd.grad(y.square().sum(), train)
    want = torch.autograd.grad(_layer_by_layer(model, x).square().sum(), train)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_empty_batch_and_lead_dimensions():
    model = _model("ext_221")
    x = _inputs(2, b=6)
    assert model(x[:0]).shape == (0, 1)
    torch.testing.assert_close(model(x.reshape(2, 3, 2)), model(x).reshape(2, 3, 1),
                               rtol=0, atol=0)


def test_chain_falls_back_for_hooks_outputs_autocast_and_transforms():
    model = _model("ext_221")
    x = _inputs(2)
    ref = model(x)
    seen = []
    handle = model.layers[1].register_forward_hook(lambda mod, inp, out: seen.append(1))
    y = model(x)
    assert seen == [1]  # the hook ran: the layers ran as modules
    assert type(y.grad_fn).__name__ != "_FusedChainBackward"
    torch.testing.assert_close(y, ref, rtol=1e-13, atol=1e-13)
    handle.remove()
    assert type(model(x).grad_fn).__name__ == "_FusedChainBackward"
    # an output module on a layer
    model.layers[0].output.append(torch.nn.Tanh())
    y = model(x)
    assert type(y.grad_fn).__name__ != "_FusedChainBackward"
    h = torch.tanh(model.layers[0].heads[0](x))
    torch.testing.assert_close(y, model.layers[1].heads[0](h), rtol=1e-13, atol=1e-13)
    del model.layers[0].output[0]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        y = model(x.float())
    assert type(y.grad_fn).__name__ != "_FusedChainBackward"
    names = [n for n, _ in model.named_parameters()]
    grads = torch.func.grad(lambda ps: torch.func.functional_call(
        model, dict(zip(names, ps)), (x,)).sum())(tuple(model.parameters()))
    want = torch.autograd.grad(ref.sum(), list(model.parameters()))
    for a, b in zip(grads, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_chain_steps_aside_for_a_parametrized_weight():
    """A parametrization of w (spectral/weight norm, a user's constraint) moves w out of
    ``_parameters``: the layers then run one by one and see the parametrized weight."""
    model = _model("ext_221")
    x = _inputs(2)
    torch.nn.utils.parametrize.register_parametrization(
        model.layers[0].heads[0], "w", _Scale())
    y = model(x)
    assert type(y.grad_fn).__name__ != "_FusedChainBackward"
    torch.testing.assert_close(y, _layer_by_layer(model, x), rtol=1e-13, atol=1e-13)
    h = model.layers[0].heads[0]
    assert torch.equal(h.w, 2 * h.parametrizations.w.original)


class _Scale(torch.nn.Module):
    def forward(self, w):
        return 2 * w

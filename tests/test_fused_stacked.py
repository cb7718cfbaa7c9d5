"""The fused small-head product for S stacked copies (rpnkit.fused_stacked): under one
``torch.func.vmap`` (its batched rule) and natively (``RPN.forward_stacked``), values and
gradients equal S separate models in float64."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch.func import functional_call, stack_module_state, vmap

import rpnkit
from rpnkit.fused_stacked import NotStackable
from rpnkit.models import KAN
from rpnkit.training import fit
from rpnkit.training.seeds import _Stack

S = 3


def _ext(dims=(2, 2, 1), rec="lorr", rem="zero"):
    params = {"r": 1} if rec == "lorr" else {}
    return rpnkit.RPN.from_dims(
        list(dims), expansion={"name": "extended",
                               "expansions": ["bspline", {"name": "taylor", "d": 2}]},
        reconciliation=rec, reconciliation_params=params, remainder=rem)


MAKERS = {
    "ext_lorr": lambda: _ext(),
    "ext_wide": lambda: _ext((2, 3, 2)),
    "ext_identity": lambda: _ext(rec="identity"),
    "kan": lambda: KAN([2, 4, 1]),
}


def _copies(make):
    models = []
    for s in range(S):
        torch.manual_seed(100 + s)
        models.append(make().double())
    return models


def _inputs(shared: bool) -> torch.Tensor:
    g = torch.Generator().manual_seed(3)
    shape = (6, 2) if shared else (S, 6, 2)
    x = torch.rand(shape, generator=g, dtype=torch.float64) * 2.4 - 1.2  # also off the grid
    x[..., 0, 0] = 1.0  # exactly on a knot
    return x


def _reference(models, x, shared):
    return torch.stack([m(x if shared else x[s]) for s, m in enumerate(models)])


def _grads(models, y, g, x):
    """Per parameter the S copies' gradients stacked, then the gradient of x."""
    params = [list(m.parameters()) for m in models]
    flat = torch.autograd.grad(y, [p for ps in params for p in ps] + [x], g)
    n = len(params[0])
    return [torch.stack([flat[s * n + i] for s in range(S)]) for i in range(n)] + [flat[-1]]


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("name", list(MAKERS))
def test_vmap_rule_equals_separate_models(name, shared):
    models = _copies(MAKERS[name])
    base = copy.deepcopy(models[0])
    stacked, _ = stack_module_state(models)
    params = {k: v.detach().clone().requires_grad_() for k, v in stacked.items()}
    x = _inputs(shared).requires_grad_()
    y = vmap(lambda p, xx: functional_call(base, (p,), (xx,)),
             in_dims=(0, None if shared else 0))(params, x)
    assert type(y.grad_fn).__name__ == "_FusedStackedBackward"  # the batched rule ran
    x_ref = x.detach().clone().requires_grad_()
    ref = _reference(models, x_ref, shared)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-13)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [*params.values(), x], g)
    want = _grads(models, ref, g, x_ref)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("name", ["ext_lorr", "kan"])
def test_vmap_rule_gradcheck_and_double_backward(name):
    models = _copies(MAKERS[name])
    base = copy.deepcopy(models[0])
    stacked, _ = stack_module_state(models)
    names = list(stacked)

    def f(*vals):
        p = dict(zip(names, vals[:-1]))
        return vmap(lambda p, xx: functional_call(base, (p,), (xx,)))(p, vals[-1])

    vals = [v.detach().clone().requires_grad_() for v in stacked.values()]
    vals.append((_inputs(False)[:, :4] * 0.9).requires_grad_())
    assert torch.autograd.gradcheck(f, vals)
    assert torch.autograd.gradgradcheck(f, vals)


@pytest.mark.parametrize("shared", [True, False])
@pytest.mark.parametrize("name", list(MAKERS))
def test_native_stacked_forward_equals_separate_models(name, shared):
    models = _copies(MAKERS[name])
    stack = _Stack(models)
    x = _inputs(shared).requires_grad_()
    y = stack.forward(x, shared)
    assert stack.native is True
    x_ref = x.detach().clone().requires_grad_()
    ref = _reference(models, x_ref, shared)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-13)
    g = torch.randn_like(y)
    got = torch.autograd.grad(y, [*stack.trainable, x], g)
    want = _grads(models, ref, g, x_ref)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-12)
    # the shell's own parameters are back after the call
    assert all(isinstance(p, torch.nn.Parameter) for p in stack.base.parameters())


def test_native_refused_where_a_head_has_no_fused_product():
    """A linear remainder is not folded into the fused node: the model keeps vmap, and the
    batched forward still equals the separate models."""
    models = _copies(lambda: _ext(rem="linear"))
    with pytest.raises(NotStackable):
        models[0].forward_stacked(_inputs(True))
    stack = _Stack(models)
    x = _inputs(False)
    y = stack.forward(x, False)
    assert stack.native is False
    torch.testing.assert_close(y, _reference(models, x, False), rtol=1e-12, atol=1e-13)


def test_batched_kan_seeds_equal_single_runs():
    rng = np.random.default_rng(5)
    x = rng.uniform(-1, 1, (120, 2))
    y = np.sin(2 * x[:, :1]) + x[:, 1:] ** 2
    data = {"train": (x[:80], y[:80]), "val": (x[80:100], y[80:100]),
            "test": (x[100:], y[100:])}
    cfg = {"epochs": 3, "batch_size": 32, "dtype": "float64",
           "optimizer": {"name": "adamw", "lr": 0.01}}

    def make(seed):
        torch.manual_seed(seed)
        return KAN([2, 3, 1])

    batched = fit(make, data, cfg, seed=11, seeds=[11, 12])
    for k, seed in enumerate([11, 12]):
        single = fit(make(seed), data, cfg, seed=seed)
        for a, b in zip(single.history, batched.runs[k].history):
            np.testing.assert_allclose(b["train_loss"], a["train_loss"], rtol=1e-6)
        np.testing.assert_allclose(batched.runs[k].final["test"]["mse"],
                                   single.final["test"]["mse"], rtol=1e-6)


@pytest.mark.parametrize("name", ["ext_lorr", "kan"])
def test_native_stacked_chain_is_one_node_with_exact_double_backward(name):
    """RPN.forward_stacked runs every layer and copy as one chain node; a gradient penalty
    through it (create_graph) equals the separate models'."""
    models = _copies(MAKERS[name])
    stack = _Stack(models)
    x = _inputs(False).requires_grad_()
    y = stack.forward(x, False)
    assert stack.native is True
    assert type(y.grad_fn).__name__ == "_FusedChainBackward"

    def penalty(out, xx):
        (dx,) = torch.autograd.grad(out.square().sum(), xx, create_graph=True)
        return out.sum() + dx.square().sum()

    got = torch.autograd.grad(penalty(y, x), stack.trainable)
    x_ref = x.detach().clone().requires_grad_()
    ref = _reference(models, x_ref, False)
    want = torch.autograd.grad(penalty(ref, x_ref), [p for m in models for p in m.parameters()])
    n = len(got)
    for i in range(n):
        torch.testing.assert_close(got[i], torch.stack([want[s * n + i] for s in range(S)]),
                                   rtol=1e-10, atol=1e-11)

"""Issue 15: symmetric Taylor without gathers, fused/foreach optimizers, budgeted evaluation."""

from __future__ import annotations

import pytest
import torch

import rpnkit
from rpnkit import RPNHead, contract
from rpnkit.budget import EVAL_ROWS, eval_rows
from rpnkit.config import TrainConfig
from rpnkit.contract import materialised_product
from rpnkit.training.components import OPTIMIZERS


# ------------------------------------------------------------------ symmetric Taylor
def _sym_head(m, n, channels=1, **kw):
    return RPNHead(m, n, expansion="taylor", expansion_params={"d": 2, "symmetric": True},
                   reconciliation="identity", channels=channels, **kw).double()


@pytest.mark.parametrize(("m", "block"), [(24, 1), (30, 3), (40, 40)])
def test_symmetric_taylor_fast_path_equals_the_materialised_definition(m, block, monkeypatch):
    monkeypatch.setattr(contract, "SYM_BLOCKS", block)  # one range, several, one row each
    head = _sym_head(m, 3, channels=2, bias=True)
    assert head.contraction.path == "sym-bilinear"
    assert "unique monomials" in head.plan()
    x = torch.randn(6, m, dtype=torch.float64, requires_grad=True)
    y = head.expansion_product(x)
    x0 = x.detach().clone().requires_grad_()
    y0 = materialised_product(head, x0)
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(y)
    gx, gw = torch.autograd.grad(y, (x, head.w), g)
    gx0, gw0 = torch.autograd.grad(y0, (x0, head.w), g)
    torch.testing.assert_close(gx, gx0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gw, gw0, rtol=1e-12, atol=1e-12)


def test_symmetric_bilinear_gradcheck(monkeypatch):
    monkeypatch.setattr(contract, "SYM_MIN_M", 2)
    monkeypatch.setattr(contract, "SYM_BLOCKS", 2)
    head = _sym_head(4, 2)
    assert head.contraction.path == "sym-bilinear"
    x = torch.randn(3, 4, dtype=torch.float64, requires_grad=True)
    w = head.w.detach().clone().requires_grad_()

    def f(x, w):
        return head.contraction(head.expansion.segment_inputs(x), w, head.reconciliation)

    assert torch.autograd.gradcheck(f, (x, w))


def test_small_widths_keep_the_gathered_monomials():
    head = _sym_head(5, 3)
    assert head.contraction.path == "materialised-κ"


def test_symmetric_fast_path_never_forms_the_monomials(monkeypatch):
    head = _sym_head(32, 4)
    monkeypatch.setattr(contract.Contraction, "_dense", None)  # calling it would fail
    monkeypatch.setattr(rpnkit.expansion.polynomial.Taylor, "expand", None)
    head(torch.randn(5, 32, dtype=torch.float64)).sum().backward()


# ------------------------------------------------------------------ optimizers
def _params():
    return [torch.nn.Parameter(torch.randn(3, 2)), torch.nn.Parameter(torch.randn(4))]


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_is_the_default_on_cpu(name):
    opt = OPTIMIZERS.build(name, lr=0.01)(_params())
    assert opt.defaults["fused"] is True


@pytest.mark.parametrize("name", ["adam", "adamw", "sgd"])
def test_fused_can_be_turned_off_and_steps_agree(name):
    torch.manual_seed(0)
    a, b = _params(), [torch.nn.Parameter(p.detach().clone()) for p in _params()]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    fused = OPTIMIZERS.build(name, lr=0.05)(a)
    loop = OPTIMIZERS.build(name, lr=0.05, fused=False)(b)
    assert not loop.defaults["fused"]
    for _ in range(3):
        for ps, opt in ((a, fused), (b, loop)):
            opt.zero_grad()
            sum((p**2).sum() for p in ps).backward()
            opt.step()
    for p, q in zip(a, b):
        torch.testing.assert_close(p, q, rtol=1e-6, atol=1e-6)


def test_optimizer_config_accepts_and_validates_fused():
    cfg = TrainConfig.model_validate({"optimizer": {"name": "adam", "lr": 0.01, "fused": True}})
    assert cfg.optimizer.params()["fused"] is True
    cfg = TrainConfig.model_validate({"optimizer": {"name": "adamw", "foreach": False}})
    assert cfg.optimizer.params() == {"foreach": False}
    with pytest.raises(Exception, match="fused must be true, false or null"):
        TrainConfig.model_validate({"optimizer": {"name": "adam", "fused": "yes"}})
    with pytest.raises(Exception, match="exclude each other"):
        TrainConfig.model_validate({"optimizer": {"name": "sgd", "fused": True, "foreach": True}})
    with pytest.raises(Exception, match="did you mean 'fused'"):
        TrainConfig.model_validate({"optimizer": {"name": "adam", "fuse": True}})


def test_default_skips_fused_where_params_are_not_real_floats():
    q = [torch.nn.Parameter(torch.randn(3, dtype=torch.complex64))]
    assert not OPTIMIZERS.build("adam")(q).defaults["fused"]


# ------------------------------------------------------------------ evaluation chunks
def test_eval_rows_follow_the_plan_and_the_budget(monkeypatch):
    big = rpnkit.RPN.from_dims([784, 64, 10], expansion="taylor", reconciliation="identity",
                               expansion_params={"d": 2})
    small = rpnkit.RPN.from_dims([4, 3], expansion="identity", reconciliation="identity")
    assert EVAL_ROWS[0] <= eval_rows(big) < 1000
    assert eval_rows(small) == EVAL_ROWS[1]
    assert eval_rows(torch.nn.Linear(3, 1)) == EVAL_ROWS[1]
    free = eval_rows(big)
    monkeypatch.setenv("RPNKIT_MEMORY_BUDGET", "40MB")  # a quarter of it: 10 MB per chunk
    assert eval_rows(big) < free


def test_chunked_evaluation_equals_unchunked():
    from rpnkit.data import DataBundle
    from rpnkit.training.engine import evaluate

    torch.manual_seed(0)
    model = rpnkit.RPN.from_dims([6, 5, 2], expansion="taylor", reconciliation="identity",
                                 expansion_params={"d": 2}).double()
    x = torch.randn(300, 6, dtype=torch.float64).numpy()
    y = torch.randn(300, 2, dtype=torch.float64).numpy()
    bundle = DataBundle(name="t", task="regression", x={"train": x}, y={"train": y},
                        feature_names=[f"x{i}" for i in range(6)], target_names=["a", "b"])
    split = "train"
    whole = evaluate(model, bundle, split, "mse", device="cpu", dtype=torch.float64,
                     batch_size=100_000)
    chunked = evaluate(model, bundle, split, "mse", device="cpu", dtype=torch.float64,
                       batch_size=7)
    auto = evaluate(model, bundle, split, "mse", device="cpu", dtype=torch.float64)
    for key in whole:
        assert chunked[key] == pytest.approx(whole[key], rel=1e-12, abs=1e-12)
        assert auto[key] == pytest.approx(whole[key], rel=1e-12, abs=1e-12)


def test_eval_batch_size_defaults_to_budgeted_chunks():
    assert TrainConfig().eval_batch_size is None
    assert TrainConfig.model_validate({"eval_batch_size": 256}).eval_batch_size == 256


@pytest.mark.slow
@pytest.mark.parametrize("kw", [{"expansion": "bspline"},
                                {"expansion": "taylor",
                                 "expansion_params": {"d": 2, "symmetric": True}}])
def test_new_autograd_functions_compile_fullgraph(kw):
    head = RPNHead(30, 3, reconciliation="identity", **kw).double()
    x = torch.rand(8, 30, dtype=torch.float64, requires_grad=True)
    compiled = torch.compile(head, fullgraph=True)
    y, y0 = compiled(x), head(x)
    (g,) = torch.autograd.grad(y.sum(), x)
    (g0,) = torch.autograd.grad(y0.sum(), x)
    torch.testing.assert_close(y, y0, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(g, g0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("kw", [{"expansion": "bspline"}, {"expansion": "gaussian_rbf"},
                                {"expansion": "taylor",
                                 "expansion_params": {"d": 2, "symmetric": True}}])
def test_custom_functions_under_vmap_and_grad(kw):
    """torch.func transforms (stacked seeds) take the plain differentiable form."""
    from torch.func import functional_call, grad, stack_module_state, vmap

    heads = [RPNHead(26, 2, reconciliation="identity", seed=s, **kw).double() for s in (0, 1)]
    params, buffers = stack_module_state(heads)
    x = torch.rand(5, 26, dtype=torch.float64) * 2 - 1

    def loss(p, b):
        return functional_call(heads[0], (p, b), (x,)).square().mean()

    got = vmap(grad(loss))(params, buffers)
    for i, h in enumerate(heads):
        h.zero_grad()
        h(x).square().mean().backward()
        torch.testing.assert_close(got["w"][i], h.w.grad, rtol=1e-10, atol=1e-12)

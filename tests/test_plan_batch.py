"""The batch a head's contraction plan is costed at (head option ``plan_batch``, issue 21 item 4).

The plan's cost model (Kronecker windows, FFT, the folded Kronecker product) counts FLOPs and
memory traffic at a batch size; a run built from a config plans at its ``train.batch_size``.
Every plan gives the same values: checked in float64 against each other.
"""

from __future__ import annotations

import pytest
import torch

from rpnkit import RPN, RPNHead
from rpnkit.config import ModelConfig
from rpnkit.contract import NOMINAL_BATCH
from rpnkit.errors import ConfigurationError
from rpnkit.training.run import build_from_config

DUAL = {"name": "dual_lphm", "p": 2, "q": 2, "r": 2}


def _head(plan_batch=None):
    torch.manual_seed(0)
    return RPNHead(64, 64, expansion={"name": "taylor", "d": 2}, reconciliation=DUAL,
                   dtype=torch.float64, plan_batch=plan_batch)


def test_default_plans_at_the_nominal_batch_and_the_option_reaches_the_contraction():
    assert _head().contraction.batch == NOMINAL_BATCH
    assert _head(4096).contraction.batch == 4096


def test_plans_at_different_batches_differ_but_give_the_same_values_and_gradients():
    small, large = _head(), _head(4096)
    assert small.plan() != large.plan()  # the folded one-node product is not chosen at 4096
    large.load_state_dict(small.state_dict())
    x = torch.randn(7, 64, dtype=torch.float64, requires_grad=True)
    ys, yl = small(x), large(x)
    torch.testing.assert_close(ys, yl, rtol=1e-12, atol=1e-12)
    g = torch.randn_like(ys)
    got = torch.autograd.grad(ys, [x, small.w], g)
    want = torch.autograd.grad(yl, [x, large.w], g)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("bad", [0, -3, True, 2.5, "64"])
def test_bad_plan_batch_is_a_clear_error(bad):
    with pytest.raises(ConfigurationError, match="batch must be None"):
        _head(bad)


def test_from_dims_passes_plan_batch_to_every_head():
    model = RPN.from_dims([5, 4, 3], expansion={"name": "taylor", "d": 2}, plan_batch=256)
    heads = [h for layer in model.layers for h in layer.heads]
    assert heads
    assert all(h.contraction.batch == 256 for h in heads)


def test_a_run_plans_at_its_batch_size_unless_the_model_section_says_otherwise():
    mc = ModelConfig.model_validate({"dims": [5, 4, 3], "expansion": "taylor"})
    model = build_from_config(mc, 0, 5, 3, plan_batch=128)
    assert {h.contraction.batch for layer in model.layers for h in layer.heads} == {128}
    mc = ModelConfig.model_validate({"dims": [5, 4, 3], "expansion": "taylor",
                                     "plan_batch": 32})
    model = build_from_config(mc, 0, 5, 3, plan_batch=128)
    assert {h.contraction.batch for layer in model.layers for h in layer.heads} == {32}
    model = build_from_config(mc.model_copy(update={"plan_batch": None}), 0, 5, 3)
    assert {h.contraction.batch for layer in model.layers for h in layer.heads} == {
        NOMINAL_BATCH}


def test_prepare_plans_the_model_at_train_batch_size():
    from rpnkit.config import parse_config
    from rpnkit.training.run import prepare

    cfg = {"seed": 1, "device": "cpu",
           "data": {"name": "function", "expression": "sin(3*x0) * x1", "ranges": [[0, 1], [0, 1]],
                    "n_samples": 100, "split": {"train": 0.6, "val": 0.2, "test": 0.2}},
           "model": {"dims": [2, 2, 1], "expansion": {"name": "taylor", "d": 2}},
           "train": {"epochs": 1, "batch_size": 50, "loss": "mse"}}
    prep = prepare(parse_config(cfg))
    assert {h.contraction.batch for layer in prep.model.layers for h in layer.heads} == {50}


def test_sklearn_estimator_plans_at_its_batch_size():
    import numpy as np

    from rpnkit.sklearn import RPNRegressor

    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(60, 3)), rng.normal(size=60)
    est = RPNRegressor(dims=(4,), expansion="taylor", batch_size=20, max_epochs=1,
                       optimizer="adam").fit(x, y)
    assert {h.contraction.batch for layer in est.model_.layers for h in layer.heads} == {20}

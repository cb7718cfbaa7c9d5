"""The end of ``fit`` evaluates train/val/test once when the best weights are the final ones
(issue 21 item 6), and twice (final, then best) only when they differ."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rpnkit.training import engine, evaluate, fit
from rpnkit.training.engine import as_bundle


def _data(val_sign: float):
    rng = np.random.default_rng(0)
    X = rng.normal(size=(120, 3))
    y = X @ np.array([1.0, -2.0, 0.5])
    t = lambda a: torch.tensor(a, dtype=torch.float64)  # noqa: E731
    return {"train": (t(X[:80]), t(y[:80])), "val": (t(X[80:100]), t(val_sign * y[80:100])),
            "test": (t(X[100:]), t(y[100:]))}


@pytest.fixture
def spy(monkeypatch):
    calls: list[str] = []
    real = engine.evaluate

    def counting(model, bundle, split, *args, **kwargs):
        calls.append(split)
        return real(model, bundle, split, *args, **kwargs)

    monkeypatch.setattr(engine, "evaluate", counting)
    return calls


def _fit(data, lr: float, restore_best: bool = False):
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    res = fit(model, data, {"epochs": 6, "optimizer": {"name": "sgd", "lr": lr},
                            "scheduler": "none", "batch_size": 80, "dtype": "float64"},
              restore_best=restore_best)
    return model, res


@pytest.mark.parametrize("lr", [0.05, 1e-300])
def test_best_equal_to_final_is_evaluated_once(spy, lr):
    # lr 0.05: the validation loss falls every epoch, so the last epoch is the best;
    # lr 1e-300: the steps round away (w + 1e-300 g == w), so the weights never change and the
    # best (epoch 1, the first of equal losses) holds the final weights
    model, res = _fit(_data(+1.0), lr)
    assert res.best["epoch"] == (6 if lr > 1e-100 else 1)
    assert spy.count("train") == 1
    assert spy.count("test") == 1
    assert spy.count("val") == 6 + 1  # one per epoch, one at the end
    assert res.best_metrics == res.final
    assert res.best_metrics is not res.final  # separate dicts, as before
    bundle = as_bundle(_data(+1.0))
    for split in ("train", "val", "test"):  # the reused numbers are those of the best weights
        model.load_state_dict(res.best_state)
        assert evaluate(model, bundle, split, dtype=torch.float64) == pytest.approx(
            res.best_metrics[split], rel=1e-12)


@pytest.mark.parametrize("restore_best", [False, True])
def test_best_different_from_final_is_evaluated_twice(spy, restore_best):
    # the validation targets are the negated train targets: fitting the train split makes the
    # validation loss worse, so the best epoch (1) is not the final one (6)
    model, res = _fit(_data(-1.0), 0.05, restore_best)
    assert res.best["epoch"] == 1
    assert res.epochs_run == 6
    assert spy.count("train") == 2
    assert spy.count("test") == 2
    assert res.best_metrics["train"]["loss"] > res.final["train"]["loss"]
    assert res.best_metrics["val"]["loss"] < res.final["val"]["loss"]
    expected = res.best_state if restore_best else None
    if expected is not None:
        assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    else:
        assert not torch.equal(model.weight.detach(), res.best_state["weight"])


def test_holds_state_compares_every_tensor():
    model = nn.Linear(2, 1).double()
    state = engine._clone_state(model)
    assert engine._holds_state(model, state)
    changed = dict(state, bias=state["bias"] + 1e-12)
    assert not engine._holds_state(model, changed)
    assert not engine._holds_state(model, {"weight": state["weight"]})
    assert not engine._holds_state(model, dict(state, weight=state["weight"].float()))

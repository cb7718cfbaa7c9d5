"""train.polish: an L-BFGS phase after the main schedule, from its best-on-validation weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rpnkit import RPN
from rpnkit.config import TrainConfig
from rpnkit.training import fit
from rpnkit.training.engine import polish_config


def _data(seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-1, 1, (300, 2))
    y = (np.sin(2 * x[:, :1]) + x[:, 1:] ** 2)
    return {"train": (x[:200], y[:200]), "val": (x[200:250], y[200:250]), "test": (x[250:], y[250:])}


def _model():
    torch.manual_seed(0)
    return RPN.from_dims([2, 1], expansion="bspline")


def test_polish_runs_after_the_schedule_and_never_makes_the_best_worse():
    data = _data()
    cfg = {"epochs": 40, "optimizer": {"name": "adam", "lr": 0.01}, "loss": "mse", "dtype": "float64"}
    plain = fit(_model(), data, cfg)
    model = _model()
    res = fit(model, data, {**cfg, "polish": 8}, restore_best=True)
    assert res.epochs_run == 48
    assert [h.get("phase") for h in res.history[40:]] == ["polish"] * 8
    assert [h["epoch"] for h in res.history] == list(range(1, 49))
    assert res.best_metrics["val"]["loss"] <= plain.best_metrics["val"]["loss"]
    # L-BFGS on a linear-in-parameters model: far better than 40 Adam epochs
    assert res.best_metrics["val"]["loss"] < 0.1 * plain.best_metrics["val"]["loss"]
    assert res.best["epoch"] > 40
    x, y = (torch.as_tensor(a) for a in data["val"])
    with torch.no_grad():
        mse = float(((model(x) - y) ** 2).mean())
    assert mse == pytest.approx(res.best_metrics["val"]["mse"], rel=1e-6)


def test_polish_config_is_lbfgs_full_batch():
    cfg = TrainConfig.model_validate({"epochs": 100, "batch_size": 32, "grad_clip": 1.0, "polish": 7,
                                      "early_stopping": 5})
    p = polish_config(cfg)
    assert p.optimizer.name == "lbfgs"
    assert p.epochs == 7
    assert p.polish == 0
    assert p.batch_size is None
    assert p.grad_clip is None
    assert p.early_stopping is None
    assert p.scheduler.name == "none"


@pytest.mark.parametrize("bad", [-1, 10**6, "many"])
def test_polish_is_validated(bad):
    with pytest.raises(ValueError, match="polish"):
        TrainConfig.model_validate({"polish": bad})

"""The engine's in-memory front door: fit on arrays/tensors, loss options, early stopping."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from rpnkit.config import parse_config
from rpnkit.errors import ConfigurationError
from rpnkit.training import evaluate, fit, prepare
from rpnkit.training.engine import as_bundle


def _linear_data(n=200, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + 0.1 * rng.normal(size=n)
    return X, y


def test_fit_on_arrays_writes_nothing(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    X, y = _linear_data()
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    res = fit(model, (X, y), {"epochs": 50, "optimizer": {"name": "adam", "lr": 0.1},
                              "scheduler": "none"})
    assert res.final["train"]["r2"] > 0.95
    assert res.final["val"] == {}
    assert res.final["test"] == {}
    assert list(tmp_path.iterdir()) == []


def test_fit_on_tensors_with_splits_and_restore_best():
    X, y = _linear_data(300)
    Xt, yt = torch.tensor(X, dtype=torch.float32), torch.tensor(y, dtype=torch.float32)
    data = {"train": (Xt[:200], yt[:200]), "val": (Xt[200:250], yt[200:250]),
            "test": (Xt[250:], yt[250:])}
    torch.manual_seed(0)
    model = nn.Linear(3, 1)
    res = fit(model, data, {"epochs": 40, "optimizer": {"name": "sgd", "lr": 0.5},
                            "scheduler": "none"}, restore_best=True)
    assert res.best_state is not None
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, res.best_state[k])
    assert res.final["test"]["r2"] > 0.9


def test_as_bundle_infers_task_and_checks_shapes():
    X, y = _linear_data(20)
    b = as_bundle((X, y))
    assert b.task == "regression"
    assert b.y["train"].shape == (20, 1)
    assert b.size("val") == 0
    c = as_bundle({"train": (X, (y > 0).astype(int)), "val": (X[:5], np.array([0, 1, 2, 0, 1]))})
    assert c.task == "classification"
    assert c.n_classes == 3
    with pytest.raises(ConfigurationError, match="N rows"):
        as_bundle((X, y[:5]))
    with pytest.raises(ConfigurationError, match="'train'"):
        as_bundle({"training": (X, y)})
    with pytest.raises(ConfigurationError, match="loss 'cross_entropy' is for classification"):
        fit(nn.Linear(3, 1), (X, y), {"epochs": 1, "loss": "cross_entropy"})
    with pytest.raises(ConfigurationError, match="train: epochs"):
        fit(nn.Linear(3, 1), (X, y), {"epochs": -1})


def test_early_stopping_tolerance_and_training_loss_without_validation():
    X, y = _linear_data()
    torch.manual_seed(0)
    # no validation split: early stopping watches the training loss
    res = fit(nn.Linear(3, 1), (X, y), {"epochs": 500, "optimizer": {"name": "adam", "lr": 0.05},
                                        "scheduler": "none", "early_stopping": 3, "tol": 0.01})
    assert res.stopped["cause"] == "early_stopping"
    assert "train_loss" in res.stopped["reason"]
    assert res.epochs_run < 500
    torch.manual_seed(0)
    loose = fit(nn.Linear(3, 1), (X, y), {"epochs": 500, "optimizer": {"name": "adam", "lr": 0.05},
                                          "scheduler": "none", "early_stopping": 3})
    assert loose.epochs_run > res.epochs_run  # tol=0: every improvement resets the patience


def test_lbfgs_weight_decay_is_an_l2_penalty():
    X, y = _linear_data(100)
    wd = 0.5
    model = nn.Linear(3, 1, bias=False)
    fit(model, (X, y), {"epochs": 5, "dtype": "float64", "scheduler": "none",
                        "optimizer": {"name": "lbfgs", "weight_decay": wd,
                                      "tolerance_grad": 1e-12, "tolerance_change": 1e-15}})
    # minimiser of mean((Xw - y)^2) + wd/2 |w|^2
    n = len(X)
    ridge = np.linalg.solve(2 * X.T @ X / n + wd * np.eye(3), 2 * X.T @ y / n)
    np.testing.assert_allclose(model.weight.detach().numpy()[0], ridge, rtol=1e-5)


def test_hinge_loss_for_classification():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 2))
    y = (X[:, 0] + X[:, 1] > 0).astype(int)
    torch.manual_seed(0)
    res = fit(nn.Linear(2, 2), (X, y), {"epochs": 100, "loss": {"name": "hinge", "margin": 1.0},
                                        "optimizer": {"name": "adam", "lr": 0.05}})
    assert res.final["train"]["accuracy"] > 0.95


def test_validation_and_final_loss_use_the_configured_loss_options():
    cfg = parse_config({
        "seed": 0, "device": "cpu",
        "data": {"name": "iris", "split": {"train": 0.6, "val": 0.2, "test": 0.2},
                 "standardize": True},
        "model": {"dims": [4, 3], "bias": True},
        "train": {"epochs": 5, "scheduler": "none",
                  "loss": {"name": "cross_entropy", "label_smoothing": 0.3}},
    })
    prep = prepare(cfg)
    res = fit(prep.model, prep.bundle, cfg.train, seed=0)
    model = prep.model.eval()
    x = torch.as_tensor(prep.bundle.x["val"], dtype=torch.float32)
    y = torch.as_tensor(prep.bundle.y["val"], dtype=torch.long)
    with torch.no_grad():
        out = model(x)
        smoothed = float(nn.CrossEntropyLoss(label_smoothing=0.3)(out, y))
        plain = float(nn.CrossEntropyLoss()(out, y))
    assert abs(smoothed - plain) > 1e-3
    assert res.final["val"]["loss"] == pytest.approx(smoothed, rel=1e-5)
    assert res.history[-1]["val_loss"] == pytest.approx(smoothed, rel=1e-5)
    assert evaluate(model, prep.bundle, "val", "cross_entropy",
                    loss_params={"label_smoothing": 0.3})["loss"] == pytest.approx(smoothed, rel=1e-5)

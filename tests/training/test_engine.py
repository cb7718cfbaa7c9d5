"""Training engine: learning, validation-only selection, NaN handling, resume, metrics."""

from __future__ import annotations

import math
import os
import signal

import numpy as np
import pytest
import torch

from rpnkit.config import TrainConfig, parse_config
from rpnkit.training import (
    InterruptFlag,
    TrainingInterrupted,
    compute_metrics,
    evaluate,
    fit,
    handle_signals,
    prepare,
)
from rpnkit.training.components import LOSSES, OPTIMIZERS, SCHEDULERS


def _prep(cfg_dict, **train):
    cfg_dict["train"].update(train)
    return prepare(parse_config(cfg_dict))


def test_training_reduces_loss(base_config):
    prep = _prep(base_config, epochs=60)
    before = evaluate(prep.model, prep.bundle, "test", "mse")["mse"]
    res = fit(prep.model, prep.bundle, prep.cfg.train, seed=1)
    assert res.final["test"]["mse"] < before / 5
    assert len(res.history) == 60
    assert {"epoch", "train_loss", "val_loss", "val_mse", "lr"} <= set(res.history[0])
    assert "test_loss" not in res.history[0]  # the test split is never looked at during training


def test_best_epoch_selected_on_validation(base_config):
    prep = _prep(base_config, epochs=40)
    res = fit(prep.model, prep.bundle, prep.cfg.train, seed=1)
    vals = [h["val_loss"] for h in res.history]
    assert res.best["epoch"] == int(np.argmin(vals)) + 1
    assert res.best_metrics["val"]["loss"] == pytest.approx(min(vals), rel=1e-6)


def test_early_stopping(base_config):
    prep = _prep(base_config, epochs=500, early_stopping=3,
                 optimizer={"name": "sgd", "lr": 1e-9})
    res = fit(prep.model, prep.bundle, prep.cfg.train, seed=1)
    assert res.stopped
    assert "early stopping" in res.stopped["reason"]
    assert res.epochs_run < 500


def test_no_validation_split_means_best_is_final(base_config):
    base_config["data"]["split"] = {"train": 0.5, "val": 0.0, "test": 0.5}
    prep = _prep(base_config, epochs=5)
    res = fit(prep.model, prep.bundle, prep.cfg.train, seed=1)
    assert res.best["epoch"] == 5
    assert res.best_metrics["test"] == res.final["test"]
    assert res.final["val"] == {}


def test_nan_loss_stops_and_keeps_last_good(base_config):
    prep = _prep(base_config, epochs=50, optimizer={"name": "sgd", "lr": 1e6})
    res = fit(prep.model, prep.bundle, prep.cfg.train, seed=1)
    assert res.stopped
    assert "non-finite" in res.stopped["reason"]
    assert res.stopped["epoch"] <= 50
    assert res.epochs_run == res.stopped["epoch"] - 1
    assert all(torch.isfinite(p).all() for p in prep.model.parameters())


def _run_full(cfg_dict, train):
    prep = _prep(cfg_dict, **train)
    return fit(prep.model, prep.bundle, prep.cfg.train, seed=prep.cfg.seed)


@pytest.mark.parametrize(
    "train",
    [
        {"epochs": 12},  # full batch, interrupted at an epoch boundary
        {"epochs": 6, "batch_size": 32, "optimizer": {"name": "adamw", "lr": 0.01},
         "scheduler": {"name": "step", "step_size": 2, "gamma": 0.5}},  # mid-epoch
    ],
)
def test_resume_gives_identical_results(base_config, tmp_path, train):
    import copy

    ref = _run_full(copy.deepcopy(base_config), train)

    prep = _prep(copy.deepcopy(base_config), **train)
    flag = InterruptFlag()
    ckpt = tmp_path / "checkpoint.pt"
    calls = {"n": 0}

    def hook(module, inputs, output):
        calls["n"] += 1
        if calls["n"] == 7:
            flag.set(signal.SIGINT)

    h = prep.model.register_forward_hook(hook)
    with pytest.raises(TrainingInterrupted) as info:
        fit(prep.model, prep.bundle, prep.cfg.train, seed=prep.cfg.seed, checkpoint_path=ckpt,
            interrupt=flag)
    h.remove()
    assert info.value.checkpoint == ckpt
    assert ckpt.exists()

    state = torch.load(ckpt, map_location="cpu", weights_only=True)
    prep2 = _prep(copy.deepcopy(base_config), **train)  # a fresh process would rebuild everything
    res = fit(prep2.model, prep2.bundle, prep2.cfg.train, seed=prep2.cfg.seed, resume=state)
    assert res.final == ref.final
    assert res.best == ref.best
    assert [h["train_loss"] for h in res.history] == [h["train_loss"] for h in ref.history]


def test_sigterm_saves_a_checkpoint(base_config, tmp_path):
    prep = _prep(base_config, epochs=20)
    flag = InterruptFlag()
    ckpt = tmp_path / "checkpoint.pt"

    def on_epoch_end(epoch, rec):
        if epoch == 3:
            os.kill(os.getpid(), signal.SIGTERM)

    with handle_signals(flag), pytest.raises(TrainingInterrupted) as info:
        fit(prep.model, prep.bundle, prep.cfg.train, seed=1, checkpoint_path=ckpt, interrupt=flag,
            on_epoch_end=on_epoch_end)
    assert info.value.signum == signal.SIGTERM
    assert info.value.epoch == 3
    assert torch.load(ckpt, weights_only=True)["epoch"] == 3


def test_grad_clip_and_all_optimizers_and_schedulers(base_config):
    for opt in OPTIMIZERS.names():
        for sched in SCHEDULERS.names():
            cfg = TrainConfig.model_validate({"epochs": 2, "optimizer": opt, "scheduler": sched,
                                              "grad_clip": 0.5})
            prep = _prep(dict(base_config, train={"epochs": 2}))
            res = fit(prep.model, prep.bundle, cfg, seed=0)
            assert math.isfinite(res.final["test"]["mse"]), (opt, sched)


def test_classification_metrics_match_sklearn():
    from sklearn.metrics import accuracy_score, f1_score, log_loss

    rng = np.random.default_rng(0)
    logits = torch.tensor(rng.normal(size=(40, 3)))
    y = torch.tensor(rng.integers(0, 3, 40))
    m = compute_metrics(["accuracy", "f1", "log_loss"], "classification", logits, y, 3)
    probs = torch.softmax(logits, 1).numpy()
    assert m["accuracy"] == pytest.approx(accuracy_score(y, probs.argmax(1)))
    assert m["f1"] == pytest.approx(f1_score(y, probs.argmax(1), average="macro"))
    assert m["log_loss"] == pytest.approx(log_loss(y, probs, labels=[0, 1, 2]))
    r = compute_metrics(["mse", "mae", "r2"], "regression", torch.tensor([[1.0], [2.0], [4.0]]),
                        torch.tensor([[1.0], [3.0], [3.0]]), None)
    assert r["mse"] == pytest.approx(2 / 3)
    assert r["mae"] == pytest.approx(2 / 3)
    from sklearn.metrics import r2_score

    assert r["r2"] == pytest.approx(r2_score([1, 3, 3], [1, 2, 4]))


def test_binary_classification_with_bce(base_config):
    base_config["data"] = {"name": "banknote", "split": {"train": 0.6, "val": 0.2, "test": 0.2},
                           "standardize": True}
    base_config["model"] = {"dims": [4, 1], "bias": True}
    prep = _prep(base_config, epochs=40, loss="bce", metrics=["accuracy", "log_loss"],
                 monitor="accuracy")
    res = fit(prep.model, prep.bundle, prep.cfg.train, seed=0)
    assert res.final["test"]["accuracy"] > 0.85
    assert LOSSES.describe("bce")

"""Batched seeds (train.seeds): each seed of one batched run equals a single run of that seed."""

from __future__ import annotations

import copy
import json
import math

import numpy as np
import pytest
import torch
from torch import nn

from rpnkit import RPN
from rpnkit.config import TrainConfig, parse_config
from rpnkit.errors import ConfigurationError
from rpnkit.seeding import derive_seed
from rpnkit.training import InterruptFlag, TrainingInterrupted, fit, prepare, train_run
from rpnkit.training.checkpoint import CheckpointError
from rpnkit.training.seeds import seed_list, summarise_seeds


def _ext(seed: int) -> nn.Module:
    """The paper's 47-parameter RPN-Ext [2, 2, 1], initialised from ``seed``, in float64."""
    torch.manual_seed(seed)
    exp = {"name": "extended", "expansions": [{"name": "bspline"}, {"name": "taylor", "d": 2}]}
    return RPN.from_dims([2, 2, 1], expansion=exp, reconciliation={"name": "lorr", "r": 1},
                         remainder="zero").double()


def _mlp(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(2, 5), nn.SiLU(), nn.Linear(5, 3)).double()


def _data(classes: bool = False, n: int = 240):
    rng = np.random.default_rng(7)
    x = rng.uniform(-1, 1, (n + 120, 2))
    if classes:
        y = (np.digitize(np.sin(3 * x[:, 0]) + x[:, 1], [-0.5, 0.5])).astype(np.int64)
    else:
        y = np.sin(3 * x[:, :1]) * x[:, 1:] + x[:, 1:] ** 2
    return {"train": (x[:n], y[:n]), "val": (x[n:n + 60], y[n:n + 60]),
            "test": (x[n + 60:], y[n + 60:])}


def _same_run(single, batched, rtol: float = 1e-6) -> None:
    """Two FitResults of one seed agree: history, best epoch, stop and every metric."""
    assert len(single.history) == len(batched.history)
    for a, b in zip(single.history, batched.history):
        for key in a:
            if key != "seconds":
                np.testing.assert_allclose(b[key], a[key], rtol=rtol, atol=1e-12, err_msg=key)
    assert batched.best.get("epoch") == single.best.get("epoch")
    assert (batched.stopped or {}).get("cause") == (single.stopped or {}).get("cause")
    assert (batched.stopped or {}).get("epoch") == (single.stopped or {}).get("epoch")
    for which in ("final", "best_metrics"):
        for split, values in getattr(single, which).items():
            for name, v in values.items():
                np.testing.assert_allclose(getattr(batched, which)[split][name], v, rtol=rtol,
                                           atol=1e-12, err_msg=f"{which} {split} {name}")
    if single.best_state is None:
        assert batched.best_state is None
    else:
        for k, v in single.best_state.items():
            np.testing.assert_allclose(batched.best_state[k], v, rtol=rtol, atol=1e-12)


# the optimizer math that must be per seed: weight decay, schedules, clipping, momentum
RECIPES = {
    "adamw_cosine_clip": {"optimizer": {"name": "adamw", "lr": 0.05, "weight_decay": 0.1},
                          "scheduler": "cosine", "grad_clip": 0.3},
    "adam_step_wd": {"optimizer": {"name": "adam", "lr": 0.03, "weight_decay": 0.01},
                     "scheduler": {"name": "step", "step_size": 3, "gamma": 0.5}},
    "sgd_nesterov_exp": {"optimizer": {"name": "sgd", "lr": 0.1, "momentum": 0.9,
                                       "nesterov": True, "weight_decay": 0.001},
                         "scheduler": {"name": "exponential", "gamma": 0.9}, "grad_clip": 1.0},
    "adam_foreach": {"optimizer": {"name": "adam", "lr": 0.02, "foreach": True}},
}


@pytest.mark.parametrize("recipe", sorted(RECIPES))
def test_each_seed_equals_its_single_run(recipe):
    """Minibatches (per-seed shuffling, a partial last batch), per-seed early stopping at
    different epochs, per-seed best epoch: each seed equals fit(model(seed), seed=seed)."""
    seeds = [3, 11, 2**32 - 1]
    cfg = {"epochs": 14, "batch_size": 50, "early_stopping": 3, "dtype": "float64",
           **RECIPES[recipe]}
    data = _data()
    res = fit(_ext, data, cfg, seeds=seeds)
    assert res.seeds == seeds
    assert len(res.runs) == 3
    for k, s in enumerate(seeds):
        _same_run(fit(_ext(s), data, cfg, seed=s), res.runs[k])


def test_early_stopping_differs_between_seeds_and_stopped_seeds_stay_frozen():
    seeds = [0, 1, 2, 3]
    cfg = {"epochs": 40, "batch_size": 40, "early_stopping": 2, "tol": 0.02, "dtype": "float64",
           "optimizer": {"name": "adam", "lr": 0.05}, "scheduler": "none"}
    data = _data()
    models = [_ext(s) for s in seeds]
    res = fit(models, data, cfg, seeds=seeds)
    runs = [fit(_ext(s), data, cfg, seed=s) for s in seeds]
    stops = {r.epochs_run for r in runs}
    assert len(stops) > 1  # the seeds really stop at different epochs
    for k, s in enumerate(seeds):
        _same_run(runs[k], res.runs[k])
        # each module ends with its own seed's final weights
        single = _ext(s)
        fit(single, data, cfg, seed=s)
        for (name, a), b in zip(single.state_dict().items(), models[k].state_dict().values()):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-12, err_msg=name)


def test_classification_full_batch_and_restore_best():
    seeds = [5, 6]
    cfg = {"epochs": 8, "dtype": "float64", "loss": {"name": "cross_entropy",
                                                     "label_smoothing": 0.1},
           "optimizer": {"name": "adamw", "lr": 0.05}, "monitor": "accuracy",
           "metrics": ["accuracy", "f1_macro"]}
    data = _data(classes=True)
    models = [_mlp(s) for s in seeds]
    res = fit(models, data, cfg, seeds=seeds, restore_best=True)
    for k, s in enumerate(seeds):
        single = _mlp(s)
        r1 = fit(single, data, cfg, seed=s, restore_best=True)
        _same_run(r1, res.runs[k])
        for a, b in zip(single.state_dict().values(), models[k].state_dict().values()):
            np.testing.assert_allclose(b, a, rtol=1e-6, atol=1e-12)


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # metrics of huge outputs
def test_a_diverging_seed_stops_alone_with_its_last_good_weights():
    """A seed whose loss becomes non-finite stops as a single run does; the others go on."""
    seeds = [0, 1]

    def make(s):
        m = _mlp(s)
        if s == 1:  # huge weights: the loss overflows after a few steps of SGD
            with torch.no_grad():
                m[2].weight.mul_(1e20)
        return m

    data = _data()
    data = {k: (x, np.repeat(y, 3, axis=1)) for k, (x, y) in data.items()}
    cfg = {"epochs": 6, "batch_size": 60, "dtype": "float64", "scheduler": "none",
           "optimizer": {"name": "sgd", "lr": 1e6}}
    res = fit(make, data, cfg, seeds=seeds)
    for k, s in enumerate(seeds):
        single = fit(make(s), data, cfg, seed=s)
        _same_run(single, res.runs[k])
    assert res.runs[1].stopped["cause"] == "non_finite"


def test_seed_list_is_the_run_seed_then_derived_streams():
    assert seed_list(7, 3) == [7, derive_seed(7, 1) % 2**32, derive_seed(7, 2) % 2**32]
    assert seed_list(7, 3) != [7, 8, 9]
    assert seed_list(7, [4, 2]) == [4, 2]
    with pytest.raises(ConfigurationError, match="distinct"):
        seed_list(0, [1, 1])
    with pytest.raises(ConfigurationError, match="from 1 to"):
        seed_list(0, 0)


@pytest.mark.parametrize(("seeds", "message"), [
    (0, "seeds must be from 1 to 1024"), ([3, 3], "seeds must be distinct, 3 appears twice"),
    ([-1], "holds -1"), ("five", "a number of seeds"), ([], "has 0 entries"),
    (True, "got True")])
def test_config_refuses_bad_seeds(seeds, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig.model_validate({"seeds": seeds})


@pytest.mark.parametrize(("extra", "name"), [
    ({"optimizer": "lbfgs"}, "optimizer lbfgs"), ({"polish": 2}, "polish"),
    ({"grid_update_every": 3}, "grid_update_every"), ({"reg_l1": 0.1}, "reg_l1"),
    ({"precision": "bf16"}, "precision 'bf16'"), ({"compile": True}, "compile")])
def test_config_refuses_what_batched_seeds_cannot_train(extra, name):
    with pytest.raises(ValueError, match=f"seeds .*cannot be combined with {name}"):
        TrainConfig.model_validate({"seeds": 2, **extra})


def test_fit_refuses_models_of_different_shapes():
    with pytest.raises(ConfigurationError, match="differs in structure"):
        fit([_mlp(0), nn.Sequential(nn.Linear(2, 4), nn.SiLU(), nn.Linear(4, 3)).double()],
            _data(), {"epochs": 1}, seeds=[0, 1])
    with pytest.raises(ConfigurationError, match="2 seeds need 2 models"):
        fit([_mlp(0)], _data(), {"epochs": 1}, seeds=[0, 1])


def test_one_module_is_the_first_seed_and_copies_are_reinitialised():
    """rpnkit.fit(model, X, y, seeds=S): the model is seed entry 0 (the run of seed 0 exactly);
    the others are copies re-initialised from their own seeds."""
    import rpnkit

    data = _data()
    x, y = data["train"]
    model = _ext(0)
    res = rpnkit.fit(model, x, y, {"epochs": 3, "batch_size": 64}, seeds=3)
    assert res.seeds == seed_list(0, 3)
    single = fit(_ext(0), (x, y), {"epochs": 3, "batch_size": 64, "dtype": "float64"}, seed=0)
    _same_run(single, res.runs[0])
    finals = [r.final["train"]["loss"] for r in res.runs]
    assert len(set(finals)) == 3  # distinct initialisations


def test_summary_statistics():
    class R:
        def __init__(self, v):
            self.final = {"train": {"loss": v}, "val": {}}
            self.best_metrics = {"train": {"loss": v / 2}}

    s = summarise_seeds([R(1.0), R(2.0), R(6.0)])
    assert s["mean"]["final"]["train"]["loss"] == pytest.approx(3.0)
    assert s["median"]["final"]["train"]["loss"] == 2.0
    assert s["std"]["final"]["train"]["loss"] == pytest.approx(np.std([1, 2, 6], ddof=1))
    assert s["mean"]["best"]["train"]["loss"] == pytest.approx(1.5)
    assert "val" not in s["mean"]["final"]
    assert math.isnan(summarise_seeds([R(1.0), R(float("nan"))])["mean"]["final"]["train"]["loss"])


def _run_cfg(base_config, **train):
    cfg = copy.deepcopy(base_config)
    cfg["train"].update({"epochs": 8, "batch_size": 40, "dtype": "float64",
                         "early_stopping": 3, **train})
    return cfg


def test_run_folder_metrics_and_first_seed_equals_the_plain_run(base_config, tmp_path):
    cfg = _run_cfg(base_config, seeds=3)
    res = train_run(prepare(parse_config(cfg)), tmp_path / "batched")
    m = json.loads((tmp_path / "batched" / "metrics.json").read_text())
    assert [e["seed"] for e in m["seeds"]] == seed_list(1, 3)
    for e, r in zip(m["seeds"], res.runs):
        assert e["final"]["test"]["mse"] == pytest.approx(r.final["test"]["mse"], rel=1e-12)
        assert e["best"]["epoch"] == r.best["epoch"]
    vals = [e["final"]["test"]["mse"] for e in m["seeds"]]
    assert m["mean"]["final"]["test"]["mse"] == pytest.approx(np.mean(vals))
    assert m["std"]["final"]["test"]["mse"] == pytest.approx(np.std(vals, ddof=1))
    assert m["median"]["final"]["test"]["mse"] == pytest.approx(np.median(vals))
    # seed entry 0 is the run's own seed: the plain run of the same config, exactly
    plain = train_run(prepare(parse_config(_run_cfg(base_config))), tmp_path / "plain")
    _same_run(plain, res.runs[0])
    p = json.loads((tmp_path / "plain" / "metrics.json").read_text())
    assert m["final"]["test"]["mse"] == pytest.approx(p["final"]["test"]["mse"], rel=1e-6)
    a = torch.load(tmp_path / "batched" / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(tmp_path / "plain" / "model.pt", weights_only=True)["state_dict"]
    for k in b:
        np.testing.assert_allclose(a[k], b[k], rtol=1e-6, atol=1e-12)
    # a listed seed equals the plain run with that seed (same data: the run's seed draws it)
    listed = train_run(prepare(parse_config(_run_cfg(base_config, seeds=[9, 1]))), tmp_path / "l")
    _same_run(plain, listed.runs[1])


def test_interrupted_batched_run_resumes_to_the_same_result(base_config, tmp_path):
    cfg = _run_cfg(base_config, seeds=[1, 4, 9], checkpoint_every=1)
    ref = train_run(prepare(parse_config(cfg)), tmp_path / "ref")
    flag = InterruptFlag()
    prep = prepare(parse_config(cfg))

    def stop(epoch, rec):
        if epoch == 3:
            flag.set()

    with pytest.raises(TrainingInterrupted):
        train_run(prep, tmp_path / "run", interrupt=flag, on_epoch_end=stop)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert state["format"] == "rpnkit-seeds-state-1"
    assert state["epoch"] == 3
    res = train_run(prepare(parse_config(cfg)), tmp_path / "run", resume=True)
    for a, b in zip(ref.runs, res.runs):
        _same_run(a, b, rtol=1e-12)
    assert not (tmp_path / "run" / "checkpoint.pt").exists()


def test_mid_epoch_interrupt_resumes_exactly(tmp_path):
    """An interrupt raised inside an epoch saves the stacked state at that batch."""
    seeds = [2, 3]
    cfg = {"epochs": 5, "batch_size": 50, "dtype": "float64", "early_stopping": 2,
           "optimizer": {"name": "adamw", "lr": 0.05}, "grad_clip": 0.5}
    data = _data()
    ref = fit(_ext, data, cfg, seeds=seeds)
    flag = InterruptFlag()

    model_calls = {"n": 0}
    make = _ext

    from rpnkit.training import seeds as S

    real_clip = S._clip

    def clip(grads, max_norm):  # sets the flag in the 8th step
        model_calls["n"] += 1
        if model_calls["n"] == 8:
            flag.set()
        real_clip(grads, max_norm)

    ckpt = tmp_path / "state.pt"
    S._clip = clip
    try:
        with pytest.raises(TrainingInterrupted) as info:
            fit(make, data, cfg, seeds=seeds, checkpoint_path=ckpt, interrupt=flag)
    finally:
        S._clip = real_clip
    assert info.value.epoch == 1  # epoch 2 of 5, batch 3 of 5
    state = torch.load(ckpt, weights_only=True)
    assert state["batch"] == 3
    assert state["perms"].shape == (2, 240)
    res = fit(make, data, cfg, seeds=seeds, resume=state)
    for a, b in zip(ref.runs, res.runs):
        _same_run(a, b, rtol=1e-12)


def test_resume_refuses_a_state_of_other_seeds_or_a_plain_state(base_config, tmp_path):
    cfg = _run_cfg(base_config, seeds=2)
    flag = InterruptFlag()

    def stop(epoch, rec):
        flag.set()

    with pytest.raises(TrainingInterrupted):
        train_run(prepare(parse_config(cfg)), tmp_path / "run", interrupt=flag, on_epoch_end=stop)
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    state.pop("sha256", None)
    with pytest.raises(CheckpointError, match="seeds .* differ from the configured"):
        fit(_ext, _data(), {"epochs": 8, "dtype": "float64"}, seeds=[5, 6], resume=state)
    bad = {**state, "per_seed": state["per_seed"][:1]}
    with pytest.raises(CheckpointError, match="one record per seed"):
        fit(_ext, _data(), {"epochs": 8, "dtype": "float64"}, seeds=state["seeds"], resume=bad)
    with pytest.raises(CheckpointError, match="not a batched-seeds training state"):
        fit(_ext, _data(), {"epochs": 8, "dtype": "float64"}, seeds=2,
            resume={"format": "rpnkit-train-state-2"})
